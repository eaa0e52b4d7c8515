"""``eventtracking replay`` against the real collector: shapes, inputs, ids, checkpoints, exit codes."""

from __future__ import annotations

import copy
import datetime
import gzip
import importlib.util
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventtracking.backends.segment import SegmentBackend
from eventtracking.cli import main
from eventtracking.collector import Collector
from eventtracking.replay import Replay, flow, message_id, to_live_event
from eventtracking.replay import lines as lines_module
from eventtracking.replay.checkpoint import Checkpoint
from eventtracking.replay.lines import Source
from eventtracking.replay.loop import DryRun
from eventtracking.segment.mapping import MappingOptions

UTC = datetime.timezone.utc
REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample_tracking.log"
COURSE = "course-v1:DemoX+Py101+2025"


# -- events as the LMS emits and logs them -----------------------------------------------------


def live_server_event(i: int, user_id: object = 7) -> dict:
    """A server event as the LMS emits it (what the live SegmentBackend is given)."""
    return {
        "name": "edx.course.enrollment.activated",
        "timestamp": datetime.datetime(2025, 3, 3, 9, 0, i % 60, 1000 + i, tzinfo=UTC),
        "context": {
            "user_id": user_id,
            "username": "amara",
            "session": "4a6f0c1e2b3d",
            "ip": "203.0.113.7",
            "agent": "Mozilla/5.0",
            "host": "courses.example.org",
            "referer": "https://courses.example.org/dashboard",
            "accept_language": "en-GB",
            "course_id": COURSE,
            "org_id": "DemoX",
            "path": f"/courses/{COURSE}/enroll/{i}",
        },
        "data": {"course_id": COURSE, "user_id": user_id, "mode": "audit", "i": i},
    }


def live_browser_event(i: int) -> dict:
    """A browser event as ``track.views.user_track`` emits it: its payload already parsed."""
    event = live_server_event(i)
    event["name"] = "play_video"
    event["context"].update(path="/event", event_source="browser", page=f"https://courses.example.org/v/{i}")
    event["data"] = {"id": f"block-v1:DemoX+video+{i}", "code": "html5", "currentTime": i / 4}
    return event


def legacy_line(live: dict) -> dict:
    """What Open edX's LegacyFieldMappingProcessor writes to the tracking log for ``live``."""
    event = copy.deepcopy(live)
    context = event["context"]
    for field in ("username", "session", "ip", "agent", "host", "referer", "accept_language"):
        event[field] = context.pop(field, "")
    context.pop("client_id", None)
    data = event.pop("data")
    browser = context.get("event_source") == "browser" and isinstance(data, dict)
    event["event"] = json.dumps(data) if browser else data
    event["time"] = event.pop("timestamp").isoformat()
    event["event_type"] = context.pop("event_type", event.get("name", ""))
    event["event_source"] = context.pop("event_source", "server")
    event["page"] = context.pop("page", None)
    return event


def native_line(live: dict) -> dict:
    """What the LoggerBackend writes for ``live``: the same event, its datetime as ISO 8601."""
    return dict(live, timestamp=live["timestamp"].isoformat())


def write_lines(path: Path, lines: list, compress: bool = False) -> Path:
    data = b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def many_lines(count: int) -> list:
    """Alternately native and legacy lines of server events with user ids."""
    return [(legacy_line if i % 2 else native_line)(live_server_event(i)) for i in range(count)]


def backend_for(collector: Collector, **options) -> SegmentBackend:
    return SegmentBackend(write_key="k", host=collector.url, flush_interval=0.01, **options)


# -- running the command -------------------------------------------------------------------------


