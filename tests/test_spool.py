"""The durable spool (``SegmentBackend(spool_dir=...)``) against the real collector: killed
processes, torn and corrupt records, the disk bound, dead letters, locking, fork, retention."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventtracking import cli
from eventtracking.backends.segment import SegmentBackend
from eventtracking.cli import deadletters
from eventtracking.queue import spool as spool_module
from eventtracking.queue.spool import (
    ACK_FILE,
    DEAD_LETTER_FILE,
    IDLE_ROTATE_BYTES,
    RECORD_HEADER,
    SEGMENT_MAGIC,
    Spool,
    encode_record,
    iter_records,
)
from eventtracking.queue.spool import records as spool_records
from eventtracking.queue.stats import Counters
from eventtracking.segment.encoding import encode
from eventtracking.segment.mapping import to_track_message
from eventtracking.segment.pipeline import Delivery, Pipeline

KEY = "wk-spool"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_event(i: int, name: str = "spool.test") -> dict:
    return {"name": name, "data": {"i": i}, "context": {"user_id": i, "path": "/p", "host": "lms.example"}}


def track_message(i: int) -> bytes:
    message = {"type": "track", "event": "raw", "userId": str(i), "messageId": f"raw-{i}", "properties": {}}
    return orjson.dumps(message)


def backend_for(url: str, spool_dir, **options) -> SegmentBackend:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("retry_timeout", 30)
    return SegmentBackend(write_key=KEY, host=url, spool_dir=str(spool_dir), **options)


def closed_port_url() -> str:
    """A loopback URL where nothing listens: the collector is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def segments(spool_dir) -> list[str]:
    """The segment files of every part of the spool directory."""
    return sorted(str(path) for path in spool_dir.glob("**/seg-*.log"))


def parts(spool_dir) -> list:
    return sorted(spool_dir.glob("part-*"))


def directory_bytes(spool_dir) -> int:
    return sum(path.stat().st_size for path in spool_dir.glob("**/*") if path.is_file())


def start_script(code: str, **values) -> subprocess.Popen:
    script = textwrap.dedent(code)
    for name, value in values.items():
        script = script.replace(name, repr(value))
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


SENDER_SCRIPT = """
import sys, time
from eventtracking.backends.segment import SegmentBackend
backend = SegmentBackend(write_key="k", host=URL, spool_dir=SPOOL, flush_interval=LINGER,
                         retry_timeout=600, max_batch_size=BATCH)
for i in range(COUNT):
    backend.send({"name": "killed", "data": {"i": i}, "context": {"user_id": i}}, message_id=f"m-{i}")
print("sent", flush=True)
time.sleep(600)
"""


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    process.stderr.close()


def test_killed_in_an_outage_the_next_process_delivers_each_event_once(collector, tmp_path):
    count = 2000
    process = start_script(
        SENDER_SCRIPT, URL=closed_port_url(), SPOOL=str(tmp_path), COUNT=count, BATCH=100, LINGER=0.05
    )
    try:
        assert process.stdout.readline() == "sent\n", process.stderr.read()
    finally:
        kill(process)
    backend = backend_for(collector.url, tmp_path)
    assert backend.stats()["spool"]["recovered"] == count
    assert backend.flush(60)
    ids = collector.message_ids()
    assert sorted(ids) == sorted(f"m-{i}" for i in range(count))  # every one, no copies
    stats = backend.stats()
    assert stats["delivered"] == count and stats["spool"]["pending"] == 0
    backend.close(5)


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_killed_while_delivering_resumes_with_few_copies(collector, tmp_path):
    count, batch, stored_batches = 5000, 100, 12
    # The first 12 requests are stored, every later one is refused (and retried) until clear():
    # the kill lands with 12 batches delivered and the 13th in flight, however fast the machine.
    collector.faults.add(delay=0, times=stored_batches).add(status=503, times=None)
    # A long linger: each batch waits for its 100 records, so every batch is full.
    process = start_script(
        SENDER_SCRIPT, URL=collector.url, SPOOL=str(tmp_path), COUNT=count, BATCH=batch, LINGER=600
    )
    try:
        assert process.stdout.readline() == "sent\n", process.stderr.read()
        wait_until(lambda: collector.requests["faulted"] >= 1)  # the 13th batch was posted
    finally:
        kill(process)
    assert collector.count() == stored_batches * batch  # killed mid-way, with many batches acknowledged
    collector.faults.clear()
    backend = backend_for(collector.url, tmp_path, max_batch_size=batch)
    assert backend.flush(60)
    ids = collector.message_ids()
    assert set(ids) == {f"m-{i}" for i in range(count)}
    copies = len(ids) - count
    assert 0 <= copies <= batch  # at most the batch in flight when killed
    backend.close(5)


def write_raw_spool(spool_dir, count: int) -> str:
    """Spool ``count`` raw track messages and leave them unacknowledged; return the segment path."""
    spool = Spool(str(spool_dir))
    for i in range(count):
        assert spool.put(track_message(i))
    spool.close()
    [path] = segments(spool_dir)
    return path


