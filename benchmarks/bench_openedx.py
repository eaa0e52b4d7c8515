"""An LMS-shaped tracker on this package against Open edX's event-tracking 4.1.5, side by side.

Run with ``make bench`` (or ``python benchmarks/bench_openedx.py``), which builds the two
environments this needs: .envs/original (event-tracking 4.1.5 on analytics-python 1.4.post1, as
an LMS runs it) and .envs/analytics14 (this package on the same analytics-python 1.4.post1).

The tracker is edx-platform's EVENT_TRACKING_BACKENDS built with the public API both packages
share: ``tracking_logs`` → LoggerBackend writing to a file, and ``segmentio`` → a whitelist →
SegmentBackend. Three rows, one run, the same interpreter and the same events (bench's
Open edX-shaped enrollment, emitted in its request context, so whitelisted and logged):

- original: event-tracking 4.1.5, SegmentBackend on the global ``analytics`` client;
- ours, drop-in: this package, SegmentBackend on the same global client, configured the same way;
- ours, owned: this package, SegmentBackend delivering through its own pipeline.

Each row runs in a process of its own environment (one collector, in another process, for all);
rounds are interleaved and medians shown. "caller µs/event" is the cost of ``tracker.emit`` to
the application; end to end runs until the collector has every event.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from measuring import collector_process, measure, median_row, openedx_event, verdict

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = {
    "original": ROOT / ".envs" / "original" / "bin" / "python",
    "dropin": ROOT / ".envs" / "analytics14" / "bin" / "python",
    "owned": ROOT / ".envs" / "analytics14" / "bin" / "python",
}
LABELS = {
    "original": "original 4.1.5 (analytics 1.4)",
    "dropin": "ours, drop-in (analytics 1.4)",
    "owned": "ours, owned",
}
WRITE_KEY = "bench-write-key"
WHITELIST = ["edx.course.enrollment.activated", "edx.course.enrollment.deactivated"]


def lms_tracker(mode: str, url: str, log_file: str):
    """edx-platform's two routers, built the same way on either package."""
    from eventtracking.backends.logger import LoggerBackend
    from eventtracking.backends.routing import RoutingBackend
    from eventtracking.backends.segment import SegmentBackend
    from eventtracking.processors.whitelist import NameWhitelistProcessor
    from eventtracking.tracker import Tracker

    tracking = logging.getLogger("tracking")
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    tracking.addHandler(handler)
    tracking.setLevel(logging.INFO)
    tracking.propagate = False

    segment = SegmentBackend(write_key=WRITE_KEY, host=url) if mode == "owned" else SegmentBackend()
    backends = {
        "tracking_logs": RoutingBackend(
            backends={"logger": LoggerBackend(name="tracking", max_event_size=50000)}
        ),
        "segmentio": RoutingBackend(
            backends={"segment": segment},
            processors=[NameWhitelistProcessor(whitelist=WHITELIST)],
        ),
    }
    return Tracker(backends=backends), segment


def worker(mode: str, url: str, count: int) -> dict:
    """One row, in this process: build the tracker, then configure the global client the
    edx-platform way (key and host set after the tracker exists), emit, flush."""
    import analytics  # analytics-python 1.4.post1: what edx-platform imports

    with tempfile.TemporaryDirectory() as tmp:
        tracker, segment = lms_tracker(mode, url, os.path.join(tmp, "tracking.log"))
        analytics.write_key = WRITE_KEY
        analytics.host = url
        # Its default queue (10,000) would drop part of the run: the same larger one for both.
        analytics.default_client = analytics.Client(WRITE_KEY, host=url, max_queue_size=count * 2)
        items = []
        for i in range(count):
            event = openedx_event(i)
            items.append((event["name"], event["data"], event["context"]))

        def emit(item) -> None:
            name, data, context = item
            with tracker.context("edx.request", context):
                tracker.emit(name, data)

        flush = (lambda: segment.flush(120)) if mode == "owned" else analytics.flush
        row = measure(LABELS[mode], url, items, emit, flush)
        logged = sum(1 for _ in open(os.path.join(tmp, "tracking.log")))
        if mode == "owned":
            segment.close(10)
        else:
            analytics.shutdown()
    row["logged"] = logged
    return row


def run_worker(mode: str, url: str, count: int) -> dict:
    python = ENVIRONMENTS[mode]
    if not python.exists():
        raise SystemExit(f"{python} is missing: `make bench` builds it")
    command = [str(python), __file__, "--worker", mode, "--url", url, "--events", str(count)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT / "benchmarks"
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events per row (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are shown")
    parser.add_argument("--worker", choices=sorted(ENVIRONMENTS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.url, args.events)))
        return 0

    modes = ["original", "dropin", "owned"]
    with collector_process() as url:
        rounds = [[run_worker(mode, url, args.events) for mode in modes] for _ in range(args.rounds)]
    rows = {mode: median_row([r[i] for r in rounds]) for i, mode in enumerate(modes)}
    logged = {mode: min(r[i]["logged"] for r in rounds) for i, mode in enumerate(modes)}
    print(
        f"LMS-shaped tracker (tracking_logs -> LoggerBackend to a file; segmentio -> whitelist -> "
        f"SegmentBackend), {args.rounds} rounds of {args.events} events, medians"
    )
    print()
    print(
        f"{'row':32} {'caller µs/emit':>15} {'(its CPU µs)':>13} {'end-to-end ev/s':>16} "
        f"{'arrived':>9} {'logged':>8}"
    )
    for mode in modes:
        row = rows[mode]
        print(
            f"{row['label']:32} {row['caller_us']:15.1f} {row['caller_cpu_us']:13.1f} "
            f"{row['eps']:16,.0f} {row['arrived']:>9,} {logged[mode]:>8,}"
        )
    print()
    original = rows["original"]
    for mode in ("dropin", "owned"):
        ratio = original["caller_us"] / rows[mode]["caller_us"]
        cpu = original["caller_cpu_us"] / rows[mode]["caller_cpu_us"]
        eps = rows[mode]["eps"] / original["eps"]
        print(
            f"original / {LABELS[mode]}: caller cost {ratio:.2f}x, its CPU {cpu:.2f}x; "
            f"end to end, ours / original: {eps:.2f}x"
        )
    lost = {mode: args.events - rows[mode]["arrived"] for mode in modes}
    complete = all(v == 0 for v in lost.values()) and all(v == args.events for v in logged.values())
    print(f"every row delivered and logged all {args.events} events: {verdict(complete)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