def replay(capsys, *argv: str) -> tuple[int, str]:
    code = main(["replay", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def summary_of(output: str) -> dict:
    """The summary's first number on each labelled line: {'lines read': 30, 'events sent': 24, ...}."""
    numbers = {}
    for label, number in re.findall(r"^  ([a-z ]+?)\s{2,}([\d,]+)", output, re.MULTILINE):
        numbers[label] = int(number.replace(",", ""))
    return numbers


def distinct_ids(collector: Collector) -> set:
    return set(collector.message_ids())


TEST_WRITE_KEY = "replay-test-key"  # the collector fixture takes any key; --host needs one


def python_m(*argv: str, **options) -> subprocess.Popen:
    env = {**os.environ, "SEGMENT_WRITE_KEY": TEST_WRITE_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "eventtracking", *argv], cwd=os.getcwd(), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options,
    )


@pytest.fixture(autouse=True)
def test_write_key(monkeypatch, tmp_path):
    """Every run has a write key in $SEGMENT_WRITE_KEY unless the test removes it, and runs in
    its own directory (where ./eventtracking-deadletters goes)."""
    monkeypatch.setenv("SEGMENT_WRITE_KEY", TEST_WRITE_KEY)
    monkeypatch.chdir(tmp_path)


# -- shapes --------------------------------------------------------------------------------------


def test_replayed_events_have_the_live_backends_properties(collector, tmp_path):
    server, browser = live_server_event(1), live_browser_event(2)
    live = SegmentBackend(write_key="k", host=collector.url, flush_interval=0.05)
    for event in (server, browser):
        live.send(event)
    assert live.close(10)
    live_messages = {message["event"]: message for message in collector.messages()}

    log = write_lines(tmp_path / "tracking.log", [legacy_line(server), legacy_line(browser)])
    with Collector() as target:
        assert main(["replay", str(log), "--host", target.url]) == 0
        replayed = {message["event"]: message for message in target.messages()}

    for name in ("edx.course.enrollment.activated", "play_video"):
        expected, got = live_messages[name], replayed[name]
        for key in ("type", "userId", "timestamp"):
            assert got[key] == expected[key]
        assert got["context"] == expected["context"]
        properties = copy.deepcopy(expected["properties"])
        if name != "play_video":
            # The LMS logs a server event with event_source "server" and page null; they are kept.
            properties["context"].update(event_source="server", page=None)
        assert got["properties"] == properties
    # A server event with page null gets its url from host + path, as the live one does.
    assert replayed["edx.course.enrollment.activated"]["context"]["page"]["url"] == (
        f"https://courses.example.org/courses/{COURSE}/enroll/1"
    )


def test_native_and_legacy_lines_after_prefixes_and_payload_strings(collector, tmp_path):
    live = live_browser_event(3)
    server = live_server_event(1)
    not_json_payload = dict(legacy_line(live), event="input_q1=choice_0", name="problem_check")
    lines = [
        b"2025-01-01 00:00:00,000 INFO 1 [tracking] logger.py:41 - " + orjson.dumps(native_line(server)),
        b"Mar  3 09:14:05 lms-1 tracking: " + orjson.dumps(legacy_line(live)),
        orjson.dumps(not_json_payload) + b"\r",
    ]
    log = write_lines(tmp_path / "tracking.log", lines)
    assert main(["replay", str(log), "--host", collector.url]) == 0
    by_name = {message["event"]: message for message in collector.messages()}
    assert set(by_name) == {"edx.course.enrollment.activated", "play_video", "problem_check"}
    assert by_name["edx.course.enrollment.activated"]["properties"]["data"]["i"] == 1
    assert by_name["play_video"]["properties"]["data"] == live["data"]  # the JSON string, parsed
    assert by_name["play_video"]["properties"]["context"]["username"] == "amara"
    assert by_name["problem_check"]["properties"]["data"] == "input_q1=choice_0"  # not JSON: kept


def test_legacy_conversion_keeps_unknown_fields_and_falls_back_to_event_type():
    event = to_live_event(
        {"event_type": "/dashboard", "time": "2025-01-01T00:00:00+00:00", "event": "{\"GET\": {}",
         "host": "h", "context": {"user_id": 1, "path": "/dashboard"}, "extra": [1]}
    )
    assert event == {
        "name": "/dashboard",
        "timestamp": "2025-01-01T00:00:00+00:00",
        "context": {"user_id": 1, "path": "/dashboard", "host": "h"},
        "data": "{\"GET\": {}",  # truncated JSON stays the string the log holds
        "extra": [1],
    }
    native = {"name": "n", "timestamp": "t", "context": {}, "data": {"event": 1}}
    assert to_live_event(dict(native)) == native


def test_anonymous_events_are_skipped_unless_an_anonymous_id_field_is_given(capsys, collector, tmp_path):
    log = write_lines(tmp_path / "t.log", [legacy_line(live_server_event(1, user_id=None)), many_lines(1)[0]])
    code, output = replay(capsys, str(log), "--host", collector.url)
    assert code == 0
    assert "no_user_id 1" in output
    assert collector.count() == 1

    with Collector() as target:
        assert main(["replay", str(log), "--host", target.url, "--anonymous-id-field=context.session"]) == 0
        anonymous = [message for message in target.messages() if "anonymousId" in message]
        assert [message["anonymousId"] for message in anonymous] == ["4a6f0c1e2b3d"]
        assert "userId" not in anonymous[0]


# -- inputs --------------------------------------------------------------------------------------


def test_broken_and_truncated_lines_are_counted_with_file_and_line(capsys, collector, tmp_path):
    good = [orjson.dumps(line) for line in many_lines(3)]
    log = write_lines(
        tmp_path / "t.log", [good[0], b"", b"not an event", good[1], good[2][:40], b"   ", b"x {broken"]
    )
    code, output = replay(capsys, str(log), "--host", collector.url)
    assert code == 1
    assert f"{log}:3: no JSON object" in output
    assert f"{log}:5: not JSON" in output
    assert f"{log}:7: not JSON" in output
    numbers = summary_of(output)
    assert numbers["lines read"] == 7
    assert numbers["unreadable lines"] == 3
    assert numbers["events sent"] == 2 == collector.count()


def test_a_truncated_gzip_file_counts_as_unreadable_after_what_it_held(capsys, collector, tmp_path):
    data = gzip.compress(b"".join(orjson.dumps(line) + b"\n" for line in many_lines(200)))
    log = tmp_path / "cut.log.gz"
    log.write_bytes(data[: len(data) * 3 // 4])
    code, output = replay(capsys, str(log), "--host", collector.url)
    assert code == 1
    assert "cannot read further" in output
    assert 0 < collector.count() < 200
    assert summary_of(output)["events sent"] == collector.count()


def test_gzip_and_directories_in_name_order_hidden_files_skipped(capsys, collector, tmp_path):
    lines = many_lines(30)
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "b.log.gz", lines[10:20], compress=True)
    write_lines(logs / "a.log", lines[:10])
    write_lines(logs / ".hidden.log", lines[20:])
    write_lines(logs / "c.log.1", lines[20:], compress=True)  # gzip whatever its name
    code, output = replay(capsys, str(logs), "--host", collector.url)
    assert code == 0, output
    assert "30 in 3 inputs" in output
    timestamps = [message["properties"]["timestamp"] for message in collector.messages()]
    assert timestamps == [line["timestamp"] if "data" in line else line["time"] for line in lines]


def test_stdin_plain_and_gzip(collector, tmp_path):
    payload = b"".join(orjson.dumps(line) + b"\n" for line in many_lines(50))
    for data in (payload, gzip.compress(payload)):
        process = python_m("replay", "-", "--host", collector.url, stdin=subprocess.PIPE)
        out, err = process.communicate(data, timeout=60)
        assert process.returncode == 0, err.decode()
        assert summary_of(out.decode())["events sent"] == 50
    assert collector.count() == 100
    assert len(distinct_ids(collector)) == 50  # the same stream twice: the same ids


class Trickle(io.RawIOBase):
    """A pipe whose first read gives a single byte."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = 1 if self.reads == 0 else len(buffer)
        self.reads += 1
        chunk, self.data = self.data[:size], self.data[size:]
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_stdin_is_recognised_when_the_first_read_gives_one_byte(monkeypatch, compress):
    payload = b"".join(orjson.dumps(line) + b"\n" for line in many_lines(20))
    data = gzip.compress(payload) if compress else payload
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BufferedReader(Trickle(data))))
    summary = Replay(DryRun(MappingOptions())).run([Source("<stdin>", "-")])
    assert summary.unreadable == 0, summary.unreadable_shown
    assert summary.sent == 20


@pytest.mark.parametrize("data", [b"", b"{"], ids=["empty", "one byte"])
def test_stdin_shorter_than_the_gzip_magic(monkeypatch, data):
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BufferedReader(Trickle(data))))
    summary = Replay(DryRun(MappingOptions())).run([Source("<stdin>", "-")])
    assert summary.lines == len(data) == summary.unreadable


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=30), st.integers(1, 17))
def test_read_lines_splits_like_splitlines_whatever_the_chunking(lines, chunk_bytes):
    data = b"\n".join(lines)
    original = lines_module.CHUNK_BYTES
    lines_module.CHUNK_BYTES = chunk_bytes
    try:
        got = [line for chunk in lines_module.read_lines(io.BytesIO(data)) for line in chunk]
    finally:
        lines_module.CHUNK_BYTES = original
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()  # a final newline ends the last line; it does not start another
    assert got == expected


def test_overlong_lines_are_unreadable_not_held_in_memory(monkeypatch):
    monkeypatch.setattr(lines_module, "CHUNK_BYTES", 8)
    monkeypatch.setattr(lines_module, "MAX_LINE_BYTES", 20)
    data = b"short\n" + b"x" * 50 + b"\nafter\n" + b"y" * 30
    got = [line for chunk in lines_module.read_lines(io.BytesIO(data)) for line in chunk]
    assert got == [b"short", lines_module.OVERLONG_LINE, b"after", lines_module.OVERLONG_LINE]


# -- ids, reruns, checkpoints ----------------------------------------------------------------------


def test_a_rerun_adds_no_new_message_ids_and_renaming_keeps_them(collector, tmp_path):
    lines = many_lines(40)
    log = write_lines(tmp_path / "tracking.log", lines)
    assert main(["replay", str(log), "--host", collector.url]) == 0
    first = distinct_ids(collector)
    assert len(first) == 40
    assert main(["replay", str(log), "--host", collector.url]) == 0
    assert collector.count() == 80
    assert distinct_ids(collector) == first
    rotated = write_lines(tmp_path / "tracking.log.1.gz", lines, compress=True)  # as logrotate leaves it
    assert main(["replay", str(rotated), "--host", collector.url]) == 0
    assert distinct_ids(collector) == first


def test_message_ids_are_the_documented_hash():
    text = b'{"name": "x"}'
    assert message_id(text, 3) == message_id(text, 3) != message_id(text, 4)
    assert len(message_id(text, 3)) == 32


def test_checkpoint_resume_after_a_killed_run(capsys, collector, tmp_path):
    total = 6000  # about five 1 MiB chunks: several checkpoints before the kill
    log = write_lines(tmp_path / "tracking.log", many_lines(total))
    with Collector() as reference:
        assert main(["replay", str(log), "--host", reference.url]) == 0
        everything = distinct_ids(reference)
    assert len(everything) == total

    checkpoint = tmp_path / "replay.checkpoint"
    collector.faults.add(delay=0.3, times=None)  # slow enough to be killed mid-run
    process = python_m(
        "replay", str(log), "--host", collector.url, "--checkpoint", str(checkpoint), "--checkpoint-every=1"
    )
    try:
        while not checkpoint.exists():
            assert process.poll() is None, process.communicate()[1].decode()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.communicate(timeout=60)
    collector.faults.clear()
    acknowledged = orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"]
    assert 0 < acknowledged < total
    first_run_ids = distinct_ids(collector)
    assert first_run_ids < everything

    code, output = replay(capsys, str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    assert code == 0, output
    numbers = summary_of(output)
    assert numbers["already acknowledged"] == acknowledged
    assert numbers["events sent"] == total - acknowledged  # what was acknowledged is not sent again
    assert distinct_ids(collector) == everything
    assert orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"] == total


def test_a_checkpoint_for_another_file_at_the_same_path_is_ignored(capsys, collector, tmp_path):
    log = write_lines(tmp_path / "tracking.log", many_lines(10))
    checkpoint = tmp_path / "cp.json"
    assert main(["replay", str(log), "--host", collector.url, "--checkpoint", str(checkpoint)]) == 0
    capsys.readouterr()
    write_lines(log, many_lines(12)[::-1])  # rotated: new content at the same path
    code, output = replay(capsys, str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    assert code == 0
    assert summary_of(output)["already acknowledged"] == 0
    assert summary_of(output)["events sent"] == 12


def test_a_partial_last_line_is_left_for_the_next_run(capsys, collector, tmp_path):
    lines = [orjson.dumps(line) for line in many_lines(6)]
    log = tmp_path / "tracking.log"
    log.write_bytes(b"".join(line + b"\n" for line in lines[:5]) + lines[5][:40])  # being written
    checkpoint = tmp_path / "cp.json"
    argv = (str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    code, output = replay(capsys, *argv)
    assert code == 0, output
    numbers = summary_of(output)
    assert numbers["lines read"] == 5
    assert numbers["unreadable lines"] == 0
    assert numbers["partial last lines"] == 1
    assert f"{log}:6: left for the next run" in output
    assert orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"] == 5

    with log.open("ab") as handle:
        handle.write(lines[5][40:] + b"\n")  # the writer finishes the line
    code, output = replay(capsys, *argv)
    assert code == 0, output
    numbers = summary_of(output)
    assert numbers["already acknowledged"] == 5
    assert numbers["events sent"] == 1
    assert "partial" not in output
    assert len(distinct_ids(collector)) == collector.count() == 6
    assert orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"] == 6


def test_a_last_line_without_newline_that_is_complete_json_is_sent_and_read_again(
    capsys, collector, tmp_path
):
    lines = [orjson.dumps(line) for line in many_lines(4)]
    log = tmp_path / "tracking.log"
    log.write_bytes(b"".join(line + b"\n" for line in lines[:3]) + lines[3])
    checkpoint = tmp_path / "cp.json"
    argv = (str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    code, output = replay(capsys, *argv)
    assert code == 0, output
    assert summary_of(output)["events sent"] == 4
    assert f"{log}:4: complete JSON, sent" in output
    assert orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"] == 3  # not past the fragment

    with log.open("ab") as handle:
        handle.write(b"\n")
    code, output = replay(capsys, *argv)
    assert code == 0, output
    assert summary_of(output)["already acknowledged"] == 3
    assert summary_of(output)["events sent"] == 1
    assert collector.count() == 5
    assert len(distinct_ids(collector)) == 4  # the line sent again has the same messageId
    assert orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"] == 4


def test_a_gzip_file_or_stdin_ending_without_newline_ends_with_an_ordinary_line(capsys, collector, tmp_path):
    good = orjson.dumps(many_lines(1)[0])
    log = tmp_path / "t.log.gz"
    log.write_bytes(gzip.compress(good + b"\n" + good[:30]))  # finished: it will not grow
    checkpoint = tmp_path / "cp.json"
    code, output = replay(capsys, str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    assert code == 1
    assert f"{log}:2: not JSON" in output and "partial" not in output
    assert orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"] == 2

    process = python_m("replay", "-", "--host", collector.url, stdin=subprocess.PIPE)
    out, err = process.communicate(good + b"\n" + good[:30], timeout=60)
    assert process.returncode == 1, err.decode()
    assert "<stdin>:2: not JSON" in out.decode()


def test_a_checkpoint_keeps_the_selection_and_destination_but_not_the_write_key(capsys, collector, tmp_path):
    log = write_lines(tmp_path / "t.log", many_lines(10))
    checkpoint = tmp_path / "cp.json"
    argv = [str(log), "--host", f"{collector.url}/", "--write-key", "s3cr3t", "--checkpoint", str(checkpoint)]
    code, output = replay(capsys, *argv, "--name", "enrollment", "--name", "^edx")
    assert code == 0, output
    stored = checkpoint.read_bytes()
    assert b"s3cr3t" not in stored
    selection = orjson.loads(stored)["selection"]
    assert selection["destination"] == collector.url
    assert selection["name"] == ["^edx", "enrollment"]
    # The same options in another order, and a dry run (which sends nowhere), resume from it.
    code, output = replay(capsys, *argv, "--name", "^edx", "--name", "enrollment")
    assert code == 0, output
    assert summary_of(output)["already acknowledged"] == 10
    dry_run = (str(log), "--dry-run", "--checkpoint", str(checkpoint), "--name=^edx", "--name=enrollment")
    code, output = replay(capsys, *dry_run)
    assert code == 0, output
    assert summary_of(output)["already acknowledged"] == 10


@pytest.mark.parametrize(
    "changed, named",
    [
        (["--name", "enrollment"], "--name"),
        (["--since", "2025-01-01"], "--since"),
        (["--until", "2026-01-01"], "--until"),
        (["--anonymous-id-field", "context.session"], "--anonymous-id-field"),
        (["--host", "http://127.0.0.1:9"], "destination"),
        (["--write-key", "another"], "write key"),
    ],
)
def test_a_checkpoint_made_with_other_options_or_destination_is_refused(
    capsys, collector, tmp_path, changed, named
):
    log = write_lines(tmp_path / "t.log", many_lines(10))
    checkpoint = tmp_path / "cp.json"
    argv = [str(log), "--host", collector.url, "--checkpoint", str(checkpoint)]
    assert replay(capsys, *argv)[0] == 0
    before = checkpoint.read_bytes()
    code, output = replay(capsys, *argv, *changed)
    assert code == 2
    assert "was written by a replay with other" in output and named in output
    assert checkpoint.read_bytes() == before
    assert collector.count() == 10  # nothing sent


def test_an_older_checkpoint_without_selection_is_refused(capsys, collector, tmp_path):
    log = write_lines(tmp_path / "t.log", many_lines(3))
    checkpoint = tmp_path / "cp.json"
    checkpoint.write_bytes(orjson.dumps({"version": 1, "files": {str(log): {"line": 3, "head": "00"}}}))
    code, output = replay(capsys, str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    assert code == 2
    assert "older replay" in output and "delete it" in output
    assert collector.count() == 0


def test_checkpoint_writes_never_share_a_temporary_file(tmp_path, monkeypatch):
    path = str(tmp_path / "cp.json")
    first, second = Checkpoint(path), Checkpoint(path)
    real_replace = os.replace
    temporaries = []

    def replace(source, target):
        temporaries.append(source)
        if len(temporaries) == 1:
            second.record({"/b": (2, "bb")})  # another run sharing the checkpoint writes meanwhile
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    first.record({"/a": (1, "aa")})
    assert len(set(temporaries)) == 2
    for temporary in temporaries:
        assert os.path.dirname(temporary) == str(tmp_path)
        assert os.path.basename(temporary).startswith(".cp.json.") and f".{os.getpid()}." in temporary
    assert orjson.loads(Path(path).read_bytes())["files"] == {"/a": {"line": 1, "head": "aa"}}  # whole
    assert os.listdir(tmp_path) == ["cp.json"]


def test_a_failed_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "cp.json"
    Checkpoint(str(path)).record({"/a": (1, "aa")})

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        Checkpoint(str(path)).record({"/a": (2, "aa")})
    assert os.listdir(tmp_path) == ["cp.json"]
    assert orjson.loads(path.read_bytes())["files"]["/a"]["line"] == 1


# -- options -------------------------------------------------------------------------------------


def test_dry_run_sends_nothing_and_counts_what_would_go(capsys, collector):
    code, output = replay(capsys, str(SAMPLE), "--host", collector.url, "--dry-run")
    assert code == 1  # the sample has two unreadable lines
    assert collector.count() == 0
    numbers = summary_of(output)
    assert numbers["events would be sent"] == 24
    assert numbers["skipped"] == 3
    assert numbers["unreadable lines"] == 2


def test_the_summary_matches_what_the_collector_received(capsys, collector):
    code, output = replay(capsys, str(SAMPLE), "--host", collector.url)
    assert code == 1
    numbers = summary_of(output)
    assert numbers["lines read"] == 30
    assert numbers["events sent"] == collector.count() == len(distinct_ids(collector)) == 24
    assert numbers["skipped"] == 3
    assert "no_user_id 3" in output
    assert numbers["failed deliveries"] == 0
    assert "sample_tracking.log:14" in output and "sample_tracking.log:24" in output


def test_name_and_time_filters(capsys, collector, tmp_path):
    lines = many_lines(20)
    lines.append(legacy_line(live_browser_event(99)))
    log = write_lines(tmp_path / "t.log", lines)
    code, output = replay(
        capsys, str(log), "--host", collector.url, "--name", "^play_", "--name", "enrollment",
        "--since", "2025-03-03T09:00:05Z", "--until", "2025-03-03T09:00:10+00:00",
    )
    assert code == 0
    assert sorted(message["properties"]["data"]["i"] for message in collector.messages()) == [5, 6, 7, 8, 9]
    assert summary_of(output)["skipped"] == 16
    assert "filtered 16" in output

    with Collector() as target:
        assert main(["replay", str(log), "--host", target.url, "--name", "^play_"]) == 0
        assert [m["event"] for m in target.messages()] == ["play_video"]


def test_rate_spaces_events_on_the_clock(collector, tmp_path, monkeypatch):
    log = write_lines(tmp_path / "t.log", many_lines(5))
    assert main(["replay", str(log), "--host", collector.url, "--rate", "1000"]) == 0
    assert collector.count() == 5

    clock = {"now": 100.0, "slept": []}

    def sleep(seconds: float) -> None:
        clock["slept"].append(seconds)
        clock["now"] += seconds

    monkeypatch.setattr(flow, "time", SimpleNamespace(monotonic=lambda: clock["now"], sleep=sleep))
    summary = Replay(DryRun(MappingOptions()), rate=2.0).run([Source(str(log), str(log))])
    assert summary.sent == 5
    assert sum(clock["slept"]) == pytest.approx(4 / 2.0)  # 5 events at 2/s: the last one at 2 s


def test_spool_is_passed_to_the_backend(capsys, collector, tmp_path):
    log = write_lines(tmp_path / "t.log", many_lines(5))
    code, output = replay(capsys, str(log), "--host", collector.url, "--spool", str(tmp_path / "spool"))
    assert code == 0, output
    assert collector.count() == 5


# -- exit codes and --local ------------------------------------------------------------------------


def test_failed_deliveries_exit_1(capsys, collector, tmp_path):
    log = write_lines(tmp_path / "t.log", many_lines(5))
    collector.faults.add(status=400, times=None)
    code, output = replay(capsys, str(log), "--host", collector.url)
    assert code == 1
    assert summary_of(output)["failed deliveries"] == 5
    assert "refused 5" in output


def test_a_refused_event_is_a_failed_delivery_and_the_checkpoint_passes_it(capsys, collector, tmp_path):
    lines = many_lines(6)
    lines[2] = legacy_line(live_browser_event(2))  # the one play_video
    log = write_lines(tmp_path / "t.log", lines)
    collector.faults.reject_event("play_video")  # HTTP 400 for it, for good
    checkpoint = tmp_path / "cp.json"
    argv = (str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    code, output = replay(capsys, *argv)
    assert code == 1
    assert checkpoint.exists(), output
    assert orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"] == 6  # settled: passed
    numbers = summary_of(output)
    assert numbers["failed deliveries"] == 1
    assert "refused 1" in output and "refused: 'play_video' at 2025-03-03T09:00:02" in output
    assert collector.count() == 5

    code, output = replay(capsys, *argv)
    assert code == 0, output
    assert summary_of(output)["already acknowledged"] == 6
    assert summary_of(output)["events sent"] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["replay", "{log}"], "no destination"),
        (["replay", "{missing}", "--host", "http://127.0.0.1:9", "--write-key", "k"], "no such file"),
        (["replay", "{log}", "--host", "https://api.segment.io"], "https://api.segment.io needs a key"),
        (["replay", "{empty}", "--dry-run"], "no input to replay: {empty} holds no files"),
        (["replay", "{log}", "--celery", "s", "--write-key", "k", "--checkpoint", "c"], "no --write-key"),
        (["replay", "{log}", "--celery", "site"], "--celery needs --checkpoint FILE"),
        (["replay", "{log}", "--celery", "no_such_site", "--checkpoint", "{cp}"], "cannot load the Celery"),
        (["replay", "{log}", "--local", "--db", "{log}"], "not a SQLite database"),
        (["replay", "{log}", "--local", "--host", "http://127.0.0.1:9"], "takes no --write-key or --host"),
        (["replay", "{log}", "--dry-run", "--checkpoint", "{log}"], "not a replay checkpoint"),
    ],
)
def test_usage_errors_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.delenv("SEGMENT_WRITE_KEY")
    log = write_lines(tmp_path / "t.log", many_lines(2))
    (tmp_path / "empty" / "2024" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / "2024" / ".hidden" / "t.log").write_bytes(log.read_bytes())
    names = {
        "log": str(log), "missing": str(tmp_path / "missing.log"), "empty": str(tmp_path / "empty"),
        "cp": str(tmp_path / "cp.json"),
    }
    code, output = replay(capsys, *[arg.format(**names) for arg in argv[1:]])
    assert code == 2
    assert message.format(**names) in output
    assert len(output.splitlines()) == 1, output  # one line saying it, not a traceback
    assert log.read_bytes().startswith(b"{")  # never clobbered


@pytest.mark.parametrize("bad", [["--name", "("], ["--since", "yesterday"], ["--rate", "0"]])
def test_bad_option_values_exit_2(capsys, tmp_path, bad):
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(SAMPLE), "--dry-run", *bad])
    assert exit_info.value.code == 2


def test_local_runs_an_embedded_collector_and_says_how_to_list(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = replay(capsys, str(SAMPLE), "--local")
    assert code == 1  # the sample's two unreadable lines
    database = tmp_path / "eventtracking-local.sqlite3"
    assert f"eventtracking received --db {database}" in output
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM messages").fetchone() == (24,)
    assert main(["received", "--db", str(database), "--event", "play_video", "--json"]) == 0
    [listed] = capsys.readouterr().out.splitlines()
    assert orjson.loads(listed)["properties"]["data"]["code"] == "html5"


def test_the_progress_bar_runs_without_a_terminal_check(capsys, tmp_path):
    log = write_lines(tmp_path / "t.log", many_lines(3))
    replayer = Replay(DryRun(MappingOptions()))
    summary = replayer.run([Source(str(log), str(log))], progress=True)
    assert summary.sent == 3 and summary.exit_status() == 0
    assert "lines" in capsys.readouterr().err


@pytest.mark.parametrize("spooled", [False, True], ids=["memory", "spool"])
def test_a_destination_that_takes_nothing_ends_the_run_early(collector, tmp_path, spooled):
    log = write_lines(tmp_path / "t.log", many_lines(3000))  # several chunks: the watch runs between them
    collector.faults.add(status=503, times=None)
    options = {"spool_dir": str(tmp_path / "spool")} if spooled else {}
    backend = backend_for(collector, retry_timeout=0.3, **options)
    checkpoint = Checkpoint(str(tmp_path / "cp.json"))
    summary = Replay(backend, checkpoint=checkpoint, checkpoint_every=1).run([Source(str(log), str(log))])
    assert summary.stopped and "the destination is not taking events" in summary.stopped
    assert summary.sent == 0
    assert summary.exit_status() == 1
    assert not (tmp_path / "cp.json").exists()  # nothing was acknowledged


def test_the_benchmark_fails_loudly_unless_the_replay_it_times_succeeded():
    spec = importlib.util.spec_from_file_location("bench_replay", REPO / "benchmarks" / "bench_replay.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(RuntimeError, match="exited 1"):
        bench.run_measured([sys.executable, "-c", "import sys; print('unreadable lines 3'); sys.exit(1)"])
    assert bench.run_measured([sys.executable, "-c", "print('ok')"])[2] == "ok\n"
    with pytest.raises(RuntimeError, match="stored 9 messages for 10 lines"):
        bench.check_stored("ours", 9, 10)
    bench.check_stored("ours", 10, 10)


# -- what the command tells a newcomer (issue 13) ------------------------------------------------


def final_bar_line(err: str) -> str:
    """The progress bar's last state (tqdm redraws it with carriage returns)."""
    return [part for part in re.split(r"[\r\n]", err) if part.strip()][-1]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_the_progress_bar_has_a_total_and_ends_on_the_summarys_figures(capsys, collector, tmp_path, compress):
    log = write_lines(tmp_path / "t.log", many_lines(3000), compress=compress)
    summary = Replay(backend_for(collector)).run([Source(str(log), str(log))], progress=True)
    assert summary.sent == 3000 and summary.exit_status() == 0
    bar = final_bar_line(capsys.readouterr().err)
    assert bar.lstrip().startswith("100%"), bar  # a percentage: the total is the input's size
    size = log.stat().st_size  # compressed bytes for gzip: what is read of the disk
    shown_total = re.search(r"/([\d.]+)([kMG]?)B? ", bar)
    assert shown_total, bar
    scale = {"": 1, "k": 1024, "M": 1024**2, "G": 1024**3}[shown_total.group(2)]
    assert float(shown_total.group(1)) * scale == pytest.approx(size, rel=0.01)
    assert f"{summary.lines:,} lines, {summary.sent:,} sent" in bar


def test_the_progress_bar_counts_lines_when_the_size_is_unknown(capsys, monkeypatch):
    data = b"".join(orjson.dumps(line) + b"\n" for line in many_lines(5))
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BufferedReader(io.BytesIO(data))))
    summary = Replay(DryRun(MappingOptions())).run([Source("<stdin>", "-")], progress=True)
    bar = final_bar_line(capsys.readouterr().err)
    assert summary.sent == 5 and "5 lines, 5 would send" in bar and "%" not in bar