def record_offsets(path: str) -> list[int]:
    with open(path, "rb") as file:
        data = file.read()
    assert data.startswith(SEGMENT_MAGIC)
    offsets, position = [], len(SEGMENT_MAGIC)
    while position < len(data):
        offsets.append(position)
        position += RECORD_HEADER.size + RECORD_HEADER.unpack_from(data, position)[0]
    return offsets


SMALL_CHUNKS = pytest.mark.parametrize("chunk", [50, 150, spool_records.READ_CHUNK])  # records: ~90 bytes


@SMALL_CHUNKS
def test_a_torn_final_record_is_skipped_and_the_rest_delivered(collector, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(spool_records, "READ_CHUNK", chunk)  # reads cross record boundaries
    path = write_raw_spool(tmp_path, 10)
    last = record_offsets(path)[-1]
    os.truncate(path, last + RECORD_HEADER.size + 5)  # killed in the middle of the last write
    backend = backend_for(collector.url, tmp_path)
    assert backend.flush(30)
    assert sorted(collector.message_ids()) == sorted(f"raw-{i}" for i in range(9))
    assert backend.stats()["spool"]["corrupt"] == 1
    backend.send(make_event(1))  # and it goes on
    assert backend.flush(30)
    assert collector.count() == 10
    backend.close(5)


@SMALL_CHUNKS
def test_a_record_with_a_bad_checksum_is_skipped_alone(collector, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(spool_records, "READ_CHUNK", chunk)
    path = write_raw_spool(tmp_path, 10)
    with open(path, "r+b") as file:
        file.seek(record_offsets(path)[4] + RECORD_HEADER.size + 3)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0x20]))
    backend = backend_for(collector.url, tmp_path)
    assert backend.flush(30)
    assert sorted(collector.message_ids()) == sorted(f"raw-{i}" for i in range(10) if i != 4)
    assert backend.stats()["spool"]["corrupt"] == 1
    backend.close(5)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=40),
    cut=st.floats(0, 1),
    flips=st.lists(st.floats(0, 1), max_size=3),
    chunk=st.sampled_from([9, 100, 4096, spool_records.READ_CHUNK]),
)
def test_damage_never_breaks_the_reader(tmp_path_factory, sizes, cut, flips, chunk):
    """Whatever the truncation and flipped bytes, the reader ends, returns only records that were
    written, in order, and loses none before the first damaged byte."""
    directory = tmp_path_factory.mktemp("damaged")
    records = [bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]
    path = directory / "seg"
    data = bytearray(SEGMENT_MAGIC + b"".join(map(encode_record, records)))
    end = len(SEGMENT_MAGIC) + int(cut * (len(data) - len(SEGMENT_MAGIC)))
    damaged = [len(SEGMENT_MAGIC) + int(f * (len(data) - len(SEGMENT_MAGIC) - 1)) for f in flips]
    for position in damaged:
        data[position] ^= 0xFF
    path.write_bytes(bytes(data[:end]))
    fd = os.open(path, os.O_RDONLY)
    try:
        with mock.patch.object(spool_records, "READ_CHUNK", chunk):
            read = [payload for payload, _ in iter_records(fd, len(SEGMENT_MAGIC), end) if payload]
    finally:
        os.close(fd)
    remaining = iter(records)
    assert all(any(record == candidate for candidate in remaining) for record in read)  # an ordered subset
    intact_until = min([end, *damaged])
    position, expected = len(SEGMENT_MAGIC), 0
    for record in records:
        position += RECORD_HEADER.size + len(record)
        if position > intact_until:
            break
        expected += 1
    assert read[:expected] == records[:expected]


def test_past_the_disk_bound_events_are_dropped_and_counted_none_before(collector, tmp_path, caplog):
    down = backend_for(closed_port_url(), tmp_path, spool_max_bytes=40_000, retry_timeout=600)
    with caplog.at_level(logging.WARNING):
        for i in range(400):
            down.send(make_event(i), message_id=f"b-{i}")
    stats = down.stats()
    dropped = stats["dropped"].get("buffer_full", 0)
    accepted = stats["accepted"]
    assert dropped > 0 and accepted > 0 and accepted + dropped == 400
    assert stats["spool"]["pending_bytes"] <= 40_000
    assert "buffer full" in caplog.text
    assert down.close(0.5) is False
    assert down.stats()["dropped"] == {"buffer_full": dropped}  # closing lost nothing
    backend = backend_for(collector.url, tmp_path)
    assert backend.flush(30)
    # the first ones, each once
    assert sorted(collector.message_ids()) == sorted(f"b-{i}" for i in range(accepted))
    backend.close(5)


def test_an_outage_longer_than_the_retry_budget_loses_nothing(collector, tmp_path):
    collector.faults.add(status=503, times=12)
    backend = backend_for(collector.url, tmp_path, retry_timeout=0.3, max_batch_size=10)
    for i in range(30):
        backend.send(make_event(i))
    assert backend.flush(60)
    assert len(set(collector.message_ids())) == 30
    stats = backend.stats()
    assert stats["dropped"] == {} and stats["deferred"] > 0 and stats["spool"]["requeued"] > 0
    backend.close(5)


