"""AsyncRoutingBackend on real engines: a real Redis broker, real ``celery worker`` processes, the
test site's web processes (``async_site.produce``) emitting through ``eventtracking.tracker``,
and the project's collector as the Segment API behind the worker.

The site is configured as an Open edX site is (``async_site.settings``): nothing of ours beyond
the original's settings. Mixed fleets are run too: our web process with the original's worker
(``.envs/original``: Open edX's event-tracking 4.1.5) and the other way round.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
from datetime import datetime

import pytest
from engines import ORIGINAL_PYTHON, OURS_PYTHON, TESTS, CeleryWorker, site_env, stop_process, wait_until

# Real processes on a machine that may be loaded: generous bounds, each still a bound.
pytestmark = pytest.mark.timeout(600)

WHITELISTED = "edx.site.whitelisted"


@pytest.fixture
def site(redis_server, collector, tmp_path):
    """The environment of the site's processes, on this test's broker and collector."""
    return site_env(SITE_REDIS_URL=redis_server.url, SITE_COLLECTOR_URL=collector.url, SITE_ROUTE="celery")


@pytest.fixture
def workers(tmp_path):
    """Start celery workers with ``workers(python, env)``; all are stopped in teardown."""
    started = []

    def start(python: str, env: dict, name: str = "worker") -> CeleryWorker:
        worker = CeleryWorker(python, str(tmp_path), env, name)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


def produce(python: str, env: dict, out: str, *args: str, timeout: float = 300) -> dict:
    """Run the site's producer to completion and return its report."""
    result = subprocess.run(
        [python, "-m", "async_site.produce", "--out", out, *args],
        env=env,
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out) as report:
        return json.load(report)


def seqs(collector) -> list:
    return [message["properties"]["data"]["seq"] for message in collector.messages()]


def queue_drained(redis_server) -> bool:
    """Nothing waits in the broker: the default queue is empty and no task is unacknowledged."""
    client = redis_server.client()
    try:
        return client.llen("celery") == 0 and client.hlen("unacked") == 0
    finally:
        client.close()


def epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def emit_figures(durations: list) -> str:
    return (
        f"median {statistics.median(durations) * 1e6:,.0f} µs, "
        f"max {max(durations) * 1e6:,.0f} µs over {len(durations)} emits"
    )


def test_a_real_worker_delivers_exactly_the_whitelisted_events_once(
    site, workers, collector, redis_server, tmp_path
):
    worker = workers(OURS_PYTHON, site)
    report = produce(
        OURS_PYTHON, site, str(tmp_path / "report.json"), "--whitelisted", "2000", "--others", "500"
    )
    expected = {seq: (before, after) for seq, name, before, after in report["emitted"] if name == WHITELISTED}
    assert len(expected) == 2000 and len(report["emitted"]) == 2500

    wait_until(
        lambda: collector.count() >= 2000,
        300,
        f"2,000 events at the collector (worker log: {worker.log_path})",
    )
    wait_until(lambda: queue_drained(redis_server), 60, "the broker's queue to drain")
    worker.stop()  # whatever the worker had left is delivered or lost now: count after this

    messages = collector.messages()
    assert sorted(seqs(collector)) == sorted(expected)  # each whitelisted event once, no other event
    assert {message["event"] for message in messages} == {WHITELISTED}
    for message in messages:
        before, after = expected[message["properties"]["data"]["seq"]]
        # its own time: stamped by emit(), not by the worker or the sender
        assert before - 0.001 <= epoch(message["timestamp"]) <= after + 0.001
        assert message["timestamp"] == message["properties"]["timestamp"]
    stats = report["stats"]["segment_async"]
    assert stats["accepted"] == 2000 and stats["dropped"] == {} and stats["skipped"] == {}


