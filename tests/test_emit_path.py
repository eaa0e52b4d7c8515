"""The LMS's emit() path (issue 19): a tracking log through ``logging`` and a whitelist in front of
SegmentBackend (owned mode, to the real collector), with the event handed on instead of copied to
what only reads it. What must still hold: each backend sees an event no other branch changed,
the caller's dicts are untouched, no Python code runs inside orjson, nothing is lost, and the
log's lines carry the values the original's encoder writes."""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta, timezone, tzinfo

import orjson
import pytest

from eventtracking.backends import logger as logger_module
from eventtracking.backends.logger import DateTimeJSONEncoder, LoggerBackend
from eventtracking.backends.routing import RoutingBackend, reads_only
from eventtracking.backends.segment import SegmentBackend
from eventtracking.processors.whitelist import NameWhitelistProcessor
from eventtracking.segment.encoding import encode
from eventtracking.segment.mapping import to_track_message
from eventtracking.tracker import Tracker

LOG_NAME = "tests.emit_path.tracking"
WHITELIST = ["edx.course.enrollment.activated"]


class Lines(logging.Handler):
    """The site's handler: keeps each formatted line."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def tracking_log():
    log = logging.getLogger(LOG_NAME)
    handler = Lines()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield handler
    log.removeHandler(handler)


def lms_backends(url: str, **extra) -> tuple[dict, SegmentBackend]:
    segment = SegmentBackend(write_key="test-key", host=url, flush_interval=0.05)
    backends = {
        "tracking_logs": RoutingBackend(
            backends={"logger": LoggerBackend(name=LOG_NAME, max_event_size=50000)}
        ),
        "segmentio": RoutingBackend(
            backends={"segment": segment}, processors=[NameWhitelistProcessor(whitelist=WHITELIST)]
        ),
        **extra,
    }
    return backends, segment


def request_context(i: int) -> dict:
    return {
        "user_id": 1000 + i,
        "username": f"learner{i}",
        "course_id": "course-v1:edX+DemoX+2026",
        "ip": "203.0.113.42",
        "host": "courses.example.org",
        "path": "/courses/x/courseware/",
        "module": {
            "display_name": "Introduction",
            "usage_key": f"block-v1:edX+DemoX+type@vertical+block@{i}",
        },
    }


def test_the_lms_tracker_logs_and_delivers_every_event_with_the_same_values(collector, tracking_log):
    backends, segment = lms_backends(collector.url)
    tracker = Tracker(backends=backends)
    sent = []
    for i in range(50):
        data = {
            "course_id": "course-v1:edX+DemoX+2026",
            "user_id": 1000 + i,
            "mode": "audit",
            "note": "é\u2028",
        }
        with tracker.context("edx.request", request_context(i)):
            tracker.emit("edx.course.enrollment.activated", data)
        sent.append(data)
    assert segment.flush(30)
    messages = sorted(collector.messages(), key=lambda m: m["properties"]["data"]["user_id"])
    segment.close(5)

    assert len(tracking_log.lines) == 50 and len(messages) == 50  # nothing lost
    for line, message, data in zip(tracking_log.lines, messages, sent):
        logged = json.loads(line)
        assert logged["data"] == data
        # The log line holds the values the original's encoder writes for the same event.
        event = dict(logged, timestamp=datetime.fromisoformat(logged["timestamp"]))
        assert json.loads(json.dumps(event, cls=DateTimeJSONEncoder)) == logged
        # Segment's properties are the logged event itself.
        assert message["properties"] == logged
        assert logged["timestamp"].endswith("+00:00")


def test_a_mutating_processor_or_backend_changes_no_other_branch(collector, tracking_log):
    """Branches named to run before, between and after ours, mutating in place."""

    def mutate(event):
        event["name"] = "hijacked"
        event["data"]["mode"] = "changed"
        event["context"]["module"]["display_name"] = "changed"
        event["context"]["ip"] = "0.0.0.0"

    class MutatingBackend:
        def __init__(self):
            self.seen = []

        def send(self, event):
            mutate(event)
            self.seen.append(event)

    first, last = MutatingBackend(), MutatingBackend()
    inner = MutatingBackend()
    backends, segment = lms_backends(
        collector.url,
        **{
            "a_first": first,
            "m_router": RoutingBackend(backends={"inner": inner}, processors=[mutate]),
            "z_last": last,
        },
    )
    tracker = Tracker(backends=backends)
    data = {"mode": "audit", "user_id": 7}
    context = request_context(7)
    with tracker.context("edx.request", context):
        tracker.emit("edx.course.enrollment.activated", data)
    assert segment.flush(30)
    [message] = collector.messages()
    segment.close(5)

    [line] = tracking_log.lines
    for seen in (json.loads(line), message["properties"]):
        assert seen["name"] == "edx.course.enrollment.activated"
        assert seen["data"] == {"mode": "audit", "user_id": 7}
        assert seen["context"]["module"]["display_name"] == "Introduction"
        assert seen["context"]["ip"] == "203.0.113.42"
    assert message["context"]["ip"] == "203.0.113.42"
    # The caller's data and context are untouched; each mutator saw its own copy.
    assert data == {"mode": "audit", "user_id": 7} and context == request_context(7)
    assert [b.seen[0]["name"] for b in (first, inner, last)] == ["hijacked"] * 3
    assert len({id(b.seen[0]) for b in (first, inner, last)}) == 3
    assert first.seen[0]["context"]["module"] is not last.seen[0]["context"]["module"]


EVENTS = {
    "utc": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    "utc, no microseconds": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    "naive": datetime(2026, 1, 2, 3, 4, 5),
    "text": "2026-01-02T03:04:05Z",
    "absent": None,
}


@pytest.mark.parametrize("stamp", list(EVENTS.values()), ids=list(EVENTS))
def test_segment_properties_and_the_log_line_hold_the_original_encoders_values(stamp):
    event = {"name": "e", "data": {"x": [1, 2.5, None, "é"]}, "context": {"user_id": 3}}
    if stamp is not None:
        event["timestamp"] = stamp
    message = to_track_message(event)
    message["messageId"] = "m-1"
    logged = json.loads(logger_module.encode_event(event))
    assert logged == json.loads(json.dumps(event, cls=DateTimeJSONEncoder))
    assert json.loads(encode(message))["properties"] == logged


class PythonZone(tzinfo):
    """A tzinfo whose methods are Python code: orjson must never call them."""

    calls = 0

    def utcoffset(self, dt):
        PythonZone.calls += 1
        return timedelta(hours=2)

    def dst(self, dt):
        return timedelta(0)

    def tzname(self, dt):
        return "PY"


@pytest.mark.parametrize(
    "event",
    [
        {"name": "e", "timestamp": datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=2))), "context": {}},
        {"name": "e", "timestamp": datetime(2026, 1, 2, tzinfo=PythonZone()), "context": {}},
        {"name": "e", "data": {"when": datetime(2026, 1, 2, tzinfo=PythonZone())}, "context": {}},
        {"name": "e", "data": {"tags": {"a"}}, "context": {}},
    ],
    ids=["offset", "python tzinfo", "nested datetime", "set"],
)
def test_the_log_runs_no_python_code_inside_orjson_and_writes_the_original_values(event, monkeypatch):
    dumps_seen = []
    real = orjson.dumps

    def watching(value, *args, **kwargs):
        assert "default" not in kwargs  # no Python hook inside orjson
        dumps_seen.append(PythonZone.calls)
        result = real(value, *args, **kwargs)
        assert PythonZone.calls == dumps_seen[-1]  # no tzinfo method ran inside orjson
        return result

    monkeypatch.setattr(logger_module.orjson, "dumps", watching)
    logged = json.loads(logger_module.encode_event(event))
    assert dumps_seen  # the fast path was tried, and what it refused went to the stdlib
    monkeypatch.undo()
    assert logged == json.loads(json.dumps(event, cls=SetsAsLists))


class SetsAsLists(DateTimeJSONEncoder):
    """The original's encoder, which refuses sets, writing them as the log does: as lists."""

    def default(self, o):
        return list(o) if isinstance(o, (set, frozenset)) else super().default(o)


