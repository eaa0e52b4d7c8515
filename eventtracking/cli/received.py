"""``eventtracking received``: list what a collector stored in its database, as a table or JSON lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import orjson

from eventtracking.cli.args import add_db, add_json, positive_int
from eventtracking.cli.output import cell, table
from eventtracking.collector import MessageStore
from eventtracking.wording import plural

TABLE_COLUMNS = ("SEQ", "EVENT", "USER", "PAGE URL", "TIMESTAMP")


def add_parser(subparsers: Any) -> None:
    """Register ``received`` on the ``eventtracking`` command's subparsers."""
    received = subparsers.add_parser(
        "received",
        help="list the messages a collector stored",
        description="Read a collector database and list its messages in arrival order.",
    )
    add_db(received, "the collector's SQLite file", required=True)
    received.add_argument("--event", default=None, metavar="NAME", help="only messages with this event name")
    received.add_argument("--limit", type=positive_int, default=None, metavar="N", help="at most N messages")
    add_json(received, "each message")
    received.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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


def format_table(messages: Sequence[tuple]) -> str:
    """Render ``(seq, message)`` pairs as an aligned text table, one message per line.

    EVENT is the event name (``(type)`` for messages without one, e.g. ``(identify)``);
    USER is the userId, else ``anon:`` + anonymousId; PAGE URL is ``context.page.url``
    (for page calls falling back to ``properties.url``).  Long cells are shortened.
    """
    if not messages:
        return "no messages\n"
    rows = [[cell(value) for value in (seq, *_summary(message))] for seq, message in messages]
    return table(TABLE_COLUMNS, rows) + plural(len(messages), "message") + "\n"


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
