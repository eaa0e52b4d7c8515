"""Drop-in mode: the official client's global module, configured by the app, pointed at the collector."""

from __future__ import annotations

import datetime
import logging
import sys

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


def test_drop_in_send_never_raises_when_the_client_refuses(global_client, caplog):
    global_client.write_key = None  # misconfigured app: the official client raises on construction
    global_client.default_client = None
    backend = SegmentBackend()
    with caplog.at_level(logging.WARNING):
        backend.send({"name": "x", "context": {"user_id": 1}})
        backend.send({"name": "y", "context": {"user_id": 2}})
    assert backend.stats()["skipped"] == {"client_error": 2}
    assert caplog.text.count("refused an event") == 1


def test_no_client_installed_warns_once_and_counts(monkeypatch, caplog):
    # Make both imports fail the way they do when neither package is installed.
    monkeypatch.setitem(sys.modules, "segment.analytics", None)
    monkeypatch.setitem(sys.modules, "segment", None)
    monkeypatch.setitem(sys.modules, "analytics", None)
    with caplog.at_level(logging.WARNING):
        backend = SegmentBackend()
    assert caplog.text.count("neither segment.analytics") == 1
    caplog.clear()
    for i in range(3):
        backend.send({"name": "x", "context": {"user_id": i}})
    assert backend.stats()["skipped"] == {"no_client": 3}
    assert "neither" not in caplog.text  # warned once, at construction
    assert backend.flush(1) is True


def test_falls_back_to_the_1x_module(monkeypatch):
    class OneX:  # stands in for analytics-python 1.x: only the import path is under test
        calls: list = []

        @classmethod
        def track(cls, **kwargs):
            cls.calls.append(kwargs)

    monkeypatch.setitem(sys.modules, "segment.analytics", None)
    monkeypatch.setitem(sys.modules, "segment", None)
    monkeypatch.setitem(sys.modules, "analytics", OneX)
    assert segment_backend._global_client() is OneX
    SegmentBackend().send({"name": "x", "context": {"user_id": 5}})
    assert OneX.calls[0]["user_id"] == "5" and OneX.calls[0]["event"] == "x"


def test_prefers_the_2x_module():
    from segment import analytics

    assert segment_backend._global_client() is analytics


def test_host_without_write_key_is_a_configuration_error():
    with pytest.raises(ValueError, match="write_key"):
        SegmentBackend(host="http://127.0.0.1:1")
