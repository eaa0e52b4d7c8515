"""Tests for eventtracking.backends.routing.RoutingBackend."""

from __future__ import annotations

import copy
import logging
import threading

import pytest

from eventtracking.backends.routing import RoutingBackend
from eventtracking.processors.exceptions import EventEmissionExit, NoBackendEnabled, NoTransformerImplemented


class RecordingBackend:
    def __init__(self, calls=None, label=None):
        self.events = []
        self.calls = calls
        self.label = label

    def send(self, event):
        self.events.append(event)
        if self.calls is not None:
            self.calls.append(self.label)


class BrokenBackend:
    def __init__(self, calls=None, label=None):
        self.calls = calls
        self.label = label

    def send(self, event):
        if self.calls is not None:
            self.calls.append(self.label)
        raise RuntimeError("backend exploded")


def make_event(**data):
    return {"name": "test.event", "data": data, "context": {"nested": {"k": "v"}}}


def test_backends_called_in_sorted_key_order():
    calls = []
    router = RoutingBackend(
        backends={name: RecordingBackend(calls, name) for name in ("charlie", "alpha", "bravo")}
    )
    router.send(make_event())
    assert calls == ["alpha", "bravo", "charlie"]
    assert list(router.backends) == ["alpha", "bravo", "charlie"]


def test_backends_registered_later_follow_in_registration_order():
    calls = []
    router = RoutingBackend(backends={"m": RecordingBackend(calls, "m"), "b": RecordingBackend(calls, "b")})
    router.register_backend("z", RecordingBackend(calls, "z"))
    router.register_backend("a", RecordingBackend(calls, "a"))
    router.send(make_event())
    assert calls == ["b", "m", "z", "a"]  # as the original: constructor sorted, later ones appended


def test_unsortable_names_keep_registration_order():
    calls = []
    router = RoutingBackend()
    router.register_backend("b", RecordingBackend(calls, "b"))
    router.register_backend(1, RecordingBackend(calls, 1))
    router.send(make_event())
    assert calls == ["b", 1]


def test_processors_are_chained():
    seen = []

    def add_a(event):
        seen.append(("add_a", sorted(event["data"])))
        event["data"]["a"] = 1  # mutate in place, return None -> event kept

    def replace(event):
        seen.append(("replace", sorted(event["data"])))
        return {**event, "data": {**event["data"], "b": 2}}

    def keep(event):
        seen.append(("keep", sorted(event["data"])))
        return None

    backend = RecordingBackend()
    router = RoutingBackend(backends={"rec": backend}, processors=[add_a, replace, keep])
    router.send(make_event())
    assert seen == [("add_a", []), ("replace", ["a"]), ("keep", ["a", "b"])]
    assert backend.events[0]["data"] == {"a": 1, "b": 2}


def test_emission_exit_drops_event_and_stops_chain(caplog):
    later_calls = []

    def stop(event):
        raise EventEmissionExit()

    backend = RecordingBackend()
    router = RoutingBackend(backends={"rec": backend}, processors=[stop, later_calls.append])
    with caplog.at_level(logging.DEBUG):
        router.send(make_event())
    assert backend.events == []
    assert later_calls == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_failing_processor_is_logged_and_skipped_as_in_the_original(caplog):
    later_calls = []

    def broken(event):
        event["data"]["half"] = "done"
        raise KeyError("missing field")

    backend = RecordingBackend()
    router = RoutingBackend(backends={"rec": backend}, processors=[broken, later_calls.append])
    with caplog.at_level(logging.ERROR, logger="eventtracking.backends.routing"):
        router.send(make_event())  # must not raise
    assert len(backend.events) == 1 and backend.events[0]["data"]["half"] == "done"
    assert len(later_calls) == 1
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(records) == 1
    assert records[0].getMessage() == f"Failed to execute processor: {broken}"  # the original's
    assert isinstance(records[0].exc_info[1], KeyError)


def test_process_event_goes_on_after_a_failure():
    def broken(event):
        raise ValueError("nope")

    router = RoutingBackend(processors=[broken, lambda event: {**event, "after": True}])
    assert router.process_event(make_event())["after"] is True


