"""``eventtracking replay PATH...``: the command line of :mod:`eventtracking.replay` (user guide:
``docs/replay.rst``). A PATH is a file, a directory (walked recursively), ``-`` or an object
storage URL; ``--celery APP`` spreads the run over the app's workers.

Options, destination (``--write-key``/``--host``, ``--local`` or ``--dry-run``) and the checkpoint's
selection are settled here; the loop itself is :class:`eventtracking.replay.loop.Replay`.
Exit status: 0 when every readable event was delivered or skipped by rule; 1 when lines were
unreadable or deliveries failed (refused included); 2 on usage errors (a checkpoint that does not
match included); 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import signal
import sys
from typing import Any, Callable, Dict, Optional, Pattern, TextIO

from eventtracking.cli.args import (
    WRITE_KEY_ENV,
    add_db,
    add_destination_host,
    add_own_usage,
    add_spool,
    add_write_key,
    on_signals,
    positive_float,
    positive_int,
)
from eventtracking.cli.args import write_key as resolve_write_key
from eventtracking.queue.spool import DEAD_LETTER_FILE, DEAD_LETTER_LOCK
from eventtracking.replay.checkpoint import Checkpoint, CheckpointError, key_fingerprint
from eventtracking.replay.lines import SourceError, find_sources
from eventtracking.replay.loop import DEFAULT_CHECKPOINT_EVERY, DryRun, Replay
from eventtracking.replay.parts import DEFAULT_REQUESTS_PER_SECOND, EVENTS_PER_REQUEST, HOST_ENV, PART_BYTES
from eventtracking.replay.refusals import Refusals
from eventtracking.segment.mapping import MappingOptions, event_time
from eventtracking.wording import plural

DEFAULT_LOCAL_DB = "eventtracking-local.sqlite3"
DEFAULT_DEAD_LETTERS = "eventtracking-deadletters"
# The write key sent to the collector of --local (which takes any).
PLACEHOLDER_WRITE_KEY = "eventtracking-replay"
_SQLITE_HEADER = b"SQLite format 3\x00"


class UsageError(Exception):
    """Bad arguments found after parsing (exit status 2)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``replay`` on the ``eventtracking`` command's subparsers."""
    parser = subparsers.add_parser(
        "replay",
        help="send tracking logs to Segment (backfill), resumable and idempotent",
        description="Send the events of tracking logs (LoggerBackend or Open edX legacy JSON lines, "
        "plain or gzip) to Segment in the shape the live SegmentBackend sends. MessageIds are "
        "derived from each line and its line number, so running again adds no duplicates.",
        epilog=f"Without a write key (--write-key or ${WRITE_KEY_ENV}), give --local to try it against a "
        "collector on this machine. Directories are walked recursively, in path order. "
        "Exit status: 0 when every readable event was delivered or skipped by rule; 1 when lines were "
        "unreadable or deliveries failed; 2 on usage errors; 130 when interrupted.",
    )
    add = parser.add_argument
    add_own_usage(parser)
    add("paths", nargs="+", metavar="PATH", help="log file (plain or gzip), directory, or - for stdin")
    add_write_key(parser)
    add_destination_host(parser)
    add(
        "--local",
        action="store_true",
        help="send to a collector started here for the run (no account needed); it stores into --db",
    )
    add_db(parser, f"the collector's SQLite file, with --local (default: ./{DEFAULT_LOCAL_DB})")
    add("--dry-run", action="store_true", help="read, map and count; send nothing")
    add("--since", type=_iso_time, default=None, metavar="TIME", help="only events at or after this ISO time")
    add("--until", type=_iso_time, default=None, metavar="TIME", help="only events before this ISO time")
    add(
        "--name",
        type=_regex,
        action="append",
        default=[],
        metavar="REGEX",
        help="only events whose name matches (re.search); repeatable, any may match",
    )
    add("--checkpoint", default=None, metavar="FILE", help="resume state: skip what was acknowledged")
    add(
        "--checkpoint-every",
        type=positive_int,
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="N",
        help=f"lines between two checkpoints (default: {DEFAULT_CHECKPOINT_EVERY})",
    )
    add_spool(parser, "the spool directory: let the backend keep events on disk there until delivered")
    add(
        "--dead-letters",
        default=None,
        metavar="DIR",
        help="where messages the destination refuses one by one are kept, in DIR/deadletters.jsonl "
        f"(default: the --spool, else ./{DEFAULT_DEAD_LETTERS}; created when one is refused)",
    )
    add("--rate", type=positive_float, default=None, metavar="N", help="send at most N events/s")
    add(
        "--celery",
        default=None,
        metavar="APP",
        help="spread the replay over the workers of this Celery app (as `celery -A APP` takes it; its "
        "workers import eventtracking.tasks and have their own write key and host); needs --checkpoint",
    )
    add(
        "--requests-per-second",
        type=positive_float,
        default=DEFAULT_REQUESTS_PER_SECOND,
        metavar="N",
        help=f"with --celery: one limit for all workers, in requests of {EVENTS_PER_REQUEST} events "
        f"(default: {DEFAULT_REQUESTS_PER_SECOND:g}; Segment asks for under 1,000)",
    )
    add(
        "--part-bytes",
        type=positive_int,
        default=PART_BYTES,
        metavar="N",
        help=f"with --celery: a plain local file larger than this is sent as parts (default: {PART_BYTES})",
    )
    add(
        "--anonymous-id-field",
        default=None,
        metavar="PATH",
        help="send events without a user id under the anonymousId at this dotted path (context.session)",
    )
    add(
        "--retry-timeout",
        type=positive_float,
        default=None,
        metavar="S",
        help="give up on a batch the destination does not take after S seconds of retries (default: never)",
    )
    parser.set_defaults(run=run)
    return parser


