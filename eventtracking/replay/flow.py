"""Flow control of a replay: when the reader waits, when the run stops, when the checkpoint may
advance. Rules on a sink's :class:`~eventtracking.queue.stats.Progress` (never ``stats()`` keys),
each testable on its own; :class:`~eventtracking.replay.loop.Replay` applies them between chunks.

* **Back-pressure**: past :data:`BACKLOG_BYTES` waiting to be sent the reader waits
  (:func:`wait_for_room`), so memory stays flat whatever the size of the inputs.
* **Drain**: :func:`drain` waits until everything handed over was answered, looking at the
  counters at growing intervals (1 ms up to :data:`DRAIN_POLL`).
* **Stop**: :func:`stop_reason` says why the run cannot usefully go on: a refusal of the
  configuration (:mod:`eventtracking.replay.refusals`; the checkpoint freezes), or a destination
  that takes nothing (:data:`STOP_REASONS`, or parts deferred to the spool).
* **Checkpoint**: :class:`Checkpoints` records the positions read once all was settled
  (:func:`unsettled` is empty); after any unsettled failure it freezes for the rest of the run.
* **Rate**: :class:`Pace` spaces events on the clock (``--rate``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from eventtracking.queue.stats import Progress
from eventtracking.replay.checkpoint import Checkpoint
from eventtracking.replay.refusals import Refusals
from eventtracking.replay.summary import failure_details

BACKLOG_BYTES = 2 << 20  # encoded messages waiting for the sender before the reader waits
BACKLOG_POLL = 0.005  # seconds between two looks while the backlog is over BACKLOG_BYTES
DEFAULT_CHECKPOINT_EVERY = 20_000
DRAIN_POLL = 0.1  # at most this many seconds between two looks at the counters while waiting for delivery
# Drops that mean "the destination is not taking anything now": stop reading, resume later.
STOP_REASONS = ("gave_up", "buffer_full")
# Drops that are final: the destination answered and refused the message; sending it again
# would be refused again, so the checkpoint may pass it (every other drop freezes it), unless
# the refusal was of the configuration (see :mod:`eventtracking.replay.refusals`).
SETTLED_DROPS = ("refused",)


class StopReplay(Exception):
    """The run cannot usefully go on (the destination refuses to take anything)."""


class Sink(Protocol):
    """Where a replay hands its events: a SegmentBackend, or the dry run's stand-in."""

    def send(self, event: Any, message_id: Optional[str] = None) -> None:
        """Take one event (never raises)."""

    def progress(self) -> Progress:
        """Where the deliveries stand (a copy)."""

    def close(self, timeout: Optional[float] = None) -> bool:
        """Deliver within ``timeout`` and stop; True when nothing was left."""


@dataclass(frozen=True)
class Stop:
    """Why the run stops (:class:`StopReplay`'s message); ``freeze``: the checkpoint must not
    advance any more (a refusal of the configuration: the lines refused are not settled)."""

    message: str
    freeze: bool = False


def stop_reason(progress: Progress, failures: Optional[Refusals]) -> Optional[Stop]:
    """Why the run cannot usefully go on, or None: a refusal of the configuration, or a
    destination that takes nothing (given up, buffer full, deferred to the spool)."""
    problem = failures.configuration_error(progress) if failures is not None else None
    if problem:
        return Stop(
            f"the destination refuses this configuration ({problem}). Nothing more was sent, and "
            "the checkpoint stays before the lines not delivered: rerun with the fix to send them",
            freeze=True,
        )
    details = failure_details(progress)
    stopping = [
        f"{reason}: {details[reason]}" if details.get(reason) else reason
        for reason in STOP_REASONS
        if progress.dropped.get(reason)
    ]
    if progress.deferred:
        stopping.append("deferred to the spool")  # kept on disk: the next run sends them first
    if not stopping:
        return None
    return Stop(
        f"deliveries failed ({'; '.join(stopping)}): the destination is not taking events; "
        "rerun later (with --checkpoint to resume where this run was acknowledged)"
    )


def unsettled(progress: Progress, failures: Optional[Refusals]) -> List[str]:
    """The failures a rerun must retry ([] when all that was answered is settled: delivered,
    skipped by rule, or refused for the message's sake and kept as a dead letter)."""
    reasons = [reason for reason, n in progress.dropped.items() if n and reason not in SETTLED_DROPS]
    if failures is not None and (failures.configuration_error(progress) or failures.not_kept):
        reasons.append("refused")  # not for the message's sake, or not kept: a rerun sends it
    if progress.deferred:
        reasons.append("deferred")
    return reasons


