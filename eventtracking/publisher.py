"""The background publisher: hands encoded events to a broker (Celery, the event bus) off the
caller's thread, so that a request never waits for the broker.

``Publisher.put(item)`` is the whole of the caller's part: the encoded event goes into a bounded
buffer (the Segment pipeline's :class:`~eventtracking.queue.memory.MemoryBuffer`, or its
:class:`~eventtracking.queue.spool.Spool` with ``spool_dir``) and ``put`` returns. One thread per
publisher and process (a :class:`~eventtracking.queue.worker.BatchWorker`, the Segment
pipeline's kind) takes batches and hands them to :class:`Publishing` (its
:class:`~eventtracking.queue.base.BatchHandler`), which gives them to a *channel*, which knows
the broker:

- ``channel.publish(items, refuse) -> int``: publish ``items`` in order; return how many were
  settled (published, or refused for good: the channel calls ``refuse(reason, item)`` for those)
  before the first one that could not be published now (the broker is unreachable). Raising
  counts as "none settled".

What the channel could not publish is tried again, in order, with exponential backoff and jitter
(50 ms doubling to 2 s), for as long as the process lives: an outage costs the application
nothing but buffer space. While the buffer is full, new events are dropped, counted
(``dropped.buffer_full``) and warned about at most every 10 s; with a spool they wait on disk
instead. The outage itself is warned about once when it starts and once when it ends.

Fork and exit go through :mod:`eventtracking.background`, the mechanism the Segment sender uses:
a forked child forgets the parent's thread, buffer and counters (the parent publishes what it
had); at interpreter exit every publisher delivers within the shared ``exit_timeout``. What
``close()`` cannot publish in time is kept by a spool for the next process, or counted as
``dropped.exit_timeout`` (memory).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Optional, Protocol, Sequence

from eventtracking import background
from eventtracking.queue.base import Buffer
from eventtracking.queue.factory import open_buffer
from eventtracking.queue.stats import Counters, DropWarning
from eventtracking.queue.worker import BatchWorker

log = logging.getLogger(__name__)

BATCH_COUNT = 100  # items per channel call: bounds what a broken connection can leave unsettled


class Channel(Protocol):
    """What a publisher publishes through (see the module docstring)."""

    def publish(self, items: Sequence[bytes], refuse: Callable[[str, bytes], None]) -> int: ...


class PublisherCounters(Counters):
    """``accepted`` is the buffer's; ``published`` by the channel, ``retries`` of a batch the broker
    did not take, ``outages`` begun; ``dropped`` (and ``skipped``) by reason, with details."""

    TOTALS = ("published", "retries", "outages")


def idle_stats() -> dict[str, Any]:
    """What ``Publisher.stats()`` says before anything was put (for a backend with no publisher yet)."""
    result = PublisherCounters().snapshot()
    result.update(accepted=0, pending=0, pending_bytes=0)
    return result


class PublisherSlot:
    """A backend's publisher, made by ``make(**options)`` at most once, on first use: a process
    that builds the same backend and never publishes through it (a Celery worker, a bus
    consumer) gets no thread. ``flush``, ``close`` and ``stats`` answer for it before it exists."""

    def __init__(self, make: Callable[..., Publisher], **options: Any) -> None:
        self._make = make
        self._options = options
        self._lock = threading.Lock()
        self.publisher: Optional[Publisher] = None

    def get(self) -> Publisher:
        """The publisher, made now if it was not yet."""
        publisher = self.publisher
        if publisher is not None:
            return publisher
        with self._lock:
            if self.publisher is None:
                self.publisher = self._make(**self._options)
            return self.publisher

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything put so far was published; False when ``timeout`` ran out."""
        return self.publisher is None or self.publisher.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush within ``timeout`` and stop publishing; True when nothing was left behind."""
        return self.publisher is None or self.publisher.close(timeout)

    def stats(self) -> dict[str, Any]:
        """The publisher's counters; all zero before it was made."""
        return idle_stats() if self.publisher is None else self.publisher.stats()


