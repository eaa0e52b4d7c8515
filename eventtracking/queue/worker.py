"""The background worker every sender of the library runs on: one thread that takes batches from a
buffer and hands them to a destination (sentry-python's worker/transport split).

:class:`BatchWorker` owns the :class:`~eventtracking.background.BackgroundThread`, the
:class:`~eventtracking.queue.base.Buffer`, the take → handle → done loop, ``flush``, ``close``
with its deadline, ``after_fork_in_child`` and the counters. Its
:class:`~eventtracking.queue.base.BatchHandler` only delivers: the Segment pipeline's
:class:`~eventtracking.segment.sender.Sender` over HTTP, the publishers'
:class:`~eventtracking.publisher.Publishing` to a broker.

The loop: nothing but ``stop`` ends it (a dead worker would strand the buffer for good). A take
that fails (a spool's disk error) is tried again after 1 s; a batch whose handler raised (a bug)
is counted as lost by the handler (``failed``); every batch taken is settled with ``done``. Then
the worker pauses for as long as the handler asked (a part kept for later is the next batch
again: it is not posted at once), cut short when ``close`` gives up.

``flush(timeout)`` is a timed wait that reports (a warning) what it left pending, with the
latest error. ``close(timeout)`` flushes within ``timeout``; when something is left it sets
*give up*, which ends the handler's waits, so the handler leaves the rest to
``keep_for_later`` (a spool keeps it for the next process; memory counts it as lost); then it
stops the thread and waits for it for what is left of ``timeout`` (at least 0.1 s). Fork:
``after_fork_in_child`` forgets the parent's thread, buffer items and counters; its owner (the
pipeline, a publisher) registers with :mod:`eventtracking.background`, which calls it.

:class:`Handle` is one caller's way into a worker it may share with others (a
:class:`~eventtracking.queue.base.Shared` owner: the Segment pipeline): ``put`` on the caller's
thread, ``release``, ``stats``, each caller counting its own refusals.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Generic, Optional, TypeVar

from eventtracking import metrics
from eventtracking.background import BackgroundThread
from eventtracking.queue.base import BatchHandler, Buffer, Shared
from eventtracking.queue.stats import Counters

NO_BYTE_BOUND = 1 << 62  # a batch bounded by its count alone
HandlerT = TypeVar("HandlerT", bound=BatchHandler)
SharedT = TypeVar("SharedT", bound=Shared)


class BatchWorker(Generic[HandlerT]):
    """One buffer, one thread and one handler (see the module docstring).

    ``name`` names the thread; its lines go to ``log`` (its owner's logger), each starting with
    ``label`` (``""`` or ``"NAME: "``), counting ``noun`` (``"messages"``, ``"events"``). A batch
    is at most ``batch_count`` items and ``batch_bytes`` bytes; the take waits up to ``linger``
    seconds to fill it.
    """

    def __init__(
        self,
        buffer: Buffer,
        handler: HandlerT,
        counters: Counters,
        *,
        name: str,
        log: logging.Logger,
        label: str = "",
        noun: str = "messages",
        batch_count: int = 500,
        batch_bytes: int = NO_BYTE_BOUND,
        linger: float = 0.0,
    ) -> None:
        if not 1 <= batch_count:
            raise ValueError("batch_count must be at least 1")
        self.buffer = buffer
        self.handler = handler
        self.counters = counters
        self.batch_count = batch_count
        self.batch_bytes = batch_bytes
        self.linger = linger
        self.background = BackgroundThread(self._run, name)
        _install_metrics()
        self._log = log
        self._label = label
        self._noun = noun
        self._give_up = threading.Event()  # close() ran out of time: the handler stops waiting

    @property
    def thread(self) -> Optional[threading.Thread]:
        """The running thread; None until started in this process (the hot path's cheap check)."""
        return self.background.thread

    def ensure_started(self) -> bool:
        """Start the thread unless it runs in this process; False once closed."""
        return self.background.ensure_started()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything put so far has been settled (delivered, refused, kept for later).

        True when nothing is pending; False when ``timeout`` ran out first, with a warning that
        says how much is still pending and the latest error.
        """
        pending, _ = self.buffer.pending()
        if not pending:
            return True
        self.ensure_started()
        if self.buffer.wait_idle(timeout):
            return True
        pending, size = self.buffer.pending()
        last_error = self.counters.last_error
        self._log.warning(
            "%sflush timed out after %.1fs: %d %s (%d bytes) still pending%s",
            self._label,
            timeout,
            pending,
            self._noun,
            size,
            f"; last error: {last_error}" if last_error else "",
        )
        return False

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush within ``timeout``, then stop the thread; True when nothing was left behind."""
        started = time.monotonic()
        settled_all = self.flush(timeout)
        if not settled_all:
            self._give_up.set()
        self.background.stop()
        self.buffer.wake()
        remaining = None if timeout is None else max(0.1, timeout - (time.monotonic() - started))
        self.background.join(remaining)
        self.handler.close()
        self.buffer.close()
        return settled_all

    def after_fork_in_child(self) -> None:
        """Forget the parent's thread, locks, items and counts (the parent delivers its items)."""
        self.background.after_fork_in_child()
        self._give_up = threading.Event()
        self.buffer = self.buffer.discard_inherited()
        self.counters.reset_after_fork()
        self.handler.after_fork_in_child()

    def snapshot(self, pending_keys: tuple[str, str] = ("pending", "pending_bytes")) -> dict[str, Any]:
        """The counters, ``accepted``, what is pending (messages and bytes, under
        ``pending_keys``) and, with a spool, ``spool``: plain data."""
        result = self.counters.snapshot()
        result["accepted"] = self.buffer.accepted
        result[pending_keys[0]], result[pending_keys[1]] = self.buffer.pending()
        store = self.buffer.stats()
        if store is not None:  # a spool: spooled, acknowledged, pending... (counts and bytes)
            result["spool"] = store
        return result

    def _run(self) -> None:
        # Nothing may end this loop but stop: a dead worker would strand the buffer for good.
        stopping = self.background.stopping
        while True:
            try:
                batch = self.buffer.take(self.batch_count, self.batch_bytes, self.linger, stopping)
            except Exception:  # e.g. a spool's disk error: wait, then try again
                self._log.exception("%scould not take a batch; trying again in 1 s", self._label)
                if stopping.wait(1.0):
                    return
                continue
            if not batch:
                return
            give_up = self._give_up
            pause = 0.0
            try:
                pause = self.handler.handle(batch, self.buffer, give_up)
            except Exception as error:
                self._log.exception("%sfailed on a batch of %d %s", self._label, len(batch), self._noun)
                self.handler.failed(batch, error)
            try:
                self.buffer.done(batch)
            except Exception:
                self._log.exception(
                    "%scould not settle a batch of %d %s", self._label, len(batch), self._noun
                )
            if pause:
                give_up.wait(pause)  # cut short when close() runs out of time


class Closed(Exception):
    """:meth:`Handle.put` after :meth:`Handle.release` (or when no thread can start, e.g. at
    interpreter shutdown): the caller counts the message as ``reason``."""

    reason = "closed"


# A stopped thread: what a handle holds once released (its put finds ensure_started() False).
_RELEASED = BackgroundThread(lambda: None, "eventtracking-closed")
_RELEASED.stop()


class Handle(Generic[SharedT]):
    """One caller's way into the worker of a :class:`~eventtracking.queue.base.Shared` ``owner``:
    what it puts is counted in the caller's own ``counters`` where it is refused, and in the
    worker's after that (``owner.stats`` merges the two)."""

    __slots__ = ("owner", "counters", "_worker", "_thread", "_who")

    def __init__(self, owner: SharedT, worker: BatchWorker[Any], counters: Counters, who: str) -> None:
        self.owner = owner
        self.counters = counters
        self._worker = worker
        self._thread = worker.background
        self._who = who  # the caller's kind in the buffer-full warning: "SegmentBackend", "Client"

    def put(self, data: bytes) -> bool:
        """Hand one encoded message to the worker; never blocks. False when the full buffer
        refused it (counted as ``dropped.buffer_full`` and warned about by the owner); raises
        :class:`Closed` after :meth:`release`."""
        thread = self._thread
        if thread.thread is None and not thread.ensure_started():
            raise Closed("closed")
        if self._worker.buffer.put(data):
            return True
        self.owner.buffer_full(self.counters, self._who)
        return False

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything put (by every caller) was settled; False on timeout."""
        return self._worker.flush(timeout)

    def release(self, timeout: Optional[float] = None) -> bool:
        """This caller is done: deliver within ``timeout`` (the owner stops its worker once the
        last caller is done); later puts raise :class:`Closed`. True when nothing was left."""
        if self._thread is _RELEASED:
            return True
        self._thread = _RELEASED
        return self.owner.release(timeout)

    def stats(self) -> dict[str, Any]:
        """This caller's refusals merged with what the worker did for all of its callers."""
        return self.owner.stats(self.counters)


_metrics_installed = False


def _install_metrics() -> None:
    """Once per process, at the first worker: the delivery metrics (:mod:`eventtracking.metrics`)."""
    global _metrics_installed
    if not _metrics_installed:
        _metrics_installed = True
        try:
            metrics.install()
        except Exception:  # e.g. imports refused at interpreter shutdown: workers run without metrics
            metrics.log.exception("the delivery metrics could not be installed")
