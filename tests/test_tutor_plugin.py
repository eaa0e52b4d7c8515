"""The Tutor plugin (tutor-contrib-eventtracking/), tested as Tutor plugins are, without Docker.

Tutor from PyPI and the plugin live in .envs/tutor (``make .envs/tutor/.installed``; ``make test``
builds it). Each test works in a TUTOR_ROOT sandbox: ``tutor plugins enable eventtracking``,
``tutor config save``, ``tutor config patches show``. The rendered settings patch is then run
against a stand-in of edx-platform's settings module (tests/openedx_site/lms_settings.py: the
platform's EVENT_TRACKING_BACKENDS, ERB's router among them); the EVENT_TRACKING_BACKENDS that
results is checked, built with eventtracking.loader, and made to deliver to the collector.
"""

from __future__ import annotations

import copy
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventtracking import loader
from eventtracking.backends.segment import SegmentBackend

ROOT = Path(__file__).resolve().parent.parent
TUTOR = ROOT / ".envs" / "tutor" / "bin" / "tutor"
SITE = ROOT / "tests" / "openedx_site"  # an LMS in miniature: lms_settings.py is edx-platform's settings
PLATFORM = SITE / "platform"  # edx-platform's processors, as stand-ins
SEGMENT_ENGINE = "eventtracking.backends.segment.SegmentBackend"
PLACEHOLDER = "event-tracking @ git+https://<git host>/<path>.git@<tag>"


