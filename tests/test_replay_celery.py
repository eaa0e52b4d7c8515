"""``eventtracking replay --celery APP`` on real engines: a real Redis broker, a real ``celery
worker`` (prefork, 2 processes) of the test site, and the project's collector as the Segment API
the workers send to with their own write key and host. The coordinator runs as the command does,
in a process of its own."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from engines import OURS_PYTHON, TESTS, CeleryWorker, site_env, stop_process, wait_until
from test_replay import summary_of

from eventtracking.cli import main
from eventtracking.collector import Collector
from eventtracking.replay.parts import HOST_ENV

pytestmark = pytest.mark.timeout(600)

WORKER_KEY = "the-workers-own-key"


def archive_lines(count: int, tag: str, broken_every: int = 0) -> bytes:
    lines = []
    for i in range(count):
        if broken_every and i % broken_every == broken_every - 1:
            lines.append(b"not json " + tag.encode())
            continue
        user = None if i % 97 == 5 else 7  # some without a user: skipped by rule
        event = {
            "event_type": "edx.video.played" if i % 3 else "edx.course.enrollment.activated",
            "time": f"2024-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}+00:00",
            "username": "amara",
            "context": {"user_id": user, "course_id": "course-v1:DemoX+Py101+2025", "path": f"/{tag}/{i}"},
            "event": {"i": i, "padding": "p" * 120},
        }
        lines.append(orjson.dumps(event))
    return b"\n".join(lines) + b"\n"


def make_archive(root: Path, files: int, lines: int) -> int:
    """A nested archive of gzip and plain logs; returns the number of lines."""
    total = 0
    for index in range(files):
        path = root / f"2024/{index % 3 + 1:02d}/tracking.log-{index:03d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = archive_lines(lines, f"f{index}", broken_every=1000 if index == 1 else 0)
        path.write_bytes(gzip.compress(data) if index % 2 else data)
        total += lines
    return total


def summary_text(output: str) -> str:
    """The summary without its time (elapsed, rate)."""
    return "\n".join(line for line in output.splitlines() if not line.startswith("  elapsed"))


@pytest.fixture
def worker_collector():
    """The workers' destination: it takes their write key only."""
    with Collector(write_key=WORKER_KEY) as running:
        yield running
    running.close()


@pytest.fixture
def site(redis_server, worker_collector, tmp_path):
    """The site's environment: its broker, and the workers' own write key and host."""
    env = site_env(
        SITE_REDIS_URL=redis_server.url,
        SITE_COLLECTOR_URL=worker_collector.url,
        SEGMENT_WRITE_KEY=WORKER_KEY,
        **{HOST_ENV: worker_collector.url},
    )
    return env


@pytest.fixture
def worker(site, tmp_path):
    started = CeleryWorker(OURS_PYTHON, str(tmp_path), site).start()
    yield started
    started.stop()


def coordinator(site: dict, *argv: str) -> subprocess.Popen:
    """``eventtracking replay ... --celery async_site`` without a write key of its own."""
    env = {key: value for key, value in site.items() if key not in ("SEGMENT_WRITE_KEY", HOST_ENV)}
    return subprocess.Popen(
        [sys.executable, "-m", "eventtracking", "replay", *argv, "--celery", "async_site"],
        env=env,
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_multi_file_archive_over_two_worker_processes_equals_a_local_run(
    capsys, site, worker, worker_collector, collector, tmp_path, monkeypatch
):
    archive = tmp_path / "archive"
    total = make_archive(archive, files=5, lines=3000)
    # Locally, into the other collector.
    monkeypatch.chdir(tmp_path)
    code = main(["replay", str(archive), "--host", collector.url, "--write-key", "local-key",
                 "--checkpoint", str(tmp_path / "local.ckpt")])
    local = capsys.readouterr().out
    assert code == 1, local  # the broken lines
    # Over Celery: plain files split in parts of 150 KB, gzip files whole.
    argv = (str(archive), "--checkpoint", str(tmp_path / "celery.ckpt"), "--part-bytes", "150000")
    process = coordinator(site, *argv)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, out + err + worker.log()
    assert summary_text(out) == summary_text(local), (out, local)
    assert summary_of(out)["lines read"] == total
    assert WORKER_KEY not in out + err
    # Every line once, under the same messageIds as the local run's.
    assert worker_collector.count() == len(set(worker_collector.message_ids())) == collector.count()
    assert set(worker_collector.message_ids()) == set(collector.message_ids())

    process = coordinator(site, *argv)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, out + err
    assert summary_of(out)["already acknowledged"] == total
    assert worker_collector.count() == collector.count()  # nothing sent again


def test_a_worker_process_killed_mid_run_loses_nothing(site, worker, worker_collector, tmp_path):
    archive = tmp_path / "archive"
    total = make_archive(archive, files=6, lines=6000)
    expected_events = total - sum(1 for i in range(6000) if i % 1000 == 999)  # the broken lines of file 1
    # 4 requests/s of 500 events for both processes: long enough to kill one mid-run.
    process = coordinator(
        site, str(archive), "--checkpoint", str(tmp_path / "c.ckpt"), "--requests-per-second", "4",
    )
    try:
        wait_until(lambda: worker_collector.count() >= 3000, 120, "the first deliveries")
        [victim, *_] = worker.pool_pids()
        os.kill(victim, signal.SIGKILL)
        out, err = process.communicate(timeout=400)
    finally:
        stop_process(process)
    assert process.returncode == 1, out + err + worker.log()  # the broken lines only
    numbers = summary_of(out)
    assert numbers["lines read"] == total, out
    unique = set(worker_collector.message_ids())
    skipped = numbers["skipped"]
    assert len(unique) == expected_events - skipped, (len(unique), expected_events, skipped)
    assert worker_collector.count() >= len(unique)  # duplicates only under the same messageId
    assert "WorkerLostError" in worker.log()  # it was running a part: the part was given again


def deliverable(files: int, lines: int) -> int:
    """The events of make_archive's archive that are sent (not broken, with a user)."""
    count = 0
    for index in range(files):
        for i in range(lines):
            broken = index == 1 and i % 1000 == 999
            count += not broken and i % 97 != 5
    return count


def test_a_killed_coordinator_resumes_with_the_same_command(site, worker, worker_collector, tmp_path):
    archive = tmp_path / "archive"
    total = make_archive(archive, files=6, lines=4000)
    argv = (str(archive), "--checkpoint", str(tmp_path / "c.ckpt"), "--requests-per-second", "4")
    process = coordinator(site, *argv)
    try:
        wait_until(lambda: (tmp_path / "c.ckpt").exists(), 120, "a first part done and checkpointed")
        process.kill()
        process.wait(30)
    finally:
        stop_process(process)
    done = orjson.loads((tmp_path / "c.ckpt").read_bytes())["files"]
    assert 0 < len(done) < 6

    process = coordinator(site, *argv)
    out, err = process.communicate(timeout=400)
    numbers = summary_of(out)
    assert process.returncode in (0, 1), out + err  # 1 when the part with broken lines ran again
    assert numbers["already acknowledged"] == sum(entry["line"] for entry in done.values())
    assert numbers["lines read"] + numbers["already acknowledged"] == total
    assert len(set(worker_collector.message_ids())) == deliverable(6, 4000)
