"""The replay loop behind ``eventtracking replay PATH...`` (command line: :mod:`eventtracking.cli.replay`).

Contract:

* Every line of every input is read once, in order. A line is a JSON object, possibly after a
  prefix (parsing starts at its first ``{``); blank lines are skipped; anything else is an
  unreadable line, counted and named (``file:line``) in the summary, never a crash.
* Each event goes through :class:`~eventtracking.backends.segment.SegmentBackend` in the live
  shape (:mod:`eventtracking.replay.events`) with a deterministic messageId, so a rerun or a
  resumed run adds nothing new in Segment, which dedupes on messageId.
* The reader never outruns the backend: past :data:`BACKLOG_BYTES` waiting to be sent it
  waits, so memory stays flat whatever the size of the inputs.
* The last line of a plain file without its newline yet (the live ``tracking.log`` being
  written) is a partial line: never counted unreadable and never checkpointed, so the next run
  reads it again once it is finished; the summary names it. When it already parses as a
  complete JSON object it is sent too (its messageId is the same once its newline comes, so the
  next run's resend is deduplicated); otherwise it is left for the next run. A gzip file or
  stdin will not grow: there a last line without a newline is an ordinary line.
* With ``--checkpoint FILE``, once at least ``--checkpoint-every`` lines were read (checked
  between chunks of about 100 KB to 1 MB) the reader waits until the backend has had an answer
  for everything and, when all was settled, writes the position of each input (see
  :mod:`eventtracking.replay.checkpoint`); a rerun with the same file skips those lines. Settled
  means delivered, skipped by rule, or refused for that message by the destination (HTTP 400
  and the like: sending it again would be refused again), which is counted as a failed
  delivery, kept as a dead letter and named in the summary. After any other failed delivery
  (a refusal of the configuration, given up after retries, buffer full, deferred to the spool,
  a dead letter that could not be kept, an internal error) the checkpoint stops advancing, so
  a rerun retries from there.
* A refusal of the configuration rather than of the message (401/403, 404/405, a redirect,
  one 4xx for every message: :mod:`eventtracking.replay.refusals`) stops the run at once, with
  the reason and the fix.
* The checkpoint records the options that select events (``--name``, ``--since``, ``--until``,
  ``--anonymous-id-field``) and the destination (``--host`` or ``--local``, and a short digest
  of the write key, never the key): a checkpoint written with others is refused (exit status 2)
  rather than skipping lines this run's selection or destination never had.
* A destination that takes nothing (a batch given up after the backend's retries, or deferred
  to the ``--spool``) ends the run early: resume it later with the checkpoint.
* :meth:`Replay.stop` (the command calls it on SIGINT and SIGTERM) stops the reading at a line
  boundary, waits for the answers to everything handed over, and saves the checkpoint as a
  finished run would: a resume sends nothing that was acknowledged. A ``KeyboardInterrupt``
  (a second Ctrl-C) stops at once, without a checkpoint.
* Exit status: 0 when every readable event was delivered or skipped by rule; 1 when lines were
  unreadable or deliveries failed (refused included); 2 on usage errors (a checkpoint that does
  not match included); 130 when interrupted. The summary's last line says which, and why.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import zlib
from typing import Any, Callable, Dict, Optional, Pattern, Sequence, Tuple

import orjson

from eventtracking.replay.checkpoint import Checkpoint, head_fingerprint
from eventtracking.replay.events import message_id, to_live_event
from eventtracking.replay.lines import OVERLONG_LINE, LineReader, Source, may_grow, open_source
from eventtracking.replay.refusals import Refusals
from eventtracking.replay.summary import Summary, failure_details
from eventtracking.segment.encoding import MAX_MESSAGE_BYTES, Unserializable, encode
from eventtracking.segment.mapping import MappingOptions, SkipEvent, event_time, to_track_message

BACKLOG_BYTES = 2 << 20  # encoded messages waiting for the sender before the reader waits
# While replaying, the reader thread is CPU-bound and the sender thread I/O-bound: with the
# default 5 ms GIL switch interval the sender waits that long at each wake-up (a convoy), and
# batches go out at half speed. Set for the duration of the run only.
SWITCH_INTERVAL = 0.0001
DEFAULT_CHECKPOINT_EVERY = 20_000
DRAIN_POLL = 0.1  # at most this many seconds between two looks at the counters while waiting for delivery
# Drops that mean "the destination is not taking anything now": stop reading, resume later.
STOP_REASONS = ("gave_up", "buffer_full")
# Drops that are final: the destination answered and refused the message; sending it again
# would be refused again, so the checkpoint may pass it (every other drop freezes it), unless
# the refusal was of the configuration (see :mod:`eventtracking.replay.refusals`).
SETTLED_DROPS = ("refused",)
_NAME_CACHE_LIMIT = 100_000


class StopReplay(Exception):
    """The run cannot usefully go on (the destination refuses to take anything)."""


class _StopRequested(Exception):
    """:meth:`Replay.stop` was called: stop reading at a line boundary, deliver, checkpoint."""


class DryRun:
    """A stand-in for SegmentBackend that maps, encodes and counts, and sends nothing."""

    def __init__(self, mapping: MappingOptions) -> None:
        self._mapping = mapping
        self.accepted = 0
        self.skipped: Dict[str, int] = {}

    def send(self, event: Any, message_id: Optional[str] = None) -> None:
        try:
            message = to_track_message(event, self._mapping)
            message["messageId"] = message_id
            if len(encode(message)) > MAX_MESSAGE_BYTES:
                raise SkipEvent("oversized")
        except SkipEvent as skip:
            self.skipped[skip.reason] = self.skipped.get(skip.reason, 0) + 1
        except Unserializable:
            self.skipped["unserializable"] = self.skipped.get("unserializable", 0) + 1
        else:
            self.accepted += 1

    def stats(self) -> Dict[str, Any]:
        return {"accepted": self.accepted, "delivered": 0, "skipped": dict(self.skipped), "dropped": {}}

    def flush(self, timeout: Optional[float] = None) -> bool:
        return True

    def close(self, timeout: Optional[float] = None) -> bool:
        return True


class Replay:
    """Reads sources line by line and hands their events to a sink: a SegmentBackend, or a
    :class:`DryRun` (then the summary counts what would be sent)."""

    def __init__(
        self,
        sink: Any,
        *,
        names: Sequence[Pattern[str]] = (),
        since: Optional[datetime.datetime] = None,
        until: Optional[datetime.datetime] = None,
        rate: Optional[float] = None,
        checkpoint: Optional[Checkpoint] = None,
        resume_from: Optional[Checkpoint] = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        failures: Optional[Refusals] = None,
        throttle: Optional[Callable[[], None]] = None,
        on_progress: Optional[Callable[[int, int], None]] = None,
    ) -> None:
        """``throttle`` is called before each event is handed over (a rate shared with other
        processes); ``on_progress(lines, sent)`` between chunks (a part's progress, --celery)."""
        self.sink = sink
        self.names = list(names)
        self.since = since
        self.until = until
        self.rate = rate
        self.checkpoint = checkpoint  # written to (None: a dry run never writes)
        self.resume_from = resume_from or checkpoint  # read from
        self.checkpoint_every = checkpoint_every
        self.failures = failures
        self.throttle = throttle
        self.on_progress = on_progress
        self.summary = Summary(dry_run=isinstance(sink, DryRun))
        self._name_matches: Dict[Any, bool] = {}
        self._positions: Dict[str, Tuple[int, str]] = {}  # read, not yet checkpointed
        self._lines_since_checkpoint = 0
        self._frozen = False  # a delivery failed: the checkpoint must not pass it
        self._handed = 0  # events given to the sink (for --rate)
        self._started = 0.0
        self._progress: Optional[Progress] = None
        self._stop_requested = False
        self._said_retrying = False

    def stop(self) -> None:
        """Ask the run to stop reading (safe from a signal handler): it stops at a line boundary,
        waits for the answers to what it handed over, saves the checkpoint and returns a summary
        marked interrupted (exit status 130). Nothing acknowledged is then sent again by a resume."""
        self._stop_requested = True

    def run(self, sources: Sequence[Source], progress: bool = False) -> Summary:
        """Replay ``sources`` in order, close the sink and return the summary."""
        summary = self.summary
        summary.inputs = len(sources)
        summary.checkpoint = self.resume_from is not None
        self._started = time.monotonic()
        if progress:
            self._progress = Progress(sources, "would send" if summary.dry_run else "sent")
        settled = False  # all that was handed over has been answered: the checkpoint may say so
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            try:
                for source in sources:
                    self._replay_source(source)
            except _StopRequested:
                summary.interrupted = True  # then deliver what was handed over, and checkpoint it
            self._drain()
            settled = True
        except StopReplay as stop:
            summary.stopped = str(stop)
        except KeyboardInterrupt:  # not through stop(), or a second Ctrl-C while draining
            summary.interrupted = True
        finally:
            sys.setswitchinterval(switch_interval)
            # Drained already, or stopping (refused, Ctrl-C): never wait out every retry of a backlog.
            self.sink.close(5.0)
            if settled:
                self._save_checkpoint()
            self._collect_stats()
            summary.elapsed = time.monotonic() - self._started
            if self._progress is not None:
                complete = settled and not summary.interrupted
                self._progress.finish(summary.lines, summary.sent, complete=complete)
        return summary

    def _replay_source(self, source: Source) -> None:
        summary = self.summary
        loads, decode_error, send = orjson.loads, orjson.JSONDecodeError, self.sink.send
        filtering = bool(self.names or self.since or self.until)
        rate, throttle = self.rate, self.throttle
        line_number = source.first_line
        skip_through = 0
        head = ""
        try:
            with open_source(source) as stream:
                if self._progress is not None:
                    self._progress.start(source, stream)
                reader = LineReader(stream)
                growing = may_grow(source, stream)
                for lines in reader:
                    if reader.unterminated and growing:
                        if line_number >= skip_through:
                            self._partial_line(source, line_number + 1, lines[0])
                        break  # never checkpointed: the next run reads it again
                    if line_number == 0 and lines:
                        head = head_fingerprint(lines[0])
                        if self.resume_from is not None:
                            skip_through = self.resume_from.acknowledged(source.key, head)
                    chunk_start = line_number
                    for line in lines:
                        line_number += 1
                        if line_number <= skip_through:
                            continue
                        start = line.find(b"{")
                        if start < 0:
                            if line.strip():
                                self._unreadable(source, line_number, line)
                            continue
                        text = line[start:].rstrip() if start else line.rstrip()
                        try:
                            event = to_live_event(loads(text))
                        except decode_error as exc:
                            summary.add_unreadable(f"{source.name}:{line_number}", f"not JSON ({exc})")
                            continue
                        summary.events += 1
                        if filtering and not self._wanted(event):
                            summary.filtered += 1
                            continue
                        if throttle is not None:
                            throttle()  # a limit shared with other processes (--celery)
                        if rate is not None:
                            self._throttle()
                            if self._stop_requested:  # this line is not sent; those before it were
                                line_number -= 1
                                summary.lines += line_number - chunk_start
                                self._positions[source.key] = (line_number, head)
                                raise _StopRequested
                        send(event, message_id(text, line_number))
                    summary.lines += len(lines)
                    self._lines_since_checkpoint += len(lines)
                    self._positions[source.key] = (line_number, head)
                    self._between_chunks()
                    if self._stop_requested:
                        raise _StopRequested
        except (OSError, EOFError, zlib.error) as exc:
            # A truncated or corrupt gzip, a disk error: what was read counts, the rest is unreadable.
            summary.add_unreadable(f"{source.name}:{line_number + 1}", f"cannot read further ({exc})")
        finally:  # also when stopped: a resumed run that is interrupted again says what it skipped
            summary.acknowledged += min(skip_through, line_number)
            if self._progress is not None:
                self._progress.end(source)

    def _partial_line(self, source: Source, line_number: int, line: bytes) -> None:
        """The last line of a file that may grow, its newline not written yet (see module doc)."""
        where = f"{source.name}:{line_number}"
        start = line.find(b"{")
        if start < 0:  # OVERLONG_LINE included
            if line.strip():
                self.summary.partial.append(f"{where}: left for the next run")
            return
        text = line[start:].rstrip()
        try:
            event = to_live_event(orjson.loads(text))
        except orjson.JSONDecodeError:
            self.summary.partial.append(f"{where}: left for the next run")
            return
        summary = self.summary
        summary.lines += 1
        summary.events += 1
        summary.partial.append(f"{where}: complete JSON, sent (the next run reads it again)")
        if (self.names or self.since or self.until) and not self._wanted(event):
            summary.filtered += 1
            return
        if self.rate is not None:
            self._throttle()
        self.sink.send(event, message_id(text, line_number))

    def _unreadable(self, source: Source, line_number: int, line: bytes) -> None:
        reason = "line longer than 16 MiB" if line is OVERLONG_LINE else "no JSON object on the line"
        self.summary.add_unreadable(f"{source.name}:{line_number}", reason)

    def _wanted(self, event: Any) -> bool:
        if not isinstance(event, dict):
            return False
        if self.names:
            name = event.get("name")
            try:
                matches = self._name_matches[name]
            except (KeyError, TypeError):
                matches = isinstance(name, str) and any(pattern.search(name) for pattern in self.names)
                if len(self._name_matches) >= _NAME_CACHE_LIMIT:
                    self._name_matches.clear()  # legacy names include URL paths: keep the cache bounded
                if isinstance(name, (str, int, float)) or name is None:
                    self._name_matches[name] = matches
            if not matches:
                return False
        if self.since or self.until:
            when = event_time(event.get("timestamp"))
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True

    def _throttle(self) -> None:
        assert self.rate is not None
        due = self._started + self._handed / self.rate
        self._handed += 1
        delay = due - time.monotonic()
        while delay > 0 and not self._stop_requested:  # in steps: a stop is noticed within 0.1 s
            time.sleep(min(delay, 0.1))
            delay = due - time.monotonic()

    def _between_chunks(self) -> None:
        """Progress, back-pressure, failure watch and checkpoints, once per chunk of lines."""
        stats = self.sink.stats()
        self._stop_if_refused(stats)
        while stats.get("buffered_bytes", 0) > BACKLOG_BYTES:
            time.sleep(0.005)  # let the sender drain: memory stays flat in the input size
            stats = self.sink.stats()
            self._stop_if_refused(stats)  # a spool keeps what it gives up on: it never drains then
        sent = stats["accepted" if self.summary.dry_run else "delivered"]
        if self._progress is not None:
            self._progress.update(self.summary.lines, sent)
        if self.on_progress is not None:
            self.on_progress(self.summary.lines, sent)
        if self.checkpoint is not None and self._lines_since_checkpoint >= self.checkpoint_every:
            self._drain()
            self._save_checkpoint()

    def _drain(self) -> None:
        """Wait until everything handed to the sink was answered; stop if the destination refuses.

        Not one ``flush(None)``: a spool keeps re-queuing what is refused, so that never returns;
        and not ``flush(timeout)`` in a loop either, which warns each time it times out. The
        counters are looked at instead, at growing intervals (1 ms up to :data:`DRAIN_POLL`).
        """
        wait = 0.001
        while True:
            stats = self.sink.stats()
            self._stop_if_refused(stats)
            if not stats.get("in_flight"):
                return
            time.sleep(wait)
            wait = min(wait * 2, DRAIN_POLL)

    def _stop_if_refused(self, stats: Dict[str, Any]) -> None:
        self._say_retrying(stats)
        problem = self.failures.configuration_error(stats) if self.failures is not None else None
        if problem:
            self._freeze()
            raise StopReplay(
                f"the destination refuses this configuration ({problem}). Nothing more was sent, and "
                "the checkpoint stays before the lines not delivered: rerun with the fix to send them"
            )
        details = failure_details(stats)
        stopping = [
            f"{reason}: {details[reason]}" if details.get(reason) else reason
            for reason in STOP_REASONS
            if stats["dropped"].get(reason)
        ]
        if stats.get("deferred"):
            stopping.append("deferred to the spool")  # kept on disk: the next run sends them first
        if stopping:
            raise StopReplay(
                f"deliveries failed ({'; '.join(stopping)}): the destination is not taking events; "
                "rerun later (with --checkpoint to resume where this run was acknowledged)"
            )

    def _say_retrying(self, stats: Dict[str, Any]) -> None:
        """Say once, on stderr, that deliveries are being retried and why, while nothing has been
        delivered yet: an unreachable destination is otherwise a long silence."""
        if self._said_retrying or stats.get("delivered") or not stats.get("retries"):
            return
        error = stats.get("last_error")
        if error:
            self._said_retrying = True
            print(
                f"eventtracking replay: retrying: {error} (each batch is given up after the retry timeout, "
                "--retry-timeout)",
                file=sys.stderr,
                flush=True,
            )

    def _save_checkpoint(self) -> None:
        self._lines_since_checkpoint = 0
        if self.checkpoint is None or self._frozen:
            return
        stats = self.sink.stats()
        unsettled = [reason for reason, n in stats["dropped"].items() if n and reason not in SETTLED_DROPS]
        failures = self.failures
        if failures is not None and (failures.configuration_error(stats) or failures.not_kept):
            unsettled.append("refused")  # not for the message's sake, or not kept: a rerun sends it
        if unsettled or stats.get("deferred"):
            self._freeze()
            return
        if self._positions:
            self.checkpoint.record(self._positions)
            self._positions = {}

    def _freeze(self) -> None:
        """A rerun must retry what was not delivered: never record past it."""
        self._frozen = True
        self.summary.checkpoint_frozen = self.checkpoint is not None

    def _collect_stats(self) -> None:
        stats = self.sink.stats()
        summary = self.summary
        summary.sent = stats["accepted"] if summary.dry_run else stats["delivered"]
        summary.skipped = dict(stats["skipped"])
        summary.failed = dict(stats["dropped"])
        summary.failed_details = failure_details(stats)
        if self.failures is not None:
            summary.failed_shown = list(self.failures.shown)
            summary.dead_letters = self.failures.kept
            summary.dead_letter_dir = self.failures.dead_letters
            summary.dead_letters_not_kept = self.failures.not_kept
        spooled = (stats.get("spool") or {}).get("dead_letters")
        if spooled:  # the backend's spool keeps them (--spool)
            summary.dead_letters = spooled
        left = stats.get("in_flight", 0)
        if left:
            summary.failed["not_answered"] = left


class Progress:
    """The progress bar (tqdm, on stderr): the bytes of the inputs read against their total size
    (compressed bytes for gzip), so it has a percentage and an ETA; a count of lines alone when
    an input is stdin. It shows the lines read and the events sent so far; when the run ends it
    shows the summary's own figures for both."""

    def __init__(self, sources: Sequence[Source], verb: str = "sent") -> None:
        from tqdm import tqdm

        self._verb = verb
        self._sizes = {source.key: _size(source) for source in sources}
        self.total: Optional[int] = None
        if None not in self._sizes.values():
            self.total = sum(size or 0 for size in self._sizes.values())
            bar_options: Dict[str, Any] = {"unit": "B", "unit_scale": True, "unit_divisor": 1024}
            self.bar = tqdm(total=self.total, file=sys.stderr, mininterval=0.5, **bar_options)
        else:
            self.bar = tqdm(unit=" lines", unit_scale=True, file=sys.stderr, mininterval=0.5)
        self._done = 0  # bytes of the inputs read to the end
        self._raw: Any = None

    def start(self, source: Source, stream: Any) -> None:
        """Follow ``stream``, the input being read (its raw file, below any gzip)."""
        self._raw = getattr(stream, "fileobj", stream) if self.total is not None else None

    def end(self, source: Source) -> None:
        self._raw = None
        self._done += self._sizes.get(source.key) or 0

    def update(self, lines: int, sent: int) -> None:
        position = lines
        if self.total is not None:
            position = self._done
            try:
                position += self._raw.tell() if self._raw is not None else 0
            except (OSError, ValueError):
                pass
            position = min(position, self.total)
        self.bar.update(position - self.bar.n)
        self.bar.set_postfix_str(f"{lines:,} lines, {sent:,} {self._verb}", refresh=False)

    def finish(self, lines: int, sent: int, complete: bool) -> None:
        """Show the final figures (the summary's) and close the bar."""
        if self.total is not None and complete:
            self.bar.update(self.total - self.bar.n)
        elif self.total is None:
            self.bar.update(lines - self.bar.n)
        self.bar.set_postfix_str(f"{lines:,} lines, {sent:,} {self._verb}", refresh=False)
        self.bar.close()


def _size(source: Source) -> Optional[int]:
    if source.is_stdin or source.is_object:
        return source.size
    try:
        return os.path.getsize(source.key)
    except OSError:
        return None
