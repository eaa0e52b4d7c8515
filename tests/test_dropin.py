"""Drop-in mode: the official client's global module, configured by the app, pointed at the collector."""

from __future__ import annotations

import datetime
import logging
import sys
from unittest import mock

import pytest

from eventtracking.backends import segment as segment_backend
from eventtracking.backends.segment import SegmentBackend

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)


@pytest.fixture
def global_client(collector):
    """segment.analytics (2.x) configured the way Open edX configures it, aimed at the collector."""
    from segment import analytics

    saved = (analytics.write_key, analytics.host, analytics.default_client)
    analytics.write_key, analytics.host, analytics.default_client = "dropin-key", collector.url, None
    yield analytics
    if analytics.default_client is not None:
        analytics.shutdown()
    analytics.write_key, analytics.host, analytics.default_client = saved


def test_mapping_on_the_wire_through_the_official_client(global_client, collector):
    backend = SegmentBackend()
    event = {
        "name": "edx.course.enrollment.activated",
        "timestamp": WHEN,
        "data": {"course_id": "course-v1:a+b+c"},
        "context": {
            "user_id": 0,
            "client_id": "ga.1",
            "ip": "198.51.100.7",
            "agent": "UA/2",
            "host": "lms.example.org",
            "path": "/courses/x",
            "referer": "https://r/",
        },
    }
    backend.send(event)
    backend.send({"name": "skipped", "context": {"user_id": None}})
    assert backend.flush(10)
    [message] = collector.messages()
    assert message["event"] == "edx.course.enrollment.activated"
    assert message["userId"] == "0"
    assert message["context"]["Google Analytics"] == {"clientId": "ga.1"}
    assert message["context"]["ip"] == "198.51.100.7"
    assert message["context"]["userAgent"] == "UA/2"
    assert message["context"]["page"] == {
        "path": "/courses/x",
        "referrer": "https://r/",
        "url": "https://lms.example.org/courses/x",
    }
    # the event's own time, not the time of sending (the original backend lost it)
    assert datetime.datetime.fromisoformat(message["timestamp"]) == WHEN
    assert message["properties"]["data"] == {"course_id": "course-v1:a+b+c"}
    assert message["properties"]["context"]["user_id"] == 0
    assert message["messageId"]
    stats = backend.stats()
    assert stats["accepted"] == 1 and stats["skipped"] == {"no_user_id": 1}


def test_drop_in_send_never_raises_when_the_client_refuses(monkeypatch, caplog):
    refusing = GlobalModule("analytics", write_key="key")
    refusing.track = mock.Mock(side_effect=AssertionError("event must be a string"))
    monkeypatch.setattr(segment_backend, "analytics", refusing)
    backend = SegmentBackend()
    with caplog.at_level(logging.WARNING):
        backend.send({"name": "x", "context": {"user_id": 1}})
        backend.send({"name": "y", "context": {"user_id": 2}})
    assert backend.stats()["skipped"] == {"client_error": 2}
    assert caplog.text.count("refused an event") == 1


@pytest.fixture
def thread_exceptions(monkeypatch):
    """Exceptions that escaped a thread (they would print a raw traceback)."""
    import threading

    escaped = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    return escaped


def test_a_client_without_write_key_is_warned_about_once_and_counted(
    global_client, caplog, thread_exceptions
):
    global_client.write_key = None  # misconfigured app
    global_client.default_client = None
    backend = SegmentBackend()
    with caplog.at_level(logging.WARNING):
        for user_id in (1, 2, 3):
            backend.send({"name": "x", "context": {"user_id": user_id}})
        assert backend.flush(5) is True  # nothing was handed to the client: nothing to flush
    assert backend.stats()["skipped"] == {"no_write_key": 3}
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "has no write_key" in warning.getMessage()
    assert "segment.analytics.write_key" in warning.getMessage()
    assert thread_exceptions == []


def test_the_key_is_read_at_send_time(global_client, collector):
    key, global_client.write_key = global_client.write_key, None
    backend = SegmentBackend()  # built with the settings, before the app sets the key
    backend.send({"name": "early", "context": {"user_id": 1}})
    global_client.write_key = key
    backend.send({"name": "late", "context": {"user_id": 1}})
    assert backend.flush(10)
    assert [m["event"] for m in collector.messages()] == ["late"]
    assert backend.stats()["skipped"] == {"no_write_key": 1}


def test_a_failing_client_flush_returns_false_without_a_traceback(caplog, thread_exceptions):
    class Failing:
        write_key = "k"
        default_client = None

        @staticmethod
        def track(**kwargs):
            pass

        @staticmethod
        def flush():
            raise RuntimeError("queue broken")

    with mock.patch.object(segment_backend, "analytics", Failing):
        backend = SegmentBackend()
        backend.send({"name": "x", "context": {"user_id": 1}})
        with caplog.at_level(logging.WARNING):
            assert backend.flush(10) is False
    assert "flush of the global Segment client failed: RuntimeError: queue broken" in caplog.text
    assert thread_exceptions == []


