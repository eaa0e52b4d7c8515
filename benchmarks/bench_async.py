"""emit() through AsyncRoutingBackend on a real Redis broker, up and down: ours against the original.

Run with ``make bench`` (or ``python benchmarks/bench_async.py``). Each row is one web process
of the test site (``tests/async_site``: Django settings and a Celery app as an Open edX site
has them, the whitelist router as event-routing-backends configures it) emitting through
``eventtracking.tracker.emit``: with our package (``.venv``) or with Open edX's event-tracking
4.1.5 (``.envs/original``). The broker is a real ``redis-server`` on loopback; for the "down"
rows it is stopped before the process emits and started again (same port) before the process
exits. "published" counts the events in the broker's queue afterwards (tasks; for the batch row,
the events they carry): what a worker would run. "published/s" is events over the time from the
first emit until everything was in the broker (for ours: emitting, then ``flush()``).

The original publishes on the caller's thread: while the broker is down every emit() waits for
kombu's retries and the event is lost. Ours hands the event to a background publisher.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from engines import ORIGINAL_PYTHON, TESTS, RedisServer, site_env, stop_process  # noqa: E402

OURS_PYTHON = str(ROOT / ".venv" / "bin" / "python")


def run(python: str, events: int, broker_up: bool, workdir: str, **extra_env: str) -> dict:
    """One producer process; returns its per-emit durations, how long until everything was
    published (emitting, then our flush()), and what reached the broker."""
    redis = RedisServer(workdir).start()
    try:
        env = site_env(SITE_REDIS_URL=redis.url, SITE_ROUTE="celery", **extra_env)
        if not broker_up:
            redis.stop()
        out = str(Path(workdir) / "report.json")
        producer = subprocess.Popen(
            [python, "-m", "async_site.produce", "--out", out, "--whitelisted", str(events), "--hold"]
            + (["--flush"] if broker_up else []),
            env=env,
            cwd=TESTS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            line = producer.stdout.readline().strip()
            if line != "emitted":
                raise RuntimeError(f"the producer failed ({python})")
            with open(out) as file:
                report = json.load(file)
            durations = report["durations"]
            seconds = report["emit_seconds"] + report.get("flush_seconds", 0.0)
            if not broker_up:
                redis.start()
            producer.stdin.write("exit\n")
            producer.stdin.flush()
            producer.wait(120)  # ours publishes what it held before it exits (within 5 s)
        finally:
            stop_process(producer)
        client = redis.client()
        published = published_events(client)
        client.close()
    finally:
        redis.stop()
    return {"durations": durations, "published": published, "events": events, "seconds": seconds}


def published_events(client) -> int:
    """Events in the broker's default queue: one per send_event task, the list's length for
    send_events (the batch task)."""
    count = 0
    for raw in client.lrange("celery", 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "eventtracking.tasks.send_events":
            count += len(json.loads(base64.b64decode(message["body"]))[0][1])
        else:
            count += 1
    return count


def row(side: str, broker: str, result: dict) -> str:
    durations = result["durations"]
    rate = f"{result['events'] / result['seconds']:>11,.0f}" if broker == "up" else f"{'-':>11}"
    return (
        f"{side:16} {broker:6} {result['events']:>7,} {statistics.median(durations) * 1e6:>12,.1f}"
        f" {max(durations) * 1e6:>12,.0f} {rate} {result['published']:>7,} of {result['events']:,}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events per run with the broker up")
    parser.add_argument(
        "--down-events", type=int, default=200, help="events per run of ours with the broker down"
    )
    parser.add_argument(
        "--original-down-events", type=int, default=20, help="the original with the broker down (~0.6 s each)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        results = {
            ("original", "up"): run(ORIGINAL_PYTHON, args.events, True, workdir),
            ("ours", "up"): run(OURS_PYTHON, args.events, True, workdir),
            ("ours, batch 100", "up"): run(OURS_PYTHON, args.events, True, workdir, SITE_BATCH_SIZE="100"),
            ("original", "down"): run(ORIGINAL_PYTHON, args.original_down_events, False, workdir),
            ("ours", "down"): run(OURS_PYTHON, args.down_events, False, workdir),
        }
    print("emit() through AsyncRoutingBackend, Redis broker on loopback (µs per emit)")
    print(
        f"{'side':16} {'broker':6} {'events':>7} {'median µs':>12} {'max µs':>12} {'published/s':>11}"
        f" {'published':>13}"
    )
    for (side, broker), result in results.items():
        print(row(side, broker, result))
    for broker in ("up", "down"):
        original = statistics.median(results[("original", broker)]["durations"])
        ours = statistics.median(results[("ours", broker)]["durations"])
        print(f"broker {broker}: median emit(), ours is {original / ours:,.0f}x faster than the original")
    single, batched = (results[(side, "up")] for side in ("ours", "ours, batch 100"))
    print(
        f"batch mode: published/s {single['seconds'] / batched['seconds']:.1f}x ours with one task per event"
        " (tasks eventtracking.tasks.send_events: every worker must run this package)"
    )
    lost = {
        side: results[(side, "down")]["events"] - results[(side, "down")]["published"]
        for side in ("ours", "original")
    }
    print(f"broker down: ours lost {lost['ours']}, the original lost {lost['original']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