def test_backend_exception_logged_and_other_backends_still_called(caplog):
    calls = []
    router = RoutingBackend(
        backends={
            "a": RecordingBackend(calls, "a"),
            "b": BrokenBackend(calls, "b"),
            "c": RecordingBackend(calls, "c"),
        }
    )
    with caplog.at_level(logging.ERROR, logger="eventtracking.backends.routing"):
        router.send(make_event())  # must not raise
    assert calls == ["a", "b", "c"]
    records = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(records) == 1
    assert records[0].getMessage() == 'Unable to send edx event "test.event" to backend: b'
    assert "backend exploded" in str(records[0].exc_info[1])


def test_branch_isolation_backend_a_mutation_not_seen_by_b():
    class Mutator:
        def send(self, event):
            event["name"] = "hijacked"
            event["data"]["list"].append("from-a")
            event["context"]["nested"]["k"] = "changed"
            event["data"]["new"] = True

    observer = RecordingBackend()
    router = RoutingBackend(backends={"a": Mutator(), "b": observer})
    original = make_event(list=[1])
    router.send(original)
    assert observer.events == [make_event(list=[1])]


def test_each_backend_receives_distinct_object():
    first, second, third = RecordingBackend(), RecordingBackend(), RecordingBackend()
    router = RoutingBackend(backends={"1": first, "2": second, "3": third})
    event = make_event(x=[1])
    router.send(event)
    received = [first.events[0], second.events[0], third.events[0]]
    assert len({id(e) for e in received}) == 3
    assert len({id(e["data"]["x"]) for e in received}) == 3
    assert all(e is not event for e in received)


def test_last_backend_mutation_not_seen_by_caller_or_earlier_backends():
    class Mutator:
        def send(self, event):
            event["data"]["x"].append("late")

    first = RecordingBackend()
    router = RoutingBackend(backends={"a": first, "z": Mutator()})
    event = make_event(x=[1])
    router.send(event)
    assert first.events[0]["data"]["x"] == [1]
    assert event["data"]["x"] == [1]


def test_processors_do_not_mutate_caller_event():
    def mutate(event):
        event["data"]["x"].append(2)
        event["name"] = "changed"

    backend = RecordingBackend()
    router = RoutingBackend(backends={"rec": backend}, processors=[mutate])
    event = make_event(x=[1])
    snapshot = copy.deepcopy(event)
    router.send(event)
    assert event == snapshot
    assert backend.events[0]["data"]["x"] == [1, 2]
    assert backend.events[0]["name"] == "changed"


def test_uncopyable_values_still_delivered_with_isolated_containers():
    lock = threading.Lock()  # cannot be deep-copied

    class Mutator:
        def send(self, event):
            event["data"]["added"] = True

    observer = RecordingBackend()
    router = RoutingBackend(backends={"a": Mutator(), "b": observer})
    router.send(make_event(lock=lock))
    assert len(observer.events) == 1
    assert observer.events[0]["data"]["lock"] is lock
    assert "added" not in observer.events[0]["data"]


def test_nested_routing_backend():
    inner_backend = RecordingBackend()
    inner = RoutingBackend(backends={"rec": inner_backend}, processors=[lambda e: {**e, "name": "inner"}])
    outer = RoutingBackend(backends={"inner": inner}, processors=[lambda e: e["data"].update(outer=True)])
    outer.send(make_event())
    assert inner_backend.events[0]["name"] == "inner"
    assert inner_backend.events[0]["data"] == {"outer": True}


@pytest.mark.parametrize("backend", [object(), type("NotCallableSend", (), {"send": 42})()])
def test_backend_without_callable_send_rejected(backend):
    with pytest.raises(ValueError, match="send"):
        RoutingBackend(backends={"bad": backend})
    router = RoutingBackend()
    with pytest.raises(ValueError, match="bad"):
        router.register_backend("bad", backend)
    assert "bad" not in router.backends


def test_non_callable_processor_rejected():
    with pytest.raises(ValueError, match="not callable"):
        RoutingBackend(processors=[{"ENGINE": "unresolved"}])
    router = RoutingBackend()
    with pytest.raises(ValueError):
        router.register_processor("not a function")
    assert router.processors == []