def retrying_notice(progress: Progress) -> Optional[str]:
    """What to say while deliveries are retried and nothing was delivered yet (an unreachable
    destination is otherwise a long silence); None otherwise."""
    if progress.delivered or not progress.retries or not progress.last_error:
        return None
    return (
        f"eventtracking replay: retrying: {progress.last_error} (each batch is given up after the "
        "retry timeout, --retry-timeout)"
    )


class RetryNotice:
    """Says :func:`retrying_notice` once per run, on stderr."""

    def __init__(self) -> None:
        self.said = False

    def look(self, progress: Progress) -> None:
        if self.said:
            return
        notice = retrying_notice(progress)
        if notice:
            self.said = True
            print(notice, file=sys.stderr, flush=True)


Look = Callable[[], Progress]  # the sink's progress, read anew
Watch = Callable[[Progress], None]  # raises StopReplay when the run must stop


def wait_for_room(look: Look, watch: Watch, sleep: Callable[[float], None] = time.sleep) -> Progress:
    """Wait while more than :data:`BACKLOG_BYTES` wait to be sent (memory stays flat in the input
    size), watching each look (a spool keeps what it gives up on: it never drains then). Returns
    the last progress looked at."""
    progress = look()
    watch(progress)
    while progress.buffered_bytes > BACKLOG_BYTES:
        sleep(BACKLOG_POLL)
        progress = look()
        watch(progress)
    return progress


def drain(look: Look, watch: Watch, sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait until everything handed to the sink was answered, watching each look.

    Not one ``flush(None)``: a spool keeps re-queuing what is refused, so that never returns;
    and not ``flush(timeout)`` in a loop either, which warns each time it times out. The
    counters are looked at instead, at growing intervals (1 ms up to :data:`DRAIN_POLL`).
    """
    wait = 0.001
    while True:
        progress = look()
        watch(progress)
        if not progress.in_flight:
            return
        sleep(wait)
        wait = min(wait * 2, DRAIN_POLL)


class Checkpoints:
    """What the run's ``checkpoint`` may record: the positions read since the last save, saved
    once all that was handed over was answered and settled (:meth:`save`); frozen for the rest of
    the run after an unsettled failure, so a rerun retries from before it. Without a checkpoint
    (None) it records nothing."""

    def __init__(self, checkpoint: Optional[Checkpoint], every: int = DEFAULT_CHECKPOINT_EVERY) -> None:
        self.checkpoint = checkpoint
        self.every = every
        self.positions: Dict[str, Tuple[int, str]] = {}  # read, not yet recorded
        self.lines_since = 0
        self.frozen = False

    def read(self, key: str, line: int, head: str, lines: int = 0) -> None:
        """Lines up to ``line`` of input ``key`` (its first line's fingerprint ``head``) were
        handed over; ``lines`` of them since the last position."""
        self.positions[key] = (line, head)
        self.lines_since += lines

    def due(self) -> bool:
        """``every`` lines were read since the last save: drain, then :meth:`save`."""
        return self.checkpoint is not None and self.lines_since >= self.every

    def freeze(self) -> None:
        """A rerun must retry what was not delivered: never record past it."""
        self.frozen = True

    def save(self, progress: Progress, failures: Optional[Refusals]) -> None:
        """Everything handed over was answered (``progress``): record the positions read, unless
        a failure is unsettled (then freeze)."""
        self.lines_since = 0
        if self.checkpoint is None or self.frozen:
            return
        if unsettled(progress, failures):
            self.freeze()
            return
        if self.positions:
            self.checkpoint.record(self.positions)
            self.positions = {}


class Pace:
    """At most ``rate`` events per second (``--rate``), on the clock since it was made: event n
    is due n / rate seconds after. :meth:`wait` sleeps in steps of at most 0.1 s, so that
    ``stopping()`` turning True is noticed at once."""

    def __init__(self, rate: float, stopping: Callable[[], bool] = lambda: False) -> None:
        self.rate = rate
        self._stopping = stopping
        self._started = time.monotonic()
        self._handed = 0

    def wait(self) -> None:
        due = self._started + self._handed / self.rate
        self._handed += 1
        delay = due - time.monotonic()
        while delay > 0 and not self._stopping():
            time.sleep(min(delay, 0.1))
            delay = due - time.monotonic()
