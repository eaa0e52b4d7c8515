"""``eventtracking collect``: run the local Segment-compatible collector until SIGINT/SIGTERM.

The first line on stdout is exactly ``listening on http://HOST:PORT`` (flushed), so a parent
process can read the port it got.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
from typing import Any

from eventtracking.cli.args import on_signals
from eventtracking.collector import Collector

# Lets a write key stay out of the process list (``ps``) when the collector should demand one.
WRITE_KEY_ENV = "EVENTTRACKING_COLLECTOR_WRITE_KEY"


def add_parser(subparsers: Any) -> None:
    """Register ``collect`` on the ``eventtracking`` command's subparsers."""
    collect = subparsers.add_parser(
        "collect",
        help="run a local Segment-compatible collector",
        description="Serve Segment's HTTP Tracking API and store what arrives in SQLite. "
        "Prints 'listening on URL' first; stops cleanly on SIGINT/SIGTERM.",
    )
    collect.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    collect.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    collect.add_argument("--db", default=None, help="SQLite file to store messages in (default: in memory)")
    collect.add_argument(
        "--write-key",
        default=os.environ.get(WRITE_KEY_ENV) or None,
        help=f"only accept requests with this write key (default: ${WRITE_KEY_ENV}, else any key)",
    )
    collect.add_argument(
        "-v", "--verbose", action="count", default=0, help="log refusals, faults (-v) and requests (-vv)"
    )
    collect.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 if the address cannot be bound."""
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    stop_requested = threading.Event()
    restore = on_signals((signal.SIGINT, signal.SIGTERM), lambda signum, frame: stop_requested.set())
    try:
        try:
            collector = Collector(db_path=args.db, host=args.host, port=args.port, write_key=args.write_key)
        except sqlite3.Error as exc:
            print(f"eventtracking collect: cannot open the database {args.db}: {exc}", file=sys.stderr)
            return 1
        try:
            collector.start()
        except OSError as exc:
            collector.close()
            print(f"eventtracking collect: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"listening on {collector.url}", flush=True)
            # A timeout keeps the wait responsive to signals on every platform.
            while not stop_requested.wait(0.5):
                pass
        finally:
            stored = collector.count()
            collector.close()
        print(f"eventtracking collect: stopped, {stored} messages stored", file=sys.stderr)
        return 0
    finally:
        restore()
