"""
EventBusRoutingBackend (producer side), eventtracking.handlers (consumer side), eventtracking.config
and the Django app connecting the receiver.

openedx-events' signal is the real one; what is left out here is the bus itself (Redis/Kafka):
the consumer side is driven the way openedx-events' consumers do it, with
send_event_with_custom_metadata. Real buses are the async-engines tests.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

import pytest
from django.conf import settings
from django.test.utils import override_settings

if not settings.configured:
    settings.configure()

from openedx_events.analytics.data import TrackingLogData  # noqa: E402
from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED  # noqa: E402
from test_django import run_python  # noqa: E402

from eventtracking import handlers, tracker  # noqa: E402
from eventtracking.backends.event_bus import EventBusRoutingBackend  # noqa: E402
from eventtracking.backends.logger import DateTimeJSONEncoder  # noqa: E402
from eventtracking.config import SEND_TRACKING_EVENT_EMITTED_SIGNAL  # noqa: E402
from eventtracking.processors.whitelist import NameWhitelistProcessor  # noqa: E402

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
NAME = "edx.course.enrollment.activated"
ON = {"SEND_TRACKING_EVENT_EMITTED_SIGNAL": True, "EVENT_BUS_TRACKING_LOGS": [NAME]}


class Recorder:
    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)


@pytest.fixture
def emitted():
    """Every TRACKING_EVENT_EMITTED signal sent in this process, as (tracking_log, from_bus)."""
    received = []

    def listen(sender, signal, **kwargs):
        received.append((kwargs["tracking_log"], kwargs["from_event_bus"]))

    TRACKING_EVENT_EMITTED.connect(listen)
    yield received
    TRACKING_EVENT_EMITTED.disconnect(listen)


def event(name=NAME, timestamp=WHEN):
    return {
        "name": name,
        "timestamp": timestamp,
        "data": {"course_id": "course-v1:a+b+c", "at": datetime.datetime(2026, 1, 1, 12, tzinfo=UTC)},
        "context": {"user_id": 7},
    }


def test_toggle_reads_the_setting_default_false():
    with override_settings():
        del settings.SEND_TRACKING_EVENT_EMITTED_SIGNAL
        assert SEND_TRACKING_EVENT_EMITTED_SIGNAL.is_enabled() is False
    with override_settings(SEND_TRACKING_EVENT_EMITTED_SIGNAL=True):
        assert SEND_TRACKING_EVENT_EMITTED_SIGNAL.is_enabled() is True


def test_publishes_a_tracking_log_like_the_original(emitted):
    with override_settings(**ON):
        EventBusRoutingBackend().send(event())
    [(log, from_bus)] = emitted
    assert from_bus is False
    assert log == TrackingLogData(
        name=NAME,
        timestamp=WHEN,
        data=json.dumps(event()["data"], cls=DateTimeJSONEncoder),
        context=json.dumps({"user_id": 7}),
    )
    assert json.loads(log.data)["at"] == "2026-01-01T12:00:00+00:00"


def test_a_string_timestamp_is_parsed(emitted):
    with override_settings(**ON):
        EventBusRoutingBackend().send(event(timestamp="2026-01-02T03:04:05.678901+00:00"))
    assert emitted[0][0].timestamp == WHEN


@pytest.mark.parametrize(
    "overrides",
    [
        {"SEND_TRACKING_EVENT_EMITTED_SIGNAL": False, "EVENT_BUS_TRACKING_LOGS": [NAME]},
        {"SEND_TRACKING_EVENT_EMITTED_SIGNAL": True, "EVENT_BUS_TRACKING_LOGS": ["other"]},
        {"SEND_TRACKING_EVENT_EMITTED_SIGNAL": True},
    ],
)
def test_nothing_is_published_when_off_or_not_listed(emitted, overrides):
    with override_settings(**overrides):
        if "EVENT_BUS_TRACKING_LOGS" not in overrides:
            del settings.EVENT_BUS_TRACKING_LOGS
        EventBusRoutingBackend().send(event())
    assert emitted == []


def test_producer_side_does_not_run_the_processors_or_backends(emitted, saved_trackers):
    inner = Recorder()
    backend = EventBusRoutingBackend(backends={"inner": inner})
    tracker.register_tracker(tracker.Tracker({"bus": backend}))
    with override_settings(**ON):
        tracker.emit(NAME, {"n": 1})
    assert [log.name for log, _ in emitted] == [NAME]
    assert inner.events == []  # they run where the bus is consumed


def consume(tracking_log: TrackingLogData) -> None:
    """What an openedx-events consumer does with a message read from the bus."""
    metadata = TRACKING_EVENT_EMITTED.generate_signal_metadata()
    TRACKING_EVENT_EMITTED.send_event_with_custom_metadata(metadata, tracking_log=tracking_log)


def test_messages_from_the_bus_reach_every_bus_backends_processors_and_backends(saved_trackers, caplog):
    kept, filtered, other = Recorder(), Recorder(), Recorder()

    def tag(event):
        event["data"]["tagged"] = True  # must not leak into the other bus backend's copy

    tracker.register_tracker(
        tracker.Tracker(
            {
                "bus_a": EventBusRoutingBackend(processors=[tag], backends={"r": kept}),
                "bus_b": EventBusRoutingBackend(
                    processors=[NameWhitelistProcessor(whitelist=["nope"])], backends={"r": filtered}
                ),
                "bus_c": EventBusRoutingBackend(backends={"r": other}),
                "plain": Recorder(),
            }
        )
    )
    log = TrackingLogData(name=NAME, timestamp=WHEN, data='{"n": 1}', context='{"user_id": 7}')
    with caplog.at_level(logging.INFO, logger="eventtracking.handlers"):
        consume(log)
    rebuilt = {"name": NAME, "timestamp": WHEN, "data": {"n": 1}, "context": {"user_id": 7}}
    assert kept.events == [dict(rebuilt, data={"n": 1, "tagged": True})]
    assert filtered.events == []
    assert other.events == [rebuilt]
    assert f"[EventEmissionExit] skipping event {NAME}" in caplog.text
    assert tracker.get_tracker().backends["plain"].events == []  # only the bus backends


def test_a_local_signal_is_not_routed_again(saved_trackers, emitted):
    inner = Recorder()
    tracker.register_tracker(tracker.Tracker({"bus": EventBusRoutingBackend(backends={"r": inner})}))
    with override_settings(**ON):
        tracker.emit(NAME, {})  # the local send that puts it on the bus
    assert len(emitted) == 1 and inner.events == []
    connected = [entry[1]() for entry in TRACKING_EVENT_EMITTED.receivers]
    assert handlers.send_tracking_log_to_backends in connected


def test_django_app_connects_the_receiver():
    result = run_python(
        """
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=["eventtracking.django"],
            EVENT_TRACKING_ENABLED=True,
            EVENT_TRACKING_BACKENDS={"bus": {
                "ENGINE": "eventtracking.backends.event_bus.EventBusRoutingBackend",
                "OPTIONS": {"backends": {"r": {"ENGINE": "__main__.Rec"}}},
            }},
        )
        class Rec:
            events = []
            def send(self, event):
                Rec.events.append(event["name"])
        from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
        assert not TRACKING_EVENT_EMITTED.receivers
        django.setup()
        from openedx_events.analytics.data import TrackingLogData
        import datetime
        log = TrackingLogData(name="n", timestamp=datetime.datetime.now(datetime.timezone.utc),
                              data="{}", context="{}")
        metadata = TRACKING_EVENT_EMITTED.generate_signal_metadata()
        TRACKING_EVENT_EMITTED.send_event_with_custom_metadata(metadata, tracking_log=log)
        assert Rec.events == ["n"], Rec.events
        print("OK")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_without_openedx_events_the_app_starts_without_the_receiver(monkeypatch):
    from eventtracking.django.apps import connect_event_bus_handlers

    monkeypatch.setitem(sys.modules, "openedx_events", None)
    assert connect_event_bus_handlers() is False
    monkeypatch.delitem(sys.modules, "openedx_events")
    assert connect_event_bus_handlers() is True


def test_publishes_what_the_original_publishes():
    import subprocess
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    outputs = {}
    for side, python in (("ours", sys.executable), ("original", tests.parent / ".envs/original/bin/python")):
        assert Path(python).exists(), f"{python} is missing: `make test` builds it"
        result = subprocess.run(
            [str(python), "bus_wire.py"], cwd=tests, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        outputs[side] = json.loads(result.stdout.strip().splitlines()[-1])
    assert ".envs/original/" in outputs["original"]["package"]
    assert ".envs/" not in outputs["ours"]["package"]
    assert outputs["ours"]["published"] == outputs["original"]["published"]
    assert [name for name, *_ in outputs["ours"]["published"]] == [NAME, "edx.string.time"]