def _iso_time(text: str) -> datetime.datetime:
    parsed = event_time(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}")
    return parsed


def _regex(text: str) -> Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regular expression {text!r}: {exc}") from None


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Run ``eventtracking replay`` with parsed ``args``; return the exit status."""
    out = out or sys.stdout
    try:
        return _run(args, out)
    except UsageError as exc:
        print(f"eventtracking replay: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.celery:
        _check_celery_args(args)
    if args.db is not None and not args.local:
        raise UsageError("--db names the local collector's file: it goes with --local")
    if args.local and (args.write_key or args.host):
        raise UsageError("--local sends to a collector on this machine: it takes no --write-key or --host")
    write_key = None if args.local or args.celery else resolve_write_key(args.write_key)
    if not (write_key or args.local or args.dry_run or args.celery):
        where = f"--host {args.host} needs a key" if args.host else "no destination"
        raise UsageError(
            f"{where}: give --write-key KEY (or set ${WRITE_KEY_ENV}), "
            "or --local to try it against a collector on this machine (no account needed)"
        )
    if args.since and args.until and args.since >= args.until:
        raise UsageError("--since must be before --until")
    local_db = os.path.abspath(args.db or DEFAULT_LOCAL_DB) if args.local else None
    if local_db is not None:
        _check_local_db(local_db)
    dead_letters = os.path.abspath(args.dead_letters or args.spool or DEFAULT_DEAD_LETTERS)
    excluded = [path for path in (args.checkpoint, local_db) if path]
    excluded += [f"{path}{suffix}" for path in excluded for suffix in ("-wal", "-shm", "-journal")]
    excluded += [os.path.join(dead_letters, name) for name in (DEAD_LETTER_FILE, DEAD_LETTER_LOCK)]
    try:
        found = find_sources(args.paths, exclude=excluded)
        if not found.sources:
            raise SourceError(found.nothing_readable())
        for link in found.not_followed:
            print(
                f"eventtracking replay: not followed (a link out of the tree or to a directory): {link}",
                file=sys.stderr,
            )
        sources = found.sources
        checkpoint = None
        if args.checkpoint:
            checkpoint = Checkpoint(args.checkpoint, _selection(args, write_key, local_db))
    except (SourceError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    if args.celery:
        assert checkpoint is not None
        return _run_celery(args, out, sources, checkpoint)

    collector = None
    failures = Refusals(dead_letters, keep=dead_letters != os.path.abspath(args.spool or "\0"))
    if args.dry_run:
        try:
            sink: Any = DryRun(MappingOptions(anonymous_id_field=args.anonymous_id_field))
        except ValueError as exc:
            raise UsageError(f"--anonymous-id-field: {exc}") from None
    else:
        if local_db is not None:
            collector = _start_local_collector(local_db)
            host: Optional[str] = collector.url
            write_key = PLACEHOLDER_WRITE_KEY
        else:
            host = args.host
        try:
            sink = _make_backend(write_key or PLACEHOLDER_WRITE_KEY, host, args, failures)
        except UsageError:
            if collector is not None:
                collector.close()
            raise
    replay = Replay(
        sink,
        names=args.name,
        since=args.since,
        until=args.until,
        rate=args.rate,
        checkpoint=None if args.dry_run else checkpoint,
        resume_from=checkpoint,
        checkpoint_every=args.checkpoint_every,
        failures=failures,
    )
    restore = on_signals((signal.SIGINT, signal.SIGTERM), _stopping(replay))
    try:
        summary = replay.run(sources, progress=sys.stderr.isatty())
    finally:
        restore()
        if collector is not None:
            stored, unique = collector.count(), collector.store.unique_count()
            collector.close()
    if args.host:
        summary.resend_options = f" --host {shlex.quote(args.host)}"
    out.write(summary.format())
    if collector is not None:
        out.write(f"\nthe local collector holds {plural(unique, 'unique message')} in {local_db}\n")
        if stored > unique:  # sent again by a rerun: Segment, deduplicating on messageId, keeps one
            again = plural(stored - unique, "duplicate")
            out.write(f"  plus {again} (a messageId it had already: Segment keeps one)\n")
        out.write(f"  list them:  eventtracking received --db {local_db}\n")
    out.flush()
    return summary.exit_status()


def _check_celery_args(args: argparse.Namespace) -> None:
    """What --celery does not take: the destination is each worker's own; a checkpoint is needed."""
    given = [
        option
        for option, value in (
            ("--write-key", args.write_key),
            ("--host", args.host),
            ("--local", args.local),
            ("--dry-run", args.dry_run),
            ("--spool", args.spool),
            ("--rate", args.rate),
        )
        if value
    ]
    if given:
        raise UsageError(
            f"--celery takes no {', '.join(given)}: each worker sends with the write key and host of "
            f"its own environment (${WRITE_KEY_ENV} and ${HOST_ENV}) or settings; the rate is "
            "--requests-per-second"
        )
    if not args.checkpoint:
        raise UsageError(
            "--celery needs --checkpoint FILE: the parts done are recorded there, so that the "
            "same command resumes a run that was stopped"
        )
    if "-" in args.paths:
        raise UsageError("--celery reads files and objects the workers can reach: not - (stdin)")


