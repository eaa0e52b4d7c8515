"""MemoryBuffer: the bounded hand-over between application threads and the sender."""

from __future__ import annotations

import threading

from eventtracking.queue.memory import MemoryBuffer

STOP = threading.Event()
STOP.set()  # never wait in these tests


def items(n: int, size: int = 10) -> list[bytes]:
    return [str(i).encode().ljust(size, b".") for i in range(n)]


def test_bound_in_bytes_refuses_without_keeping():
    buffer = MemoryBuffer(25)
    assert buffer.put(b"x" * 10) and buffer.put(b"y" * 10)
    assert not buffer.put(b"z" * 10)
    assert buffer.pending() == (2, 20) and buffer.accepted == 2


def test_batches_keep_order_and_respect_count_and_bytes():
    buffer = MemoryBuffer(10_000)
    data = items(25)
    for item in data:
        buffer.put(item)
    first = buffer.take(10, 10_000, 0, STOP)
    second = buffer.take(10, 35, 0, STOP)  # 35 bytes: three items of ten
    for item in items(3, 12):  # put while the backlog is half taken
        buffer.put(item)
    rest = []
    while batch := buffer.take(100, 10_000, 0, STOP):
        rest.extend(batch)
    assert first == data[:10] and second == data[10:13]
    assert rest == data[13:] + items(3, 12)
    assert buffer.pending() == (25 + 3, 0)  # taken, not yet done


def test_an_item_over_the_batch_bytes_goes_alone():
    buffer = MemoryBuffer(10_000)
    buffer.put(b"a" * 50)
    buffer.put(b"b")
    assert buffer.take(10, 20, 0, STOP) == [b"a" * 50]
    assert buffer.take(10, 20, 0, STOP) == [b"b"]


def test_bytes_are_released_when_taken_and_idle_after_done():
    buffer = MemoryBuffer(100)
    for item in items(10):
        buffer.put(item)
    assert not buffer.put(b"x")
    batch = buffer.take(5, 1000, 0, STOP)
    assert buffer.put(b"x")  # room again as soon as the sender took a batch
    assert buffer.wait_idle(0.01) is False
    rest = buffer.take(100, 1000, 0, STOP)
    assert buffer.take(100, 1000, 0, STOP) == [b"x"]
    buffer.done(batch)
    buffer.done(rest)
    assert buffer.wait_idle(0.01) is False  # [b"x"] is still in flight
    buffer.done([b"x"])
    assert buffer.wait_idle(0.01) is True and buffer.pending() == (0, 0)


def test_taken_items_are_not_referenced_twice():
    buffer = MemoryBuffer(10_000)
    for item in items(10):
        buffer.put(item)
    buffer.take(4, 10_000, 0, STOP)
    assert buffer._backlog[:4] == [b""] * 4  # the sender's copy is the only one left


def test_take_waits_for_an_item_and_returns_empty_when_stopping():
    buffer = MemoryBuffer(100)
    stop = threading.Event()
    got = []
    taker = threading.Thread(target=lambda: got.append(buffer.take(10, 100, 0, stop)))
    taker.start()
    buffer.put(b"late")
    taker.join(5)
    assert got == [[b"late"]]
    stop.set()
    assert buffer.take(10, 100, 0, stop) == []


def test_discard_inherited_starts_empty():
    buffer = MemoryBuffer(100)
    buffer.put(b"parent's")
    buffer.discard_inherited()
    assert buffer.pending() == (0, 0) and buffer.accepted == 0
    assert buffer.put(b"child's")


def test_the_old_import_paths_still_name_the_same_objects():
    """``eventtracking.segment.buffer``, ``.spool`` and ``.stats`` are re-exports for one release."""
    from eventtracking.queue import spool, stats
    from eventtracking.queue.factory import open_buffer
    from eventtracking.segment import buffer as old_buffer
    from eventtracking.segment import spool as old_spool
    from eventtracking.segment import stats as old_stats

    assert old_buffer.MemoryBuffer is MemoryBuffer and old_buffer.open_buffer is open_buffer
    assert old_spool.Spool is spool.Spool and old_spool.survey is spool.survey
    assert old_stats.Counters is stats.Counters
