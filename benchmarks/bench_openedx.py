"""An LMS-shaped tracker on this package against Open edX's event-tracking 4.1.5, side by side.

Run with ``make bench`` (or ``python benchmarks/bench_openedx.py``), which builds the two
environments this needs: .envs/original (event-tracking 4.1.5 on analytics-python 1.4.post1, as
an LMS runs it) and .envs/analytics14 (this package on the same analytics-python 1.4.post1).

The tracker is edx-platform's EVENT_TRACKING_BACKENDS built with the public API both packages
share: ``tracking_logs`` → LoggerBackend writing to a file, and ``segmentio`` → a whitelist →
SegmentBackend. Four rows, one run, the same interpreter and the same events (bench's
Open edX-shaped enrollment, emitted in its request context, so whitelisted and logged):

- original: event-tracking 4.1.5, SegmentBackend on the global ``analytics`` client;
- ours, drop-in: this package, SegmentBackend on the same global client, configured the same way;
- ours, owned: this package, SegmentBackend delivering through its own pipeline;
- limit: what any library must do per emit, with none of the guarantees: build the event (its
  context merged), write one orjson line through the same ``logging`` logger and handler, map
  and encode one Segment message with orjson and append it to a list (posted in ready-made
  batches after the timed loop).

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

from measuring import (
    collector_process,
    measure,
    median_row,
    openedx_event,
    post_ready_batches,
    spread,
    verdict,
)

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = {
    "original": ROOT / ".envs" / "original" / "bin" / "python",
    "dropin": ROOT / ".envs" / "analytics14" / "bin" / "python",
    "owned": ROOT / ".envs" / "analytics14" / "bin" / "python",
    "limit": ROOT / ".envs" / "analytics14" / "bin" / "python",
}
LABELS = {
    "original": "original 4.1.5 (analytics 1.4)",
    "dropin": "ours, drop-in (analytics 1.4)",
    "owned": "ours, owned",
    "limit": "limit (orjson, no copies)",
}
WRITE_KEY = "bench-write-key"
WHITELIST = ["edx.course.enrollment.activated", "edx.course.enrollment.deactivated"]


def tracking_logger(log_file: str) -> logging.Logger:
    """The LMS's ``tracking`` logger: one file handler, the message alone on each line."""
    tracking = logging.getLogger("tracking")
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(message)s"))
    tracking.addHandler(handler)
    tracking.setLevel(logging.INFO)
    tracking.propagate = False
    return tracking


def lms_tracker(mode: str, url: str, log_file: str):
    """edx-platform's two routers, built the same way on either package."""
    from eventtracking.backends.logger import LoggerBackend
    from eventtracking.backends.routing import RoutingBackend
    from eventtracking.backends.segment import SegmentBackend
    from eventtracking.processors.whitelist import NameWhitelistProcessor
    from eventtracking.tracker import Tracker

    tracking_logger(log_file)
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


def limit_row(url: str, items: list, log_file: str) -> dict:
    """The limit: build each event, log it as one orjson line, encode its Segment message with
    orjson; then post the messages in ready-made 500-message batches (end to end)."""
    import datetime

    import orjson

    from eventtracking.segment.mapping import to_track_message

    tracking = tracking_logger(log_file)
    ids = iter(range(1, len(items) + 1))
    encoded: list[bytes] = []
    utc = datetime.timezone.utc

    def emit(item) -> None:
        name, data, context = item
        now = datetime.datetime.now(utc)
        event = {"name": name, "timestamp": now, "data": data, "context": dict(context)}
        tracking.info(orjson.dumps(event).decode())
        message = to_track_message(event)
        message["messageId"] = f"limit-{next(ids)}"
        encoded.append(b"".join((orjson.dumps(message), b"")))  # right-sized, as a buffer holds it

    def post_batches() -> None:
        post_ready_batches(url, WRITE_KEY, encoded)

    return measure(LABELS["limit"], url, items, emit, post_batches)


def worker(mode: str, url: str, count: int) -> dict:
    """One row, in this process: build the tracker, then configure the global client the
    edx-platform way (key and host set after the tracker exists), emit, flush."""
    import analytics  # analytics-python 1.4.post1: what edx-platform imports

    items = []
    for i in range(count):
        event = openedx_event(i)
        items.append((event["name"], event["data"], event["context"]))
    with tempfile.TemporaryDirectory() as tmp:
        log_file = os.path.join(tmp, "tracking.log")
        if mode == "limit":
            row = limit_row(url, items, log_file)
            row["logged"] = sum(1 for _ in open(log_file))
            return row
        tracker, segment = lms_tracker(mode, url, log_file)
        analytics.write_key = WRITE_KEY
        analytics.host = url
        # Its default queue (10,000) would drop part of the run: the same larger one for both.
        analytics.default_client = analytics.Client(WRITE_KEY, host=url, max_queue_size=count * 2)

        def emit(item) -> None:
            name, data, context = item
            with tracker.context("edx.request", context):
                tracker.emit(name, data)

        flush = (lambda: segment.flush(120)) if mode == "owned" else analytics.flush
        row = measure(LABELS[mode], url, items, emit, flush)
        logged = sum(1 for _ in open(log_file))
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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are shown")
    parser.add_argument("--worker", choices=sorted(ENVIRONMENTS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.url, args.events)))
        return 0

    modes = ["original", "dropin", "owned", "limit"]
    with collector_process() as url:
        # Alternating rounds, medians: the machine is shared and noisy.
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

    def ratio(numerator: str, denominator: str, figure: str) -> str:
        """The ratio of two rows' medians, and its smallest and largest in the rounds."""
        index = {mode: i for i, mode in enumerate(modes)}
        each = [r[index[numerator]][figure] / r[index[denominator]][figure] for r in rounds]
        return f"{rows[numerator][figure] / rows[denominator][figure]:.2f}x {spread(each)}"

    def target(numerator: str, denominator: str, bound: float) -> str:
        """The caller cost ratio against its target (wall clock: what the application waits)."""
        value = rows[numerator]["caller_us"] / rows[denominator]["caller_us"]
        met = value <= bound if numerator == "owned" else value >= bound
        sign = "<=" if numerator == "owned" else ">="
        shown = ratio(numerator, denominator, "caller_us")
        return f"caller cost {shown}  (target {sign} {bound}x)  {verdict(met)}"

    # Its CPU: the calling thread's own time, which a loaded machine's scheduling does not
    # inflate (wall-clock time also holds the sender thread's and the collector's work).
    original, dropin, owned = (rows[mode] for mode in modes[:3])
    print(
        f"original / {LABELS['dropin']}: caller cost {ratio('original', 'dropin', 'caller_us')}, "
        f"its CPU {original['caller_cpu_us'] / dropin['caller_cpu_us']:.2f}x; "
        f"end to end, ours / original: {dropin['eps'] / original['eps']:.2f}x"
    )
    print(
        f"original / {LABELS['owned']}: its CPU {ratio('original', 'owned', 'caller_cpu_us')}; "
        f"end to end, ours / original: {owned['eps'] / original['eps']:.2f}x; "
        f"{target('original', 'owned', 6)}"
    )
    print(
        f"{LABELS['owned']} / limit: its CPU {ratio('owned', 'limit', 'caller_cpu_us')}; "
        f"{target('owned', 'limit', 1.5)}"
    )
    lost = {mode: args.events - rows[mode]["arrived"] for mode in modes}
    complete = all(v == 0 for v in lost.values()) and all(v == args.events for v in logged.values())
    print(f"every row delivered and logged all {args.events} events: {verdict(complete)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
