"""The spool on a real full disk: a 2 MiB tmpfs the test mounts itself (the tests run as root, here
and in CI; without the mount they fail), against the real collector."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import time

import pytest

from eventtracking.backends.segment import SegmentBackend

KEY = "wk-disk"
DISK_BYTES = 2 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs mounted on a fresh directory, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a 2 MiB tmpfs (these tests need root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=60)


def used_bytes(mount_point) -> int:
    status = os.statvfs(mount_point)
    return (status.f_blocks - status.f_bfree) * status.f_frsize


def event(i: int) -> dict:
    return {"name": "disk.full", "data": {"i": i, "pad": "x" * 400}, "context": {"user_id": i}}


def backend_on(url: str, spool_dir, **options) -> SegmentBackend:
    options.setdefault("flush_interval", 0.05)
    return SegmentBackend(write_key=KEY, host=url, spool_dir=str(spool_dir), **options)


def fill(path) -> None:
    """Write ``path`` until the filesystem is full."""
    with open(path, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error


def wait_until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_disk_that_fills_during_an_outage_loses_nothing(collector, small_disk, caplog):
    """Spooled events stay until delivered (keep_for_later cannot re-append: they stay where they
    are), new ones go to memory while the disk is full, counted and warned about; once delivered,
    the space is reclaimed with none free, and new events are durable again."""
    collector.faults.add(status=503, times=None)
    backend = backend_on(collector.url, small_disk / "spool", retry_timeout=0.3, max_batch_size=100)
    sent = 0
    with caplog.at_level(logging.WARNING):
        while backend.stats()["spool"]["memory_fallback"] < 300:
            assert sent < 20_000, "the disk never filled"
            backend.send(event(sent), message_id=f"e-{sent}")
            sent += 1
        # The sender goes on giving up on batches for now, in the outage, with the disk full.
        kept = backend.stats()["deferred"]
        wait_until(lambda: backend.stats()["deferred"] >= kept + 300)
    stats = backend.stats()
    assert stats["dropped"] == {} and stats["accepted"] == sent
    # Whether a kept batch is rewound on disk or kept in memory depends on which batch is in
    # flight when the disk fills (timing); test_spool.py covers each branch on its own. What must
    # hold whichever ran: events were spooled, and nothing is lost.
    assert stats["spool"]["spooled"] > 2000
    assert "kept in memory only" in caplog.text
    collector.faults.clear()
    wait_until(lambda: len(set(collector.message_ids())) >= sent)
    assert backend.flush(60)
    ids = collector.message_ids()
    assert set(ids) == {f"e-{i}" for i in range(sent)}  # every accepted event arrived
    assert backend.stats()["dropped"] == {}
    assert used_bytes(small_disk) < DISK_BYTES // 4  # acknowledged space reclaimed
    before = backend.stats()["spool"]
    for i in range(100):
        backend.send(event(sent + i), message_id=f"e-{sent + i}")
    after = backend.stats()["spool"]
    assert after["spooled"] == before["spooled"] + 100  # on disk again, not in memory
    assert after["memory_fallback"] == before["memory_fallback"] and after["disk_error"] is None
    assert backend.close(60)
    assert len(set(collector.message_ids())) == sent + 100
    assert list((small_disk / "spool").iterdir()) == []


def test_a_full_disk_with_the_server_up_keeps_events_in_memory_then_spools_again(
    collector, small_disk, caplog
):
    spool_dir = small_disk / "spool"
    backend = backend_on(collector.url, spool_dir)
    backend.send(event(0), message_id="f-0")
    assert backend.flush(30)
    filler = small_disk / "filler"
    fill(filler)
    with caplog.at_level(logging.WARNING):
        for i in range(1, 201):
            backend.send(event(i), message_id=f"f-{i}")
    full = backend.stats()["spool"]
    # what still fits in the segment's last allocated page is written; then memory
    assert full["memory_fallback"] >= 150 and full["spooled"] + full["memory_fallback"] == 201
    assert full["disk_error"] and "kept in memory only" in caplog.text
    assert backend.flush(30)
    assert backend.stats()["dropped"] == {}
    os.unlink(filler)
    for i in range(201, 301):
        backend.send(event(i), message_id=f"f-{i}")
    spool = backend.stats()["spool"]
    assert spool["memory_fallback"] == full["memory_fallback"] and spool["disk_error"] is None
    assert spool["spooled"] == full["spooled"] + 100
    assert backend.close(30)
    assert sorted(collector.message_ids()) == sorted(f"f-{i}" for i in range(301))