def test_close_in_an_outage_leaves_everything_for_the_next_backend(collector, tmp_path):
    down = backend_for(closed_port_url(), tmp_path)
    for i in range(50):
        down.send(make_event(i), message_id=f"c-{i}")
    assert down.close(0.5) is False
    assert down.stats()["dropped"] == {}
    backend = backend_for(collector.url, tmp_path)
    assert backend.flush(30)
    assert sorted(collector.message_ids()) == sorted(f"c-{i}" for i in range(50))
    backend.close(5)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    status = cli.main(["deadletters", *argv])
    return status, capsys.readouterr().out


def test_dead_letters_round_trip(collector, tmp_path, capsys):
    collector.faults.reject_event("poison")
    backend = backend_for(collector.url, tmp_path)
    for i in range(20):
        backend.send(make_event(i, name="poison" if i == 11 else "good"), message_id=f"d-{i}")
    assert backend.flush(30)
    assert backend.stats()["dropped"] == {"refused": 1} and backend.stats()["spool"]["dead_letters"] == 1
    [line] = (tmp_path / DEAD_LETTER_FILE).read_bytes().splitlines()
    entry = orjson.loads(line)
    assert entry["reason"].startswith("HTTP 400") and entry["message"]["messageId"] == "d-11"
    assert entry["message"]["event"] == "poison" and entry["time"]

    status, out = run_cli(capsys, "list", "--spool", str(tmp_path))
    assert status == 0 and "poison" in out and "d-11" in out and "1 dead letter" in out

    resend = ("resend", "--spool", str(tmp_path), "--write-key", KEY, "--host", collector.url)
    status, out = run_cli(capsys, *resend)  # still refused: it stays
    assert status == 1 and "refused again 1" in out
    [again] = (tmp_path / DEAD_LETTER_FILE).read_bytes().splitlines()
    assert orjson.loads(again)["message"] == entry["message"]

    collector.faults.clear()
    status, out = run_cli(capsys, *resend)
    assert status == 0 and "delivered 1" in out
    assert [m["messageId"] for m in collector.messages(event="poison")] == ["d-11"]
    assert (tmp_path / DEAD_LETTER_FILE).read_bytes() == b""
    status, out = run_cli(capsys, "list", "--spool", str(tmp_path))
    assert out == f"no dead letters in {tmp_path}\n"  # no "0 dead letters ... (--json)" line
    backend.close(5)


def test_two_spools_on_one_directory_each_have_a_part_and_leave_the_other_alone(collector, tmp_path):
    # Two processes on one directory: the second is a pipeline made directly, as another process
    # makes its own (in one process, acquire() hands out the pipeline already open on the dir).
    first = backend_for(collector.url, tmp_path)
    delivery = Delivery(KEY, collector.url, linger=0.05, retry_budget=30, spool_dir=str(tmp_path))
    second = Pipeline(delivery, "another process")

    def second_send(i: int) -> None:
        message = to_track_message(make_event(i))
        message["messageId"] = f"two-{i}"
        assert second.buffer.put(encode(message))
        second.worker.ensure_started()

    for i in range(20):
        first.send(make_event(i), message_id=f"one-{i}")
        second_send(i)
    assert first.flush(30) and second.flush(30)
    theirs = second.stats(Counters())["spool"]
    [their_part] = [part["name"] for part in theirs["parts"] if part["state"] == "own"]
    # first's sender scans every second: it sees second's part, alive, and leaves it alone
    wait_until(lambda: their_part in [part["name"] for part in first.stats()["spool"]["parts"]])
    mine = first.stats()["spool"]
    assert mine["adopted"] == theirs["adopted"] == 0  # a live part is never adopted
    assert [part["state"] for part in mine["parts"] if part["name"] == their_part] == ["live"]
    assert len(parts(tmp_path)) == 2
    assert sorted(collector.message_ids()) == sorted(
        [f"one-{i}" for i in range(20)] + [f"two-{i}" for i in range(20)]
    )
    first.close(5)
    second.close(5)
    assert list(tmp_path.iterdir()) == []  # everything acknowledged: nothing left behind


def test_one_spool_directory_is_opened_once_per_process(collector, tmp_path, caplog):
    first = backend_for(collector.url, tmp_path)
    with caplog.at_level(logging.WARNING):
        second = backend_for(collector.url, tmp_path / ".." / tmp_path.name, flush_interval=0.2)
    assert second._pipeline is first._pipeline  # other options: shared, and said so
    assert "already open in this process" in caplog.text
    with pytest.raises(ValueError, match="another host or write key"):
        SegmentBackend(write_key="other-key", host=collector.url, spool_dir=str(tmp_path))
    for i in range(10):
        first.send(make_event(i), message_id=f"one-{i}")
        second.send(make_event(i), message_id=f"two-{i}")
    assert first.close(10)  # the pipeline goes on for the second backend
    second.send(make_event(10), message_id="two-10")
    assert second.close(10)
    assert len(collector.message_ids()) == 21
    assert list(tmp_path.iterdir()) == []


def test_acknowledged_data_is_reclaimed(collector, tmp_path):
    backend = backend_for(collector.url, tmp_path)
    for i in range(20000):
        backend.send(make_event(i))
    assert backend.flush(60)
    stats = backend.stats()["spool"]
    assert stats["spooled_bytes"] > 20 * IDLE_ROTATE_BYTES  # several segments' worth went through
    assert stats["pending"] == 0 and stats["disk_bytes"] <= IDLE_ROTATE_BYTES + 4096
    assert directory_bytes(tmp_path) <= IDLE_ROTATE_BYTES + 4096
    assert len(set(collector.message_ids())) == 20000
    backend.close(5)
    assert segments(tmp_path) == [] and directory_bytes(tmp_path) < 100


