"""The ``eventtracking`` command (also ``python -m eventtracking``).

Subcommands:

* ``collect``: run the local Segment-compatible collector until SIGINT/SIGTERM.  The first
  line on stdout is exactly ``listening on http://HOST:PORT`` (flushed), so a parent
  process can read the port it got.
* ``received``: list what a collector stored in its database, as a table or JSON lines.
* ``replay``: send tracking logs to Segment (:mod:`eventtracking.replay`).
* ``deadletters``: list and resend what a spool's server finally refused
  (:mod:`eventtracking.spool_cli`).

The last two live in their own modules, each a plug-in with ``add_parser(subparsers)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import threading
from typing import Any, Callable, List, Optional, Sequence

import orjson

from eventtracking import replay, spool_cli
from eventtracking.collector import Collector, MessageStore

# Lets a write key stay out of the process list (``ps``) when the collector should demand one.
WRITE_KEY_ENV = "EVENTTRACKING_COLLECTOR_WRITE_KEY"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, including optional subcommands found at import time."""
    parser = argparse.ArgumentParser(
        prog="eventtracking", description="Event tracking tools: a local Segment collector and friends."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True

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
    collect.set_defaults(run=run_collect)

    received = subparsers.add_parser(
        "received",
        help="list the messages a collector stored",
        description="Read a collector database and list its messages in arrival order.",
    )
    received.add_argument("--db", required=True, help="the collector's SQLite file")
    received.add_argument("--event", default=None, help="only messages with this event name")
    received.add_argument("--limit", type=_positive_int, default=None, help="at most this many messages")
    received.add_argument("--json", action="store_true", help="print each message as one line of JSON")
    received.set_defaults(run=run_received)

    for plugin in (replay, spool_cli):
        _add_plugin(subparsers, plugin)
    return parser


def _add_plugin(subparsers: Any, plugin: Any) -> None:
    """Let ``plugin`` add its subcommands; those that set no ``run`` default get ``plugin.run``."""
    before = set(subparsers.choices)
    plugin.add_parser(subparsers)
    for name in set(subparsers.choices) - before:
        subcommand = subparsers.choices[name]
        if subcommand.get_default("run") is None:
            subcommand.set_defaults(run=plugin.run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run_collect(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 if the address cannot be bound."""
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    stop_requested = threading.Event()
    restore = _on_signals((signal.SIGINT, signal.SIGTERM), lambda signum, frame: stop_requested.set())
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


def _on_signals(signums: Sequence[int], handler: Callable[[int, Any], None]) -> Callable[[], None]:
    """Install ``handler`` for ``signums`` (main thread only); return a function undoing it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.signal(signum, handler) for signum in signums}

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


def run_received(args: argparse.Namespace) -> int:
    """Print the stored messages; 1 if the database does not exist or holds no collector table."""
    try:
        store = MessageStore(args.db, readonly=True)
    except FileNotFoundError as exc:
        print(f"eventtracking received: {exc}", file=sys.stderr)
        return 1
    try:
        rows = store.rows(limit=args.limit, event=args.event)
    finally:
        store.close()
    try:
        if args.json:
            for _, _, body in rows:
                sys.stdout.write(body + "\n")
        else:
            sys.stdout.write(format_table([(seq, orjson.loads(body)) for seq, _, body in rows]))
        sys.stdout.flush()
    except BrokenPipeError:
        # `eventtracking received ... | head` closed the pipe early: not an error.
        sys.stderr.close()
    return 0


TABLE_COLUMNS = ("SEQ", "EVENT", "USER", "PAGE URL", "TIMESTAMP")
_MAX_CELL = 60


def format_table(messages: Sequence[tuple]) -> str:
    """Render ``(seq, message)`` pairs as an aligned text table, one message per line.

    EVENT is the event name (``(type)`` for messages without one, e.g. ``(identify)``);
    USER is the userId, else ``anon:`` + anonymousId; PAGE URL is ``context.page.url``
    (for page calls falling back to ``properties.url``).  Long cells are shortened.
    """
    if not messages:
        return "no messages\n"
    table: List[List[str]] = [list(TABLE_COLUMNS)]
    for seq, message in messages:
        table.append([_cell(value) for value in (seq, *_summary(message))])
    widths = [max(len(row[column]) for row in table) for column in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.append(f"{len(messages)} message{'s' if len(messages) != 1 else ''}")
    return "\n".join(lines) + "\n"


def _summary(message: dict) -> tuple:
    event = message.get("event")
    if event is None:
        event = f"({message.get('type') or '?'})"
    user = message.get("userId")
    if user is None and message.get("anonymousId") is not None:
        user = f"anon:{message['anonymousId']}"
    context = message.get("context")
    page = context.get("page") if isinstance(context, dict) else None
    url = page.get("url") if isinstance(page, dict) else None
    properties = message.get("properties")
    if url is None and message.get("type") == "page" and isinstance(properties, dict):
        url = properties.get("url")
    return event, user, url, message.get("timestamp")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())  # one line per message, whatever the value holds
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
