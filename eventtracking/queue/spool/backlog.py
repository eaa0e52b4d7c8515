"""What this process put into a spool and the taker has not taken yet.

Written to this process's own :class:`~eventtracking.queue.spool.part.Part` (created at the
first write), with a copy kept in memory (up to ``memory_bytes``) so that the taker reads the
disk only for what overflowed memory; what the disk refuses is kept in memory only
(``volatile``). Not thread-safe: the Spool calls every method with its lock held.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

from eventtracking.queue.spool.part import Part
from eventtracking.queue.spool.records import HEADER, Position, log

IDLE_ROTATE_BYTES = 256 * 1024  # all acknowledged and the segment is this big: truncate it


@dataclass
class SpoolCounts:
    """What a Spool did, as :meth:`~eventtracking.queue.spool.Spool.stats` reports it (and
    ``accepted``, the backend's)."""

    accepted: int = 0  # put by this process and kept (on disk or in memory)
    spooled: int = 0  # written to this process's part (appended again too)
    spooled_bytes: int = 0
    memory_fallback: int = 0  # kept in memory only: the disk refused them
    recovered: int = 0  # found in adopted parts
    recovered_bytes: int = 0
    adopted: int = 0  # parts
    acknowledged: int = 0
    acknowledged_bytes: int = 0
    requeued: int = 0  # kept for later: appended again
    rewound: int = 0  # kept for later: left where they were on disk, read again
    read_back: int = 0  # read from disk rather than memory
    corrupt: int = 0
    dead_letters: int = 0


class Backlog:
    """This process's records not yet taken, in order: first ``volatile`` (the disk refused
    them), then the memory copies (record, segment, end offset), then from ``disk_from`` on
    what is only on disk. Puts are copied to memory only while nothing is disk-only, so that
    take order stays disk order and one acknowledged offset suffices."""

    def __init__(
        self,
        directory: str,
        counts: SpoolCounts,
        *,
        fsync: bool,
        memory_bytes: int,
        segment_bytes: int,
        retry: float,
    ) -> None:
        self.directory = directory
        self.counts = counts
        self.fsync = fsync
        self.memory_bytes = memory_bytes
        self.segment_bytes = segment_bytes
        self.retry = retry  # after a failure to create the part: not again for this long
        self.own: Optional[Part] = None
        self.retry_at = 0.0
        self.write_error: Optional[str] = None  # set while the disk refuses writes
        self.memory: deque[tuple[bytes, int, int]] = deque()
        self.memory_used = 0
        self.disk_from: Optional[Position] = None
        self.disk_count = 0  # records from disk_from on (corrupt ones are found when read)
        self.volatile: deque[bytes] = deque()
        self.volatile_bytes = 0
        self.volatile_pending = 0  # in volatile or in flight

    # -- putting -----------------------------------------------------------------------------

    def put_volatile(self, item: bytes) -> bool:
        """Keep ``item``, which the disk refused, in memory only; False when memory is full too."""
        if self.volatile_bytes + len(item) > self.memory_bytes:
            return False
        self.volatile.append(item)
        self.volatile_bytes += len(item)
        self.volatile_pending += 1
        self.counts.memory_fallback += 1
        return True

    def append(self, items: list[bytes], records: list[bytes]) -> bool:
        """Write ``records`` (encoding ``items``) at the tail with one write, then queue ``items``;
        all or nothing: False, with nothing queued, when the write fails."""
        own = self.own
        if own is None or own.write_fd < 0:
            own = self._create_part()
            if own is None:
                return False
        data = b"".join(records)
        try:
            start = own.write(data, self.segment_bytes, self.fsync)
        except OSError as error:  # the next write goes to the same offset, over what this one left
            self._disk_refused(
                "spool %s: cannot write (%s): new events are kept in memory only (not durable, "
                "counted as memory_fallback) until it can",
                error,
            )
            return False
        counts = self.counts
        if self.write_error is not None:
            log.warning(
                "spool %s: writing to disk again (%d events were kept in memory only)",
                self.directory,
                counts.memory_fallback,
            )
            self.write_error = None
        own.pending_count += len(items)
        own.pending_bytes += len(data)
        counts.spooled += len(items)
        counts.spooled_bytes += len(data)
        segment, end = own.segment, start
        for item, record in zip(items, records):
            end += len(record)
            if self.disk_from is None and self.memory_used + len(item) <= self.memory_bytes:
                self.memory.append((item, segment, end))
                self.memory_used += len(item)
            else:
                if self.disk_from is None:
                    self.disk_from = (segment, end - len(record))
                self.disk_count += 1
        return True

    def _create_part(self) -> Optional[Part]:
        """Create this process's part at its first write (a process that never writes, such as
        a preforking server's master, leaves none behind); after a failure, not again for ``retry``."""
        if time.monotonic() < self.retry_at:
            return None
        try:
            self.own = Part.create(self.directory, self.fsync)
        except OSError as error:
            self.retry_at = time.monotonic() + self.retry
            self._disk_refused(
                "spool %s: cannot create this process's part (%s): events are kept in memory only "
                "(not durable, counted as memory_fallback) until it can",
                error,
            )
            return None
        if self.write_error is not None:
            log.warning("spool %s: part %s created: events are durable again", self.directory, self.own.name)
            self.write_error = None
        return self.own

    def _disk_refused(self, warning: str, error: OSError) -> None:
        if self.write_error is None:  # once per episode
            log.warning(warning, self.directory, error)
        self.write_error = str(error)

    # -- taking ------------------------------------------------------------------------------

    def has_records(self) -> bool:
        return bool(self.volatile or self.memory or self.disk_from is not None)

    def available(self) -> int:
        return len(self.volatile) + len(self.memory) + self.disk_count

    def caught_up(self) -> bool:
        """Nothing of the own part is left to take (some may be in flight)."""
        return not self.memory and self.disk_from is None

    def take_volatile(self, max_count: int, max_bytes: int) -> list[bytes]:
        batch: list[bytes] = []
        size = 0
        volatile = self.volatile
        while volatile and len(batch) < max_count and (not batch or size + len(volatile[0]) <= max_bytes):
            item = volatile.popleft()
            batch.append(item)
            size += len(item)
        self.volatile_bytes -= size
        return batch

    def take_from_memory(self, max_count: int, max_bytes: int) -> tuple[list[bytes], int, Position, Position]:
        """(batch, its bytes on disk, where it starts, where it ends)."""
        memory = self.memory
        first, segment, first_end = memory[0]
        start = (segment, first_end - HEADER - len(first))
        batch: list[bytes] = []
        size = 0
        while memory and len(batch) < max_count and (not batch or size + len(memory[0][0]) <= max_bytes):
            item, segment, end = memory.popleft()  # a single record larger than max_bytes goes alone
            batch.append(item)
            size += len(item)
        self.memory_used -= size
        return batch, size + HEADER * len(batch), start, (segment, end)

    def unread(self) -> tuple[Part, Position]:
        """The own part, and where what is only on disk starts (there is some)."""
        assert self.own is not None and self.disk_from is not None
        return self.own, self.disk_from

    def read_to(self, end: Position, count: int) -> None:
        """``count`` records were read from disk, up to ``end``."""
        assert self.own is not None
        if end == (self.own.segment, self.own.offset):
            self.disk_from, self.disk_count = None, 0  # caught up: puts go to memory again
        else:
            self.disk_from, self.disk_count = end, max(0, self.disk_count - count)

    def rewind(self, start: Position, count: int) -> None:
        """``count`` records in flight from ``start`` on are left on disk, to be read again; what
        is queued in memory lies after them on disk, so it is read from there too."""
        self.disk_count += count + len(self.memory)
        self.disk_from = start
        self.memory.clear()
        self.memory_used = 0

    def keep_volatile(self, batch: list[bytes]) -> None:
        """Memory-only messages not delivered: back to the front."""
        self.volatile.extendleft(reversed(batch))
        self.volatile_bytes += sum(map(len, batch))
        self.volatile_pending += len(batch)

    # -- settling ----------------------------------------------------------------------------

    def settle(self, end: Position, flying: bool) -> None:
        """Everything of the own part before ``end`` is settled (``flying``: some of it is still
        in flight): acknowledge it; once all is, a segment this big (any, while the disk refuses
        writes) is truncated in place, which needs no free space."""
        assert self.own is not None
        idle = self.caught_up() and not flying
        self.own.acknowledge(end, (0 if self.write_error else IDLE_ROTATE_BYTES) if idle else None)

    def settled(self) -> None:
        """Everything is acknowledged: records found corrupt after the count left it too high."""
        if self.own is not None:
            self.own.pending_count = self.own.pending_bytes = 0

    def pending(self) -> tuple[int, int]:
        """(records, bytes) not yet acknowledged: of the own part, and in memory only."""
        own = self.own
        if own is None:
            return self.volatile_pending, self.volatile_bytes
        return own.pending_count + self.volatile_pending, own.pending_bytes + self.volatile_bytes

    def close(self, flying: bool) -> None:
        """Let go of the own part (removed when all is acknowledged: nothing left, none ``flying``);
        what is kept in memory only and not delivered is lost: logged."""
        if self.volatile_pending:
            log.warning(
                "spool %s: closing with %d messages kept in memory only (the disk refused "
                "them) not delivered: lost",
                self.directory,
                self.volatile_pending,
            )
        if self.own is not None:
            self.own.close(self.caught_up() and not flying)
