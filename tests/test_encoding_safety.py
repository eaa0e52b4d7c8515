"""No Python code runs inside orjson, so an event that changes while it is sent cannot crash the
process: another thread mutating it, a ``__str__`` or a tzinfo mutating it, a tzinfo that raises.

Each crash case runs in a subprocess: a segfault there fails the test instead of killing the run.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import textwrap

from eventtracking.backends.logger import encode_event
from eventtracking.backends.segment import SegmentBackend
from eventtracking.segment.encoding import Unserializable, encode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Shared by the scripts: values that make orjson refuse the event (so the walk runs), and
# values whose Python code changes the event while it is being encoded.
PRELUDE = """
import datetime, decimal, json, sys, threading
sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can

class Opaque:
    def __str__(self):
        return "course-v1:edX+DemoX+2026"

class Mutating:
    '''A value whose str() changes the dict holding it, as an attacker's would.'''
    def __init__(self, owner):
        self.owner = owner
    def __str__(self):
        self.owner.clear()
        self.owner.update({f"k{i}": i for i in range(50)})
        return "mutated"

class MutatingZone(datetime.tzinfo):
    '''A pytz-like tzinfo whose utcoffset() changes the event.'''
    def __init__(self, owner):
        self.owner = owner
    def utcoffset(self, dt):
        self.owner.clear()
        self.owner.update({f"z{i}": i for i in range(50)})
        return datetime.timedelta(0)
    def dst(self, dt):
        return None
    def tzname(self, dt):
        return "Z"

class RaisingZone(datetime.tzinfo):
    def utcoffset(self, dt):
        raise RuntimeError("no offset")
    def dst(self, dt):
        return None
    def tzname(self, dt):
        return "X"
"""


def run_isolated(body: str, timeout: float = 240) -> subprocess.CompletedProcess:
    script = PRELUDE + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    # A negative return code is a signal: -11 is the segfault this file is about.
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


def test_another_thread_mutating_the_event_during_a_direct_send_cannot_crash(collector):
    result = run_isolated(
        f"""
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host="{collector.url}", flush_interval=0.05)
        data = {{"course": Opaque(), "price": decimal.Decimal("9.99"), "n": 0}}
        event = {{"name": "race", "context": {{"user_id": 1}}, "data": data}}
        stop = threading.Event()

        def mutate():
            i = 0
            while not stop.is_set():
                i += 1
                data[f"x{{i % 64}}"] = [i, Opaque()]
                if i % 3 == 0:
                    data.pop(f"x{{(i * 7) % 64}}", None)
                if i % 97 == 0:
                    data.clear()
                    data.update(course=Opaque(), price=decimal.Decimal("1.5"))

        threads = [threading.Thread(target=mutate) for _ in range(2)]
        for thread in threads:
            thread.start()
        for _ in range(20000):
            backend.send(event)
        stop.set()
        for thread in threads:
            thread.join()
        assert backend.flush(120)
        stats = backend.stats()
        print(json.dumps({{"delivered": stats["delivered"], "skipped": stats["skipped"]}}))
        """
    )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    print(outcome)
    # Every send was either delivered or skipped with the clear reason; nothing else.
    assert set(outcome["skipped"]) <= {"changed_during_send"}
    assert outcome["delivered"] + sum(outcome["skipped"].values()) == 20000
    assert outcome["delivered"] > 0


def test_a_str_that_changes_the_event_is_skipped_with_a_clear_reason():
    result = run_isolated(
        """
        from eventtracking.segment.encoding import Unserializable, encode
        outcomes = set()
        for _ in range(200):
            data = {f"a{i}": i for i in range(8)}
            data["a3"] = Mutating(data)
            try:
                encode({"properties": {"data": data}})
                outcomes.add("encoded")
            except Unserializable as error:
                outcomes.add(error.reason)
                assert str(error).startswith("changed while being encoded at properties.data"), error
        print(sorted(outcomes))
        """
    )
    assert "['changed_during_send']" in result.stdout


def test_a_tzinfo_that_changes_the_event_cannot_crash():
    result = run_isolated(
        """
        from eventtracking.segment.encoding import Unserializable, encode
        from eventtracking.backends.logger import encode_event
        for place in ("top", "deep"):
            for _ in range(200):
                data = {f"a{i}": i for i in range(8)}
                when = datetime.datetime(2026, 1, 1, tzinfo=MutatingZone(data))
                message = {"timestamp": when, "properties": {"timestamp": when, "data": data}}
                if place == "deep":
                    data["when"] = when
                try:
                    encode(message)
                except Unserializable as error:
                    assert error.reason == "changed_during_send", error
                try:
                    encode_event({"timestamp": when, "data": data})
                except RuntimeError:
                    pass  # the stdlib fallback raises "changed size": the logger counts it
        print("survived")
        """
    )
    assert "survived" in result.stdout


def test_a_tzinfo_that_raises_deep_in_the_event_is_kept_as_text():
    # orjson 3.13 segfaults on this datetime when it meets it itself.
    result = run_isolated(
        """
        from eventtracking.segment.encoding import encode
        from eventtracking.backends.logger import LoggerBackend
        when = datetime.datetime(2026, 1, 1, tzinfo=RaisingZone())
        print(encode({"properties": {"data": {"when": when, "n": 1}}}).decode())
        logger_backend = LoggerBackend(level="warning")  # enabled on the root logger by default
        logger_backend.send({"name": "x", "data": {"when": when}})
        print(logger_backend.errors)
        """
    )
    lines = result.stdout.splitlines()
    assert json.loads(lines[0]) == {"properties": {"data": {"when": "<unprintable datetime>", "n": 1}}}
    assert lines[1] == "1"  # the logger counted the event it could not encode, and lived


def test_the_backend_counts_a_changing_event_as_changed_during_send(collector):
    backend = SegmentBackend(write_key="k", host=collector.url, flush_interval=0.02)

    class Clearing:
        def __init__(self, owner):
            self.owner = owner

        def __str__(self):
            self.owner["grown"] = 1
            return "x"

    data: dict = {}
    data["v"] = Clearing(data)
    backend.send({"name": "x", "context": {"user_id": 1}, "data": data})
    assert backend.flush(30)
    assert backend.stats()["skipped"] == {"changed_during_send": 1}
    backend.close(5)


def test_plain_events_with_datetimes_stay_exact():
    zone = datetime.timezone(datetime.timedelta(hours=-3))
    when = datetime.datetime(2026, 5, 1, 12, 30, 0, 250000, tzinfo=zone)
    message = {"timestamp": when, "properties": {"timestamp": when, "data": {"at": when, "d": when.date()}}}
    assert json.loads(encode(message)) == {
        "timestamp": "2026-05-01T12:30:00.250000-03:00",
        "properties": {
            "timestamp": "2026-05-01T12:30:00.250000-03:00",
            "data": {"at": "2026-05-01T12:30:00.250000-03:00", "d": "2026-05-01"},
        },
    }
    # The caller's dicts are not changed by the written timestamps.
    assert message["timestamp"] is when and message["properties"]["timestamp"] is when
    assert json.loads(encode_event({"timestamp": when}))["timestamp"] == "2026-05-01T15:30:00.250000+00:00"


def test_unserializable_keeps_its_reason_word():
    cycle: dict = {}
    cycle["self"] = cycle
    try:
        encode({"data": cycle})
    except Unserializable as error:
        assert error.reason == "unserializable"
    else:
        raise AssertionError("a cycle was encoded")
