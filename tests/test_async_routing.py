"""
AsyncRoutingBackend and the Celery task eventtracking.tasks.send_event.

The wire tests run the same script (celery_wire.py) under this package and under the original
event-tracking 4.1.5 (.envs/original, built by `make test`): both queue the same message, and
each one's task takes the other's, which is what a rolling upgrade needs. The other tests run
Celery's tasks eagerly, in this process (the real worker and broker are the async-engines tests).
"""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
from pathlib import Path

import pytest
from celery import Celery

from eventtracking import tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.processors.exceptions import NoBackendEnabled, NoTransformerImplemented
from eventtracking.processors.whitelist import NameWhitelistProcessor
from eventtracking.tasks import COUNTDOWN, MAX_RETRIES, send_event

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
OURS = REPO / ".venv" / "bin" / "python"
ORIGINAL = REPO / ".envs" / "original" / "bin" / "python"

UTC = datetime.timezone.utc
ENROLLED = "edx.course.enrollment.activated"


def wire(python: Path, mode: str, stdin: str = "") -> str:
    assert python.exists(), f"{python} is missing: `make test` builds it"
    result = subprocess.run(
        [str(python), "celery_wire.py", mode],
        cwd=TESTS,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def messages():
    return {"ours": wire(OURS, "produce"), "original": wire(ORIGINAL, "produce")}


def test_queues_the_same_message_as_the_original(messages):
    ours, original = (json.loads(messages[side]) for side in ("ours", "original"))
    assert ours["task"] == original["task"] == "eventtracking.tasks.send_event"
    assert ours["content_type"] == original["content_type"] == "application/json"
    assert json.loads(ours["body"]) == json.loads(original["body"])
    args = json.loads(ours["body"])[0]
    assert args[0] == "xapi" and args[1]["name"] == ENROLLED  # (backend_name, processed_event)
    assert ".envs/original/" in original["package"] and ".envs/" not in ours["package"]
    assert ours["left"] == original["left"] == 0  # the non-whitelisted event was not queued


@pytest.mark.parametrize("producer,consumer", [("original", OURS), ("ours", ORIGINAL)])
def test_each_side_runs_the_others_task(messages, producer, consumer):
    [received] = json.loads(wire(consumer, "consume", messages[producer]))
    assert received["name"] == ENROLLED
    # after Celery's JSON round trip the timestamp is a datetime again (kombu's type tags)
    assert received["timestamp"] == {"datetime": "2026-01-02T03:04:05.678901+00:00"}
    assert received["context"]["nested"] == {"list": [1, 2.5, None, True]}


@pytest.fixture
def eager_app():
    app = Celery("eager-tests", broker="memory://", set_as_current=True)
    app.conf.task_always_eager = True
    app.set_current()
    yield app
    app.close()


class Recorder:
    def __init__(self, error: Exception | None = None):
        self.events: list = []
        self.error = error

    def send(self, event):
        self.events.append(event)
        if self.error is not None:
            raise self.error


def async_tracker(nested, processors=()) -> AsyncRoutingBackend:
    backend = AsyncRoutingBackend(backend_name="xapi", processors=list(processors), backends={"n": nested})
    tracker.register_tracker(tracker.Tracker({"xapi": backend}))
    return backend


def event(name=ENROLLED):
    return {"name": name, "timestamp": datetime.datetime.now(UTC), "data": {"k": [1]}, "context": {}}


def test_processors_run_then_the_task_sends_to_the_nested_backends(eager_app, saved_trackers):
    nested = Recorder()
    async_tracker(nested, [NameWhitelistProcessor(whitelist=[ENROLLED])])
    tracker.emit(ENROLLED, {"n": 1})
    tracker.emit("other", {"n": 2})
    assert [(e["name"], e["data"]) for e in nested.events] == [(ENROLLED, {"n": 1})]


def test_publish_is_a_separate_step_given_the_processed_event(saved_trackers):
    published = []

    class Recording(AsyncRoutingBackend):
        def publish(self, processed_event):
            published.append(processed_event)

    def tag(event):
        event["data"]["tag"] = True

    backend = Recording(backend_name="xapi", processors=[tag])
    original = event()
    backend.send(original)
    assert published[0]["data"] == {"k": [1], "tag": True}
    assert original["data"] == {"k": [1]}  # send() works on a copy

    RoutingBackend(backends={"xapi": backend}).send(event("nested"))  # a parent router calls it too
    assert [e["name"] for e in published] == [ENROLLED, "nested"]


def test_nested_in_a_router_it_is_not_bypassed(eager_app, saved_trackers):
    nested = Recorder()
    backend = async_tracker(nested)
    calls = []
    backend.publish = lambda processed: calls.append(processed)  # patched on the instance
    RoutingBackend(backends={"a": RoutingBackend(backends={"xapi": backend})}).send(event())
    assert len(calls) == 1 and nested.events == []


def test_failures_are_retried_three_times_30_seconds_apart(eager_app, saved_trackers, monkeypatch):
    broken = Recorder(RuntimeError("down"))
    async_tracker(RoutingBackend(backends={"n": broken}))
    # The nested router swallows its backends' errors, as in the original; make the task's own
    # step fail instead: the backend name is looked up again in the worker.
    tracker.get_tracker().backends.pop("xapi")
    retries = []
    real_retry = send_event.retry

    def recording_retry(*args, **kwargs):
        retries.append({key: kwargs[key] for key in ("countdown", "max_retries")})
        return real_retry(*args, **kwargs)

    monkeypatch.setattr(send_event, "retry", recording_retry)
    result = send_event.apply(["xapi", event()])
    assert isinstance(result.result, KeyError)
    assert retries == [{"countdown": 30, "max_retries": 3}] * 4  # the 4th call gives up
    assert (COUNTDOWN, MAX_RETRIES) == (30, 3)


@pytest.mark.parametrize("error", [NoTransformerImplemented("no xAPI"), NoBackendEnabled("off")])
def test_known_exceptions_are_logged_at_info_and_not_retried(eager_app, saved_trackers, error, caplog):
    class Raising:
        calls = 0

        def send(self, event):
            raise AssertionError("the task calls send_to_backends")

        def send_to_backends(self, processed):
            Raising.calls += 1
            raise error

    tracker.register_tracker(tracker.Tracker({"xapi": Raising()}))
    with caplog.at_level(logging.INFO):
        result = send_event.apply(["xapi", event()])
    assert result.successful() and Raising.calls == 1
    [record] = [r for r in caplog.records if "[send_event]" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert f"with backend [xapi], [{error}]" in record.getMessage()


def test_the_task_sends_a_copy_of_what_it_was_given(eager_app, saved_trackers):
    def mutate(event):
        event["name"] = "changed"

    nested = Recorder()
    backend = async_tracker(nested)
    backend.register_backend("z", type("M", (), {"send": staticmethod(mutate)})())
    given = event()
    send_event.apply(["xapi", given])
    assert given["name"] == ENROLLED and nested.events[0]["name"] == ENROLLED
