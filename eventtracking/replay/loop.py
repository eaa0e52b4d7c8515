"""The replay loop behind ``eventtracking replay PATH...`` (command line: :mod:`eventtracking.cli.replay`).

:class:`Replay` joins three parts: :mod:`eventtracking.replay.reading` (the inputs as numbered
events), :mod:`eventtracking.replay.flow` (back-pressure, drain, stop and checkpoint rules, on the
sink's typed :class:`~eventtracking.queue.Progress`) and :mod:`eventtracking.replay.summary`
(the progress bar and the summary).

Contract:

* Every line of every input is read once, in order. A line is a JSON object, possibly after a
  prefix (parsing starts at its first ``{``); blank lines are skipped; anything else is an
  unreadable line, counted and named (``file:line``) in the summary, never a crash.
* Each event goes through :class:`~eventtracking.backends.segment.SegmentBackend` in the live
  shape (:mod:`eventtracking.replay.events`) with a deterministic messageId, so a rerun or a
  resumed run adds nothing new in Segment, which dedupes on messageId.
* The reader never outruns the backend: past :data:`~eventtracking.replay.flow.BACKLOG_BYTES`
  waiting to be sent it waits, so memory stays flat whatever the size of the inputs.
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
import sys
import time
import zlib
from typing import Any, Callable, Dict, Optional, Pattern, Sequence

from eventtracking.queue.stats import Progress
from eventtracking.replay.checkpoint import Checkpoint
from eventtracking.replay.events import message_id
from eventtracking.replay.flow import (  # noqa: F401 (BACKLOG_BYTES..SETTLED_DROPS: the old import path)
    BACKLOG_BYTES,
    DEFAULT_CHECKPOINT_EVERY,
    DRAIN_POLL,
    SETTLED_DROPS,
    STOP_REASONS,
    Checkpoints,
    Pace,
    RetryNotice,
    Sink,
    StopReplay,
    drain,
    stop_reason,
    wait_for_room,
)
from eventtracking.replay.lines import Source
from eventtracking.replay.reading import Selection, SourceEvents
from eventtracking.replay.refusals import Refusals
from eventtracking.replay.summary import ProgressBar, Summary, sent
from eventtracking.segment.encoding import MAX_MESSAGE_BYTES, Unserializable, encode
from eventtracking.segment.mapping import MappingOptions, SkipEvent, to_track_message

# While replaying, the reader thread is CPU-bound and the sender thread I/O-bound: with the
# default 5 ms GIL switch interval the sender waits that long at each wake-up (a convoy), and
# batches go out at half speed. Set for the duration of the run only.
SWITCH_INTERVAL = 0.0001


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

    def progress(self) -> Progress:
        return Progress(accepted=self.accepted, skipped=dict(self.skipped))

    def flush(self, timeout: Optional[float] = None) -> bool:
        return True

    def close(self, timeout: Optional[float] = None) -> bool:
        return True


class Replay:
    """Reads sources line by line and hands their events to a sink: a SegmentBackend, or a
    :class:`DryRun` (then the summary counts what would be sent)."""

    def __init__(
        self,
        sink: Sink,
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
        self.selection = Selection(names, since, until)
        self.rate = rate
        self.checkpoint = checkpoint  # written to (None: a dry run never writes)
        self.resume_from = resume_from or checkpoint  # read from
        self.failures = failures
        self.throttle = throttle
        self.on_progress = on_progress
        self.summary = Summary(dry_run=isinstance(sink, DryRun))
        self._checkpoints = Checkpoints(checkpoint, checkpoint_every)
        self._retrying = RetryNotice()
        self._pace: Optional[Pace] = None
        self._started = 0.0
        self._bar: Optional[ProgressBar] = None
        self._stop_requested = False

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
        if self.rate is not None:
            self._pace = Pace(self.rate, lambda: self._stop_requested)
        if progress:
            self._bar = ProgressBar(sources, "would send" if summary.dry_run else "sent")
        settled = False  # all that was handed over has been answered: the checkpoint may say so
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            try:
                for source in sources:
                    self._replay_source(source)
            except _StopRequested:
                summary.interrupted = True  # then deliver what was handed over, and checkpoint it
            drain(self.sink.progress, self._watch)
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
                self._checkpoints.save(self.sink.progress(), self.failures)
            summary.checkpoint_frozen = self._checkpoints.frozen and self.checkpoint is not None
            summary.take_outcome(self.sink.progress(), self.failures)
            summary.elapsed = time.monotonic() - self._started
            if self._bar is not None:
                complete = settled and not summary.interrupted
                self._bar.finish(summary.lines, summary.sent, complete=complete)
        return summary

    def _replay_source(self, source: Source) -> None:
        summary, send = self.summary, self.sink.send
        throttle, pace = self.throttle, self._pace
        events = SourceEvents(source, summary, self.selection, self.resume_from, self._bar)
        try:
            for chunk in events:
                if chunk.partial:  # never checkpointed, and the last: no stop, no shared throttle
                    summary.lines += chunk.lines
                    for line_number, text, event in chunk.events:
                        if pace is not None:
                            pace.wait()
                        send(event, message_id(text, line_number))
                    continue
                for line_number, text, event in chunk.events:
                    if throttle is not None:
                        throttle()  # a limit shared with other processes (--celery)
                    if pace is not None:
                        pace.wait()
                        if self._stop_requested:  # this line is not sent; those before it were
                            events.line_number = line_number - 1
                            summary.lines += events.line_number - chunk.start
                            self._checkpoints.read(source.key, events.line_number, events.head)
                            raise _StopRequested
                    send(event, message_id(text, line_number))
                summary.lines += chunk.lines
                self._checkpoints.read(source.key, chunk.end, events.head, chunk.lines)
                self._between_chunks()
                if self._stop_requested:
                    raise _StopRequested
        except (OSError, EOFError, zlib.error) as exc:
            # A truncated or corrupt gzip, a disk error: what was read counts, the rest is unreadable.
            where = f"{source.name}:{events.line_number + 1}"
            summary.add_unreadable(where, f"cannot read further ({exc})")
        finally:  # also when stopped: a resumed run that is interrupted again says what it skipped
            summary.acknowledged += min(events.skip_through, events.line_number)
            if self._bar is not None:
                self._bar.end(source)

    def _between_chunks(self) -> None:
        """Progress, back-pressure, failure watch and checkpoints, once per chunk of lines."""
        progress = wait_for_room(self.sink.progress, self._watch)
        done = sent(progress, self.summary.dry_run)
        if self._bar is not None:
            self._bar.update(self.summary.lines, done)
        if self.on_progress is not None:
            self.on_progress(self.summary.lines, done)
        if self._checkpoints.due():
            drain(self.sink.progress, self._watch)
            self._checkpoints.save(self.sink.progress(), self.failures)

    def _watch(self, progress: Progress) -> None:
        """Say once that deliveries are retried; raise StopReplay when the run must stop."""
        self._retrying.look(progress)
        stop = stop_reason(progress, self.failures)
        if stop is not None:
            if stop.freeze:
                self._checkpoints.freeze()
            raise StopReplay(stop.message)
