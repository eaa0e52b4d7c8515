"""``eventtracking collect``: run the local Segment-compatible collector until SIGINT/SIGTERM.

The first line on stdout is exactly ``listening on http://HOST:PORT`` (flushed), so a parent
process can read the port it got. It listens on loopback unless ``--allow-remote`` is given
with another ``--host``; then a loud warning goes to stderr.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sqlite3
import sys
import threading
from typing import Any

from eventtracking.cli.args import add_db, add_write_key, listen_address, on_signals, port_number, write_key
from eventtracking.collector import Collector
from eventtracking.collector.server import is_loopback, remote_warning
from eventtracking.wording import plural


def add_parser(subparsers: Any) -> None:
    """Register ``collect`` on the ``eventtracking`` command's subparsers."""
    collect = subparsers.add_parser(
        "collect",
        help="run a local Segment-compatible collector",
        description="Serve Segment's HTTP Tracking API and store what arrives in SQLite. "
        "Prints 'listening on URL' first; stops cleanly on SIGINT/SIGTERM.",
    )
    collect.add_argument(
        "--host",
        default="127.0.0.1",
        type=listen_address,
        metavar="ADDRESS",
        help="address to bind (default: 127.0.0.1); one that is not loopback needs --allow-remote",
    )
    collect.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host beyond loopback (other machines can then post to it, and read it "
        "unless a write key is set)",
    )
    collect.add_argument(
        "--port",
        type=port_number,
        default=0,
        metavar="PORT",
        help="port to bind, 0 to 65535; 0 picks a free one (default)",
    )
    add_db(collect, "the collector's SQLite file, to store messages in (default: in memory)")
    add_write_key(collect, "accept only requests with this write key; none given: any key")
    collect.add_argument(
        "-v", "--verbose", action="count", default=0, help="log refusals, faults (-v) and requests (-vv)"
    )
    collect.set_defaults(run=run, usage_error=collect.error)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 2 (a usage error) for an address this
    machine does not have, 1 if the address cannot be bound otherwise (in use, not allowed)."""
    stop_requested = threading.Event()
    restore = on_signals((signal.SIGINT, signal.SIGTERM), lambda signum, frame: stop_requested.set())
    try:
        if not args.allow_remote and not is_loopback(args.host):
            print(
                f"eventtracking collect: {args.host} is not a loopback address; the collector is a "
                "test peer with its data readable over HTTP: add --allow-remote to listen there anyway",
                file=sys.stderr,
            )
            return 2
        try:
            collector = Collector(
                db_path=args.db,
                host=args.host,
                port=args.port,
                write_key=write_key(args.write_key),
                allow_remote=args.allow_remote,
            )
        except sqlite3.Error as exc:
            print(f"eventtracking collect: cannot open the database {args.db}: {exc}", file=sys.stderr)
            return 1
        try:
            collector.start()
        except OSError as exc:
            collector.close()
            if exc.errno == errno.EADDRNOTAVAIL:  # --host names no address of this machine
                args.usage_error(f"argument --host: cannot listen on {args.host!r}: {exc.strerror}")
            print(f"eventtracking collect: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"listening on {collector.url}", flush=True)
            if not is_loopback(args.host):
                print(remote_warning(collector.url, collector.has_write_key), file=sys.stderr, flush=True)
            if args.verbose:  # from here on: the line above is the one that says where it listens
                logging.basicConfig(
                    level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                    stream=sys.stderr,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                )
            # A timeout keeps the wait responsive to signals on every platform.
            while not stop_requested.wait(0.5):
                pass
        finally:
            stored = collector.count()
            collector.close()
        print(f"eventtracking collect: stopped, {plural(stored, 'message')} stored", file=sys.stderr)
        return 0
    finally:
        restore()