def tutor(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the sandbox's ``tutor`` (fails, never skips, when .envs/tutor was not built)."""
    assert TUTOR.exists(), f"{TUTOR} is missing: run `make .envs/tutor/.installed`"
    env = {name: value for name, value in os.environ.items() if not name.startswith("TUTOR_")}
    env.update(TUTOR_ROOT=str(root / "tutor"), TUTOR_PLUGINS_ROOT=str(root / "plugins"))
    env["TUTOR_IGNORE_DICT_PLUGINS"] = "1"  # only the entry-point plugins of the env: ours
    done = subprocess.run(
        [str(TUTOR), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"tutor {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def enabled(root: Path, *settings: str) -> Path:
    """A sandbox with the plugin enabled and the configuration saved with ``--set`` settings."""
    tutor(root, "plugins", "enable", "eventtracking")
    tutor(root, "config", "save", *[arg for setting in settings for arg in ("--set", setting)])
    return root


@pytest.fixture(scope="module")
def lms_settings(tmp_path_factory):
    """The public settings of tests/openedx_site/lms_settings.py, the stand-in of edx-platform's LMS
    settings module (EVENT_TRACKING_BACKENDS as the platform writes it, ERB's router added)."""
    scratch = tmp_path_factory.mktemp("site")
    saved_path, saved_env = list(sys.path), dict(os.environ)
    sys.path[:0] = [str(SITE), str(PLATFORM)]
    os.environ.update(SITE_DB=str(scratch / "site.db"), SITE_LOG=str(scratch / "tracking.log"))
    os.environ.pop("LMS_SEGMENT_KEY", None)
    try:
        module = importlib.import_module("lms_settings")
        return {name: value for name, value in vars(module).items() if name.isupper()}
    finally:
        sys.modules.pop("lms_settings", None)
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)


@pytest.fixture
def platform_settings(lms_settings):
    """A fresh copy of the stand-in's settings, with ``settings`` set: the namespace a patch runs in."""

    def make(**settings: object) -> dict:
        return {**copy.deepcopy(lms_settings), **settings}

    return make


def apply_patch(root: Path, name: str, namespace: dict) -> dict:
    """Run the rendered patch ``name`` in ``namespace`` (the settings module's globals)."""
    patch = tutor(root, "config", "patches", "show", name).stdout
    assert patch.strip(), f"patch {name} is empty"
    exec(compile(patch, name, "exec"), namespace)
    return namespace


def segmentio_settings(settings: dict) -> dict:
    return settings["EVENT_TRACKING_BACKENDS"]["segmentio"]


def segment_options(settings: dict) -> dict:
    return segmentio_settings(settings)["OPTIONS"]["backends"]["segment"].get("OPTIONS", {})


@pytest.fixture
def on_platform_path():
    sys.path.insert(0, str(PLATFORM))
    yield
    sys.path.remove(str(PLATFORM))
    for name in [name for name in sys.modules if name == "common" or name.startswith("common.")]:
        del sys.modules[name]


def test_enabling_adds_the_package_to_the_image_from_its_configured_source(tmp_path):
    root = enabled(tmp_path)
    saved = tutor(root, "config", "save")
    assert "EVENTTRACKING_SOURCE is still a placeholder" in saved.stdout + saved.stderr
    assert tutor(root, "config", "printvalue", "OPENEDX_EXTRA_PIP_REQUIREMENTS").stdout.strip() == repr(
        [PLACEHOLDER]
    )

    source = "event-tracking @ git+https://git.example.org/eventtracking.git@v5.0.0"
    saved = tutor(root, "config", "save", "--set", f"EVENTTRACKING_SOURCE={source}")
    assert "placeholder" not in saved.stdout + saved.stderr
    dockerfile = (root / "tutor" / "env" / "build" / "openedx" / "Dockerfile").read_text()
    assert f"install '{source}'" in dockerfile


def test_a_requirements_list_of_the_operators_own_is_said_to_lack_the_package(tmp_path):
    root = enabled(tmp_path, "EVENTTRACKING_SOURCE=event-tracking==5.0.0")
    saved = tutor(root, "config", "save", "--set", "OPENEDX_EXTRA_PIP_REQUIREMENTS=[other-package]")
    assert "lacks EVENTTRACKING_SOURCE" in saved.stdout + saved.stderr
    saved = tutor(root, "config", "save", "--append", "OPENEDX_EXTRA_PIP_REQUIREMENTS=event-tracking==5.0.0")
    assert "lacks" not in saved.stdout + saved.stderr


def test_lms_patch_makes_the_segment_backend_deliver_by_itself_from_a_spool_on_the_volume(
    tmp_path, collector, on_platform_path, platform_settings
):
    spool = tmp_path / "data" / "eventtracking" / "spool"
    root = enabled(
        tmp_path, f"EVENTTRACKING_SPOOL_DIR={spool}/", f"EVENTTRACKING_SEGMENT_HOST={collector.url}"
    )
    settings = apply_patch(root, "openedx-lms-common-settings", platform_settings(LMS_SEGMENT_KEY="lms-key"))

    expected = platform_settings()["EVENT_TRACKING_BACKENDS"]
    expected["segmentio"]["OPTIONS"]["backends"]["segment"]["OPTIONS"] = {
        "host": collector.url,
        "write_key": "lms-key",
        "spool_dir": f"{spool}/segment",
        "spool_max_bytes": 1024**3,
    }
    assert settings["EVENT_TRACKING_BACKENDS"] == expected  # the rest of the platform's, untouched
    assert settings["EVENT_TRACKING_SEGMENT_CLIENT"] == {
        "host": collector.url,
        "write_key": "lms-key",
        "spool_dir": f"{spool}/client",
    }

    # The platform's two backends (ERB's router needs a configured Django: its tests run it).
    tracking_logs = settings["EVENT_TRACKING_BACKENDS"]["tracking_logs"]
    backends = loader.load({"tracking_logs": tracking_logs, "segmentio": segmentio_settings(settings)})
    segmentio = backends["segmentio"]
    segment = segmentio.backends["segment"]
    assert isinstance(segment, SegmentBackend) and "owned" in repr(segment)
    try:
        event = {"name": "edx.course.enrollment.activated", "timestamp": "2026-01-01T00:00:00+00:00"}
        segmentio.send({**event, "context": {"user_id": 7}, "data": {"course_id": "course-v1:a+b+c"}})
        assert segment.flush(timeout=30)
        assert collector.wait_for(1) == 1
        [message] = collector.messages()
        assert message["event"] == "edx.course.enrollment.activated"
        assert message["userId"] == "7"
        assert segment.stats()["spool"]["dir"] == f"{spool}/segment"
        assert segment.stats()["spool"]["acknowledged"] == 1
    finally:
        segment.close(timeout=10)


def test_cms_patch_takes_the_studio_key(tmp_path, platform_settings):
    root = enabled(tmp_path)
    settings = apply_patch(
        root,
        "openedx-cms-common-settings",
        platform_settings(CMS_SEGMENT_KEY="cms-key", LMS_SEGMENT_KEY="lms-key"),
    )
    assert segment_options(settings) == {
        "write_key": "cms-key",
        "spool_dir": "/openedx/data/eventtracking/spool/segment",
        "spool_max_bytes": 1024**3,
    }
    assert settings["EVENT_TRACKING_SEGMENT_CLIENT"]["write_key"] == "cms-key"
    assert (
        settings["EVENT_TRACKING_SEGMENT_CLIENT"]["spool_dir"] == "/openedx/data/eventtracking/spool/client"
    )


def test_a_site_without_a_segment_key_keeps_the_drop_in_mode(tmp_path, platform_settings):
    root = enabled(tmp_path)
    settings = apply_patch(root, "openedx-lms-common-settings", platform_settings(LMS_SEGMENT_KEY=None))
    assert settings["EVENT_TRACKING_BACKENDS"] == platform_settings()["EVENT_TRACKING_BACKENDS"]
    assert "EVENT_TRACKING_SEGMENT_CLIENT" not in settings


@pytest.fixture
def stats_log_variable():
    """The process's EVENTTRACKING_STATS_LOG_INTERVAL, unset for the test and restored after it."""
    saved = os.environ.pop("EVENTTRACKING_STATS_LOG_INTERVAL", None)
    yield
    os.environ.pop("EVENTTRACKING_STATS_LOG_INTERVAL", None)
    if saved is not None:
        os.environ["EVENTTRACKING_STATS_LOG_INTERVAL"] = saved


def test_every_choice_is_a_config_value(tmp_path, platform_settings, stats_log_variable):
    root = enabled(
        tmp_path,
        "EVENTTRACKING_STATS_LOG_INTERVAL=60",
        "EVENTTRACKING_SPOOL_DIR=",
        "EVENTTRACKING_INSTALL_GLOBAL_CLIENT=false",
        "EVENTTRACKING_BACKEND_OPTIONS={gzip: true, anonymize_ip: true}",
    )
    settings = apply_patch(root, "openedx-lms-common-settings", platform_settings(LMS_SEGMENT_KEY="lms-key"))
    assert segment_options(settings) == {"write_key": "lms-key", "gzip": True, "anonymize_ip": True}
    assert "EVENT_TRACKING_SEGMENT_CLIENT" not in settings
    assert os.environ["EVENTTRACKING_STATS_LOG_INTERVAL"] == "60.0"  # read when the first sender starts

    tutor(root, "config", "save", "--set", "EVENTTRACKING_OWNED_SEGMENT=false")
    settings = apply_patch(root, "openedx-lms-common-settings", platform_settings(LMS_SEGMENT_KEY="lms-key"))
    assert settings["EVENT_TRACKING_BACKENDS"] == platform_settings()["EVENT_TRACKING_BACKENDS"]
