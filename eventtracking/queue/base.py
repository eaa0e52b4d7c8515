"""The contracts of the queue layer, in one place: between the parts that put messages, the buffer
that holds them, the worker that takes them and the destination it hands them to.

- :class:`Buffer`: what holds the messages (memory or a spool), and the wait helper both share.
- :class:`BatchHandler`: what a :class:`~eventtracking.queue.worker.BatchWorker` hands each batch
  to: the destination's side (Segment over HTTP, a broker).
- :class:`Shared`: a worker several callers put into through their
  :class:`~eventtracking.queue.worker.Handle` (the Segment pipeline).

Two buffers satisfy it: :class:`~eventtracking.queue.memory.MemoryBuffer` and the durable
:class:`~eventtracking.queue.spool.Spool`. A take is settled by exactly one of three outcomes,
persist-queue's ack, nack and ack_failed: ``done`` (the destination gave its final answer),
``keep_for_later`` (not delivered, try again later: only a spool can) and ``dead_letter``
(finally refused: a spool writes it down, memory forgets it; the worker has counted it).
"""

from __future__ import annotations

import threading
from typing import Any, Optional, Protocol

from eventtracking.queue.stats import Counters


class Buffer(Protocol):
    """A bounded FIFO of encoded messages between any number of putting threads and one taking
    thread. Every method is thread-safe; none raises for a full or failing store."""

    max_bytes: int  # the bound ``put`` keeps (memory: bytes buffered; spool: bytes on disk)

    @property
    def accepted(self) -> int:
        """Messages ``put`` and kept by this process."""

    def put(self, item: bytes) -> bool:
        """Keep one encoded message; False (nothing kept, at once) when it would pass the bound."""

    def take(self, max_count: int, max_bytes: int, linger: float, stop: threading.Event) -> list[bytes]:
        """The next batch: at most ``max_count`` items and ``max_bytes`` bytes (one larger item goes
        alone). Blocks for the first item, then up to ``linger`` seconds for a full batch unless
        ``stop`` is set or a flush waits. Once ``stop`` is set: memory hands out what it still
        holds and then [], a spool returns [] at once (what it holds stays on disk)."""

    def done(self, batch: list[bytes]) -> None:
        """``batch`` (as taken) has had its final answer: forget it (ack)."""

    def keep_for_later(self, batch: list[bytes]) -> bool:
        """``batch`` was not delivered: True when kept for a later take (nack), False when lost."""

    def dead_letter(self, reason: str, batch: list[bytes]) -> None:
        """``batch`` was finally refused for ``reason`` (ack_failed); ``done`` follows."""

    def wake(self) -> None:
        """Wake a taker blocked in ``take`` (stop was set, or a flush wants the batch now)."""

    def wait_idle(self, timeout: Optional[float]) -> bool:
        """Wait until nothing is buffered or taken; False when ``timeout`` ran out first."""

    def pending(self) -> tuple[int, int]:
        """(messages, bytes) kept and not yet settled."""

    def stats(self) -> Optional[dict[str, Any]]:
        """What the store reports beyond ``pending`` (a spool: its disk); None for memory."""

    def close(self) -> None:
        """Release what the buffer holds open: a spool its part of the directory (later puts are
        refused); memory holds nothing open."""

    def discard_inherited(self) -> Buffer:
        """In a forked child: the buffer the child uses from now on, without the parent's items
        (the parent delivers them) and with fresh locks."""


class BatchHandler(Protocol):
    """The destination's side of a :class:`~eventtracking.queue.worker.BatchWorker`: it delivers,
    the worker owns the thread, the buffer, flush, close and fork. Called on the worker's thread."""

    def handle(self, batch: list[bytes], buffer: Buffer, give_up: threading.Event) -> float:
        """Deliver ``batch``, settling each item as delivered, finally refused
        (``buffer.dead_letter``, counted) or not delivered now (``buffer.keep_for_later``, or
        counted as lost when that is False); the worker calls ``buffer.done(batch)`` after it.
        Waits (retries, backoff) end as soon as ``give_up`` is set: ``close()`` ran out of time.
        Returns the seconds the worker pauses before its next take (0: none)."""

    def failed(self, batch: list[bytes], error: Exception) -> None:
        """``handle`` raised ``error`` (a bug): count ``batch`` as lost (``internal_error``)."""

    def after_fork_in_child(self) -> None:
        """Forget the parent's connection and state (the worker resets its own)."""

    def close(self) -> None:
        """Release what it holds open (a connection), once the worker has stopped."""


class Shared(Protocol):
    """A worker that several callers put into, each through a
    :class:`~eventtracking.queue.worker.Handle` with counters of its own (the Segment pipeline)."""

    def buffer_full(self, counters: Counters, who: str) -> None:
        """Count a message the full buffer refused in the caller's ``counters``, and warn."""

    def release(self, timeout: Optional[float] = None) -> bool:
        """A caller is done: deliver within ``timeout``; True when nothing was left pending."""

    def stats(self, own: Optional[Counters] = None) -> dict[str, Any]:
        """The caller's ``own`` counters merged with what the worker did for all its callers."""


class SenderWait:
    """How the taker waits for items, shared by the memory buffer and the spool.

    The sender says how many items it wants (``_wait``); ``put`` wakes it once when that many
    are there (``_wake_if_wanted``). Waking costs more than the append, so it happens only when
    asked, and only once: a notify per put would tax every event while the sender is slow to
    wake. Subclasses own ``_lock``, ``_readable`` (a Condition on it) and ``_wanted``.
    """

    _readable: threading.Condition
    _wanted: int

    def _wait(self, wanted: int, timeout: float) -> None:
        self._wanted = wanted
        try:
            self._readable.wait(timeout)
        finally:
            self._wanted = 0

    def _wake_if_wanted(self, available: int) -> None:
        if self._wanted and available >= self._wanted:
            self._wanted = 0
            self._readable.notify()
