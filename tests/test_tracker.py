"""Tests for eventtracking.tracker: event shape, contexts, error handling, globals."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest

from eventtracking import tracker
from eventtracking.locator import DefaultContextLocator, ThreadLocalContextLocator
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.tracker import Tracker


class RecordingBackend:
    """Stores every event it receives."""

    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)


class BrokenBackend:
    def send(self, event):
        raise RuntimeError("backend exploded")


@pytest.fixture
def recorder():
    return RecordingBackend()


@pytest.fixture
def trk(recorder):
    return Tracker(backends={"rec": recorder})


def test_emit_builds_event_with_exact_shape(trk, recorder):
    trk.emit("edx.test.event", {"a": 1})
    assert len(recorder.events) == 1
    event = recorder.events[0]
    assert set(event) == {"name", "timestamp", "data", "context"}
    assert event["name"] == "edx.test.event"
    assert event["data"] == {"a": 1}
    assert event["context"] == {}


def test_timestamp_is_aware_utc(trk, recorder):
    trk.emit("x")
    timestamp = recorder.events[0]["timestamp"]
    assert isinstance(timestamp, datetime)
    assert timestamp.tzinfo is not None
    assert timestamp.utcoffset() == timedelta(0)


def test_timestamp_comes_from_patchable_module_datetime(trk, recorder):
    # Open edX tests patch eventtracking.tracker.datetime; that must keep working.
    fixed = datetime(2020, 5, 17, 12, 0, tzinfo=timezone.utc)
    with mock.patch("eventtracking.tracker.datetime") as fake_datetime:
        fake_datetime.now.return_value = fixed
        trk.emit("x")
    fake_datetime.now.assert_called_once_with(timezone.utc)
    assert recorder.events[0]["timestamp"] == fixed


@pytest.mark.parametrize("name", [None, ""])
def test_name_defaults_to_unknown(trk, recorder, name):
    trk.emit(name)
    assert recorder.events[0]["name"] == "unknown"
    assert tracker.UNKNOWN_EVENT_TYPE == "unknown"


def test_emit_without_arguments(trk, recorder):
    trk.emit()
    assert recorder.events[0]["name"] == "unknown"
    assert recorder.events[0]["data"] == {}


def test_emit_keyword_names_match_original(trk, recorder):
    trk.emit(name="n", data={"k": "v"})
    assert recorder.events[0]["name"] == "n"
    assert recorder.events[0]["data"] == {"k": "v"}


def test_caller_data_is_not_mutated_by_processors(recorder):
    def scrub(event):
        event["data"]["secret"] = "***"

    trk = Tracker(backends={"rec": recorder}, processors=[scrub])
    data = {"secret": "hunter2"}
    trk.emit("x", data)
    assert data == {"secret": "hunter2"}
    assert recorder.events[0]["data"] == {"secret": "***"}


def test_single_context_applied_then_removed(trk, recorder):
    trk.enter_context("request", {"user_id": 7})
    trk.emit("inside")
    trk.exit_context("request")
    trk.emit("outside")
    assert recorder.events[0]["context"] == {"user_id": 7}
    assert recorder.events[1]["context"] == {}


def test_later_context_overrides_earlier_keys(trk, recorder):
    with trk.context("outer", {"a": 1, "b": 2}):
        with trk.context("inner", {"a": 10, "c": 3}):
            trk.emit("nested")
        trk.emit("outer_only")
    assert recorder.events[0]["context"] == {"a": 10, "b": 2, "c": 3}
    assert recorder.events[1]["context"] == {"a": 1, "b": 2}


def test_resolve_context_returns_new_dict(trk):
    ctx = {"a": 1}
    trk.enter_context("c", ctx)
    resolved = trk.resolve_context()
    resolved["a"] = 2
    assert ctx == {"a": 1}
    assert trk.resolve_context() == {"a": 1}


def test_context_manager_exits_on_exception(trk, recorder):
    with pytest.raises(ValueError):
        with trk.context("doomed", {"a": 1}):
            raise ValueError("boom")
    assert "doomed" not in trk.located_context
    trk.emit("after")
    assert recorder.events[0]["context"] == {}


def test_context_manager_restores_same_name_on_exit(trk, recorder):
    with trk.context("course", {"course_id": "outer"}):
        with trk.context("course", {"course_id": "inner"}):
            trk.emit("inner")
        trk.emit("outer")
    trk.emit("none")
    assert [e["context"] for e in recorder.events] == [
        {"course_id": "inner"},
        {"course_id": "outer"},
        {},
    ]


def test_exit_unknown_context_raises_key_error(trk):
    with pytest.raises(KeyError):
        trk.exit_context("never-entered")


def test_default_locator_is_default_context_locator():
    assert isinstance(Tracker().context_locator, DefaultContextLocator)
    locator = ThreadLocalContextLocator()
    assert Tracker(context_locator=locator).context_locator is locator


def test_backend_exception_is_logged_and_swallowed(recorder, caplog):
    trk = Tracker(backends={"a_broken": BrokenBackend(), "b_rec": recorder})
    with caplog.at_level(logging.ERROR):
        trk.emit("x")  # must not raise
    assert len(recorder.events) == 1, "backends after the broken one must still run"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("a_broken" in r.getMessage() for r in errors)
    assert any(r.exc_info and "backend exploded" in str(r.exc_info[1]) for r in errors)


def test_processor_exception_is_logged_and_the_event_still_sent(recorder, caplog):
    def broken(event):
        raise RuntimeError("processor exploded")

    trk = Tracker(backends={"rec": recorder}, processors=[broken])
    with caplog.at_level(logging.ERROR):
        trk.emit("x")  # must not raise
    assert [event["name"] for event in recorder.events] == ["x"]
    assert any(r.exc_info and "processor exploded" in str(r.exc_info[1]) for r in caplog.records)


def test_emission_exit_drops_event_silently(recorder, caplog):
    def drop(event):
        raise EventEmissionExit()

    trk = Tracker(backends={"rec": recorder}, processors=[drop])
    with caplog.at_level(logging.DEBUG):
        trk.emit("x")
    assert recorder.events == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_processors_run_in_order_before_backends(recorder):
    calls = []

    def first(event):
        calls.append(("first", dict(event["data"])))
        event["data"]["first"] = True

    def second(event):
        calls.append(("second", dict(event["data"])))
        return {**event, "name": "renamed"}

    trk = Tracker(backends={"rec": recorder}, processors=[first, second])
    trk.emit("x", {})
    assert calls == [("first", {}), ("second", {"first": True})]
    assert recorder.events[0]["name"] == "renamed"
    assert recorder.events[0]["data"] == {"first": True}
    assert trk.processors == [first, second]


def test_each_backend_gets_its_own_copy():
    seen = {}

    class Mutator:
        def send(self, event):
            event["data"]["mutated"] = True
            event["context"]["extra"] = 1

    class Observer:
        def send(self, event):
            seen["data"] = dict(event["data"])
            seen["context"] = dict(event["context"])

    trk = Tracker(backends={"a": Mutator(), "b": Observer()})
    with trk.context("c", {"k": "v"}):
        trk.emit("x", {"d": 1})
    assert seen == {"data": {"d": 1}, "context": {"k": "v"}}


def test_backend_mutation_does_not_leak_into_entered_context():
    class Mutator:
        def send(self, event):
            event["context"]["nested"]["x"] = "changed"

    ctx = {"nested": {"x": "original"}}
    trk = Tracker(backends={"m": Mutator()})
    with trk.context("c", ctx):
        trk.emit("x")
    assert ctx == {"nested": {"x": "original"}}


def test_backends_property_and_get_backend(recorder):
    other = RecordingBackend()
    trk = Tracker(backends={"z": other, "a": recorder})
    assert list(trk.backends) == ["a", "z"]
    assert trk.get_backend("a") is recorder
    with pytest.raises(KeyError):
        trk.get_backend("missing")


def test_invalid_backend_rejected_at_construction():
    with pytest.raises(ValueError):
        Tracker(backends={"bad": object()})


def test_emit_survives_broken_context_locator(recorder, caplog):
    class BrokenLocator:
        def get(self):
            raise RuntimeError("locator exploded")

    trk = Tracker(backends={"rec": recorder}, context_locator=BrokenLocator())
    with caplog.at_level(logging.ERROR):
        trk.emit("x")
    assert recorder.events == []
    assert any("locator exploded" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_register_and_get_tracker(saved_trackers, trk):
    assert tracker.DEFAULT_TRACKER_NAME == "default"
    tracker.register_tracker(trk)
    assert tracker.get_tracker() is trk
    assert tracker.get_tracker("default") is trk
    named = Tracker()
    tracker.register_tracker(named, "other")
    assert tracker.get_tracker("other") is named
    assert tracker.get_tracker() is trk


def test_get_missing_tracker_raises_key_error(saved_trackers):
    with pytest.raises(KeyError):
        tracker.get_tracker("no-such-tracker")


def test_module_level_emit_uses_default_tracker(saved_trackers, trk, recorder):
    tracker.register_tracker(trk)
    tracker.emit("global.event", {"x": 1})
    tracker.emit(name="kw.event")
    assert [e["name"] for e in recorder.events] == ["global.event", "kw.event"]
    assert recorder.events[0]["data"] == {"x": 1}
