"""``eventtracking spool``: look at a spool directory, and deliver what it holds on demand.

* ``spool status --spool DIR [--json]``: one line per part (name, owner's pid, ``live`` when its
  owner holds it, ``left`` when the owner is gone, records pending, bytes on disk). It takes
  nothing over.
* ``spool drain --spool DIR [--write-key KEY] [--host URL] [--timeout S]``: adopt every part whose
  owner is gone (killed, crashed, or the whole site stopped) and deliver it through the backend's
  sender (batches, retries, splitting; finally refused messages go to the dead letters), then
  remove what was delivered. Parts whose owner is alive are left to it, and named. What could not
  be sent within the timeout (server down) stays on disk, for a later drain or a live process.
  Exit status 0 when nothing is left to deliver but live processes' parts, else 1.

The write key may come from ``$SEGMENT_WRITE_KEY`` instead (out of the process list); ``--host``
defaults to Segment's API.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import orjson

from eventtracking.cli.args import (
    DEFAULT_HOST,
    WRITE_KEY_ENV,
    add_destination_host,
    add_json,
    add_spool,
    add_write_key,
    positive_float,
    write_key,
)
from eventtracking.cli.deadletters import SPOOL_HELP
from eventtracking.queue.spool import Spool, survey
from eventtracking.queue.stats import Counters
from eventtracking.segment.sender import sender_worker
from eventtracking.segment.transport import HttpTransport
from eventtracking.wording import plural


def add_parser(subparsers: Any) -> None:
    """Add the ``spool`` subcommand (actions ``status`` and ``drain``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "spool",
        help="show the parts of a spool directory, or deliver what dead processes left in it",
        description="A spool directory (the backend's spool_dir) holds one part per process.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    status = actions.add_parser("status", help="what each part of a spool directory holds")
    add_spool(status, SPOOL_HELP, required=True)
    add_json(status, "one object per part")
    drain = actions.add_parser("drain", help="deliver what processes that are gone left in a spool directory")
    add_spool(drain, SPOOL_HELP, required=True)
    add_write_key(drain)
    add_destination_host(drain)
    drain.add_argument(
        "--timeout", type=positive_float, default=60.0, metavar="S", help="how long to try (default: 60)"
    )
    parser.set_defaults(run=run, action=None, format_help=parser.format_help)


def run(args: argparse.Namespace) -> int:
    """Run ``spool status`` or ``spool drain``; return the exit status."""
    if args.action is None:  # `eventtracking spool` alone: say what it takes
        sys.stdout.write(args.format_help())
        return 0
    key = write_key(getattr(args, "write_key", None))  # only resend/drain take one
    if args.action == "drain" and not key:
        print(
            f"eventtracking spool drain: no write key: give --write-key KEY or set ${WRITE_KEY_ENV}",
            file=sys.stderr,
        )
        return 2
    if not os.path.isdir(args.spool):
        print(f"eventtracking spool: no spool directory {args.spool}", file=sys.stderr)
        return 1
    try:
        if args.action == "status":
            return show_status(args.spool, as_json=args.json)
        return drain_spool(args.spool, key or "", args.host or DEFAULT_HOST, args.timeout)
    except OSError as error:
        print(f"eventtracking spool: {error}", file=sys.stderr)
        return 1


def show_status(directory: str, *, as_json: bool = False) -> int:
    parts = survey(directory)
    if as_json:
        sys.stdout.write("".join(orjson.dumps(part).decode() + "\n" for part in parts))
        return 0
    for part in parts:
        pending = "-" if "pending" not in part else str(part["pending"])
        name, pid, state, size = part["name"], part["pid"], part["state"], part["disk_bytes"]
        print(f"{name}  pid {pid}  {state}  pending {pending}  {size} bytes")
    left = sum(part.get("pending", 0) for part in parts)
    gone = f"{plural(left, 'message')} left by processes that are gone"
    print(f"{plural(len(parts), 'part')} in {directory}; {gone}")
    return 0


def drain_spool(directory: str, write_key: str, host: str, timeout: float) -> int:
    started = time.monotonic()
    spool = Spool(directory, scan_interval=3600.0)  # adopts what is left once, on opening
    counters = Counters()
    transport = HttpTransport(host, write_key, timeout=min(15.0, timeout))
    sender = sender_worker(spool, transport, counters, linger=0, retry_budget=timeout)
    opened = spool.stats()
    live = [part for part in opened["parts"] if part["state"] == "live"]
    sender.ensure_started()
    remaining = max(0.1, timeout - (time.monotonic() - started))
    delivered_all = sender.close(remaining)
    counts = counters.snapshot()
    refused = counts["dropped"].get("refused", 0)
    summary = (
        f"drained {directory}: {plural(opened['recovered'], 'message')} in "
        f"{plural(opened['adopted'], 'part')} left by processes that are gone: "
        f"delivered {counts['delivered']:,}, refused {refused:,} (kept as dead letters)"
    )
    if not delivered_all:
        summary += f"; the rest was not delivered within {timeout:g} s and stays on disk"
    print(summary)
    for part in live:
        print(f"left to its owner: {part['name']} (live process {part['pid']}, {part['disk_bytes']} bytes)")
    return 0 if delivered_all else 1