def test_threads_overflowing_memory_are_read_back_from_disk_once(collector, tmp_path):
    collector.faults.add(status=503, times=None)  # the sender waits for the threads: most are disk-only
    backend = backend_for(collector.url, tmp_path, max_buffer_bytes=20_000, max_batch_size=200)
    backend._pipeline.buffer.segment_bytes = 64 * 1024  # many segments: reading crosses and deletes them
    per_thread = 1000

    def work(t: int) -> None:
        for i in range(per_thread):
            backend.send(make_event(i), message_id=f"t{t}-{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    collector.faults.clear()
    assert backend.flush(60)
    ids = collector.message_ids()
    assert sorted(ids) == sorted(f"t{t}-{i}" for t in range(4) for i in range(per_thread))
    stats = backend.stats()["spool"]
    assert stats["read_back"] > 2000 and stats["spooled_bytes"] > 10 * 64 * 1024 and stats["pending"] == 0
    assert len(segments(tmp_path)) == 1
    backend.close(5)


def test_fsync_mode_delivers(collector, tmp_path):
    backend = backend_for(collector.url, tmp_path, fsync=True)
    for i in range(20):
        backend.send(make_event(i))
    assert backend.flush(30)
    assert len(set(collector.message_ids())) == 20
    backend.close(5)


def test_a_forked_child_gets_a_durable_part_and_a_live_process_delivers_what_it_left(collector, tmp_path):
    collector.faults.add(status=503, times=None)  # an outage: everything stays spooled
    process = start_script(
        """
        import json, os, signal, sys
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host=URL, spool_dir=SPOOL, flush_interval=0.05,
                                 retry_timeout=600)
        for i in range(50):
            backend.send({"name": "parent", "context": {"user_id": i}}, message_id=f"p-{i}")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            for i in range(50):
                backend.send({"name": "child", "context": {"user_id": i}}, message_id=f"c-{i}")
            spool = backend.stats()["spool"]
            os.write(write, json.dumps(spool).encode() + b"\\n")
            os.kill(os.getpid(), signal.SIGKILL)  # dies without a word: its part is left behind
        os.waitpid(pid, 0)
        print(os.read(read, 1 << 20).decode().strip(), flush=True)
        print(json.dumps(backend.stats()["spool"]), flush=True)
        sys.stdin.readline()  # the outage is over
        backend.close(60)
        """,
        URL=collector.url,
        SPOOL=str(tmp_path),
    )
    try:
        child, parent = orjson.loads(process.stdout.readline()), orjson.loads(process.stdout.readline())
        [child_part] = [part for part in child["parts"] if part["state"] == "own"]
        [parent_part] = [part for part in parent["parts"] if part["state"] == "own"]
        assert child_part["name"] != parent_part["name"] and child_part["pid"] != parent_part["pid"]
        assert child["spooled"] == 50 and child["memory_fallback"] == 0  # durable, not memory
        assert child_part["pending"] == 50 and parent_part["pending"] == 50
        assert len(parts(tmp_path)) == 2
        collector.faults.clear()
        # The parent's sender finds the dead child's part by its free lock, and delivers it.
        wait_until(lambda: collector.count() >= 100)
        process.stdin.write("go\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=100)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert sorted(collector.message_ids()) == sorted(
        [f"p-{i}" for i in range(50)] + [f"c-{i}" for i in range(50)]
    )
    assert "buffers its events in memory" not in err
    assert list(tmp_path.iterdir()) == []  # the child's part removed once delivered, the parent's at exit


# -- disk errors: the spool logs and goes on, and loses nothing it accepted ---------------------


def write_fd(spool: Spool) -> int:
    """The descriptor of the segment file the spool writes (-1 before its part exists)."""
    own = spool._backlog.own
    return own.write_fd if own is not None else -1


@pytest.fixture
def disk_space(monkeypatch):
    """``disk_space(spool, free)``: writes to the spool's segment files fail with ENOSPC once
    ``free`` bytes are written (what fits is written: a short write), until ``disk_space(None)``.
    ``truncate_fails=True`` also fails the cleanup (``ftruncate``) of those files."""
    real_write, real_pwrite, real_ftruncate = os.write, os.pwrite, os.ftruncate
    state = {"spool": None, "free": 0, "truncate_fails": False}

    def room(fd: int, data) -> bytes:
        spool = state["spool"]
        data = bytes(data)
        if spool is None or fd != write_fd(spool) or len(data) <= state["free"]:
            if spool is not None and fd == write_fd(spool):
                state["free"] -= len(data)
            return data
        return data[: state["free"]]

    def write(fd, data):
        part = room(fd, data)
        if len(part) < len(data):
            state["free"] = 0
            real_write(fd, part)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def pwrite(fd, data, offset):
        part = room(fd, data)
        if len(part) < len(data):
            state["free"] = 0
            real_pwrite(fd, part, offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    def ftruncate(fd, length):
        spool = state["spool"]
        if state["truncate_fails"] and spool is not None and fd == write_fd(spool):
            raise OSError(errno.EIO, "Input/output error")
        return real_ftruncate(fd, length)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "ftruncate", ftruncate)

    def limit(spool, free: int = 0, truncate_fails: bool = False) -> None:
        state.update(spool=spool, free=free, truncate_fails=truncate_fails)

    return limit


def drain(spool: Spool) -> list[bytes]:
    """Take and acknowledge everything pending."""
    stop = threading.Event()
    timer = threading.Timer(10, stop.set)  # a bug must not hang the test
    timer.start()
    taken: list[bytes] = []
    try:
        while spool.pending()[0] and not stop.is_set():
            batch = spool.take(1000, 10**7, 0, stop)
            taken += batch
            spool.done(batch)
    finally:
        timer.cancel()
    return taken


def test_a_put_the_disk_refuses_is_kept_in_memory_and_nothing_on_disk_is_lost(tmp_path, disk_space, caplog):
    spool = Spool(str(tmp_path))
    for i in range(3):
        assert spool.put(track_message(i))
    disk_space(spool, free=0)
    with caplog.at_level(logging.WARNING):
        assert spool.put(track_message(3))  # in memory: counted, and warned about once
        assert spool.put(track_message(4))
    assert caplog.text.count("kept in memory only") == 1
    disk_space(None)
    assert spool.put(track_message(5))
    stats = spool.stats()
    assert stats["memory_fallback"] == 2 and stats["memory_only"] == 2 and stats["spooled"] == 4
    assert spool.pending()[0] == 6 and spool.accepted == 6
    batch = spool.take(10, 10**6, 0, threading.Event())
    assert batch == [track_message(3), track_message(4)]  # memory only: the most at risk, first
    spool.done(batch)
    assert spool.stats()["memory_only"] == 0
    spool.close()
    again = Spool(str(tmp_path))
    assert again.stats()["recovered"] == 4 and again.stats()["corrupt"] == 0
    assert drain(again) == [track_message(i) for i in (0, 1, 2, 5)]
    again.close()


def test_a_half_written_record_that_cannot_be_cut_off_corrupts_nothing(tmp_path, disk_space):
    spool = Spool(str(tmp_path))
    assert spool.put(track_message(0))
    disk_space(spool, free=40, truncate_fails=True)  # 40 bytes of the record stay in the file
    assert spool.put(track_message(1))  # in memory only
    disk_space(None)
    for i in range(2, 6):
        assert spool.put(track_message(i))
    disk_space(spool, free=30, truncate_fails=True)  # and the last one, at the tail
    assert spool.put(track_message(6))
    disk_space(None)
    assert spool.stats()["memory_fallback"] == 2
    spool.close()  # the two kept in memory only are lost with the process (logged)
    again = Spool(str(tmp_path))
    assert again.stats()["recovered"] == 5 and again.stats()["corrupt"] == 0
    assert drain(again) == [track_message(i) for i in (0, 2, 3, 4, 5)]
    again.close()


def test_keep_for_later_on_a_full_disk_leaves_the_batch_where_it_is(tmp_path, disk_space):
    spool = Spool(str(tmp_path))
    for i in range(3):
        assert spool.put(track_message(i))
    batch = spool.take(10, 10**6, 0, threading.Event())
    assert len(batch) == 3
    disk_space(spool, free=len(encode_record(batch[0])) + 10)  # room for one record, not three
    assert spool.keep_for_later(batch[1:])  # kept where it is: never given up on
    spool.done(batch)  # not acknowledged
    assert spool.pending()[0] == 3 and spool.stats()["rewound"] == 3 and spool.stats()["requeued"] == 0
    assert spool.put(track_message(3))  # the disk is full: memory only
    disk_space(None)
    assert drain(spool) == [track_message(3)] + batch  # the whole batch again, in order, from disk
    assert spool.wait_idle(0) and spool.pending() == (0, 0)
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_keep_for_later_of_memory_only_messages_on_a_full_disk_keeps_them_in_memory(tmp_path, disk_space):
    spool = Spool(str(tmp_path))
    disk_space(spool, free=0)
    for i in range(3):
        assert spool.put(track_message(i))
    batch = spool.take(10, 10**6, 0, threading.Event())
    assert spool.keep_for_later(batch[:2])
    spool.done(batch)
    assert spool.pending()[0] == 2 and spool.stats()["memory_only"] == 2
    disk_space(None)
    assert drain(spool) == batch[:2]
    spool.close()


def test_a_segment_that_cannot_be_deleted_is_logged_and_left(tmp_path, monkeypatch, caplog):
    spool = Spool(str(tmp_path), memory_bytes=1, segment_bytes=1000)  # many segments, read from disk
    for i in range(50):
        assert spool.put(track_message(i))
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.path.basename(str(path)).startswith("seg-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with caplog.at_level(logging.WARNING):
        assert drain(spool) == [track_message(i) for i in range(50)]
        spool.close()
    assert "cannot delete" in caplog.text
    monkeypatch.undo()
    again = Spool(str(tmp_path))  # what was left is deleted now, and nothing is sent again
    assert again.stats()["recovered"] == 0
    again.close()
    assert segments(tmp_path) == []


def test_a_segment_that_cannot_be_read_is_skipped_and_the_spool_goes_on(tmp_path, monkeypatch, caplog):
    spool = Spool(str(tmp_path), memory_bytes=1)  # every record is read back from disk
    for i in range(3):
        assert spool.put(track_message(i))
    real_pread = os.pread

    def pread(fd, size, offset):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pread", pread)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()  # take waits for more once it has skipped the segment
    with caplog.at_level(logging.WARNING):
        assert spool.take(10, 10**6, 0, stop) == []
    assert "unreadable" in caplog.text and spool.stats()["corrupt"] == 1
    monkeypatch.setattr(os, "pread", real_pread)
    assert spool.put(track_message(3))
    assert drain(spool) == [track_message(3)]
    spool.close()


@pytest.mark.parametrize("contents", [b"", b"\x07" * 20, b"not an acknowledgement record"])
def test_an_unreadable_acked_file_sends_everything_again(tmp_path, caplog, contents):
    spool = Spool(str(tmp_path), segment_bytes=500)  # several segments
    for i in range(10):
        assert spool.put(track_message(i))
    batch = spool.take(4, 10**6, 0, threading.Event())
    spool.done(batch)
    spool.close()
    check = Spool(str(tmp_path))
    assert check.stats()["recovered"] == 6
    check.close()
    [part] = parts(tmp_path)
    (part / ACK_FILE).write_bytes(contents)
    with caplog.at_level(logging.WARNING):
        again = Spool(str(tmp_path))
    assert f"{ACK_FILE} unreadable" in caplog.text
    sent = drain(again)
    assert set(sent) >= {track_message(i) for i in range(4, 10)}  # copies, never a loss
    assert sent == sorted(sent, key=lambda message: int(orjson.loads(message)["userId"]))  # in order
    again.close()


def test_a_damaged_length_costs_the_rest_of_its_segment_counted_once(tmp_path):
    records = [bytes([65 + i]) * (20 + i) for i in range(10)]
    data = bytearray(SEGMENT_MAGIC + b"".join(map(encode_record, records)))
    position = len(SEGMENT_MAGIC) + sum(len(encode_record(r)) for r in records[:4])
    data[position] -= 3  # record 4's length: its payload check fails, and nothing after it can be found
    (tmp_path / "seg").write_bytes(bytes(data))
    fd = os.open(tmp_path / "seg", os.O_RDONLY)
    try:
        read = list(iter_records(fd, len(SEGMENT_MAGIC), len(data)))
    finally:
        os.close(fd)
    ends = [len(SEGMENT_MAGIC) + sum(len(encode_record(x)) for x in records[: i + 1]) for i in range(4)]
    assert read[:4] == list(zip(records[:4], ends))
    assert read[4:] == [(None, len(data))]


def resend_args(collector, spool_dir) -> list[str]:
    return ["resend", "--spool", str(spool_dir), "--write-key", KEY, "--host", collector.url]


def test_resend_sends_without_the_lock_and_keeps_dead_letters_appended_meanwhile(collector, tmp_path, capsys):
    old = b'{"reason":"HTTP 400: x","time":"t","message":' + track_message(1) + b"}\n"
    new = b'{"reason":"HTTP 400: y","time":"t","message":' + track_message(2) + b"}\n"
    (tmp_path / DEAD_LETTER_FILE).write_bytes(old)
    lock_free = []

    make_worker = deadletters.sender_worker

    def appending_meanwhile(*args, **options):
        worker = make_worker(*args, **options)
        close = worker.close

        def close_appending(timeout=None):  # the resend is under way: a backend appends a dead letter
            fd = os.open(tmp_path / "deadletters.lock", os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock_free.append(True)
            except BlockingIOError:
                lock_free.append(False)
            finally:
                os.close(fd)
            if lock_free[-1]:
                spool_module.append_dead_letters(str(tmp_path), new)
            return close(timeout)

        worker.close = close_appending
        return worker

    with mock.patch.object(deadletters, "sender_worker", appending_meanwhile):
        status, out = run_cli(capsys, *resend_args(collector, tmp_path))
    assert lock_free == [True]
    assert "delivered 1" in out and "1 new dead letter arrived meanwhile" in out and status == 1
    assert (tmp_path / DEAD_LETTER_FILE).read_bytes() == new
    assert collector.message_ids() == ["raw-1"]
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []


def test_resend_that_cannot_rewrite_leaves_the_file_and_no_temporary(
    collector, tmp_path, capsys, monkeypatch
):
    old = b'{"reason":"HTTP 400: x","time":"t","message":' + track_message(1) + b"}\n"
    (tmp_path / DEAD_LETTER_FILE).write_bytes(old)

    def replace(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(deadletters.os, "replace", replace)
    status, _ = run_cli(capsys, *resend_args(collector, tmp_path))
    assert status == 1
    assert (tmp_path / DEAD_LETTER_FILE).read_bytes() == old
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []


# -- one directory for many processes: parts, adoption, leftovers ------------------------------


def test_a_killed_process_part_is_adopted_and_delivered_by_a_live_one_once(collector, tmp_path):
    live = backend_for(collector.url, tmp_path)
    live.send(make_event(0), message_id="live-0")  # its sender runs, and scans every second
    assert live.flush(30)
    count = 500
    process = start_script(
        SENDER_SCRIPT, URL=closed_port_url(), SPOOL=str(tmp_path), COUNT=count, BATCH=100, LINGER=0.05
    )
    try:
        assert process.stdout.readline() == "sent\n", process.stderr.read()
        wait_until(lambda: len(parts(tmp_path)) == 2)
        assert live.stats()["spool"]["adopted"] == 0  # alive: left alone
    finally:
        kill(process)
    wait_until(lambda: collector.count() >= count + 1)  # no restart: the live process delivers it
    assert live.flush(30)
    assert sorted(collector.message_ids()) == sorted(["live-0"] + [f"m-{i}" for i in range(count)])
    spool = live.stats()["spool"]
    assert spool["adopted"] == 1 and spool["recovered"] == count
    wait_until(lambda: len(parts(tmp_path)) == 1)  # its leftovers removed
    live.close(5)
    assert list(tmp_path.iterdir()) == []


def test_a_part_named_with_a_reused_pid_is_still_adopted(collector, tmp_path):
    """Liveness is the lock, never the pid: a dead process's part named with this process's pid
    (the kernel reused it) is not mistaken for this process's own."""
    spool = Spool(str(tmp_path))
    for i in range(5):
        assert spool.put(track_message(i))
    spool.close()  # unacknowledged: the part stays, unlocked
    [part] = parts(tmp_path)
    reused = tmp_path / f"part-{os.getpid()}-00000000"
    part.rename(reused)
    (reused / "lock").write_text(f"{os.getpid()}\n")
    backend = backend_for(collector.url, tmp_path)
    assert backend.stats()["spool"]["recovered"] == 5
    assert backend.flush(30)
    assert sorted(collector.message_ids()) == sorted(f"raw-{i}" for i in range(5))
    assert not reused.exists()
    backend.close(5)


def test_leftovers_of_interrupted_creations_and_removals_are_cleaned(tmp_path):
    stale = tmp_path / ".new-123-abcdef01"  # a creator killed before its part was renamed
    stale.mkdir()
    (stale / "lock").write_text("123\n")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    young = tmp_path / ".new-124-abcdef02"  # maybe being created right now: left alone
    young.mkdir()
    halfway = tmp_path / "part-125-abcdef03"  # a removal cut short after the lock went
    halfway.mkdir()
    (halfway / ACK_FILE).write_bytes(b"")
    spool = Spool(str(tmp_path))
    assert not stale.exists() and not halfway.exists() and young.exists()
    spool.close()


def test_a_symbolic_link_is_never_taken_for_a_part(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    spool = Spool(str(elsewhere))
    assert spool.put(track_message(1))
    spool.close()
    [part] = parts(elsewhere)
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    (root / part.name).symlink_to(part)
    again = Spool(str(root))
    assert again.stats()["recovered"] == 0
    again.close()
    assert (part / "lock").exists()  # untouched


def test_a_directory_others_can_write_is_made_private_when_it_is_ours(tmp_path, caplog):
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o777)
    with caplog.at_level(logging.WARNING):
        spool = Spool(str(directory))
    assert "writable by other users" in caplog.text
    assert directory.stat().st_mode & 0o777 == 0o755
    spool.close()


@pytest.mark.parametrize("kind", ["sticky", "foreign"])
def test_a_directory_others_can_write_and_we_cannot_fix_is_refused(collector, tmp_path, caplog, kind):
    directory = tmp_path / kind
    directory.mkdir()
    directory.chmod(0o1777 if kind == "sticky" else 0o777)
    if kind == "foreign":
        os.chown(directory, 65534, 65534)  # nobody's (the tests run as root)
    with pytest.raises(spool_module.SpoolUnsafe) as refused:
        Spool(str(directory))
    assert "writable by other users" in str(refused.value) and str(directory) in str(refused.value)
    with caplog.at_level(logging.WARNING):
        backend = backend_for(collector.url, directory)  # the application still starts, loudly
    assert "cannot open the spool" in caplog.text and "writable by other users" in caplog.text
    backend.send(make_event(1))
    assert backend.flush(30) and collector.count() == 1
    backend.close(5)
    assert list(directory.iterdir()) == []


def test_dead_letters_are_never_written_through_a_symbolic_link(collector, tmp_path, caplog):
    target = tmp_path / "target"
    target.write_bytes(b"precious\n")
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    (spool_dir / DEAD_LETTER_FILE).symlink_to(target)
    collector.faults.reject_event("poison")
    backend = backend_for(collector.url, spool_dir)
    with caplog.at_level(logging.WARNING):
        backend.send(make_event(1, name="poison"))
        assert backend.flush(30)
    assert "cannot write dead letters" in caplog.text
    assert target.read_bytes() == b"precious\n"
    assert cli.main(["deadletters", "list", "--spool", str(spool_dir)]) == 1  # refused, said on stderr
    assert target.read_bytes() == b"precious\n"
    backend.close(5)


SPOOLING_SCRIPT = """
import sys, time
from eventtracking.queue.spool import Spool
spool = Spool(SPOOL)
for i in range(COUNT):
    message = '{"type":"track","event":"left","userId":"1","messageId":"' + PREFIX + str(i) + '"}'
    assert spool.put(message.encode())
print("spooled", flush=True)
time.sleep(600)
"""


def test_drain_delivers_what_dead_processes_left_and_leaves_live_parts_to_their_owner(
    collector, tmp_path, capsys
):
    processes = [
        start_script(SPOOLING_SCRIPT, SPOOL=str(tmp_path), COUNT=30, PREFIX=prefix)
        for prefix in ("a-", "b-", "live-")
    ]
    try:
        for process in processes:
            assert process.stdout.readline() == "spooled\n", process.stderr.read()
        for process in processes[:2]:
            kill(process)
        status = cli.main(["spool", "status", "--spool", str(tmp_path)])
        out = capsys.readouterr().out
        assert status == 0 and out.count("  left  ") == 2 and out.count("  live  ") == 1
        assert "60 messages left by processes that are gone" in out
        status = cli.main(
            ["spool", "drain", "--spool", str(tmp_path), "--write-key", KEY, "--host", collector.url]
        )
        out = capsys.readouterr().out
        assert status == 0, out
        assert "60 messages in 2 parts" in out and "delivered 60" in out
        assert f"live process {processes[2].pid}" in out
        assert sorted(collector.message_ids()) == sorted(f"{p}{i}" for p in ("a-", "b-") for i in range(30))
        assert [part.name.split("-")[1] for part in parts(tmp_path)] == [str(processes[2].pid)]
    finally:
        for process in processes:
            if process.poll() is None:
                kill(process)
    # the site is gone: drain delivers the last one too
    status = cli.main(
        ["spool", "drain", "--spool", str(tmp_path), "--write-key", KEY, "--host", collector.url]
    )
    assert status == 0 and "delivered 30" in capsys.readouterr().out
    assert collector.count() == 90 and list(tmp_path.iterdir()) == []


def test_drain_in_an_outage_keeps_everything(tmp_path, capsys):
    process = start_script(SPOOLING_SCRIPT, SPOOL=str(tmp_path), COUNT=10, PREFIX="o-")
    try:
        assert process.stdout.readline() == "spooled\n", process.stderr.read()
    finally:
        kill(process)
    argv = ["spool", "drain", "--spool", str(tmp_path), "--write-key", KEY, "--host", closed_port_url()]
    assert cli.main([*argv, "--timeout", "1"]) == 1
    assert "stays on disk" in capsys.readouterr().out
    assert cli.main(["spool", "status", "--spool", str(tmp_path), "--json"]) == 0
    [part] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert part["state"] == "left" and part["pending"] == 10


def test_the_disk_bound_covers_the_whole_directory(tmp_path):
    first = Spool(str(tmp_path), max_bytes=20_000)
    while first.put(track_message(1)):
        pass
    held = first.pending()[1]
    assert 19_000 < held <= 20_000
    second = Spool(str(tmp_path), max_bytes=20_000)  # measures first's part when it opens
    assert not second.put(track_message(2))  # the directory is full
    [live] = second.stats()["parts"]  # no part of its own: it wrote nothing yet
    assert live["state"] == "live" and live["disk_bytes"] >= held
    drain(first)
    first.close()
    second._scan()  # what the sender does every second
    assert second.put(track_message(2))
    second.close()


def test_a_forked_child_closing_what_it_inherited_leaves_the_parents_part_alone(tmp_path):
    process = start_script(
        """
        import os, sys
        from eventtracking.queue.spool import Spool
        spool = Spool(SPOOL)
        assert spool.put(b'{"m":1}')
        stop = __import__("threading").Event()
        spool.done(spool.take(10, 10**6, 0, stop))  # idle: a close in the parent would remove the part
        pid = os.fork()
        if pid == 0:  # a fork without the at-fork hooks (as uWSGI's), then the exit path closes
            spool.close()
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        [part] = [name for name in os.listdir(SPOOL) if name.startswith("part-")]
        assert os.path.exists(os.path.join(SPOOL, part, "lock")), "the child removed the parent's part"
        assert spool.put(b'{"m":2}') and spool.take(10, 10**6, 0, stop) == [b'{"m":2}']
        print("ok", flush=True)
        """,
        SPOOL=str(tmp_path),
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and out == "ok\n", err


def test_segments_of_the_earlier_layout_at_the_top_are_adopted(collector, tmp_path):
    """An earlier version wrote ``lock``, ``acked`` and segments directly in the directory."""
    spool = Spool(str(tmp_path / "old"))
    for i in range(4):
        assert spool.put(track_message(i))
    batch = spool.take(1, 10**6, 0, threading.Event())
    spool.done(batch)  # the first one acknowledged
    spool.close()
    [part] = parts(tmp_path / "old")
    for path in part.iterdir():
        path.rename(tmp_path / path.name)
    backend = backend_for(collector.url, tmp_path)
    assert backend.stats()["spool"]["recovered"] == 3
    assert backend.flush(30)
    assert sorted(collector.message_ids()) == sorted(f"raw-{i}" for i in range(1, 4))
    backend.close(5)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["old"]  # segments, acked, lock: gone