def test_register_processor_appends_in_order():
    def a(event):
        return None

    def b(event):
        return None

    router = RoutingBackend(processors=[a])
    router.register_processor(b)
    assert router.processors == [a, b]


def test_isolated_copy_rebuilds_containers_and_shares_only_immutable_values():
    import datetime as dt
    import uuid

    from eventtracking.backends.routing import isolated_copy

    tags = {"a"}
    event = {
        "name": "x",
        "timestamp": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        "data": {"list": [1, {"deep": [2]}], "tags": tags, "pair": ([3],), "id": uuid.uuid4()},
    }
    copied = isolated_copy(event)
    assert copied == event
    assert copied["data"] is not event["data"]
    assert copied["data"]["list"][1]["deep"] is not event["data"]["list"][1]["deep"]
    assert copied["data"]["pair"][0] is not event["data"]["pair"][0]
    assert copied["data"]["tags"] is not tags  # other mutable values are deep-copied
    assert copied["timestamp"] is event["timestamp"]  # immutable values are shared


def test_isolated_copy_keeps_cycles_like_deepcopy():
    from eventtracking.backends.routing import isolated_copy

    event = {"name": "x", "data": {}}
    event["data"]["self"] = event["data"]
    copied = isolated_copy(event)
    assert copied["data"]["self"] is copied["data"] and copied["data"] is not event["data"]


def test_a_nested_router_does_not_copy_again_and_branches_stay_isolated(monkeypatch):
    from eventtracking.backends import routing

    copies = []
    real_copy = routing.isolated_copy
    monkeypatch.setattr(routing, "isolated_copy", lambda event: copies.append(1) or real_copy(event))

    def mutate(event):
        event["data"]["touched"] = True

    calls = []
    inner_rec = RecordingBackend(calls, "inner")
    inner = RoutingBackend(backends={"rec": inner_rec}, processors=[mutate])
    outer_rec = RecordingBackend(calls, "z-outer")
    outer = RoutingBackend(backends={"a-inner": inner, "z-outer": outer_rec})
    original = make_event()
    outer.send(original)
    assert len(copies) == 2  # arrival at the outer router + one for the first branch, none inside
    assert inner_rec.events[0]["data"]["touched"] is True
    assert "touched" not in outer_rec.events[0]["data"] and "touched" not in original["data"]


def test_a_nested_subclass_that_overrides_send_is_called():
    class Deferred(RoutingBackend):
        """The original's AsyncRoutingBackend pattern: send() does its own thing."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.deferred = []

        def send(self, event):
            self.deferred.append(event["name"])

    inner = RecordingBackend()
    deferred = Deferred(backends={"inner": inner})
    RoutingBackend(backends={"a": RecordingBackend(), "deferred": deferred}).send(make_event())
    assert deferred.deferred == ["test.event"]
    assert inner.events == []  # its backends were not run synchronously behind its back


def test_a_send_patched_on_a_plain_nested_router_is_called():
    nested = RoutingBackend(backends={"inner": RecordingBackend()})
    seen = []
    nested.send = seen.append  # how tests across the ecosystem intercept a backend
    RoutingBackend(backends={"nested": nested}).send(make_event())
    assert [event["name"] for event in seen] == ["test.event"]


@pytest.mark.parametrize(
    "error,expected",
    [
        (
            NoTransformerImplemented("none"),
            "[send_to_backends] No transformer has been implemented for edx event \"test.event\", "
            "[NoTransformerImplemented('none')]",
        ),
        (
            NoBackendEnabled("off"),
            '[send_to_backends] Failed to send edx event "test.event" to "b" backend. "b" backend has'
            " not been enabled, [NoBackendEnabled('off')]",
        ),
    ],
)
def test_not_for_this_backend_exceptions_are_logged_at_info(caplog, error, expected):
    class Refusing:
        def send(self, event):
            raise error

    after = RecordingBackend()
    router = RoutingBackend(backends={"b": Refusing(), "c": after})
    with caplog.at_level(logging.DEBUG, logger="eventtracking.backends.routing"):
        router.send(make_event())
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == expected
    assert len(after.events) == 1
