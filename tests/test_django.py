"""
Tests for the Django integration (eventtracking.django).

Django settings can be configured only once per process and the whole suite shares one
process, so in-process tests configure a minimal settings object only if nobody has yet
and change values with ``override_settings``. Tests that need ``django.setup()`` with
our app installed, or a pristine interpreter, run in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings
from django.test.utils import override_settings

from eventtracking import tracker  # noqa: E402
from eventtracking.backends.routing import RoutingBackend  # noqa: E402
from eventtracking.locator import ThreadLocalContextLocator  # noqa: E402
from eventtracking.processors.exceptions import ImproperlyConfigured  # noqa: E402
from eventtracking.processors.whitelist import NameWhitelistProcessor  # noqa: E402

if not settings.configured:
    settings.configure()

from eventtracking.django.django_tracker import DjangoTracker, override_default_tracker  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
HERE = __name__


class RecordingBackend:
    """Test-local backend standing in for the Segment backend."""

    def __init__(self, **options):
        self.options = options
        self.events = []

    def send(self, event):
        self.events.append(event)


class TagProcessor:
    def __init__(self, tag="tagged"):
        self.tag = tag

    def __call__(self, event):
        event["data"]["tag"] = self.tag


OPEN_EDX_BACKENDS = {
    "segmentio": {
        "ENGINE": "eventtracking.backends.routing.RoutingBackend",
        "OPTIONS": {
            "backends": {"segment": {"ENGINE": f"{HERE}.RecordingBackend"}},
            "processors": [
                {
                    "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
                    "OPTIONS": {"whitelist": ["edx.course.enrollment.activated"]},
                }
            ],
        },
    }
}


def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=str(REPO_ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_open_edx_style_settings():
    with override_settings(EVENT_TRACKING_BACKENDS=OPEN_EDX_BACKENDS, EVENT_TRACKING_PROCESSORS=[]):
        django_tracker = DjangoTracker()
    router = django_tracker.get_backend("segmentio")
    assert isinstance(router, RoutingBackend)
    assert isinstance(router.processors[0], NameWhitelistProcessor)
    segment = router.backends["segment"]
    assert isinstance(segment, RecordingBackend)

    with django_tracker.context("request", {"user_id": 42}):
        django_tracker.emit("edx.course.enrollment.activated", {"course_id": "course-v1:X+Y+Z"})
        django_tracker.emit("edx.video.played", {})
    assert [e["name"] for e in segment.events] == ["edx.course.enrollment.activated"]
    assert segment.events[0]["data"] == {"course_id": "course-v1:X+Y+Z"}
    assert segment.events[0]["context"] == {"user_id": 42}


def test_top_level_processors_from_settings():
    with override_settings(
        EVENT_TRACKING_BACKENDS={"rec": {"ENGINE": f"{HERE}.RecordingBackend", "OPTIONS": {"x": 1}}},
        EVENT_TRACKING_PROCESSORS=[
            {"ENGINE": f"{HERE}.TagProcessor"},
            {"ENGINE": f"{HERE}.TagProcessor", "OPTIONS": {"tag": "second"}},
        ],
    ):
        django_tracker = DjangoTracker()
    assert [type(p) for p in django_tracker.processors] == [TagProcessor, TagProcessor]
    backend = django_tracker.get_backend("rec")
    assert backend.options == {"x": 1}
    django_tracker.emit("anything", {})
    assert backend.events[0]["data"] == {"tag": "second"}


def test_missing_settings_mean_no_backends_or_processors():
    django_tracker = DjangoTracker(
        backends_settings_name="NO_SUCH_BACKENDS_SETTING",
        processors_settings_name="NO_SUCH_PROCESSORS_SETTING",
    )
    assert dict(django_tracker.backends) == {}
    assert django_tracker.processors == []
    django_tracker.emit("nothing.happens")  # no backends: must simply not fail


def test_custom_setting_names():
    with override_settings(MY_BACKENDS={"rec": {"ENGINE": f"{HERE}.RecordingBackend"}}):
        django_tracker = DjangoTracker(backends_settings_name="MY_BACKENDS")
    assert isinstance(django_tracker.get_backend("rec"), RecordingBackend)


def test_uses_thread_local_context_locator():
    with override_settings(EVENT_TRACKING_BACKENDS={}, EVENT_TRACKING_PROCESSORS=[]):
        django_tracker = DjangoTracker()
    assert isinstance(django_tracker.context_locator, ThreadLocalContextLocator)


def test_unknown_engine_raises_clear_error():
    with override_settings(EVENT_TRACKING_BACKENDS={"bad": {"ENGINE": "no.such.Backend"}}):
        with pytest.raises(ImproperlyConfigured, match=r"Cannot load ENGINE 'no\.such\.Backend'"):
            DjangoTracker()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("EVENT_TRACKING_BACKENDS", {"no_engine": {"OPTIONS": {}}}),  # a dict, not a backend
        ("EVENT_TRACKING_BACKENDS", {"empty": {"ENGINE": ""}}),
        ("EVENT_TRACKING_PROCESSORS", [{}]),  # not callable
    ],
)
def test_bad_configuration_is_value_error_like_original(setting, value):
    overrides = {"EVENT_TRACKING_BACKENDS": {}, "EVENT_TRACKING_PROCESSORS": [], setting: value}
    with override_settings(**overrides):
        with pytest.raises(ValueError):
            DjangoTracker()


def test_override_default_tracker_when_enabled(saved_trackers):
    previous = tracker.Tracker()
    tracker.register_tracker(previous)
    with override_settings(EVENT_TRACKING_ENABLED=True, EVENT_TRACKING_BACKENDS=OPEN_EDX_BACKENDS):
        override_default_tracker()
    installed = tracker.get_tracker()
    assert isinstance(installed, DjangoTracker)
    assert installed is not previous
    tracker.emit("edx.course.enrollment.activated")
    segment = installed.get_backend("segmentio").backends["segment"]
    assert [e["name"] for e in segment.events] == ["edx.course.enrollment.activated"]


@pytest.mark.parametrize("enabled", [False, None, 0])
def test_override_default_tracker_leaves_default_alone_when_disabled(saved_trackers, enabled):
    previous = tracker.Tracker()
    tracker.register_tracker(previous)
    with override_settings(EVENT_TRACKING_ENABLED=enabled, EVENT_TRACKING_BACKENDS=OPEN_EDX_BACKENDS):
        override_default_tracker()
    assert tracker.get_tracker() is previous


def test_package_level_import_is_lazy_and_core_does_not_import_django():
    result = run_python(
        """
        import sys
        import eventtracking.tracker, eventtracking.locator, eventtracking.loader
        import eventtracking.backends.routing, eventtracking.backends.logger
        import eventtracking.processors.whitelist, eventtracking.processors.regex_filter
        assert "django" not in sys.modules, "core modules imported django"

        import eventtracking.django
        assert "eventtracking.django.django_tracker" not in sys.modules

        from django.conf import settings
        assert not settings.configured
        from eventtracking.django import DjangoTracker
        from eventtracking.django.django_tracker import DjangoTracker as Direct
        assert DjangoTracker is Direct
        assert not settings.configured
        print("OK")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_installed_app_ready_installs_default_tracker():
    result = run_python(
        """
        import django
        from django.apps import apps
        from django.conf import settings

        class Rec:
            events = []
            def send(self, event):
                Rec.events.append(event)

        settings.configure(
            INSTALLED_APPS=["eventtracking.django"],
            EVENT_TRACKING_ENABLED=True,
            EVENT_TRACKING_BACKENDS={
                "segmentio": {
                    "ENGINE": "eventtracking.backends.routing.RoutingBackend",
                    "OPTIONS": {
                        "backends": {"segment": {"ENGINE": "__main__.Rec"}},
                        "processors": [{
                            "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
                            "OPTIONS": {"whitelist": ["edx.course.enrollment.activated"]},
                        }],
                    },
                }
            },
        )
        django.setup()

        from eventtracking import tracker
        from eventtracking.django import DjangoTracker
        config = apps.get_app_config("eventtracking_django")
        assert config.name == "eventtracking.django", config.name
        assert isinstance(tracker.get_tracker(), DjangoTracker)
        tracker.emit("edx.course.enrollment.activated", {"n": 1})
        tracker.emit("edx.other", {"n": 2})
        assert [e["name"] for e in Rec.events] == ["edx.course.enrollment.activated"], Rec.events
        print("OK")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_installed_app_ready_does_nothing_when_disabled():
    result = run_python(
        """
        import django
        from django.conf import settings

        settings.configure(INSTALLED_APPS=["eventtracking.django"])
        django.setup()

        from eventtracking import tracker
        try:
            tracker.get_tracker()
        except KeyError:
            print("OK")
        else:
            print("a default tracker was registered although EVENT_TRACKING_ENABLED is unset")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