def test_a_backend_called_again_logs_the_event_as_it_is_then(tracking_log):
    event = {"name": "e", "data": {"n": 1}}
    backend = LoggerBackend(name=LOG_NAME)
    RoutingBackend(backends={"log": backend}).send(event)
    event["data"]["n"] = 2
    backend.send(event)
    assert [json.loads(line)["data"]["n"] for line in tracking_log.lines] == [1, 2]


def test_threads_each_log_their_own_events(tracking_log):
    tracker = Tracker(backends={"log": RoutingBackend(backends={"l": LoggerBackend(name=LOG_NAME)})})

    def emit(worker: int) -> None:
        for i in range(300):
            tracker.emit("e", {"worker": worker, "i": i})

    threads = [threading.Thread(target=emit, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    logged = sorted(
        (json.loads(line)["data"]["worker"], json.loads(line)["data"]["i"]) for line in tracking_log.lines
    )
    assert logged == sorted((w, i) for w in range(4) for i in range(300))


def test_who_is_handed_the_event_without_a_copy():
    class OwnSend(LoggerBackend):
        def send(self, event):
            event["seen"] = True

    class Inherits(LoggerBackend):
        pass

    patched = LoggerBackend(name=LOG_NAME)
    patched.send = lambda event: None  # type: ignore[method-assign]
    assert reads_only(LoggerBackend(name=LOG_NAME))
    assert reads_only(NameWhitelistProcessor(whitelist=["x"]))
    assert not reads_only(OwnSend(name=LOG_NAME)) and not reads_only(Inherits(name=LOG_NAME))
    assert not reads_only(patched)
    assert not reads_only(SegmentBackend())  # drop-in: the global client keeps the event
    assert not reads_only(lambda event: event)


def test_a_backend_that_keeps_events_gets_a_copy_the_caller_cannot_change():
    class Keeps:
        def __init__(self):
            self.events = []

        def send(self, event):
            self.events.append(event)

    keeper = Keeps()
    data = {"items": [1]}
    tracker = Tracker(backends={"k": keeper, "log": LoggerBackend(name=LOG_NAME)})
    tracker.emit("e", data)
    data["items"].append(2)
    assert keeper.events[0]["data"] == {"items": [1]}


def test_log_records_name_their_caller_without_findcaller(tracking_log, monkeypatch):
    backend = LoggerBackend(name=LOG_NAME)
    backend.send({"name": "e"})
    record = tracking_log.records[-1]
    assert record.pathname == logger_module.__file__ and record.funcName == "send" and record.lineno > 0
    assert record.name == LOG_NAME and record.levelno == logging.INFO

    monkeypatch.setattr(logging, "_srcfile", None)  # the site turned caller lookup off
    backend.send({"name": "e"})
    record = tracking_log.records[-1]
    assert (record.pathname, record.lineno, record.funcName) == ("(unknown file)", 0, "(unknown function)")


def test_a_logger_of_another_class_or_patched_gets_its_log_call(tracking_log, monkeypatch):
    backend = LoggerBackend(name=LOG_NAME)
    calls = []
    monkeypatch.setattr(backend.event_logger, "log", lambda level, text: calls.append((level, text)))
    backend.send({"name": "e"})
    assert calls == [(logging.INFO, '{"name":"e"}')] and tracking_log.lines == []


def test_tracker_context_still_decorates_and_restores():
    tracker = Tracker(backends={})

    @tracker.context("request", {"user_id": 1})
    def resolved():
        return tracker.resolve_context()

    assert resolved() == {"user_id": 1} and resolved() == {"user_id": 1}
    assert tracker.resolve_context() == {}
    with tracker.context("request", {"a": 1}):
        with tracker.context("request", {"b": 2}):
            assert tracker.resolve_context() == {"b": 2}
        assert tracker.resolve_context() == {"a": 1}


def test_a_branch_that_changed_its_copy_logs_its_own_values(tracking_log):
    """A branch's processor changes its own copy: the other branches log the event as given."""

    def mutate(event):
        event["data"]["mode"] = "changed"

    changed_log = logging.getLogger(LOG_NAME + ".changed")
    handler = Lines()
    changed_log.addHandler(handler)
    changed_log.setLevel(logging.INFO)
    changed_log.propagate = False
    try:
        router = RoutingBackend(
            backends={
                "a": LoggerBackend(name=LOG_NAME),
                "b": RoutingBackend(
                    backends={"log": LoggerBackend(name=changed_log.name)}, processors=[mutate]
                ),
                "c": LoggerBackend(name=LOG_NAME),
            }
        )
        router.send({"name": "e", "data": {"mode": "audit"}})
    finally:
        changed_log.removeHandler(handler)
    assert [json.loads(line)["data"]["mode"] for line in tracking_log.lines] == ["audit", "audit"]
    assert [json.loads(line)["data"]["mode"] for line in handler.lines] == ["changed"]


def test_a_declaration_that_fails_is_no_promise_and_send_never_raises():
    class Broken:
        @property
        def reads_only(self):
            raise RuntimeError("broken")

        def __call__(self, event):
            event["data"]["touched"] = True

    assert not reads_only(Broken())
    data = {"n": 1}
    recorder = []
    router = RoutingBackend(backends={"r": type("R", (), {"send": lambda self, e: recorder.append(e)})()})
    router.register_processor(Broken())
    router.send({"name": "e", "data": data})
    assert data == {"n": 1} and recorder[0]["data"] == {"n": 1, "touched": True}


class Recorder:
    """A backend that only reads... and does not keep its promise: it records what it was
    handed, so a test sees whether the router copied."""

    reads_only = True

    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)


def test_a_router_plans_again_when_its_backends_or_processors_change():
    first, second, third = Recorder(), Recorder(), Recorder()
    router = RoutingBackend(backends={"a": first})
    event = {"name": "e", "data": {"n": 1}}
    router.send(event)
    assert first.events[-1] is event  # planned: handed on without a copy

    router.register_backend("b", second)  # through the API
    router.send(event)
    assert len(first.events) == 2 and second.events[-1] is event

    router.backends["b"] = third  # in place, the same length
    router.send(event)
    assert len(second.events) == 1 and third.events[-1] is event

    router.backends.move_to_end("a")  # the order alone
    order = []
    first.send = lambda e: order.append("a")  # type: ignore[method-assign]
    third.send = lambda e: order.append("b")  # type: ignore[method-assign]
    router.send(event)
    assert order == ["b", "a"]

    router.backends = {"c": (fourth := Recorder())}  # replaced whole, a plain dict
    router.send(event)
    assert fourth.events[-1] is event

    def changes(e):
        e["data"]["n"] = 2

    router.processors.append(changes)  # in place: now a processor may change the event
    router.send(event)
    assert event["data"] == {"n": 1} and fourth.events[-1]["data"] == {"n": 2}
    router.processors = []  # replaced: nothing may change it any more
    router.send(event)
    assert fourth.events[-1] is event


def test_a_send_replaced_after_the_plan_was_made_gets_a_copy():
    kept = []
    backend = Recorder()
    router = RoutingBackend(backends={"x": backend, "y": LoggerBackend(name=LOG_NAME)})
    tracker = Tracker(backends={"r": router})
    data = {"items": [1]}
    tracker.emit("e", data)  # planned: the recorder only reads
    backend.send = kept.append  # type: ignore[method-assign]  # a test's mock: it keeps events
    tracker.emit("e", data)
    data["items"].append(2)
    assert kept[0]["data"] == {"items": [1]} and kept[0]["data"] is not data


def test_a_reads_only_answer_is_read_on_every_send():
    class Answers(Recorder):
        answer = True

        @property  # type: ignore[override]
        def reads_only(self):
            return self.answer

    backend = Answers()
    router = RoutingBackend(backends={"a": backend, "b": Recorder()})
    event = {"name": "e", "data": {"n": 1}}
    router.send(event)
    assert backend.events[-1] is event
    backend.answer = False  # it no longer only reads: from now on it gets copies
    router.send(event)
    assert backend.events[-1] == event and backend.events[-1] is not event


def test_only_the_last_backend_of_an_event_the_router_owns_takes_it_without_a_copy():
    class Keeps:  # declares nothing: it gets a copy unless the router owns the event it hands it
        def __init__(self):
            self.events = []

        def send(self, event):
            self.events.append(event)

    processed = []

    def stamps(event):  # may change the event: the router copies it first and owns its copy
        event["stamped"] = True
        processed.append(event)

    first, last = Keeps(), Keeps()
    router = RoutingBackend(backends={"a": first, "b": last}, processors=[stamps])
    event = {"name": "e", "data": {"n": 1}}
    for _ in range(2):  # the plan's first send and a planned one
        router.send(event)
        assert "stamped" not in event
        assert last.events[-1] is processed[-1]  # owned: the last backend takes the router's copy
        assert first.events[-1] == processed[-1] and first.events[-1] is not processed[-1]

    alone = Keeps()
    shared = RoutingBackend(backends={"only": alone})  # nothing copied first: the caller holds it
    nested = RoutingBackend(backends={"inner": shared}, processors=[stamps])
    for _ in range(2):
        shared.send(event)
        assert alone.events[-1] == event and alone.events[-1] is not event
        nested.send(event)  # the nested router is handed the outer one's own copy, as its own
        assert alone.events[-1] is processed[-1] and "stamped" not in event


def test_a_timestamp_is_written_once_for_every_backend_and_never_stale():
    """datetime_json remembers the last plain datetime it wrote (each backend writes the event's
    timestamp): the same object gives the same JSON, another object its own, and a datetime whose
    tzinfo is Python code is asked again every time."""
    from eventtracking.encoding import datetime_json

    first = datetime(2026, 12, 3, 18, 0, 0, 123456, tzinfo=timezone.utc)
    second = datetime(2026, 12, 3, 18, 0, 1, tzinfo=timezone.utc)
    written = datetime_json(first)
    assert datetime_json(first) is written
    assert orjson.dumps({"t": datetime_json(second)}) == b'{"t":"2026-12-03T18:00:01+00:00"}'
    assert orjson.dumps({"t": datetime_json(first)}) == b'{"t":"2026-12-03T18:00:00.123456+00:00"}'
    naive = datetime(2026, 12, 3)
    assert orjson.dumps([datetime_json(naive), datetime_json(naive)]) == (
        b'["2026-12-03T00:00:00+00:00","2026-12-03T00:00:00+00:00"]'
    )

    class Drifting(tzinfo):
        """A zone whose offset grows each time it is asked."""

        def __init__(self) -> None:
            self.asked = 0

        def utcoffset(self, dt):
            self.asked += 1
            return timedelta(hours=self.asked)

        def dst(self, dt):
            return timedelta(0)

    zone = Drifting()
    local = datetime(2026, 12, 3, 12, 0, tzinfo=zone)
    assert orjson.dumps([datetime_json(local), datetime_json(local)]) == (
        b'["2026-12-03T12:00:00+01:00","2026-12-03T12:00:00+02:00"]'
    )