class Publisher:
    """A bounded buffer and the one publishing thread for one channel (see the module docstring).

    ``name`` names the thread and the log lines. ``max_buffer_bytes`` bounds the memory buffer
    (64 MiB); ``spool_dir`` keeps events on disk until published (``spool_max_bytes``, ``fsync``:
    see :mod:`eventtracking.queue.spool`); ``exit_timeout`` (5 s) bounds the flush at exit;
    ``batch_count`` (100) is the most items handed to the channel at once.
    """

    def __init__(
        self,
        channel: Channel,
        name: str,
        *,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        spool_dir: Optional[str] = None,
        spool_max_bytes: int = 1024**3,
        fsync: bool = False,
        exit_timeout: float = 5.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        batch_count: int = BATCH_COUNT,
    ) -> None:
        self.channel = channel
        self.name = name
        self.exit_timeout = exit_timeout
        self.counters = PublisherCounters()
        buffer = open_buffer(name, max_buffer_bytes, spool_dir, spool_max_bytes, fsync)
        self.worker = BatchWorker(
            buffer,
            Publishing(channel, name, self.counters, backoff),
            self.counters,
            name=f"eventtracking-{name}-publisher",
            log=log,
            label=f"{name}: ",
            noun="events",
            batch_count=batch_count,
        )
        self._full_warning = DropWarning()
        background.register(self)
        if spool_dir is not None and buffer.pending()[0]:
            self.worker.ensure_started()  # publish what an earlier process left

    def __repr__(self) -> str:
        return f"<Publisher {self.name}>"

    @property
    def buffer(self) -> Buffer:
        """The worker's buffer (a forked child's own after fork)."""
        return self.worker.buffer

    # -- the caller's thread -----------------------------------------------------------------

    def put(self, item: bytes) -> bool:
        """Buffer one encoded event for publishing; never blocks, never raises.

        False when it was not kept: the buffer is full (counted as ``dropped.buffer_full`` and
        warned about) or the publisher is closed (``dropped.closed``).
        """
        background.check_fork()
        worker = self.worker
        if worker.thread is None and not worker.ensure_started():
            self.counters.add_reason("dropped", "closed")
            return False
        if worker.buffer.put(item):
            return True
        self._buffer_full()
        return False

    def _buffer_full(self) -> None:
        self.counters.add_reason(
            "dropped", "buffer_full", detail=f"buffer full ({self.buffer.max_bytes} bytes)"
        )
        self._full_warning.dropped(
            log,
            "%s: buffer full (%d bytes): dropped %d events since the last warning",
            self.name,
            self.buffer.max_bytes,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything put so far was published (or refused for good); False, with a
        warning saying how much is pending, when ``timeout`` ran out first."""
        background.check_fork()
        return self.worker.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush within ``timeout``, then stop the thread; True when nothing was left behind.
        Events put afterwards are dropped as ``closed``."""
        published_all = self.worker.close(timeout)
        background.unregister(self)
        return published_all

    def after_fork_in_child(self) -> None:
        """Forget the parent's thread, buffer and counters: the parent publishes what it had."""
        self.worker.after_fork_in_child()

    def stats(self) -> dict[str, Any]:
        """``accepted``, ``published``, ``retries``, ``outages``, ``dropped`` by reason (with
        ``reasons``: the latest detail of each), ``last_error`` (the latest reason the broker did
        not take events), ``pending`` / ``pending_bytes`` (accepted, not yet published), and
        ``spool`` with one."""
        background.check_fork()
        return self.worker.snapshot()

    def metric_attributes(self) -> dict[str, str]:
        """What names this publisher in :mod:`eventtracking.metrics`: its name (``celery-<backend>``)."""
        return {"eventtracking.sender": self.name}


class Publishing:
    """Publishing through one channel: the :class:`~eventtracking.queue.base.BatchHandler` of a
    publisher's worker (retries with backoff while the broker is away; outages said once)."""

    def __init__(
        self, channel: Channel, name: str, counters: PublisherCounters, backoff: tuple[float, float]
    ) -> None:
        self.channel = channel
        self.name = name
        self.counters = counters
        self.backoff_base, self.backoff_max = backoff
        self._outage_since: Optional[float] = None
        self._refused = 0  # refused by the channel in its current call: settled, not published

    def handle(self, batch: list[bytes], buffer: Buffer, give_up: threading.Event) -> float:
        """Publish ``batch`` in order, waiting out outages, until it is all settled or close()
        gives up (then a spool keeps the rest; memory counts it as dropped). No pause after."""
        start, attempt = 0, 0
        while start < len(batch):
            rest = batch[start:]
            self._refused = 0
            try:
                settled = self.channel.publish(rest, self._refuse)
            except Exception as error:
                settled = 0
                self._outage(error, buffer)
                self.counters.note_error(f"broker unavailable ({type(error).__name__}: {error})")
            settled = max(0, min(settled, len(rest)))
            if settled:
                self.counters.add("published", max(0, settled - self._refused))
                start += settled
                attempt = 0
                if self._outage_since is not None:
                    log.warning(
                        "%s: the broker takes events again after %.1f s",
                        self.name,
                        time.monotonic() - self._outage_since,
                    )
                    self._outage_since = None
                continue
            if self._outage_since is None:
                self._outage(None, buffer)
            if give_up.is_set():
                self._leave(batch[start:], buffer)
                return 0.0
            attempt += 1
            self.counters.add("retries")
            delay = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            if give_up.wait(delay):
                self._leave(batch[start:], buffer)
                return 0.0
        return 0.0

    def failed(self, batch: list[bytes], error: Exception) -> None:
        """``handle`` raised (a bug): ``batch`` is dropped as ``internal_error``."""
        self.counters.add_reason("dropped", "internal_error", len(batch))

    def after_fork_in_child(self) -> None:
        """The parent's outage is not the child's; a channel with a connection forgets it."""
        self._outage_since = None
        reset = getattr(self.channel, "after_fork_in_child", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        """The channel holds nothing of the publisher's to release."""

    def _refuse(self, reason: str, item: bytes) -> None:
        """The channel refused ``item`` for good (it can never be published): count and say it."""
        self.counters.add_reason(
            "dropped", reason, detail=f"the broker can never take it ({len(item)} bytes)"
        )
        self._refused += 1
        log.warning(
            "%s: dropped an event the broker can never take (%s, %d bytes)", self.name, reason, len(item)
        )

    def _outage(self, error: Optional[BaseException], buffer: Buffer) -> None:
        if self._outage_since is not None:
            return
        self._outage_since = time.monotonic()
        self.counters.add("outages")
        reason = f" ({type(error).__name__}: {error})" if error is not None else ""
        self.counters.note_error(f"broker unavailable{reason}")
        log.warning(
            "%s: the broker does not take events%s: %d pending, retrying until it does",
            self.name,
            reason,
            buffer.pending()[0],
        )

    def _leave(self, rest: list[bytes], buffer: Buffer) -> None:
        if buffer.keep_for_later(rest):
            return
        self.counters.add_reason(
            "dropped",
            "exit_timeout",
            len(rest),
            detail="not published before close()'s deadline (broker away)",
        )
        log.warning("%s: closing: dropped %d events the broker did not take in time", self.name, len(rest))
