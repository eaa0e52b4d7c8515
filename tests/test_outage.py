"""The default promise during a Segment outage: retried while the process lives, bounded by memory.

A batch the server answers with a retryable error (here 503 from the project's collector, with
its fault plan) is retried for as long as the process lives by default; new events fill the
buffer meanwhile, and past ``max_buffer_bytes`` the newest are dropped, counted and warned
about, while the old ones are delivered once the server is back. ``close()`` stays bounded.
"""

from __future__ import annotations

import logging
import time

import pytest
from engines import wait_until

from eventtracking.backends.segment import SegmentBackend

pytestmark = pytest.mark.timeout(300)

# Until 5.0 a batch was given up after retry_timeout, 60 s by default (the issue measured 100 of
# 100 lost with 503s and retry_timeout=2). The outage here outlasts that old default; a backend
# given retry_timeout=2 beside it shows the outage is real (it gives up; the option remains).
OLD_DEFAULT_BUDGET = 60.0
OUTAGE = OLD_DEFAULT_BUDGET + 5.0


def event(name: str, seq: int) -> dict:
    return {"name": name, "data": {"seq": seq, "pad": "x" * 200}, "context": {"user_id": 7}}


def seqs(collector, name: str) -> list:
    return sorted(m["properties"]["data"]["seq"] for m in collector.messages() if m["event"] == name)


def test_an_outage_longer_than_a_retry_budget_loses_nothing_by_default(collector):
    collector.faults.add(status=503, times=None)  # every request, until clear()
    default = SegmentBackend(write_key="k", host=collector.url, flush_interval=0.05)
    budgeted = SegmentBackend(write_key="k", host=collector.url, flush_interval=0.05, retry_timeout=2.0)
    try:
        started = time.monotonic()
        for seq in range(100):
            default.send(event("edx.default", seq))
            budgeted.send(event("edx.budgeted", seq))
        # The option still gives up (the outage is longer than its budget): the test can fail.
        wait_until(lambda: budgeted.stats()["dropped"].get("gave_up") == 100, 60, "the budget to run out")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - started)))
        assert collector.count() == 0 and collector.requests["faulted"] >= 4
        stats = default.stats()
        assert stats["dropped"] == {} and stats["in_flight"] == 100 and stats["retries"] >= 2
        assert "HTTP 503" in (stats["last_error"] or "")
        collector.faults.clear()  # the server is back
        assert default.flush(60)
        assert seqs(collector, "edx.default") == list(range(100))
        assert seqs(collector, "edx.budgeted") == []
        ids = [m["messageId"] for m in collector.messages()]
        assert len(ids) == len(set(ids)) == 100
        assert default.stats()["delivered"] == 100 and default.stats()["dropped"] == {}
    finally:
        default.close(5)
        budgeted.close(5)


def test_past_the_memory_bound_new_events_are_dropped_and_the_old_ones_delivered(collector, caplog):
    collector.faults.add(status=503, times=None)
    backend = SegmentBackend(write_key="k", host=collector.url, flush_interval=0.05, max_buffer_bytes=20_000)
    try:
        backend.send(event("edx.outage", 0))
        wait_until(lambda: collector.requests["faulted"] >= 1, 60, "a 503")  # the sender holds its batch
        with caplog.at_level(logging.WARNING, logger="eventtracking.backends.segment"):
            for seq in range(1, 300):
                backend.send(event("edx.outage", seq))
        stats = backend.stats()
        accepted, dropped = stats["accepted"], stats["dropped"].get("buffer_full", 0)
        assert 10 < accepted < 300 and accepted + dropped == 300, stats
        assert stats["reasons"]["buffer_full"] == "buffer full (20000 bytes)"
        assert "buffer full (20000 bytes): dropped" in caplog.text
        collector.faults.clear()
        assert backend.flush(60)
        # The old ones arrive, each once; what was dropped is the newest.
        assert seqs(collector, "edx.outage") == list(range(accepted))
        assert backend.stats()["delivered"] == accepted
    finally:
        backend.close(5)


def test_close_stays_bounded_by_its_timeout_during_an_endless_outage(collector):
    collector.faults.add(status=503, times=None)
    backend = SegmentBackend(write_key="k", host=collector.url, flush_interval=0.05, exit_timeout=1.0)
    for seq in range(10):
        backend.send(event("edx.endless", seq))
    wait_until(lambda: collector.requests["faulted"] >= 2, 60, "two 503s")
    started = time.monotonic()
    assert backend.close(backend.exit_timeout) is False
    elapsed = time.monotonic() - started
    print(f"close(1.0) returned after {elapsed:.2f} s")
    assert elapsed < 10  # generous: the bound is the timeout plus one request on a loaded machine
    assert backend.stats()["dropped"] == {"gave_up": 10}
