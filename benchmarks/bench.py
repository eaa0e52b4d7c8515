"""Side-by-side benchmark of the ways to get events to Segment, against the project's collector.

Run with ``make bench`` (or ``python benchmarks/bench.py --events 20000``). One run measures,
against one collector started in another process on loopback:

- classic: the original mapping on segment-analytics-python (SegmentBackend in drop-in mode);
- ours: SegmentBackend in owned mode (the project's pipeline);
- limit: the same messages serialized once with orjson and posted as ready-made 500-message
  batches over one keep-alive connection, on the calling thread: no real pipeline beats it.

For each: the caller-thread cost (µs per event spent inside ``send``) and the end-to-end rate
(events/s from the first send until the collector has acknowledged the last one), and the
ratios against the limit and the classic path. Then peak memory under a burst far larger
than the buffer. Figures vary with the machine's load: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import demo  # noqa: E402
from measuring import (  # noqa: E402  (kept importable from here: the other benchmarks do)
    collector_process,
    measure,
    median_row,
    openedx_event,
    post_ready_batches,
    received,
    spread,
    verdict,
)

from eventtracking.backends.routing import RoutingBackend  # noqa: E402
from eventtracking.backends.segment import SegmentBackend, _global_client  # noqa: E402
from eventtracking.loader import load  # noqa: E402
from eventtracking.segment.mapping import to_track_message  # noqa: E402

__all__ = ["collector_process", "measure", "median_row", "openedx_event", "received", "spread", "verdict"]

WRITE_KEY = "bench-write-key"


def run_classic(url: str, events: list[dict]) -> dict:
    client = _global_client()
    client.write_key = WRITE_KEY
    client.host = url
    client.max_queue_size = len(events) * 2  # its default (10,000) would drop part of the run
    client.default_client = None
    backend = SegmentBackend()
    try:
        return measure("classic (official client)", url, events, backend.send, client.flush)
    finally:
        client.shutdown()


def run_ours(url: str, events: list[dict], **options) -> dict:
    backend = SegmentBackend(write_key=WRITE_KEY, host=url, **options)
    try:
        return measure("SegmentBackend", url, events, backend.send, backend.flush)
    finally:
        backend.close(10)


def run_routed(url: str, events: list[dict]) -> dict:
    """Ours as Open edX runs it: the tracker's router → a "segmentio" router with a whitelist
    processor → SegmentBackend, built from the demo's EVENT_TRACKING_BACKENDS-style dict."""
    tracker_router = RoutingBackend(backends=load(demo.settings(url)))
    backend = tracker_router.backends["segmentio"].backends["segment"]
    try:
        return measure("  the same, via Open edX routing", url, events, tracker_router.send, backend.flush)
    finally:
        backend.close(10)


def run_limit(url: str, events: list[dict]) -> dict:
    """Serialize each message once on the caller's thread, post 500-message batches."""
    ids = iter(range(1, len(events) + 1))
    encoded: list[bytes] = []

    def serialize(event: dict) -> None:
        message = to_track_message(event)
        message["messageId"] = f"limit-{next(ids)}"
        # right-sized, as SegmentBackend holds them (orjson's own output has a power-of-two capacity)
        encoded.append(b"".join((orjson.dumps(message, option=orjson.OPT_NAIVE_UTC), b"")))

    def post_batches() -> None:
        post_ready_batches(url, WRITE_KEY, encoded)

    return measure("limit (orjson + ready batches)", url, events, serialize, post_batches)