def test_already_acknowledged_is_said_only_with_a_checkpoint(capsys, collector, tmp_path):
    log = write_lines(tmp_path / "t.log", many_lines(4))
    code, output = replay(capsys, str(log), "--host", collector.url)
    assert code == 0 and "already acknowledged" not in output
    code, output = replay(capsys, str(log), "--host", collector.url, "--checkpoint", str(tmp_path / "cp"))
    assert code == 0 and summary_of(output)["already acknowledged"] == 0


def test_the_summary_says_what_the_exit_status_means(capsys, collector, tmp_path):
    code, output = replay(capsys, str(SAMPLE), "--host", collector.url)
    assert code == 1
    assert output.rstrip().endswith("exit status 1: 2 lines unreadable (listed above)")
    log = write_lines(tmp_path / "t.log", many_lines(3))
    code, output = replay(capsys, str(log), "--host", collector.url)
    assert code == 0 and "exit status 0: every readable event was delivered or skipped by rule" in output


def test_local_twice_counts_unique_messages_and_shows_duplicates_apart(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = replay(capsys, str(SAMPLE), "--local")
    assert "the local collector holds 24 unique messages in" in output and "duplicate" not in output
    code, output = replay(capsys, str(SAMPLE), "--local")
    assert "the local collector holds 24 unique messages in" in output
    assert "plus 24 duplicates (a messageId it had already: Segment keeps one)" in output


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_host_ends_with_the_reason_and_no_flood_of_warnings(tmp_path):
    log = write_lines(tmp_path / "t.log", many_lines(30))
    port = closed_port()
    process = python_m("replay", str(log), "--host", f"http://127.0.0.1:{port}", "--retry-timeout", "1")
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    out, err = out.decode(), err.decode()
    assert process.returncode == 1, out + err
    assert err.count("flush timed out") <= 1
    assert err.count("eventtracking replay: retrying: network error") == 1  # said once, while it retries
    assert "stopped early: deliveries failed (gave_up" in out
    failed = [line for line in out.splitlines() if line.startswith("  failed deliveries")]
    assert failed and "gave_up 30" in failed[0]
    assert f"127.0.0.1:{port}" in failed[0] and "refused" in failed[0]  # the network error and the host
    assert f"127.0.0.1:{port}" in out.split("stopped early:")[1]


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_stop_by_signal_saves_the_checkpoint_and_resends_nothing_acknowledged(capsys, collector, tmp_path):
    total = 1500
    log = write_lines(tmp_path / "t.log", many_lines(total))
    checkpoint = tmp_path / "cp.json"
    argv = [str(log), "--host", collector.url, "--checkpoint", str(checkpoint)]
    acknowledged = [0]
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, then a service manager's stop
        process = python_m("replay", *argv, "--rate", "300")
        try:
            wait_for(lambda: collector.count() >= acknowledged[-1] + 100)
            process.send_signal(signum)
            out, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        out = out.decode()
        assert process.returncode == 130, out + err.decode()
        assert "replay summary (interrupted)" in out
        assert "exit status 130: interrupted; rerun with the same --checkpoint to resume" in out
        assert summary_of(out)["already acknowledged"] == acknowledged[-1]  # also on the resumed run
        line = orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"]
        assert acknowledged[-1] < line < total
        assert collector.count() == len(distinct_ids(collector)) == line  # all sent was acknowledged
        acknowledged.append(line)
    code, output = replay(capsys, *argv)
    assert code == 0, output
    assert summary_of(output)["already acknowledged"] == acknowledged[-1]
    assert collector.count() == len(distinct_ids(collector)) == total  # nothing was sent twice


def test_a_stop_while_the_destination_is_slow_checkpoints_at_a_chunk_end(capsys, collector, tmp_path):
    total = 6000  # about 5 MB: several chunks, and the reader waits for the backlog between them
    log = write_lines(tmp_path / "t.log", many_lines(total))
    checkpoint = tmp_path / "cp.json"
    argv = [str(log), "--host", collector.url, "--checkpoint", str(checkpoint), "--checkpoint-every", "99999"]
    collector.faults.add(delay=0.3, times=None)
    process = python_m("replay", *argv)
    try:
        wait_for(lambda: collector.count() >= 500)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    collector.faults.clear()
    assert process.returncode == 130, out.decode() + err.decode()
    line = orjson.loads(checkpoint.read_bytes())["files"][str(log)]["line"]
    assert 0 < line < total and collector.count() == len(distinct_ids(collector)) == line
    code, output = replay(capsys, *argv)
    assert code == 0 and summary_of(output)["already acknowledged"] == line
    assert collector.count() == len(distinct_ids(collector)) == total


def test_a_wrong_write_key_is_named_in_the_summarys_count_of_failures(capsys, tmp_path):
    log = write_lines(tmp_path / "t.log", many_lines(10))
    with Collector(write_key="the-right-key") as keyed:
        code, output = replay(capsys, str(log), "--host", keyed.url, "--write-key", "a-wrong-key")
    assert code == 1
    [failed] = [line for line in output.splitlines() if line.startswith("  failed deliveries")]
    assert "refused 10 (HTTP 401" in failed, failed  # the status and the server's reason
    assert "a-wrong-key" not in output


# -- safe by default: nested trees, configuration refusals, dead letters ---------------------------


def test_directories_are_walked_recursively_in_path_order_and_links_out_are_not_followed(capsys, tmp_path):
    tree = tmp_path / "s3sync"
    files = [("2024/10/a.log", 1), ("2024/02/b.log.gz", 2), ("2024/02/a.log", 3), ("top.log", 4)]
    for relative, count in files:
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        write_lines(tree / relative, many_lines(count), compress=relative.endswith(".gz"))
    (tree / ".hidden").mkdir()
    write_lines(tree / ".hidden" / "x.log", many_lines(5))
    write_lines(tmp_path / "outside.log", many_lines(6))
    (tree / "2024" / "out.log").symlink_to(tmp_path / "outside.log")
    (tree / "2024" / "in.log").symlink_to(tree / "top.log")  # inside the tree: read under its own name
    (tree / "linked-dir").symlink_to(tmp_path)

    found = lines_module.find_sources([str(tree)])
    assert [os.path.relpath(source.name, tree) for source in found.sources] == [
        "2024/02/a.log", "2024/02/b.log.gz", "2024/10/a.log", "2024/in.log", "top.log",
    ]
    assert sorted(found.not_followed) == [str(tree / "2024" / "out.log"), str(tree / "linked-dir")]

    code, output = replay(capsys, str(tree), "--dry-run")
    assert code == 0, output
    assert summary_of(output)["lines read"] == 3 + 2 + 1 + 4 + 4
    assert f"not followed (a link out of the tree or to a directory): {tree / '2024' / 'out.log'}" in output


def test_an_unknown_option_shows_replays_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "--foo", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: eventtracking replay "), err
    assert "unrecognized arguments: --foo" in err


def checkpoint_lines(path: Path) -> dict:
    if not path.exists():
        return {}
    return {key: entry["line"] for key, entry in orjson.loads(path.read_bytes())["files"].items()}


def test_a_wrong_write_key_stops_early_and_a_rerun_with_the_right_key_sends_everything(capsys, tmp_path):
    total = 5000
    log = write_lines(tmp_path / "t.log", many_lines(total))
    checkpoint = tmp_path / "cp.json"
    argv = (str(log), "--checkpoint", str(checkpoint), "--checkpoint-every", "100")
    with Collector(write_key="the-right-key") as keyed:
        code, output = replay(capsys, *argv, "--host", keyed.url, "--write-key", "a-wrong-key")
        assert code == 1, output
        assert "stopped early: the destination refuses this configuration (HTTP 401: wrong" in output
        assert "give this source's write key (--write-key KEY or $SEGMENT_WRITE_KEY)" in output
        assert "rerun with the fix to send them" in output
        assert "a-wrong-key" not in output
        assert checkpoint_lines(checkpoint) == {}  # nothing was acknowledged: nothing recorded
        assert keyed.requests["refused"] < total // 500, keyed.requests  # it stopped early
        assert len(output.splitlines()) < 30, output  # no flood of lines
        assert keyed.count() == 0

        code, output = replay(capsys, *argv, "--host", keyed.url, "--write-key", "the-right-key")
        assert code == 0, output
        assert summary_of(output)["events sent"] == total
        assert keyed.count() == len(distinct_ids(keyed)) == total
        assert checkpoint_lines(checkpoint) == {str(log): total}


def test_a_wrong_host_path_404_stops_early_and_a_rerun_with_the_right_host_sends_everything(
    capsys, collector, tmp_path
):
    total = 3000
    log = write_lines(tmp_path / "t.log", many_lines(total))
    checkpoint = tmp_path / "cp.json"
    argv = (str(log), "--checkpoint", str(checkpoint), "--checkpoint-every", "100")
    code, output = replay(capsys, *argv, "--host", collector.url + "/v1")  # posts to /v1/v1/batch
    assert code == 1, output
    assert "refuses this configuration (HTTP 404" in output
    assert "give the API's base URL as --host, without /v1/batch" in output
    assert checkpoint_lines(checkpoint) == {} and collector.count() == 0
    code, output = replay(capsys, *argv, "--host", collector.url)
    assert code == 0, output
    assert collector.count() == len(distinct_ids(collector)) == total


class Redirecting:
    """A loopback HTTP server that answers every POST with 301 to another URL."""

    def __init__(self, target: str) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(301)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Redirecting:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_redirecting_host_stops_early_without_waiting_out_the_retries(capsys, collector, tmp_path):
    total = 2000
    log = write_lines(tmp_path / "t.log", many_lines(total))
    checkpoint = tmp_path / "cp.json"
    with Redirecting(collector.url) as redirecting:
        started = time.monotonic()
        code, output = replay(
            capsys, str(log), "--host", redirecting.url, "--checkpoint", str(checkpoint),
            "--checkpoint-every", "9",
        )
        elapsed = time.monotonic() - started
    assert code == 1, output
    assert "refuses this configuration (HTTP 301" in output
    assert "give the URL the host redirects to as --host" in output
    assert elapsed < 30, elapsed  # the retry timeout is 60 s: it did not wait it out
    assert checkpoint_lines(checkpoint) == {} and collector.count() == 0


def test_the_same_4xx_for_every_message_stops_early(capsys, collector, tmp_path):
    total = 5000
    log = write_lines(tmp_path / "t.log", many_lines(total))
    checkpoint = tmp_path / "cp.json"
    collector.faults.add(status=422, times=None)
    code, output = replay(capsys, str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    assert code == 1, output
    assert "refuses this configuration (HTTP 422" in output and "refuses every message" in output
    assert checkpoint_lines(checkpoint) == {}
    assert collector.requests["faulted"] < total // 500, collector.requests


def log_with_refused_events(path: Path, collector: Collector, count: int, refused: tuple) -> Path:
    """A log of ``count`` lines whose lines at ``refused`` (0-based) the collector refuses (400)."""
    lines = many_lines(count)
    for index in refused:
        lines[index] = legacy_line(live_browser_event(index))  # play_video
    collector.faults.reject_event("play_video")
    return write_lines(path, lines)


def test_messages_refused_one_by_one_are_dead_letters_the_summary_says_how_to_resend(
    capsys, collector, tmp_path
):
    log = log_with_refused_events(tmp_path / "t.log", collector, 8, (2, 5))
    checkpoint = tmp_path / "cp.json"
    code, output = replay(capsys, str(log), "--host", collector.url, "--checkpoint", str(checkpoint))
    assert code == 1, output
    dead = tmp_path / "eventtracking-deadletters"
    assert f"  dead letters          2 refused one by one, kept in {dead / 'deadletters.jsonl'}" in output
    assert f"list them:   eventtracking deadletters list --spool {dead}" in output
    [resend] = [line.split("fix, resend: ")[1] for line in output.splitlines() if "fix, resend: " in line]
    assert resend == f"eventtracking deadletters resend --spool {dead} --host {collector.url}"
    assert checkpoint_lines(checkpoint) == {str(log): 8}  # settled: kept as dead letters
    assert collector.count() == 6

    collector.faults.clear()  # fixed: the command the summary gives sends them
    assert main(resend.split()[1:]) == 0
    assert collector.count() == len(distinct_ids(collector)) == 8


def test_with_a_spool_the_summary_names_its_dead_letters(capsys, collector, tmp_path):
    log = log_with_refused_events(tmp_path / "t.log", collector, 6, (3,))
    spool = tmp_path / "spool"
    code, output = replay(capsys, str(log), "--host", collector.url, "--spool", str(spool))
    assert code == 1, output
    assert f"  dead letters          1 refused one by one, kept in {spool / 'deadletters.jsonl'}" in output
    assert f"eventtracking deadletters resend --spool {spool} --host {collector.url}" in output
    assert not (tmp_path / "eventtracking-deadletters").exists()
