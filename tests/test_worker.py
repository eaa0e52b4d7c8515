"""The BatchWorker's own contract (eventtracking.queue.worker), as a unit: its loop, pause, close
deadline, fork reset and a caller's Handle, with a recording handler in place of a destination.
Delivery itself is proven end to end in test_delivery.py, test_publisher.py and test_spool.py."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

import pytest

from eventtracking.queue.memory import MemoryBuffer
from eventtracking.queue.stats import Counters
from eventtracking.queue.worker import BatchWorker, Closed, Handle

log = logging.getLogger("tests.worker")


class Recorder:
    """A BatchHandler that records what it was handed and does what the test tells it."""

    def __init__(self, pause: float = 0.0, wait_for_give_up: float = 0.0) -> None:
        self.handled: list[list[bytes]] = []
        self.failures: list[tuple[list[bytes], str]] = []
        self.gave_up: list[bool] = []
        self.pause = pause
        self.wait_for_give_up = wait_for_give_up  # an outage: wait this long unless close() gives up
        self.raise_on: Optional[bytes] = None
        self.forked = 0
        self.closed = 0

    def handle(self, batch: list[bytes], buffer: Any, give_up: threading.Event) -> float:
        if self.raise_on in batch:
            raise RuntimeError("a bug")
        if self.wait_for_give_up:
            give_up.wait(self.wait_for_give_up)
        self.gave_up.append(give_up.is_set())
        self.handled.append(batch)
        return self.pause

    def failed(self, batch: list[bytes], error: Exception) -> None:
        self.failures.append((batch, type(error).__name__))

    def after_fork_in_child(self) -> None:
        self.forked += 1

    def close(self) -> None:
        self.closed += 1


def worker_with(handler: Recorder, **options: Any) -> BatchWorker[Recorder]:
    return BatchWorker(MemoryBuffer(1 << 20), handler, Counters(), name="test-worker", log=log, **options)


def test_every_batch_is_handled_in_order_and_settled():
    handler = Recorder()
    worker = worker_with(handler, batch_count=2)
    for item in (b"1", b"2", b"3", b"4", b"5"):
        assert worker.buffer.put(item)
    assert worker.flush(30)
    assert [item for batch in handler.handled for item in batch] == [b"1", b"2", b"3", b"4", b"5"]
    assert all(len(batch) <= 2 for batch in handler.handled)
    assert worker.snapshot()["pending"] == 0 and worker.snapshot()["accepted"] == 5
    assert worker.close(5) and handler.closed == 1


def test_a_handler_that_raises_costs_its_batch_only_and_the_loop_goes_on(caplog):
    handler = Recorder()
    handler.raise_on = b"bad"
    worker = worker_with(handler, batch_count=1, label="unit: ", noun="events")
    with caplog.at_level(logging.ERROR, logger="tests.worker"):
        for item in (b"1", b"bad", b"2"):
            assert worker.buffer.put(item)
        assert worker.flush(30)  # the failed batch was settled too
    assert handler.failures == [([b"bad"], "RuntimeError")]
    assert handler.handled == [[b"1"], [b"2"]]
    assert "unit: failed on a batch of 1 events" in caplog.text
    assert worker.close(5)


def test_a_failing_take_is_tried_again(caplog):
    class FlakyBuffer(MemoryBuffer):
        failures = 1

        def take(self, *args: Any) -> list[bytes]:
            if self.failures:
                self.failures -= 1
                raise OSError("disk hiccup")
            return super().take(*args)

    handler = Recorder()
    worker = BatchWorker(FlakyBuffer(1 << 20), handler, Counters(), name="test-worker", log=log)
    with caplog.at_level(logging.ERROR, logger="tests.worker"):
        assert worker.buffer.put(b"1")
        assert worker.flush(30)
    assert handler.handled == [[b"1"]] and "could not take a batch" in caplog.text
    assert worker.close(5)


def test_the_pause_a_handler_asks_for_comes_before_the_next_take_and_close_cuts_it_short(caplog):
    handler = Recorder(pause=600.0)  # as after a part kept for later
    worker = worker_with(handler, batch_count=1)
    assert worker.buffer.put(b"1") and worker.buffer.put(b"2")
    worker.ensure_started()
    deadline = time.monotonic() + 30
    while not handler.handled and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert handler.handled == [[b"1"]]  # pausing: the next batch waits
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tests.worker"):
        assert worker.close(0.5) is False  # "2" was pending at the deadline
    assert time.monotonic() - started < 30  # not the 600 s pause
    assert "flush timed out after 0.5s: 1 messages" in caplog.text


def test_close_past_its_deadline_gives_up_the_handler_s_waits():
    handler = Recorder(wait_for_give_up=600.0)  # the destination is away
    worker = worker_with(handler)
    assert worker.buffer.put(b"1")
    worker.counters.note_error("network error: connection refused")
    started = time.monotonic()
    assert worker.close(0.5) is False
    assert time.monotonic() - started < 30
    assert handler.gave_up == [True]  # the handler saw close() give up, and returned
    assert not worker.ensure_started()  # closed for good


def test_after_fork_the_child_forgets_the_parent_s_items_counts_and_thread():
    handler = Recorder()
    worker = worker_with(handler)
    worker.background.thread = "held off"  # type: ignore[assignment]  # the parent's thread
    assert worker.buffer.put(b"parent's")
    worker.counters.add("delivered", 3)
    worker.after_fork_in_child()
    assert worker.thread is None and handler.forked == 1
    snapshot = worker.snapshot()
    assert snapshot["pending"] == 0 and snapshot["accepted"] == 0 and snapshot["delivered"] == 0
    assert worker.close(5)


class Owner:
    """A Shared owner that records what its handles ask."""

    def __init__(self, worker: BatchWorker[Recorder]) -> None:
        self.worker = worker
        self.full: list[str] = []
        self.released: list[Optional[float]] = []

    def buffer_full(self, counters: Counters, who: str) -> None:
        counters.add_reason("dropped", "buffer_full")
        self.full.append(who)

    def release(self, timeout: Optional[float] = None) -> bool:
        self.released.append(timeout)
        return self.worker.close(timeout)

    def stats(self, own: Optional[Counters] = None) -> dict[str, Any]:
        result = self.worker.snapshot()
        result["own"] = own.snapshot() if own is not None else None
        return result


def test_a_handle_puts_counts_a_full_buffer_in_its_caller_s_counters_and_closes_once():
    handler = Recorder()
    worker = BatchWorker(MemoryBuffer(10), handler, Counters(), name="test-worker", log=log, linger=0)
    owner = Owner(worker)
    mine = Counters()
    handle = Handle(owner, worker, mine, "Caller")
    worker.background.thread = "held off"  # type: ignore[assignment]  # keep what is put buffered
    assert handle.put(b"12345678")
    assert not handle.put(b"12345678")  # past the 10 bytes
    assert owner.full == ["Caller"] and mine.snapshot()["dropped"] == {"buffer_full": 1}
    assert handle.stats()["own"]["dropped"] == {"buffer_full": 1}
    worker.background.thread = None
    assert handle.release(10) and owner.released == [10]
    assert handle.release(10) and owner.released == [10]  # once
    with pytest.raises(Closed) as closed:
        handle.put(b"late")
    assert closed.value.reason == "closed"
    assert handler.handled == [[b"12345678"]]
