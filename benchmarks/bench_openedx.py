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

The original and the drop-in row each run in a process of their own environment; ours, owned and
the limit share one (the same environment), in alternating blocks of 1,000 events, so that both
meet the same moments of a shared machine whose speed changes in phases of seconds (run in
processes of their own, one after the other, their ratio moved from 1.25x to 2.14x between two
runs of the same code). Ours is flushed after each of its blocks, untimed, so that the limit's
blocks never run beside our sender thread. One collector, in another process, for all; rounds
are interleaved and medians shown. "caller µs/event" is the cost of ``tracker.emit`` to the
application; end to end runs until the collector has every event.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measuring import (
    collector_process,
    measure,
    median_row,
    openedx_event,
    post_ready_batches,
    received,
    spread,
    verdict,
)

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = {
    "original": ROOT / ".envs" / "original" / "bin" / "python",
    "dropin": ROOT / ".envs" / "analytics14" / "bin" / "python",
    "paired": ROOT / ".envs" / "analytics14" / "bin" / "python",  # ours, owned and the limit
}
LABELS = {
    "original": "original 4.1.5 (analytics 1.4)",
    "dropin": "ours, drop-in (analytics 1.4)",
    "owned": "ours, owned",
    "limit": "limit (orjson, no copies)",
}
WRITE_KEY = "bench-write-key"
WHITELIST = ["edx.course.enrollment.activated", "edx.course.enrollment.deactivated"]
BLOCK = 1000  # events per block of the paired rows


def tracking_logger(log_file: str, name: str = "tracking") -> logging.Logger:
    """The LMS's ``tracking`` logger: one file handler, the message alone on each line."""
    tracking = logging.getLogger(name)
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


def limit_path(url: str, count: int, log_file: str):
    """The limit's emit (build the event, log it as one orjson line, encode its Segment message
    with orjson) and its delivery (post the messages in ready-made 500-message batches)."""
    import datetime

    import orjson

    from eventtracking.segment.mapping import to_track_message

    tracking = tracking_logger(log_file, "tracking.limit")  # its own file, the same handler
    ids = iter(range(1, count + 1))
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

    return emit, post_batches


def paired_rows(url: str, items: list) -> list[dict]:
    """Ours, owned and the limit in this process, in alternating blocks of :data:`BLOCK` events
    (which goes first alternates too): caller cost and its CPU summed over each row's blocks; end
    to end, each row's blocks plus its delivery (ours flushed after each of its blocks)."""
    with tempfile.TemporaryDirectory() as tmp:
        ours_log, limit_log = os.path.join(tmp, "tracking.log"), os.path.join(tmp, "limit.log")
        tracker, segment = lms_tracker("owned", url, ours_log)
        limit_emit, limit_post = limit_path(url, len(items), limit_log)

        def ours_emit(item) -> None:
            name, data, context = item
            with tracker.context("edx.request", context):
                tracker.emit(name, data)

        paths = {"owned": ours_emit, "limit": limit_emit}
        wall = dict.fromkeys(paths, 0.0)
        cpu = dict.fromkeys(paths, 0.0)
        delivery = dict.fromkeys(paths, 0.0)
        before = received(url)
        for number, start in enumerate(range(0, len(items), BLOCK)):
            block = items[start : start + BLOCK]
            for mode in ("owned", "limit") if number % 2 == 0 else ("limit", "owned"):
                emit = paths[mode]
                gc.collect()
                began, cpu_began = time.perf_counter(), time.thread_time()
                for item in block:
                    emit(item)
                cpu[mode] += time.thread_time() - cpu_began
                wall[mode] += time.perf_counter() - began
                if mode == "owned":
                    began = time.perf_counter()
                    segment.flush(120)
                    delivery[mode] += time.perf_counter() - began
        arrived = {"owned": received(url) - before}
        began = time.perf_counter()
        limit_post()
        delivery["limit"] = time.perf_counter() - began
        arrived["limit"] = received(url) - before - arrived["owned"]
        segment.close(10)
        logged = {"owned": _lines(ours_log), "limit": _lines(limit_log)}
    return [
        {
            "label": LABELS[mode],
            "caller_us": wall[mode] / len(items) * 1e6,
            "caller_cpu_us": cpu[mode] / len(items) * 1e6,
            "eps": len(items) / (wall[mode] + delivery[mode]),
            "arrived": arrived[mode],
            "events": len(items),
            "logged": logged[mode],
        }
        for mode in ("owned", "limit")
    ]


def _lines(path: str) -> int:
    with open(path, encoding="utf-8") as lines:
        return sum(1 for _ in lines)


def worker(mode: str, url: str, count: int) -> list[dict]:
    """This process's rows: build the tracker, then configure the global client the edx-platform
    way (key and host set after the tracker exists), emit, flush."""
    import analytics  # analytics-python 1.4.post1: what edx-platform imports

    items = []
    for i in range(count):
        event = openedx_event(i)
        items.append((event["name"], event["data"], event["context"]))
    if mode == "paired":
        return paired_rows(url, items)
    with tempfile.TemporaryDirectory() as tmp:
        log_file = os.path.join(tmp, "tracking.log")
        tracker, _segment = lms_tracker(mode, url, log_file)
        analytics.write_key = WRITE_KEY
        analytics.host = url
        # Its default queue (10,000) would drop part of the run: the same larger one for both.
        analytics.default_client = analytics.Client(WRITE_KEY, host=url, max_queue_size=count * 2)

        def emit(item) -> None:
            name, data, context = item
            with tracker.context("edx.request", context):
                tracker.emit(name, data)

        row = measure(LABELS[mode], url, items, emit, analytics.flush)
        row["logged"] = _lines(log_file)
        analytics.shutdown()
    return [row]


def run_worker(mode: str, url: str, count: int) -> list[dict]:
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
        rounds = []
        for _ in range(args.rounds):
            rows = []
            for worker_mode in ("original", "dropin", "paired"):
                rows.extend(run_worker(worker_mode, url, args.events))
            rounds.append(rows)
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

    def ratios(numerator: str, denominator: str, figure: str) -> list[float]:
        """The ratio of two rows' figure in each round (each round measures both together)."""
        index = {mode: i for i, mode in enumerate(modes)}
        return [r[index[numerator]][figure] / r[index[denominator]][figure] for r in rounds]

    def ratio(numerator: str, denominator: str, figure: str) -> str:
        """The median of the rounds' ratios, and its smallest and largest."""
        each = ratios(numerator, denominator, figure)
        return f"{statistics.median(each):.2f}x {spread(each)}"

    def target(numerator: str, denominator: str, bound: float) -> str:
        """The caller cost ratio against its target (wall clock: what the application waits)."""
        value = statistics.median(ratios(numerator, denominator, "caller_us"))
        met = value <= bound if numerator == "owned" else value >= bound
        sign = "<=" if numerator == "owned" else ">="
        shown = ratio(numerator, denominator, "caller_us")
        return f"caller cost {shown}  (target {sign} {bound}x)  {verdict(met)}"

    # Its CPU: the calling thread's own time, which a loaded machine's scheduling does not
    # inflate (wall-clock time also holds the sender thread's and the collector's work).
    original, dropin, owned = (rows[mode] for mode in modes[:3])
    print(
        f"original / {LABELS['dropin']}: caller cost {ratio('original', 'dropin', 'caller_us')}, "
        f"its CPU {ratio('original', 'dropin', 'caller_cpu_us')}; "
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