def _run_celery(args: argparse.Namespace, out: TextIO, sources: Any, checkpoint: Checkpoint) -> int:
    from eventtracking.replay.distributed import Coordinator, CoordinatorError, load_app

    options = {
        "name": [pattern.pattern for pattern in args.name],
        "since": args.since.isoformat() if args.since else None,
        "until": args.until.isoformat() if args.until else None,
        "anonymous_id_field": args.anonymous_id_field,
        "retry_timeout": args.retry_timeout,
        "dead_letters": args.dead_letters or DEFAULT_DEAD_LETTERS,
        "requests_per_second": args.requests_per_second,
    }
    try:
        coordinator = Coordinator(
            load_app(args.celery), options, checkpoint, args.part_bytes, progress=sys.stderr.isatty()
        )
    except CoordinatorError as exc:
        raise UsageError(str(exc)) from None
    restore = on_signals((signal.SIGINT, signal.SIGTERM), lambda signum, frame: coordinator.stop())
    try:
        summary = coordinator.run(sources)
    finally:
        restore()
    out.write(summary.format())
    out.flush()
    return summary.exit_status()


def _stopping(replay: Replay) -> Callable[[int, Any], None]:
    """The SIGINT/SIGTERM handler: the first asks the replay to stop cleanly (deliver what was
    handed over, save the checkpoint), the next stops at once (no checkpoint)."""
    signals = []

    def handler(signum: int, frame: Any) -> None:
        signals.append(signum)
        if len(signals) > 1:
            raise KeyboardInterrupt
        print(
            "\neventtracking replay: stopping: waiting for the answers to what was sent, then saving the "
            "checkpoint (interrupt again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        replay.stop()

    return handler


def _selection(args: argparse.Namespace, write_key: Optional[str], local_db: Optional[str]) -> Dict[str, Any]:
    """What the checkpoint must match: the options that select events and, unless this is a dry
    run (which sends nowhere), the destination, with only a digest of the write key."""
    selection: Dict[str, Any] = {
        "name": sorted({pattern.pattern for pattern in args.name}),
        "since": args.since.isoformat() if args.since else None,
        "until": args.until.isoformat() if args.until else None,
        "anonymous_id_field": args.anonymous_id_field or None,
    }
    if args.celery:
        selection["destination"] = f"celery:{args.celery}"  # each worker's own
    elif not args.dry_run:
        if local_db is not None:
            selection["destination"] = f"local:{local_db}"
            write_key = PLACEHOLDER_WRITE_KEY
        else:
            from eventtracking.backends.segment import DEFAULT_HOST

            selection["destination"] = (args.host or DEFAULT_HOST).rstrip("/")
        selection["write_key"] = key_fingerprint(write_key or PLACEHOLDER_WRITE_KEY)
    return selection


def _check_local_db(path: str) -> None:
    """Refuse a --db that is some other file: `--local --db tracking.log` would clobber a log."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"--db {path}: {exc}") from None
    if head and head != _SQLITE_HEADER:
        raise UsageError(
            f"--db {path}: not a SQLite database (a log to replay? --db names the local collector's file)"
        )


def _start_local_collector(path: str) -> Any:
    import sqlite3

    from eventtracking.collector import Collector

    try:
        return Collector(db_path=path).start()
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"--db {path}: cannot start the local collector: {exc}") from None


def _make_backend(write_key: str, host: Optional[str], args: argparse.Namespace, on_error: Any = None) -> Any:
    from eventtracking.backends.segment import SegmentBackend

    options: Dict[str, Any] = {}
    if args.anonymous_id_field:
        options["anonymous_id_field"] = args.anonymous_id_field
    if args.spool:
        options["spool_dir"] = args.spool
    if args.retry_timeout:
        options["retry_timeout"] = args.retry_timeout
    try:
        return SegmentBackend(write_key=write_key, host=host, on_error=on_error, **options)
    except Exception as exc:  # the backend's own words say what is wrong with the option
        given = " ".join(f"--{name.replace('_dir', '').replace('_', '-')}" for name in options)
        what = f" with {given}" if given else ""
        raise UsageError(f"cannot set up the Segment backend{what}: {type(exc).__name__}: {exc}") from None
