"""eventtracking.background and Celery's shutdown signals, in fresh interpreters (a test process
has long imported Celery): importing the package never imports Celery, and once Celery is in the
process, its ``worker_process_shutdown`` and ``worker_shutdown`` signals close every background
owner at once, without waiting out the sender's linger. Real Celery signals, the real collector;
the real workers are in tests/test_celery_workers.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)


def run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_importing_and_using_the_package_never_imports_celery(collector):
    out = run(
        f"""
        import sys
        import eventtracking, eventtracking.background, eventtracking.tracker, eventtracking.publisher
        import eventtracking.backends.segment, eventtracking.backends.routing, eventtracking.backends.logger
        import eventtracking.segment.spool
        from eventtracking.backends.segment import SegmentBackend

        backend = SegmentBackend(write_key="k", host={collector.url!r}, flush_interval=0.01)
        backend.send({{"name": "edx.hook", "data": {{}}, "context": {{"user_id": 1}}}})
        assert backend.flush(30)
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("celery", "kombu", "billiard")))
        """
    )
    assert out.strip() == "[]"
    assert collector.count() == 1


@pytest.mark.parametrize("signal_name", ["worker_process_shutdown", "worker_shutdown"])
def test_celery_imported_after_the_owner_was_made_still_closes_it_on_its_signal(collector, signal_name):
    """The backend is made before Celery is imported; its sender's linger is a minute; the
    process ends as billiard ends a prefork child: the signal, then os._exit() (no atexit)."""
    out = run(
        f"""
        import os, time
        from eventtracking import background
        from eventtracking.backends.segment import SegmentBackend

        backend = SegmentBackend(write_key="k", host={collector.url!r}, flush_interval=60)
        assert not background.hook_celery()  # no Celery yet
        from celery import signals  # Celery arrives after the package and the backend
        for seq in range(3):
            backend.send({{"name": "edx.hook", "data": {{"seq": seq}}, "context": {{"user_id": 1}}}})
        started = time.monotonic()
        signals.{signal_name}.send(sender=None, pid=os.getpid(), exitcode=0)
        print(f"{{time.monotonic() - started:.3f}}", flush=True)
        os._exit(0)
        """
    )
    seconds = float(out.strip())
    assert sorted(m["properties"]["data"]["seq"] for m in collector.messages()) == [0, 1, 2]
    assert seconds < 20  # generous on a loaded machine: waiting out the linger takes 60 s