def test_patching_the_module_level_analytics_is_what_the_backend_uses():
    with mock.patch("eventtracking.backends.segment.analytics") as patched:
        SegmentBackend().send({"name": "x", "context": {"user_id": 5}})
    patched.track.assert_called_once()
    assert patched.track.call_args.kwargs["user_id"] == "5"
    assert patched.track.call_args.kwargs["event"] == "x"


def test_no_client_installed_warns_once_and_counts(monkeypatch, caplog):
    # Make both imports fail the way they do when neither package is installed.
    monkeypatch.setitem(sys.modules, "segment.analytics", None)
    monkeypatch.setitem(sys.modules, "segment", None)
    monkeypatch.setitem(sys.modules, "analytics", None)
    assert segment_backend._import_clients() == (None, None)
    monkeypatch.setattr(segment_backend, "_ANALYTICS", None)
    monkeypatch.setattr(segment_backend, "_SEGMENT_ANALYTICS", None)
    monkeypatch.setattr(segment_backend, "analytics", None)
    with caplog.at_level(logging.WARNING):
        backend = SegmentBackend()
    assert caplog.text.count("neither segment.analytics") == 1
    caplog.clear()
    for i in range(3):
        backend.send({"name": "x", "context": {"user_id": i}})
    assert backend.stats()["skipped"] == {"no_client": 3}
    assert "neither" not in caplog.text  # warned once, at construction
    assert backend.flush(1) is True


class GlobalModule:
    """A stand-in for a global client module (1.x ``analytics`` or 2.x ``segment.analytics``)."""

    def __init__(self, name, write_key=None):
        self.__name__ = name
        self.write_key = write_key
        self.default_client = None
        self.calls = []

    def track(self, **kwargs):
        self.calls.append(kwargs["event"])

    def flush(self):
        pass


@pytest.fixture
def both_modules(monkeypatch):
    """analytics-python 1.4.post1's layout: ``analytics`` and ``segment.analytics`` side by side."""
    one_x, two_x = GlobalModule("analytics"), GlobalModule("segment.analytics")
    monkeypatch.setattr(segment_backend, "_ANALYTICS", one_x)
    monkeypatch.setattr(segment_backend, "_SEGMENT_ANALYTICS", two_x)
    monkeypatch.setattr(segment_backend, "analytics", one_x)
    return one_x, two_x


@pytest.mark.parametrize(
    "keys,chosen",
    [
        (("key", None), "analytics"),  # edx-platform: analytics.write_key = LMS_SEGMENT_KEY
        ((None, "key"), "segment.analytics"),
        (("key", "key"), "analytics"),  # as the original
        ((None, None), "analytics"),  # as the original (and warned about: no write key)
    ],
)
def test_both_modules_installed_the_one_with_a_key_is_used(both_modules, keys, chosen):
    backend = SegmentBackend()
    for module, key in zip(both_modules, keys):
        module.write_key = key
    assert segment_backend._global_client().__name__ == chosen
    backend.send({"name": "x", "context": {"user_id": 5}})
    delivered = {module.__name__: module.calls for module in both_modules}
    if keys == (None, None):
        assert delivered == {"analytics": [], "segment.analytics": []}
        assert backend.stats()["skipped"] == {"no_write_key": 1}
    else:
        assert delivered[chosen] == ["x"] and sum(map(len, delivered.values())) == 1


def test_the_choice_follows_the_keys_at_send_time(both_modules):
    one_x, two_x = both_modules
    backend = SegmentBackend()
    two_x.write_key = "key"
    backend.send({"name": "first", "context": {"user_id": 5}})
    one_x.write_key = "key"
    backend.send({"name": "second", "context": {"user_id": 5}})
    assert (one_x.calls, two_x.calls) == (["second"], ["first"])
    assert backend.flush(5)


def test_only_the_2x_module_installed_is_used(monkeypatch):
    from segment import analytics

    monkeypatch.setattr(segment_backend, "_ANALYTICS", None)
    monkeypatch.setattr(segment_backend, "analytics", analytics)
    assert segment_backend._global_client() is analytics


def test_the_module_level_name_is_the_installed_client():
    from segment import analytics

    # In this environment only segment-analytics-python 2.x is installed.
    assert segment_backend._import_clients() == (None, analytics)
    assert segment_backend.analytics is analytics


def test_host_without_write_key_is_a_configuration_error():
    with pytest.raises(ValueError, match="write_key"):
        SegmentBackend(host="http://127.0.0.1:1")