def test_a_broker_outage_costs_the_request_nothing_and_loses_nothing(
    site, workers, collector, redis_server, tmp_path, figures
):
    worker = workers(OURS_PYTHON, site)
    redis_server.stop()
    out = str(tmp_path / "report.json")
    producer = subprocess.Popen(
        [OURS_PYTHON, "-m", "async_site.produce", "--out", out, "--whitelisted", "200", "--hold"],
        env=site,
        cwd=TESTS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert producer.stdout.readline().strip() == "emitted", producer.stderr.read()
        with open(out) as file:
            report = json.load(file)
        stats = report["stats"]["segment_async"]
        assert stats["accepted"] == 200 and stats["published"] == 0
        redis_server.start()  # the same port: the broker is back
        producer.stdin.write("exit\n")
        producer.stdin.flush()
        assert producer.wait(60) == 0, producer.stderr.read()
    finally:
        stop_process(producer)
    wait_until(
        lambda: collector.count() >= 200, 300, f"200 events at the collector (worker log: {worker.log_path})"
    )
    wait_until(lambda: queue_drained(redis_server), 60, "the broker's queue to drain")
    worker.stop()
    assert sorted(seqs(collector)) == list(range(200))
    durations = report["durations"]
    figures.append(f"AsyncRoutingBackend, broker down: emit() {emit_figures(durations)}; 200 of 200 arrived")
    # Not a timing test: a sanity bound far above any machine's noise (the original blocks ~0.6 s).
    assert statistics.median(durations) < 0.1


@pytest.mark.parametrize(
    "producer_python, worker_python",
    [(OURS_PYTHON, ORIGINAL_PYTHON), (ORIGINAL_PYTHON, OURS_PYTHON)],
    ids=["ours-to-original-worker", "original-to-our-worker"],
)
def test_a_mixed_fleet_interoperates(
    producer_python, worker_python, site, workers, collector, redis_server, tmp_path
):
    assert os.path.exists(ORIGINAL_PYTHON), "make test builds .envs/original"
    worker = workers(worker_python, site)
    report = produce(
        producer_python, site, str(tmp_path / "report.json"), "--whitelisted", "300", "--others", "100"
    )
    expected = sorted(seq for seq, name, _, _ in report["emitted"] if name == WHITELISTED)
    assert len(expected) == 300
    wait_until(
        lambda: collector.count() >= 300, 300, f"300 events at the collector (worker log: {worker.log_path})"
    )
    wait_until(lambda: queue_drained(redis_server), 60, "the broker's queue to drain")
    worker.stop()
    assert sorted(seqs(collector)) == expected


def test_the_publisher_survives_fork(site, workers, collector, redis_server, tmp_path):
    """gunicorn's model: the backends (and a running publisher) are made in the parent, the
    forked children emit; each child publishes its own events, none of the parent's twice."""
    worker = workers(OURS_PYTHON, site)
    out = str(tmp_path / "report.json")
    produce(OURS_PYTHON, site, out, "--fork", "3", "--whitelisted", "200", "--parent-emits", "50")
    expected = list(range(600)) + list(range(100_000, 100_050))
    wait_until(
        lambda: collector.count() >= 650, 300, f"650 events at the collector (worker log: {worker.log_path})"
    )
    wait_until(lambda: queue_drained(redis_server), 60, "the broker's queue to drain")
    worker.stop()
    assert sorted(seqs(collector)) == expected
    for child in range(3):
        with open(f"{out}.{child}") as file:
            stats = json.load(file)["stats"]["segment_async"]
        assert stats["accepted"] == 200  # the child's own count: the parent's 50 are not in it


def test_with_a_spool_events_outlive_a_killed_process_during_an_outage(
    site, workers, collector, redis_server, tmp_path
):
    """The broker is down, the web process is killed: its events wait in ``spool_dir``; the next
    process on that directory publishes them once the broker is back."""
    spooled = dict(site, SITE_SPOOL_DIR=str(tmp_path / "spool"))
    worker = workers(OURS_PYTHON, site)
    redis_server.stop()
    out = str(tmp_path / "report.json")
    producer = subprocess.Popen(
        [OURS_PYTHON, "-m", "async_site.produce", "--out", out, "--whitelisted", "100", "--hold"],
        env=spooled,
        cwd=TESTS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert producer.stdout.readline().strip() == "emitted", producer.stderr.read()
    finally:
        stop_process(producer, sig=signal.SIGKILL)  # no exit handler runs: memory would lose all
    redis_server.start()
    produce(OURS_PYTHON, spooled, str(tmp_path / "next.json"))  # the next process emits nothing itself
    wait_until(
        lambda: collector.count() >= 100, 300, f"100 events at the collector (worker log: {worker.log_path})"
    )
    wait_until(lambda: queue_drained(redis_server), 60, "the broker's queue to drain")
    worker.stop()
    assert sorted(seqs(collector)) == list(range(100))


def test_a_site_configured_with_the_original_celery_setting_names(
    site, workers, collector, redis_server, tmp_path
):
    """BROKER_URL and the settings object as it is (event-routing-backends' celeryconfig): nothing
    of ours to configure, the broker is the site's."""
    old_names = dict(site, SITE_CELERY_NAMES="original")
    worker = workers(OURS_PYTHON, old_names)
    report = produce(
        OURS_PYTHON, old_names, str(tmp_path / "report.json"), "--whitelisted", "100", "--others", "20"
    )
    expected = sorted(seq for seq, name, _, _ in report["emitted"] if name == WHITELISTED)
    wait_until(
        lambda: collector.count() >= 100, 300, f"100 events at the collector (worker log: {worker.log_path})"
    )
    wait_until(lambda: queue_drained(redis_server), 60, "the broker's queue to drain")
    worker.stop()
    assert len(expected) == 100 and sorted(seqs(collector)) == expected


def test_batch_mode_publishes_several_events_per_task_each_delivered_once(
    site, workers, collector, redis_server, tmp_path
):
    batched = dict(site, SITE_BATCH_SIZE="50")
    worker = workers(OURS_PYTHON, batched)
    report = produce(
        OURS_PYTHON, batched, str(tmp_path / "report.json"), "--whitelisted", "1000", "--others", "200"
    )
    expected = sorted(seq for seq, name, _, _ in report["emitted"] if name == WHITELISTED)
    wait_until(
        lambda: collector.count() >= 1000,
        300,
        f"1,000 events at the collector (worker log: {worker.log_path})",
    )
    wait_until(lambda: queue_drained(redis_server), 60, "the broker's queue to drain")
    worker.stop()
    assert len(expected) == 1000 and sorted(seqs(collector)) == expected
    log = worker.log()
    assert "eventtracking.tasks.send_events[" in log and "eventtracking.tasks.send_event[" not in log


def test_at_exit_the_publisher_publishes_what_is_left(site, workers, collector, redis_server, tmp_path):
    """The process returns right after emitting: the exit handler (the shared exit deadline of
    eventtracking.background) publishes what the publisher still held."""
    worker = workers(OURS_PYTHON, site)
    report = produce(
        OURS_PYTHON, site, str(tmp_path / "report.json"), "--whitelisted", "30", "--exit-at-once"
    )
    assert report["stats"]["segment_async"]["accepted"] == 30
    wait_until(
        lambda: collector.count() >= 30, 300, f"30 events at the collector (worker log: {worker.log_path})"
    )
    wait_until(lambda: queue_drained(redis_server), 60, "the broker's queue to drain")
    worker.stop()
    assert sorted(seqs(collector)) == list(range(30))
