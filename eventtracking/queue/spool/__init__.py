"""A durable spool: the buffer of a ``SegmentBackend(spool_dir=...)``, kept on disk until acknowledged.

One ``spool_dir`` serves a whole server: every process (and every Spool) that opens it gets a
*part* of its own, a sub-directory it alone writes and holds an ``flock`` on; the parts of dead
processes are adopted and delivered by a live one. Contract: the methods and meaning of
:class:`~eventtracking.queue.memory.MemoryBuffer`, plus:

* ``put(message)`` writes one record at the tail of this process's current segment file with
  ``pwrite()`` before it returns True, so an accepted message survives the process being killed.
  With ``fsync=True`` each put is also ``fdatasync``\\ ed and survives power loss, at a measured
  cost of about 150 µs per put against 2.5 µs without (60x, on the development VM's disk; the
  caller waits for it, and end-to-end throughput falls to about a tenth:
  ``benchmarks/bench_spool.py`` measures both on yours). ``put`` returns False, keeping nothing,
  when the unacknowledged records of the whole directory would pass ``max_bytes``.
* **Disk full** (or any write error): ``put`` keeps the message in memory only (up to
  ``memory_bytes``; False past it), counted as ``memory_fallback`` with one warning per episode;
  the next put tries the disk again, so durability comes back by itself with free space. What a
  failed write left is cut off (or written over by the next record).
* ``take`` hands the sender the next records (memory-only ones first, then adopted parts, oldest
  first, then this process's own), ``done(batch)`` acknowledges them. A part of a batch the sender
  gives up on for now (``keep_for_later``: retry budget spent, or closing) is appended again at
  the tail with one write; when that write fails (disk full), the batch is left where it is on
  disk, unacknowledged, and read again by the next ``take`` (``rewound``; parts of it that were
  delivered meanwhile are then sent again, with the same messageIds). ``keep_for_later`` never
  gives up on a message: on disk it stays until the server's final answer.
* Acknowledged space is freed without needing free space: segments wholly acknowledged are
  deleted, and once everything is acknowledged the current segment is truncated in place.
  Disk use is the unacknowledged records plus at most one segment plus small files per part.
* Delivery is at least once: a crash between the server's answer and the acknowledgement sends
  that batch again, with the same messageIds. Adopting a part reads it once to count it
  (``recovered``): about 1 s per GiB from the page cache, more from a cold disk.
* No method but the constructor raises OSError: a disk error is logged and the spool goes on (a
  segment that cannot be read is skipped and counted ``corrupt``; a file that cannot be deleted
  stays until a later acknowledgement or process deletes it). The constructor raises for a
  directory it cannot create or use (:class:`SpoolUnsafe` for one that others can write); a full
  disk does not stop it: when its part cannot be created, events are kept in memory (warned,
  counted) and creation is tried again every ``scan_interval``, while it delivers what other
  processes left.

Processes and parts:

* Each Spool creates ``part-<pid>-<random>`` at its first write (so a process that never writes,
  such as a preforking server's master, leaves none), built as ``.new-...`` and renamed once its
  ``lock`` is held, so no other process ever sees it unlocked, and holds an exclusive ``flock``
  on its ``lock`` for as long as it is open. The kernel releases it when the process dies, however it
  dies. Names carry a random token, so a new process that reuses a dead one's pid never takes
  the dead one's part for its own; liveness is the lock, never the pid.
* Every ``scan_interval`` seconds (1 s) the sender thread, and the constructor once, list the
  directory and try the lock of every other part without blocking: a part whose lock it gets is
  adopted (its records are taken before this process's own; its ``acked`` file is advanced as
  they are acknowledged) and, once all of it is acknowledged, removed. Whoever takes the lock of
  a part first adopts it, so each part is delivered by one process; another process that held
  the lock file open sees it unlinked after the removal and leaves it. A part left half-drained
  by a Spool that closed (or died) is adopted again later from its last acknowledged position.
* After ``fork()`` the child leaves the parent's part (and what the parent adopted) to the
  parent and writes to a part of its own (``discard_inherited``): it closes its copies of the
  parent's descriptors without unlocking them, which would release the parent's lock.
* ``max_bytes`` bounds the whole directory: this process's unacknowledged records, what it
  adopted, and the segment files of the other live parts as measured at the last scan (so other
  processes may pass it by what they write in one scan interval).
* Segments written directly in the directory by an earlier version (``lock`` and ``seg-*`` at
  the top) are adopted the same way, from the top-level ``lock``.

On disk, in each part:

* ``seg-NNNNNNNNNNNNNNNN.log`` (a 16-digit number, increasing): the magic ``ETSPOOL2``, then
  records ``<u32 length><u32 checksum>`` (little-endian) followed by the payload, one encoded
  message; the checksum is ``zlib.crc32`` of the 4 length bytes and then the payload
  (:func:`record_checksum`). Written only at the end, by the part's owner; the next one is
  started once the current one passes ``segment_bytes``. A torn record (header or payload running
  past the end of the file, or length 0) ends what is readable of the segment. A record whose
  checksum does not match is skipped alone when its length leads to the end of the file or to a
  record whose checksum matches (the payload was damaged); otherwise the length itself may be
  damaged, so the rest of the segment cannot be found and is lost, as after a torn record. Either
  way the damaged record is counted once as ``corrupt`` and the reader goes on with the next
  segment. Segments of another format (``ETSPOOL1``) are skipped with a warning.
* ``acked``: ``<u64 segment><u64 offset><u32 crc32 of those 16 bytes>``: every record before that
  position is settled (delivered, dead-lettered or appended again). Rewritten in place after each
  batch, never fsynced: losing it only sends copies. Unreadable, the part is read from its oldest
  segment.
* ``lock``: the ``flock`` of the part's owner, and its pid.

At the top of the directory, shared by every part:

* ``deadletters.jsonl``: one JSON object per line, ``{"reason", "time", "message"}``, for messages
  the server finally refused, appended under ``flock`` on ``deadletters.lock`` (which
  ``eventtracking deadletters resend`` takes too). It stops growing at ``max_bytes``.

The directory is created 0700. One that exists and that other users can write is made
``go-w`` when this user owns it (with a warning) and refused (:class:`SpoolUnsafe`) when another
user owns it or it has the sticky bit (a shared directory such as ``/tmp``). Every file in it is
opened with ``O_NOFOLLOW``, and only real sub-directories are taken for parts: a symbolic link
planted there is never followed.

What is spooled but not yet taken is also kept in memory (up to ``memory_bytes``), so in the
normal case the sender never reads the disk: it reads segments only for adopted parts and for
what overflowed memory.

The package: :mod:`~.records` (the record format, its checksum and reading; ``acked``),
:mod:`~.part` (one :class:`~.part.Part`, this process's own or an adopted one: its segments,
acknowledgement, creation by rename, lock, removal), :mod:`~.directory` (preparing the directory,
scanning it for parts to adopt, ``survey``), :mod:`~.backlog` (this process's records not yet
taken, and the counters), :mod:`~.deadletters` (writing and reading ``deadletters.jsonl``) and
here the :class:`Spool` that puts them together. All of them log as ``eventtracking.queue.spool``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any, Optional

from eventtracking.queue.base import SenderWait
from eventtracking.queue.spool.backlog import IDLE_ROTATE_BYTES, Backlog, SpoolCounts
from eventtracking.queue.spool.deadletters import (
    DEAD_LETTER_FILE,
    DEAD_LETTER_LOCK,
    append_dead_letters,
    dead_letter_lines,
    dead_letter_lock,
    open_dead_letters,
    utc_now,
    write_dead_letters,
)
from eventtracking.queue.spool.directory import Adopted, SpoolUnsafe, prepare_directory, survey
from eventtracking.queue.spool.part import ACK_FILE, Part
from eventtracking.queue.spool.records import (
    HEADER,
    READ_CHUNK,
    RECORD_HEADER,
    SEGMENT_MAGIC,
    Position,
    encode_record,
    iter_records,
    read_batch,
    record_checksum,
    segment_path,
)

log = logging.getLogger(__name__)  # the one logger of the spool's modules (records.log is this one)

SEGMENT_BYTES = 4 * 1024 * 1024
SCAN_INTERVAL = 1.0

__all__ = [
    "ACK_FILE",
    "DEAD_LETTER_FILE",
    "DEAD_LETTER_LOCK",
    "IDLE_ROTATE_BYTES",
    "READ_CHUNK",
    "RECORD_HEADER",
    "SEGMENT_MAGIC",
    "Spool",
    "SpoolCounts",
    "SpoolUnsafe",
    "append_dead_letters",
    "dead_letter_lines",
    "dead_letter_lock",
    "encode_record",
    "iter_records",
    "open_dead_letters",
    "prepare_directory",
    "record_checksum",
    "segment_path",
    "survey",
    "utc_now",
]


class _Flight:
    """A batch handed to the taker and not yet ``done``: where it came from and where it ends."""

    __slots__ = ("source", "count", "size", "start", "end", "rewound")

    def __init__(self, source: Optional[Part], count: int, size: int, start: Position, end: Position):
        self.source = source  # None: memory only; else the own part or an adopted one
        self.count = count
        self.size = size  # bytes on disk (records), 0 for memory only
        self.start = start
        self.end = end
        self.rewound = False  # left on disk to be read again: done() must not acknowledge it


class Spool(SenderWait):
    """A durable, bounded FIFO of encoded messages in ``directory``, a
    :class:`~eventtracking.queue.base.Buffer`. Thread-safe; one taker."""

    def __init__(
        self,
        directory: str,
        *,
        max_bytes: int = 1024**3,
        fsync: bool = False,
        memory_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = SEGMENT_BYTES,
        scan_interval: float = SCAN_INTERVAL,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.memory_bytes = min(memory_bytes, max_bytes)
        self.segment_bytes = segment_bytes
        self.scan_interval = scan_interval
        prepare_directory(self.directory)
        self._reset_state()
        self._scan()

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)  # the taker waits here for records
        self._idle = threading.Condition(self._lock)  # flush() waits here for "all acknowledged"
        self._wanted = 0  # the taker waits until this many records are there (0: not waiting)
        self._flushers = 0  # threads in wait_idle(): the taker must not linger
        self._closed = False
        self._pid = os.getpid()  # the process this state belongs to
        self._next_scan = 0.0
        self._counts = SpoolCounts()
        self._backlog = Backlog(
            self.directory,
            self._counts,
            fsync=self.fsync,
            memory_bytes=self.memory_bytes,
            segment_bytes=self.segment_bytes,
            retry=self.scan_interval,
        )
        self._in_flight: deque[_Flight] = deque()
        self._others = Adopted(self.directory)

    def put(self, item: bytes) -> bool:
        """Write one encoded message; False (nothing kept) past ``max_bytes``, or when the disk
        refuses it and memory is full too."""
        record = encode_record(item)
        with self._lock:
            if not item or self._closed:
                return False
            backlog, others = self._backlog, self._others
            used = (backlog.own.pending_bytes if backlog.own else 0) + others.bytes + others.foreign_bytes
            if used + len(record) > self.max_bytes:
                return False
            if not backlog.append([item], [record]) and not backlog.put_volatile(item):
                return False
            self._counts.accepted += 1
            self._wake_if_wanted(backlog.available())
        return True

    def take(self, max_count: int, max_bytes: int, linger: float, stop: threading.Event) -> list[bytes]:
        """The next batch, as :meth:`MemoryBuffer.take`, but [] as soon as ``stop`` is set.
        Between batches, and while it waits, it scans for parts to adopt (``scan_interval``)."""
        backlog = self._backlog
        while True:
            if time.monotonic() >= self._next_scan:
                self._scan()
            with self._lock:
                if stop.is_set() or self._closed:
                    return []  # what is left stays on disk for the next process
                source = self._others.next_unread()
                if source is None and not backlog.has_records():
                    self._wait(1, max(0.01, min(0.5, self._next_scan - time.monotonic())))
                    continue
                if source is None and linger > 0 and backlog.available() < max_count:
                    deadline = time.monotonic() + linger
                    while backlog.available() < max_count and not (
                        stop.is_set() or self._flushers or self._closed
                    ):
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wait(max_count, remaining)
                    if stop.is_set() or self._closed:
                        return []
                if backlog.volatile:
                    batch = backlog.take_volatile(max_count, max_bytes)
                    self._in_flight.append(_Flight(None, len(batch), 0, (0, 0), (0, 0)))
                    return batch
                if source is not None:
                    start = source.position
                elif backlog.memory:
                    batch, size, start, end = backlog.take_from_memory(max_count, max_bytes)
                    self._in_flight.append(_Flight(backlog.own, len(batch), size, start, end))
                    return batch
                else:
                    source, start = backlog.unread()
                segments = source.to_read(start)
            # Only this thread reads, and only what was fully written: no lock needed.
            batch, end, corrupt = read_batch(source.path, start, segments, max_count, max_bytes)
            with self._lock:
                if self._closed:
                    return []
                self._counts.corrupt += corrupt
                self._counts.read_back += len(batch)
                if source is backlog.own:
                    backlog.read_to(end, len(batch))
                else:
                    source.position = end
                if batch:
                    size = sum(map(len, batch)) + HEADER * len(batch)
                    self._in_flight.append(_Flight(source, len(batch), size, start, end))
                    return batch
                if not any(flight.source is source for flight in self._in_flight):
                    self._settle(source, end)  # only corrupt records: acknowledge past them
                    self._settle_if_idle()

    def done(self, batch: list[bytes]) -> None:
        """The server gave its final answer for ``batch``: acknowledge it on disk."""
        with self._lock:
            if self._closed or not self._in_flight:
                return  # closed: not acknowledged, so the next process sends it again
            flight = self._in_flight.popleft()
            if flight.rewound:  # still on disk, read again by the next take
                return
            self._counts.acknowledged += flight.count
            self._counts.acknowledged_bytes += flight.size
            source = flight.source
            if source is None:
                self._backlog.volatile_pending -= flight.count
            else:
                source.pending_count -= flight.count
                source.pending_bytes -= flight.size
                if source is not self._backlog.own:
                    self._others.bytes -= flight.size
                self._settle(source, flight.end)
            self._settle_if_idle()

    def _settle(self, source: Part, end: Position) -> None:
        """Everything of ``source`` before ``end`` is settled (lock held)."""
        flying = any(flight.source is source for flight in self._in_flight)
        if source is self._backlog.own:
            self._backlog.settle(end, flying)
        else:
            self._others.settle(source, end, flying)

    def _settle_if_idle(self) -> None:
        if self._is_idle():
            self._backlog.settled()
            self._idle.notify_all()

    def keep_for_later(self, batch: list[bytes]) -> bool:
        """Keep ``batch`` (part of the batch in flight) to be tried again later: appended again
        at the tail with one write (past ``max_bytes`` if need be); when that write fails, the
        batch in flight stays where it is on disk (or, memory only, goes back to the front) and is
        taken again. Always True: a spool never gives up on a message."""
        with self._lock:
            if self._closed or not batch:
                return True  # closed: not acknowledged, so still on disk for the next process
            if self._backlog.append(batch, [encode_record(item) for item in batch]):
                self._counts.requeued += len(batch)
                return True
            flight = self._in_flight[-1] if self._in_flight else None
            if flight is None or flight.source is None:
                self._backlog.keep_volatile(batch)
                if flight is None:
                    self._counts.memory_fallback += len(batch)
            elif not flight.rewound:
                source = flight.source
                flights = [f for f in self._in_flight if f.source is source and not f.rewound]
                for f in flights:
                    f.rewound = True
                count = sum(f.count for f in flights)
                self._counts.rewound += count
                if source is self._backlog.own:
                    self._backlog.rewind(flights[0].start, count)
                else:
                    source.position = flights[0].start
            return True

    def dead_letter(self, reason: str, batch: list[bytes]) -> None:
        """Append the finally refused messages to ``deadletters.jsonl`` (see the module docstring)."""
        if write_dead_letters(self.directory, reason, batch, fsync=self.fsync, max_bytes=self.max_bytes):
            with self._lock:
                self._counts.dead_letters += len(batch)

    def _scan(self) -> None:
        """Adopt the parts whose owner is gone; measure the live ones (no lock held while it reads)."""
        self._next_scan = time.monotonic() + self.scan_interval
        own = self._backlog.own
        left, live = self._others.scan(own.name if own is not None else None)
        with self._lock:
            for part in left:
                if self._closed:
                    part.release()
                elif self._others.add(part, self._counts):
                    self._readable.notify_all()
            if live is not None:
                self._others.measured(live)

    def wake(self) -> None:
        """Wake a taker blocked in ``take``."""
        with self._lock:
            self._readable.notify_all()

    def _is_idle(self) -> bool:
        backlog = self._backlog
        return backlog.caught_up() and not (backlog.volatile or self._others.parts or self._in_flight)

    def wait_idle(self, timeout: Optional[float]) -> bool:
        """Wait until everything spooled (and adopted) is acknowledged; False on ``timeout``."""
        with self._lock:
            self._flushers += 1
            self._readable.notify_all()
            try:
                self._idle.wait_for(lambda: self._closed or self._is_idle(), timeout)
                return self._is_idle()
            finally:
                self._flushers -= 1

    def pending(self) -> tuple[int, int]:
        """(records, bytes) not yet acknowledged: this process's, in memory only, and adopted."""
        with self._lock:
            return self._pending()

    def _pending(self) -> tuple[int, int]:
        (count, size), (others, other_bytes) = self._backlog.pending(), self._others.pending()
        return count + others, size + other_bytes

    @property
    def accepted(self) -> int:
        """Messages ``put`` by this process (the backend's ``accepted``)."""
        return self._counts.accepted

    def stats(self) -> dict[str, Any]:
        """Counts and bytes: the :class:`SpoolCounts` but ``accepted``, memory_only (kept in
        memory only and not yet delivered), pending, disk_bytes (this process's segment files
        and those it adopted), ``disk_error`` (while the disk refuses writes), and ``parts``:
        what each part of the directory holds (``state`` own, adopted, or live: another
        process's, as measured at the last scan)."""
        with self._lock:
            own = self._backlog.own
            mine = [own] if own is not None and not self._closed else []
            parts = [part.row("own" if part is own else "adopted") for part in mine + self._others.parts]
            parts.extend(dict(part) for part in self._others.live)
            count, size = self._pending()
            counts = {name: value for name, value in vars(self._counts).items() if name != "accepted"}
            return {
                "dir": self.directory,
                **counts,
                "memory_only": self._backlog.volatile_pending,
                "pending": count,
                "pending_bytes": size,
                "disk_bytes": sum(part.disk_bytes() for part in mine + self._others.parts),
                "disk_error": self._backlog.write_error,
                "parts": parts,
            }

    def close(self) -> None:
        """Release the directory: this process's part is removed when all of it is acknowledged,
        else it stays (unlocked) for a live process to adopt; so do adopted parts not yet
        delivered. Messages kept in memory only (disk full) and not delivered are lost: logged.
        In a forked child that did not take the spool over (``discard_inherited``), it only
        closes the inherited descriptors: the parent's part is the parent's."""
        if self._pid != os.getpid():
            self._forget_inherited()
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            own = self._backlog.own
            self._backlog.close(any(flight.source is own for flight in self._in_flight))
            self._others.release()
            self._readable.notify_all()
            self._idle.notify_all()

    def discard_inherited(self) -> Spool:
        """After ``fork()`` in the child: leave the parent's part and adopted parts to the parent;
        the child's own part is created at its first write. Return this spool, now the child's.

        Only ``close`` the inherited descriptors: ``flock(LOCK_UN)`` on them would release the
        parent's locks. The locks are not taken: a thread of the parent may have held them.
        """
        self._forget_inherited()
        self._reset_state()
        return self

    def _forget_inherited(self) -> None:
        """Close the descriptors inherited from the parent, without unlocking or deleting anything."""
        if self._backlog.own is not None:
            self._backlog.own.release()
        self._others.release()
        self._others.parts = []
