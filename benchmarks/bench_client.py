"""Side-by-side benchmark of the Segment client's calls: ``eventtracking.segment.Client`` against
the official one (segment-analytics-python 2.x's ``Client``), the same messages, against the
project's collector in another process.

Run with ``make bench`` (or ``python benchmarks/bench_client.py --events 20000 --rounds 5``).
For ``track`` and ``identify``, each round times both clients (which one goes first alternates
from round to round): the caller's cost (µs per call spent inside the call, and that thread's
own CPU time), the end-to-end rate until the collector has everything, and how many arrived.
Medians over the rounds, with the spread of the ratio. Target: ours at least 5x cheaper on the
caller's thread (its CPU time: on a loaded machine the wall-clock time of a call is mostly the
time the thread waited for a core), nothing lost.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measuring import collector_process, measure, median_row, spread, verdict  # noqa: E402
from segment.analytics import Client as OfficialClient  # noqa: E402

from eventtracking.segment import Client  # noqa: E402

WRITE_KEY = "bench-client-key"
WHEN = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.timezone.utc)


def calls(kind: str, count: int, tag: str) -> list[dict]:
    """The keyword arguments of ``count`` calls of ``kind``, as an application makes them: a
    user, a context (ip, user agent, page), its own timestamp and message id."""
    made = []
    for i in range(count):
        arguments = {
            "user_id": f"user-{1000 + i}",
            "context": {
                "ip": "203.0.113.42",
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
                "page": {
                    "path": f"/courses/course-v1:edX+DemoX+{i % 5}/",
                    "referrer": "https://example.org/",
                },
            },
            "timestamp": WHEN + datetime.timedelta(milliseconds=i),
            "message_id": f"{tag}-{i}",
        }
        if kind == "track":
            arguments["event"] = "Course Enrolled"
            arguments["properties"] = {"course_id": f"course-v1:edX+DemoX+{i % 5}", "mode": "audit", "n": i}
        else:
            arguments["traits"] = {"email": f"learner{i}@example.org", "name": f"Learner {i}", "plan": "free"}
        made.append(arguments)
    return made


def run(label: str, url: str, kind: str, count: int, tag: str) -> dict:
    if label == "official":
        client = OfficialClient(WRITE_KEY, host=url, max_queue_size=count * 2)  # its 10,000 would drop
    else:
        client = Client(WRITE_KEY, host=url)
    call = getattr(client, kind)
    try:
        return measure(label, url, calls(kind, count, tag), lambda arguments: call(**arguments), client.flush)
    finally:
        client.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=20000, help="calls per client and round (default 20000)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds; medians are shown (default 5)")
    args = parser.parse_args(argv)
    print(f"{args.rounds} rounds of {args.events} calls per client and call type; {os.cpu_count()} cores")
    with collector_process() as url:
        for kind in ("track", "identify"):
            rounds = []
            for number in range(args.rounds):
                order = ("official", "ours") if number % 2 == 0 else ("ours", "official")
                rows = {
                    label: run(label, url, kind, args.events, f"{kind}-{label}-{number}") for label in order
                }
                rounds.append(rows)
            official = median_row([r["official"] for r in rounds])
            ours = median_row([r["ours"] for r in rounds])
            ratios = [r["official"]["caller_us"] / r["ours"]["caller_us"] for r in rounds]
            cpu_ratios = [r["official"]["caller_cpu_us"] / r["ours"]["caller_cpu_us"] for r in rounds]
            ratio = statistics.median(ratios)
            print()
            header = f"{'caller µs/call':>15} {'(its CPU µs)':>13} {'end-to-end calls/s':>19} {'arrived':>9}"
            print(f"Client.{kind}:  {header}")
            for name, row in (("official 2.x", official), ("ours", ours)):
                print(
                    f"  {name:12} {row['caller_us']:15.1f} {row['caller_cpu_us']:13.1f} {row['eps']:19,.0f} "
                    f"{row['arrived']:>6,} of {row['events']:,}"
                )
            lost = ours["events"] - ours["arrived"]
            cpu_ratio = statistics.median(cpu_ratios)
            print(
                f"  caller CPU,  official / ours: {cpu_ratio:.1f}x {spread(cpu_ratios, 1)}  (target >= 5x)  "
                + verdict(cpu_ratio >= 5)
            )
            print(
                f"  caller wall, official / ours: {ratio:.1f}x {spread(ratios, 1)}  (with the machine's load)"
            )
            print(f"  ours lost {lost} of {ours['events']} calls  " + verdict(lost == 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
