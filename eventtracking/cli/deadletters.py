"""``eventtracking deadletters``: inspect and resend what the server finally refused from a spool.

* ``deadletters list --spool DIR [--json]``: one line per dead letter (time, reason, event,
  messageId) and a count, or with ``--json`` the file's lines as they are.
* ``deadletters resend --spool DIR [--write-key KEY] [--host URL] [--timeout S]``: post them again
  through the backend's sender (batches, retries, splitting to isolate a bad message), with their
  original messageIds, with the write key of ``--write-key`` or ``$SEGMENT_WRITE_KEY``, to
  ``--host`` (default: Segment's API). What is delivered leaves the file; what is refused again
  stays, with the new reason and time; what could not be sent within the timeout (server down)
  stays as it was, and so do lines that cannot be read. Exit status 0 when the file ends up empty, else 1.

The spool's dead-letter lock is held only to read the file and, after sending, to rewrite it:
a backend running on the same spool appends new dead letters meanwhile (it waits for that lock
only while the file is read or rewritten), and the rewrite keeps what was appended since the
read. The new file is fsynced before it replaces the old one.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any, Optional

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
from eventtracking.cli.output import cell, table
from eventtracking.queue.base import Buffer
from eventtracking.queue.memory import MemoryBuffer
from eventtracking.queue.spool.deadletters import (
    DEAD_LETTER_FILE,
    dead_letter_head,
    dead_letter_lock,
    parse_dead_letters,
    read_dead_letter_file,
    read_dead_letters,
    replace_dead_letters,
    utc_now,
)
from eventtracking.queue.stats import Counters
from eventtracking.segment.sender import sender_worker
from eventtracking.segment.transport import HttpTransport
from eventtracking.wording import plural

SPOOL_HELP = "the spool directory (the backend's spool_dir)"
REASON_WIDTH = 40  # the REASON column: the status and the start of the server's reason


def add_parser(subparsers: Any) -> None:
    """Add the ``deadletters`` subcommand (actions ``list`` and ``resend``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "deadletters",
        help="list or resend the messages a spool's server finally refused",
        description="Messages the server finally refused are kept in DIR/deadletters.jsonl of a spool.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="show the dead letters of a spool")
    add_spool(listing, SPOOL_HELP, required=True)
    add_json(listing, "the dead letters (the file's lines as they are)")
    resend = actions.add_parser("resend", help="post the dead letters again; keep what is refused again")
    add_spool(resend, SPOOL_HELP, required=True)
    add_write_key(resend)
    add_destination_host(resend)
    resend.add_argument(
        "--timeout", type=positive_float, default=60.0, metavar="S", help="how long to try (default: 60)"
    )
    parser.set_defaults(action=None, format_help=parser.format_help)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``deadletters list`` or ``deadletters resend``; return the exit status."""
    if args.action is None:  # `eventtracking deadletters` alone: say what it takes
        sys.stdout.write(args.format_help())
        return 0
    if not os.path.isdir(args.spool):
        print(f"eventtracking deadletters: no spool directory {args.spool}", file=sys.stderr)
        return 1
    key = write_key(getattr(args, "write_key", None))  # only resend/drain take one
    if args.action == "resend" and not key:
        print(
            f"eventtracking deadletters resend: no write key: give --write-key KEY or set ${WRITE_KEY_ENV}",
            file=sys.stderr,
        )
        return 2
    try:
        if args.action == "list":
            return list_dead_letters(args.spool, as_json=args.json)
        return resend_dead_letters(args.spool, key or "", args.host or DEFAULT_HOST, args.timeout)
    except OSError as error:  # e.g. ELOOP: a symbolic link where the file should be
        print(f"eventtracking deadletters: {error}", file=sys.stderr)
        return 1


def list_dead_letters(directory: str, *, as_json: bool = False) -> int:
    entries = read_dead_letters(directory)
    if as_json:
        sys.stdout.write("".join(line.decode(errors="replace") + "\n" for line, _ in entries))
        return 0
    rows = []
    for line, entry in entries:
        if entry is None:
            rows.append(["-", "(unreadable line)", cell(line[:40].decode(errors="replace")), "-"])
        else:
            message = entry["message"]
            rows.append(
                [
                    cell(entry.get("time")),
                    cell(entry.get("reason"), REASON_WIDTH),
                    cell(message.get("event")),
                    cell(message.get("messageId")),
                ]
            )
    if not rows:  # the same words as resend's: nothing to point to --json for
        print(f"no dead letters in {directory}")
        return 0
    sys.stdout.write(table(("TIME", "REASON", "EVENT", "MESSAGE ID"), rows))
    print(f"{plural(len(entries), 'dead letter')} in {directory} (the whole reason: --json)")
    return 0


class _Outcomes:
    """A :class:`~eventtracking.queue.base.Buffer` that notes, by identity, what the sender did
    with each message it took from ``buffer`` (which holds them). A late sender thread changes
    nothing once the results are read (``delivered``)."""

    def __init__(self, buffer: Buffer) -> None:
        self.buffer = buffer
        self.max_bytes = buffer.max_bytes
        self.refused: dict[int, str] = {}
        self.kept: set[int] = set()
        self.answered: set[int] = set()
        self._notes = threading.Lock()
        self._sealed = False

    @property
    def accepted(self) -> int:
        return self.buffer.accepted

    def put(self, item: bytes) -> bool:
        return self.buffer.put(item)

    def take(self, max_count: int, max_bytes: int, linger: float, stop: threading.Event) -> list[bytes]:
        return self.buffer.take(max_count, max_bytes, linger, stop)

    def done(self, batch: list[bytes]) -> None:
        self.buffer.done(batch)
        self._note(self.answered, batch)

    def keep_for_later(self, batch: list[bytes]) -> bool:
        """Noted as kept: it stays in the file (the buffer is not asked to keep it)."""
        self._note(self.kept, batch)
        return True

    def dead_letter(self, reason: str, batch: list[bytes]) -> None:
        with self._notes:
            if not self._sealed:
                self.refused.update((id(item), reason) for item in batch)

    def _note(self, into: set[int], batch: list[bytes]) -> None:
        with self._notes:
            if not self._sealed:
                into.update(id(item) for item in batch)

    def delivered(self) -> set[int]:
        with self._notes:
            self._sealed = True
            return self.answered - self.kept - set(self.refused)

    def wake(self) -> None:
        self.buffer.wake()

    def wait_idle(self, timeout: Optional[float]) -> bool:
        return self.buffer.wait_idle(timeout)

    def pending(self) -> tuple[int, int]:
        return self.buffer.pending()

    def stats(self) -> Optional[dict[str, Any]]:
        return self.buffer.stats()

    def close(self) -> None:
        self.buffer.close()

    def discard_inherited(self) -> Buffer:
        return self.buffer.discard_inherited()


def resend_dead_letters(directory: str, write_key: str, host: str, timeout: float) -> int:
    path = os.path.join(directory, DEAD_LETTER_FILE)
    with dead_letter_lock(directory):  # writers append whole entries under it: a consistent copy
        original = read_dead_letter_file(directory)
    entries = parse_dead_letters(original)
    if not entries:
        print(f"no dead letters in {directory}")
        return 0
    # Sent without the lock: a backend on this spool can append dead letters meanwhile.
    # Each message gets a bytes object of its own: the sender's verdicts are noted by identity.
    messages = [(line, entry, orjson.dumps(entry and entry["message"])) for line, entry in entries]
    outcomes = _Outcomes(MemoryBuffer(sum(len(data) for _, _, data in messages) + 1))
    transport = HttpTransport(host, write_key, timeout=min(15.0, timeout))
    counters = Counters()
    sender = sender_worker(outcomes, transport, counters, linger=0, retry_budget=timeout)
    for _, entry, data in messages:
        if entry is not None:
            outcomes.put(data)
    sender.close(timeout)
    delivered = outcomes.delivered()
    now = utc_now()
    kept_lines: list[bytes] = []
    for line, entry, data in messages:
        if entry is None or id(data) in outcomes.kept or id(data) not in outcomes.answered:
            kept_lines.append(line)
        elif id(data) in outcomes.refused:
            kept_lines.append(dead_letter_head(outcomes.refused[id(data)], now) + data + b"}")
    refused = sum(1 for _, entry, data in messages if entry is not None and id(data) in outcomes.refused)
    kept = len(kept_lines) - refused
    last_error = counters.snapshot().get("last_error")
    why_kept = f"; last error: {last_error}" if kept and last_error else ""
    summary = (
        f"resent {plural(len(messages), 'dead letter')}: delivered {len(delivered):,}, "
        f"refused again {refused:,}{_because(set(outcomes.refused.values())) if refused else ''}, "
        f"kept {kept:,} (unreadable or not sent in time{why_kept})"
    )
    try:
        appended = replace_dead_letters(directory, original, kept_lines)
    except OSError as error:
        print(summary)
        print(f"eventtracking deadletters: cannot rewrite {path}: {error}; left as it was", file=sys.stderr)
        return 1
    if appended is None:  # rewritten by someone else (another resend)
        print(summary)
        print(
            f"eventtracking deadletters: {path} was rewritten meanwhile; left as it is "
            "(what was delivered is still in it and would be sent again)",
            file=sys.stderr,
        )
        return 1
    if appended:
        summary += f"; {plural(len(appended), 'new dead letter')} arrived meanwhile (not resent)"
    print(summary)
    return 0 if not kept_lines and not appended else 1


def _because(reasons: set[str]) -> str:
    """`` (HTTP 400: ...)``: what the server said when it refused, each reason once, shortened."""
    return f" ({'; '.join(cell(reason, REASON_WIDTH * 2) for reason in sorted(reasons))})"
