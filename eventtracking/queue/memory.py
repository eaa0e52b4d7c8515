"""The bounded hand-over between application threads and the sender thread, in memory.

Application threads ``put`` encoded messages; the sender ``take``\\ s batches of them and,
when the server has given its final answer, calls ``done`` with the same batch. The buffer
is bounded in bytes: ``put`` on a full buffer returns False at once (the caller counts the
drop) rather than blocking the application. It is one of the two
:class:`~eventtracking.queue.base.Buffer`\\ s; the other is the durable
:class:`~eventtracking.queue.spool.Spool`.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from itertools import accumulate, repeat
from typing import Optional

from eventtracking.queue.base import SenderWait


class MemoryBuffer(SenderWait):
    """A FIFO of encoded messages bounded by their total size in bytes. Thread-safe.

    Callers append to ``_items``; the sender swaps that list out whole into ``_backlog`` and
    slices batches off it, so a batch costs a few C-level list operations, not a Python loop
    per message (the sender shares the GIL with the application).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.accepted = 0  # items ever put (the backend's "accepted" count)
        self._reset()

    def _reset(self) -> None:
        self._items: list[bytes] = []
        self._backlog: list[bytes] = []  # swapped-out items; [_next:] are still to be taken
        self._next = 0
        self._bytes = 0  # bytes put and not yet taken (the bound)
        self._taken = 0  # items handed to the sender and not yet done
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)  # the sender waits here for items
        self._idle = threading.Condition(self._lock)  # flush() waits here for "nothing pending"
        self._wanted = 0  # the sender is waiting until this many items are buffered (0: not waiting)
        self._flushers = 0  # threads in wait_idle(): the sender must not linger for a full batch

    def put(self, item: bytes) -> bool:
        """Append one encoded message; False (and nothing kept) when it would exceed the bound."""
        size = len(item)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                return False
            self._items.append(item)
            self._bytes += size
            self.accepted += 1
            self._wake_if_wanted(len(self._items))
        return True

    def take(self, max_count: int, max_bytes: int, linger: float, stop: threading.Event) -> list[bytes]:
        """Remove and return the next batch: at most ``max_count`` items and ``max_bytes`` bytes
        (a single item larger than ``max_bytes`` goes alone).

        Blocks until at least one item is there (or ``stop`` is set), then waits up to ``linger``
        seconds for a full batch unless ``stop`` is set or someone is waiting in ``wait_idle``.
        Returns [] only when stopping with nothing buffered.
        The batch counts as pending until ``done(batch)``.
        """
        with self._lock:
            if self._next >= len(self._backlog):
                while not self._items:
                    if stop.is_set():
                        return []
                    self._wait(1, 0.5)
                if len(self._items) < max_count and linger > 0:
                    deadline = time.monotonic() + linger
                    while len(self._items) < max_count and not stop.is_set() and not self._flushers:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wait(max_count, remaining)
                self._backlog, self._items, self._next = self._items, [], 0
            start = self._next
            batch = self._backlog[start : start + max_count]
            size = sum(map(len, batch))
            if size > max_bytes and len(batch) > 1:
                ends = list(accumulate(map(len, batch)))
                count = max(1, bisect_right(ends, max_bytes))
                batch, size = batch[:count], ends[count - 1]
            self._next = start + len(batch)
            if self._next >= len(self._backlog):
                self._backlog, self._next = [], 0
            else:  # drop the backlog's references now, or memory would hold them twice
                self._backlog[start : self._next] = repeat(b"", len(batch))
            self._bytes -= size
            self._taken += len(batch)
            return batch

    def wake(self) -> None:
        """Wake a sender blocked in ``take`` (after ``stop`` was set, or to flush early)."""
        with self._lock:
            self._readable.notify_all()

    def done(self, batch: list[bytes]) -> None:
        """The server gave its final answer for ``batch`` (delivered or finally refused)."""
        with self._lock:
            self._taken -= len(batch)
            if not self._taken and not self._buffered():
                self._idle.notify_all()

    def pending(self) -> tuple[int, int]:
        """(messages, bytes) buffered or taken and not yet done."""
        with self._lock:
            return self._buffered() + self._taken, self._bytes

    def _buffered(self) -> int:
        return len(self._items) + len(self._backlog) - self._next

    def wait_idle(self, timeout: Optional[float]) -> bool:
        """Wait until nothing is buffered or in flight; False when ``timeout`` ran out first."""
        with self._lock:
            self._flushers += 1
            self._readable.notify_all()
            try:
                return self._idle.wait_for(lambda: not self._taken and not self._buffered(), timeout)
            finally:
                self._flushers -= 1

    def keep_for_later(self, batch: list[bytes]) -> bool:
        """The sender gave up on ``batch`` (retry budget spent, or closing). True when the
        buffer keeps it for a later attempt (a spool does); memory cannot, so it is lost."""
        return False

    def dead_letter(self, reason: str, batch: list[bytes]) -> None:
        """Messages the server finally refused. Memory keeps nothing (``on_error`` sees them)."""

    def stats(self) -> None:
        """Memory has nothing to report beyond ``pending`` (a spool reports its disk here)."""
        return None

    def close(self) -> None:
        """Nothing to release in memory."""

    def discard_inherited(self) -> MemoryBuffer:
        """After ``fork()`` in the child: the parent delivers what it had; return the buffer the
        child uses from now on (this one, emptied; a spool starts a part of the child's own).

        The locks are replaced, not acquired: a thread of the parent may have held them.
        """
        self.accepted = 0
        self._reset()
        return self