def burst_memory(url: str, count: int, buffer_bytes: int) -> dict:
    """Peak RSS of a fresh process sending ``count`` events as fast as it can (a child process).

    Read from /proc (VmHWM): ``ru_maxrss`` of a child also counts its parent's peak at fork.
    """
    code = f"""
import sys, orjson
def peak_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from bench import openedx_event
from eventtracking.backends.segment import SegmentBackend
template = [openedx_event(i) for i in range(1000)]
backend = SegmentBackend(write_key="k", host={url!r}, max_buffer_bytes={buffer_bytes})
base = peak_kb()
for i in range({count}):
    backend.send(template[i % 1000])
backend.flush(120)
peak = peak_kb()
print(orjson.dumps({{"base_kb": base, "peak_kb": peak, "stats": backend.stats()}}).decode())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events per path (default 20000)")
    parser.add_argument("--burst", type=int, default=1_000_000, help="events in the memory burst (0 = skip)")
    parser.add_argument("--buffer-mb", type=int, default=64, help="buffer of the burst run, MiB")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three paths; medians are shown")
    args = parser.parse_args(argv)

    events = [openedx_event(i) for i in range(args.events)]
    event_size = sum(len(orjson.dumps(e)) for e in events[:100]) / 100
    size = (
        sum(len(orjson.dumps(to_track_message(e), option=orjson.OPT_NAIVE_UTC)) for e in events[:100]) / 100
    )
    print(
        f"{args.rounds} rounds of {args.events} Open edX-shaped events of {event_size:.0f} bytes "
        f"({size:.0f} as a track message); {os.cpu_count()} cores"
    )
    with collector_process() as url:
        # Interleaved rounds, medians: this machine is shared and noisy.
        rounds = [
            [run(url, events) for run in (run_classic, run_ours, run_routed, run_limit)]
            for _ in range(args.rounds)
        ]
        rows = [median_row([r[i] for r in rounds]) for i in range(4)]
        classic, ours, routed, limit = rows
        print()
        print(
            f"{'path':34} {'caller µs/event':>16} {'(its CPU µs)':>13} {'end-to-end ev/s':>16} {'arrived':>9}"
        )
        for row in rows:
            print(
                f"{row['label']:34} {row['caller_us']:16.1f} {row['caller_cpu_us']:13.1f} "
                f"{row['eps']:16,.0f} {row['arrived']:>9,}"
            )
        print()
        caller_ratio = ours["caller_us"] / limit["caller_us"]
        eps_ratio = ours["eps"] / limit["eps"]
        cpu_ratio = ours["caller_cpu_us"] / limit["caller_cpu_us"]

        def per_round(figure: str) -> str:  # the ratio of ours to the limit in each round
            return spread([r[1][figure] / r[3][figure] for r in rounds])

        print(
            f"caller cost, ours / limit: {caller_ratio:.2f}x {per_round('caller_us')}  (target <= 1.5x)  "
            + verdict(caller_ratio <= 1.5)
        )
        print(
            f"caller CPU,  ours / limit: {cpu_ratio:.2f}x {per_round('caller_cpu_us')}  "
            "(the calling thread's own CPU time)"
        )
        print(
            f"end-to-end,  ours / limit: {eps_ratio:.2f}x {per_round('eps')}  (target >= 0.8x)  "
            + verdict(eps_ratio >= 0.8)
        )
        print(f"caller cost, classic / ours: {classic['caller_us'] / ours['caller_us']:.1f}x faster")
        print(f"end-to-end,  ours / classic: {ours['eps'] / classic['eps']:.1f}x faster")
        lost = ours["events"] - ours["arrived"]
        print(f"ours lost {lost} of {ours['events']} events" + ("" if lost == 0 else "  FAIL"))
        if args.burst:
            buffer_bytes = args.buffer_mb * 1024 * 1024
            memory = burst_memory(url, args.burst, buffer_bytes)
            grown_mb = (memory["peak_kb"] - memory["base_kb"]) / 1024
            stats = memory["stats"]
            print()
            print(
                f"burst of {args.burst:,} events, buffer {args.buffer_mb} MiB: "
                f"peak RSS grew {grown_mb:.0f} MiB "
                # the buffer counts message bytes; each held message also has ~50 bytes of object
                # and list overhead (4% at 1.4 KB), plus one batch in flight and the thread
                f"(bound: buffer + 5% + 16 MiB)  {verdict(grown_mb <= args.buffer_mb * 1.05 + 16)}"
            )
            print(
                f"  accepted {stats['accepted']:,}, delivered {stats['delivered']:,}, "
                f"dropped {stats['dropped']}, skipped {stats['skipped']}"
            )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
