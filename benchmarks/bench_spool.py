"""Side-by-side cost of the durable spool: memory mode vs spool vs spool + fsync, in one run.

Run with ``make bench`` (or ``python benchmarks/bench_spool.py --events 20000``). Against one
collector started in another process on loopback, SegmentBackend in owned mode three times:

- memory: the in-memory buffer (no ``spool_dir``);
- spool: ``spool_dir=...``: each event written to the segment file before ``send`` returns;
- spool+fsync: the same, ``fdatasync`` per event (survives power loss).

For each: the caller-thread cost (µs per event inside ``send``) and the end-to-end rate (events/s
from the first send until the collector has acknowledged the last), and the ratios against
memory mode (targets: spool caller cost <= 3x memory, spool end-to-end >= 0.5x memory). Then,
with ``--formats``, the raw cost of one put for the storage formats that were considered
(append-only segment file vs SQLite in WAL mode, each with and without a sync per put), which
is how the format was chosen. Figures vary with the machine and its disk: compare ratios from
one run; ``--dir`` puts the spools on the filesystem to measure (fsync cost depends on it).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import WRITE_KEY, collector_process, measure, median_row, openedx_event, spread, verdict  # noqa: E402

from eventtracking.backends.segment import SegmentBackend  # noqa: E402
from eventtracking.queue.spool import Spool, encode_record  # noqa: E402

Put = Callable[[bytes], object]
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def run_mode(label: str, url: str, events: list[dict], **options) -> dict:
    """One backend, timed as bench.py times every path."""
    backend = SegmentBackend(write_key=WRITE_KEY, host=url, **options)
    try:
        return measure(label, url, events, backend.send, lambda: backend.flush(300))
    finally:
        backend.close(10)


def per_put_us(put: Callable[[bytes], object], payload: bytes, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        put(payload)
    return (time.perf_counter() - start) / count * 1e6


def segment_file_put(directory: str, sync: bool) -> tuple[Put, Callable[[], None]]:
    """A put that appends one record to a file (and syncs it), and what closes the file."""
    fd = os.open(os.path.join(directory, f"segment-{sync}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def put(payload: bytes) -> None:
        os.write(fd, encode_record(payload))
        if sync:
            _datasync(fd)

    return put, lambda: os.close(fd)


def sqlite_put(directory: str, synchronous: str) -> tuple[Put, Callable[[], None]]:
    """A put that inserts one row (one commit) in SQLite's WAL mode, and what closes the database."""
    db = sqlite3.connect(os.path.join(directory, f"sqlite-{synchronous}.db"), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("CREATE TABLE spool (id INTEGER PRIMARY KEY, message BLOB NOT NULL)")
    except BaseException:
        db.close()
        raise
    return (lambda payload: db.execute("INSERT INTO spool (message) VALUES (?)", (payload,))), db.close


def spool_put(directory: str, fsync: bool) -> tuple[Put, Callable[[], None]]:
    spool = Spool(os.path.join(directory, f"spool-{fsync}"), fsync=fsync)
    return spool.put, spool.close


def compare_formats(directory: str, count: int) -> list[tuple[str, float]]:
    """µs per put of each candidate format (one commit per put, as a send needs)."""
    payload = b'{"event":"x","properties":' + b'"' + b"x" * 760 + b'"}'  # about one Open edX message
    synced = max(200, count // 20)
    candidates: list[tuple[str, Callable[[], tuple[Put, Callable[[], None]]], int]] = [
        ("segment file, write()", lambda: segment_file_put(directory, False), count),
        ("segment file, write() + fdatasync", lambda: segment_file_put(directory, True), synced),
        ("SQLite WAL, synchronous=NORMAL", lambda: sqlite_put(directory, "NORMAL"), count),
        ("SQLite WAL, synchronous=FULL", lambda: sqlite_put(directory, "FULL"), synced),
        ("Spool.put", lambda: spool_put(directory, False), count),
        ("Spool.put (fsync)", lambda: spool_put(directory, True), 200),
    ]
    results = []
    for label, open_candidate, n in candidates:
        put, close = open_candidate()
        try:
            results.append((label, per_put_us(put, payload, n)))
        finally:
            close()
    return results


MODES = [
    ("memory", {}),
    ("spool", {"spool_dir": "spool"}),
    ("spool+fsync", {"spool_dir": "fsync", "fsync": True}),
]


def print_table(rows: list[dict]) -> None:
    memory = rows[0]
    print(f"{'mode':12} {'caller µs/event':>15} {'x memory':>8} {'caller CPU µs':>13} ", end="")
    print(f"{'end-to-end ev/s':>15} {'x memory':>8} {'arrived':>7}")
    for row in rows:
        print(
            f"{row['label']:12} {row['caller_us']:15.1f} {row['caller_us'] / memory['caller_us']:7.2f}x "
            f"{row['caller_cpu_us']:13.1f} {row['eps']:15,.0f} {row['eps'] / memory['eps']:7.2f}x "
            f"{row['arrived']:>7,}"
        )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events per mode (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode, medians shown (default 3)")
    parser.add_argument("--dir", default=None, help="where to create the spools (default: a temporary dir)")
    parser.add_argument("--no-formats", action="store_true", help="skip the storage format comparison")
    args = parser.parse_args(argv)

    events = [openedx_event(i) for i in range(args.events)]
    print(f"{args.events} Open edX events per mode, median of {args.rounds} rounds; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, collector_process() as url:
        run_mode("warm-up", url, events[:2000])  # imports, connection, the collector's first inserts
        runs: dict[str, list[dict]] = {label: [] for label, _ in MODES}
        for round_number in range(args.rounds):  # interleaved, so a slow moment hits every mode
            for label, options in MODES:
                if "spool_dir" in options:
                    spool_dir = os.path.join(tmp, f"{options['spool_dir']}-{round_number}")
                    options = dict(options, spool_dir=spool_dir)
                runs[label].append(run_mode(label, url, events, **options))
        memory, spool, synced = rows = [median_row(runs[label]) for label, _ in MODES]
        print()
        print_table(rows)
        print()
        caller_ratio = spool["caller_us"] / memory["caller_us"]
        eps_ratio = spool["eps"] / memory["eps"]
        pairs = list(zip(runs["spool"], runs["memory"]))  # the ratio in each round
        caller_spread = spread([s["caller_us"] / m["caller_us"] for s, m in pairs])
        eps_spread = spread([s["eps"] / m["eps"] for s, m in pairs])
        print(
            f"spool caller cost / memory: {caller_ratio:.2f}x {caller_spread} (target <= 3x) "
            + verdict(caller_ratio <= 3)
        )
        print(
            f"spool end-to-end / memory:  {eps_ratio:.2f}x {eps_spread} (target >= 0.5x) "
            + verdict(eps_ratio >= 0.5)
        )
        extra = synced["caller_us"] - spool["caller_us"]
        print(f"fsync: {extra:.0f} µs more per event than the plain spool (the caller waits for the disk)")
        for row in rows:
            lost = row["events"] - row["arrived"]
            if lost:
                print(f"{row['label']}: {lost} of {row['events']} events did not arrive  FAIL")
        if not args.no_formats:
            print()
            print("storage formats considered, µs per put of a ~800-byte message (one commit each):")
            for label, micros in compare_formats(tmp, max(2000, args.events // 4)):
                print(f"  {label:36} {micros:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
