"""A web process of the test site: emits events through ``eventtracking.tracker.emit`` and says
how long each ``emit()`` took. Runs with our package or with the original (``.envs/original``).

    python -m async_site.produce --whitelisted N --others M --out FILE [--hold] [--fork K]

The events are interleaved (the whitelisted ones are named ``edx.site.whitelisted``, the
others ``edx.site.other``), each with ``data.seq`` and the user
in its context. ``--out`` gets a JSON report: per-emit seconds, each event's emit interval
(wall clock before and after), and our backend's ``stats()``. With ``--hold`` the process prints
``emitted`` and waits for a line on stdin before exiting (the test restarts the broker then);
it then waits until our backends published everything (``flush()``) and exits. ``--flush``
also times that wait right after the last emit (``flush_seconds``): how long publishing took
beyond emitting; ``--exit-at-once`` skips the wait, leaving what is left to the exit handler.
With ``--fork K`` the backends are built here and K forked children emit (gunicorn's model);
the parent emits ``--parent-emits`` events (numbered from 100,000) before forking, so its
publisher runs when the children are made.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import django

django.setup()

from eventtracking import tracker  # noqa: E402  (after django.setup(): the DjangoTracker is the default)


def emit_all(whitelisted: int, others: int, first_seq: int) -> dict:
    total = whitelisted + others
    durations = []
    emitted = []
    default = tracker.get_tracker()
    started = time.perf_counter()
    with default.context("edx.request", {"user_id": 7, "host": "lms.example.org", "path": "/produce"}):
        for index in range(total):
            # spread the others evenly among the whitelisted events
            is_other = others and (index * others) // total != ((index + 1) * others) // total
            name = "edx.site.other" if is_other else "edx.site.whitelisted"
            seq = first_seq + index
            before_wall = time.time()
            before = time.perf_counter()
            tracker.emit(name, {"seq": seq})
            durations.append(time.perf_counter() - before)
            emitted.append([seq, name, before_wall, time.time()])
    return {"durations": durations, "emitted": emitted, "emit_seconds": time.perf_counter() - started}


def flush_all() -> float:
    """Wait (up to 300 s) until our backends published everything; return the seconds it took.

    A web process lives on after its requests, and its publisher with it: the exit deadline
    (``exit_timeout``, 5 s) is for the last moments of a process, not for the whole backlog of
    a loaded test machine, so the producer waits here as a live server would have.
    """
    started = time.perf_counter()
    for backend in tracker.get_tracker().backends.values():
        flush = getattr(backend, "flush", None)
        if flush is not None:
            flush(300)
    return time.perf_counter() - started


def our_stats() -> dict:
    result = {}
    for name, backend in tracker.get_tracker().backends.items():
        stats = getattr(backend, "stats", None)
        if stats is not None:
            result[name] = stats()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--whitelisted", type=int, default=0)
    parser.add_argument("--others", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--fork", type=int, default=0)
    parser.add_argument("--parent-emits", type=int, default=0)
    parser.add_argument("--flush", action="store_true", help="time how long publishing takes after emitting")
    parser.add_argument("--exit-at-once", action="store_true", help="exit without waiting: the exit deadline")
    args = parser.parse_args()
    tracker.get_tracker()  # built before any fork, as a gunicorn master imports the app
    if args.fork:
        # The parent's publisher is made and running (thread, buffer, connection) before the fork.
        parent = emit_all(args.parent_emits, 0, 100_000)
        with open(args.out, "w") as out:
            json.dump(parent, out)
        children = []
        per_child = args.whitelisted + args.others
        for child in range(args.fork):
            pid = os.fork()
            if pid == 0:
                report = emit_all(args.whitelisted, args.others, child * per_child)
                report["stats"] = our_stats()
                with open(f"{args.out}.{child}", "w") as out:
                    json.dump(report, out)
                flush_all()
                sys.exit(0)
            children.append(pid)
        statuses = [os.waitpid(pid, 0)[1] for pid in children]
        return 0 if all(status == 0 for status in statuses) else 1
    report = emit_all(args.whitelisted, args.others, 0)
    if args.flush:
        report["flush_seconds"] = flush_all()
    report["stats"] = our_stats()
    with open(args.out, "w") as out:
        json.dump(report, out)
    if args.hold:
        print("emitted", flush=True)
        sys.stdin.readline()
    if not args.exit_at_once:
        flush_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
