"""The Buffer contract (eventtracking.queue.base.Buffer), run against both buffers: the memory
buffer and the durable spool, on real files in tmp_path. Where the two differ by design (a spool
keeps what is kept for later and writes dead letters down; memory cannot), each test says what
each one does."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Callable

import pytest

from eventtracking.queue.base import Buffer
from eventtracking.queue.memory import MemoryBuffer
from eventtracking.queue.spool import Spool
from eventtracking.queue.spool.deadletters import read_dead_letters

WAIT = 30.0  # a bound no healthy run comes near (the machine is shared and loaded)
MakeBuffer = Callable[[int], Buffer]


@pytest.fixture(params=["memory", "spool"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def make(kind, tmp_path):
    """``make(max_bytes)``: a buffer of the kind under test, closed at the end of the test."""
    made: list[Buffer] = []

    def build(max_bytes: int = 1024 * 1024) -> Buffer:
        buffer: Buffer
        if kind == "memory":
            buffer = MemoryBuffer(max_bytes)
        else:
            buffer = Spool(str(tmp_path / "spool"), max_bytes=max_bytes)
        made.append(buffer)
        return buffer

    yield build
    for buffer in made:
        buffer.close()


def items(n: int, size: int = 20) -> list[bytes]:
    return [f"message-{i}".encode().ljust(size, b".") for i in range(n)]


def take_now(buffer: Buffer, max_count: int = 100, max_bytes: int = 1024 * 1024) -> list[bytes]:
    """A take that must not wait: the items are there and linger is 0."""
    return buffer.take(max_count, max_bytes, 0, threading.Event())


def in_thread(function: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    return thread, result


def test_put_take_done_in_order(make):
    buffer = make()
    data = items(5)
    assert all(buffer.put(item) for item in data)
    first = take_now(buffer, max_count=3)
    second = take_now(buffer, max_count=3)
    assert first == data[:3] and second == data[3:]
    buffer.done(first)
    buffer.done(second)
    assert buffer.pending() == (0, 0)
    assert buffer.wait_idle(0)


def test_a_batch_keeps_the_byte_limit_but_one_larger_item_goes_alone(make):
    buffer = make()
    small, large = items(3, 20), [b"L" * 200]
    for item in small + large + small:
        buffer.put(item)
    assert take_now(buffer, max_bytes=45) == small[:2]  # a third would pass 45 bytes
    assert take_now(buffer, max_bytes=45) == small[2:]  # the large one does not fit behind it
    assert take_now(buffer, max_bytes=45) == large  # alone, larger than the limit
    assert take_now(buffer, max_bytes=45) == small[:2]


def test_pending_counts_until_done(make):
    buffer = make()
    data = items(4)
    for item in data:
        buffer.put(item)
    count, size = buffer.pending()
    assert count == 4 and size >= sum(map(len, data))
    batch = take_now(buffer)
    assert buffer.pending()[0] == 4  # taken is not settled
    assert not buffer.wait_idle(0.05)
    buffer.done(batch)
    assert buffer.pending() == (0, 0)


def test_the_byte_bound_refuses_at_once_and_keeps_nothing(make):
    buffer = make(100)
    data = items(10, 30)
    accepted = [item for item in data if buffer.put(item)]
    assert 0 < len(accepted) < len(data)
    assert accepted == data[: len(accepted)]  # once full, every later put is refused
    assert buffer.accepted == len(accepted)
    assert buffer.pending()[0] == len(accepted) and sum(map(len, accepted)) <= 100
    refused_at = time.monotonic()
    assert not buffer.put(data[-1])
    assert time.monotonic() - refused_at < 1.0  # never blocks the caller
    assert take_now(buffer) == accepted  # nothing refused was kept
    buffer.done(accepted)
    assert buffer.put(data[-1])  # room again once settled


def test_take_lingers_for_a_full_batch(make):
    buffer = make()
    buffer.put(b"one")
    started = time.monotonic()
    assert buffer.take(10, 1024, 0.3, threading.Event()) == [b"one"]
    assert 0.25 <= time.monotonic() - started < WAIT


def test_linger_ends_when_the_batch_is_full(make):
    buffer = make()
    buffer.put(b"one")
    thread, result = in_thread(lambda: buffer.take(2, 1024, WAIT, threading.Event()))
    time.sleep(0.1)
    buffer.put(b"two")
    thread.join(WAIT / 2)
    assert result == [[b"one", b"two"]]


def test_linger_ends_when_a_flush_waits(make):
    buffer = make()
    buffer.put(b"one")
    thread, result = in_thread(lambda: buffer.take(10, 1024, WAIT, threading.Event()))
    time.sleep(0.1)
    assert not buffer.wait_idle(0.2)  # the batch is taken (not done): not idle, but no lingering
    thread.join(WAIT / 2)
    assert result == [[b"one"]]


def test_take_blocks_while_empty_and_returns_nothing_once_stopped(make):
    buffer = make()
    stop = threading.Event()
    thread, result = in_thread(lambda: buffer.take(10, 1024, 0, stop))
    time.sleep(0.2)
    assert thread.is_alive() and result == []  # blocked for the first item
    stop.set()
    buffer.wake()
    thread.join(WAIT / 2)
    assert result == [[]]


def test_wait_idle_waits_for_done(make):
    buffer = make()
    buffer.put(b"one")
    assert not buffer.wait_idle(0.05)
    batch = take_now(buffer)
    thread, result = in_thread(lambda: buffer.wait_idle(WAIT))
    time.sleep(0.1)
    assert result == []
    buffer.done(batch)
    thread.join(WAIT / 2)
    assert result == [True]


def test_keep_for_later(make, kind):
    """Memory cannot keep a batch for later (False: it is lost); a spool keeps every one (True)
    and hands the same batch back on a later take."""
    buffer = make()
    data = items(3)
    for item in data:
        buffer.put(item)
    batch = take_now(buffer)
    kept = buffer.keep_for_later(batch)
    buffer.done(batch)
    if kind == "memory":
        assert kept is False
        assert buffer.pending() == (0, 0) and buffer.wait_idle(0)
    else:
        assert kept is True
        assert buffer.pending()[0] == 3 and not buffer.wait_idle(0.05)
        again = take_now(buffer)
        assert again == data
        buffer.done(again)
        assert buffer.pending() == (0, 0) and buffer.wait_idle(WAIT)


def test_dead_letter(make, kind, tmp_path):
    """Memory forgets what was finally refused; a spool writes it to deadletters.jsonl. Either
    way ``done`` settles it."""
    buffer = make()
    message = b'{"type":"track","event":"refused","messageId":"m-1"}'
    buffer.put(message)
    batch = take_now(buffer)
    buffer.dead_letter("HTTP 400: bad", batch)
    buffer.done(batch)
    assert buffer.pending() == (0, 0)
    if kind == "spool":
        [(_, entry)] = read_dead_letters(str(tmp_path / "spool"))
        assert entry is not None and entry["reason"] == "HTTP 400: bad"
        assert entry["message"]["messageId"] == "m-1"
        stats = buffer.stats()
        assert stats is not None and stats["dead_letters"] == 1
    else:
        assert not (tmp_path / "spool").exists()


FORK_SCRIPT = """
import os, sys, threading
from eventtracking.queue.memory import MemoryBuffer
from eventtracking.queue.spool import Spool

kind, directory = sys.argv[1], sys.argv[2]
buffer = MemoryBuffer(1 << 20) if kind == "memory" else Spool(directory)
go = threading.Event()
data = [b"parent-%d" % i for i in range(3)]
for item in data:
    buffer.put(item)
pid = os.fork()
if pid == 0:  # the child: what it sees goes out through its exit status
    status = 1
    try:
        child = buffer.discard_inherited()
        empty = child.pending() == (0, 0) and child.accepted == 0
        child.put(b"child")
        batch = child.take(100, 1 << 20, 0, go)
        child.done(batch)
        status = 0 if empty and batch == [b"child"] and child.wait_idle(30) else 2
        child.close()
    finally:
        os._exit(status)
_, status = os.waitpid(pid, 0)
batch = buffer.take(100, 1 << 20, 0, go)
buffer.done(batch)
print(os.waitstatus_to_exitcode(status), buffer.accepted, batch == data, buffer.wait_idle(30))
buffer.close()
"""


def test_discard_inherited_in_a_forked_child(kind, tmp_path):
    """The child's buffer starts empty (the parent delivers what it had) and works; the
    parent's items are still the parent's. In a fresh interpreter: fork() with no other thread."""
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, kind, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "3", "True", "True"]
    if kind == "spool":  # the child removed its part once delivered, the parent at close
        assert list((tmp_path / "spool").iterdir()) == []


def test_close(make, kind, tmp_path):
    """Close releases what the buffer holds open, once (a second close is harmless). A spool
    refuses later puts and, all acknowledged, leaves no part behind; memory has nothing to release."""
    buffer = make()
    buffer.put(b"one")
    batch = take_now(buffer)
    buffer.done(batch)
    buffer.close()
    buffer.close()
    if kind == "spool":
        assert not buffer.put(b"two")
        assert [path.name for path in (tmp_path / "spool").iterdir() if path.name.startswith("part-")] == []
    else:
        assert buffer.put(b"two") and take_now(buffer) == [b"two"]


def test_stats(make, kind):
    """Memory reports nothing beyond pending (None); a spool reports its disk, pending included."""
    buffer = make()
    buffer.put(b"one")
    stats = buffer.stats()
    if kind == "memory":
        assert stats is None
    else:
        assert stats is not None
        assert (stats["pending"], stats["pending_bytes"]) == buffer.pending()
        assert stats["spooled"] == 1 and [part["state"] for part in stats["parts"]] == ["own"]


def test_accepted_counts_what_was_kept(make):
    buffer = make(60)
    assert buffer.accepted == 0
    assert buffer.put(b"a" * 20) and buffer.put(b"b" * 20)
    assert not buffer.put(b"c" * 50)
    assert buffer.accepted == 2
