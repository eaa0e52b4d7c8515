"""A durable spool: the buffer of a ``SegmentBackend(spool_dir=...)``, kept on disk until acknowledged.

Contract: the same methods and meaning as :class:`~eventtracking.segment.buffer.MemoryBuffer`, plus:

* ``put(message)`` writes one record at the tail of the current segment file with ``pwrite()``
  before it returns True, so an accepted message survives the process being killed. With
  ``fsync=True`` each put is also ``fdatasync``\\ ed and survives power loss, at a measured cost
  of about 150 µs per put against 2.5 µs without (60x, on the development VM's disk; the caller
  waits for it, and end-to-end throughput falls to about a tenth: ``benchmarks/bench_spool.py``
  measures both on yours). ``put`` returns False, keeping nothing, when the unacknowledged
  records would pass ``max_bytes``, or when the write fails (disk full): the next record is
  written at the same offset, over whatever the failed write left.
* ``take`` hands the sender the oldest unacknowledged records, ``done(batch)`` acknowledges them.
  A part the sender gives up on (``keep_for_later``: retry budget spent, or closing) is appended
  again at the tail with one write, so this process tries it again later, or the next process
  does; if that write fails, none of the part is queued again and ``keep_for_later`` returns
  False (the sender counts the part as dropped). Once ``stop`` is set, ``take`` returns []
  even when records are left: they stay on disk.
* A new Spool on the same directory (a new process, or a new backend) first sends what an
  earlier one left. Delivery is at least once: a crash between the server's answer and the
  acknowledgement sends that batch again, with the same messageIds. Opening reads the backlog
  once to count it (``recovered``): about 1 s per GiB from the page cache (measured on the
  development VM), more from a cold disk (one sequential read of the backlog).
* No method but the constructor raises OSError: a disk error is logged and the spool goes on
  (``put`` and ``keep_for_later`` return False; a segment that cannot be read is skipped and
  counted ``corrupt``; a file that cannot be deleted stays until a later acknowledgement or
  process deletes it).
* One Spool per directory: a non-blocking ``flock`` on ``lock`` refuses a second one, in this
  process or another, with :class:`SpoolLocked` naming the directory and the holder's pid.
* After ``fork()`` the child leaves the spool to the parent (``discard_inherited``): it closes its
  copies of the files, which keeps the parent's lock, and buffers in memory from then on, with
  one warning. For a durable spool per worker of a preforking server, create the backend in each
  worker, each with its own ``spool_dir``.

On disk, in the spool directory:

* ``seg-NNNNNNNNNNNNNNNN.log`` (a 16-digit number, increasing): the magic ``ETSPOOL2``, then
  records ``<u32 length><u32 checksum>`` (little-endian) followed by the payload, one encoded
  message; the checksum is ``zlib.crc32`` of the 4 length bytes and then the payload
  (:func:`record_checksum`). Written only at the end; each process writes new segments of its
  own, the next one once the current one passes ``segment_bytes``. A torn record (header or
  payload running past the end of the file, or length 0) ends what is readable of the segment.
  A record whose checksum does not match is skipped alone when its length leads to the end of
  the file or to a record whose checksum matches (the payload was damaged); otherwise the length
  itself may be damaged, so the rest of the segment cannot be found and is lost, as after a torn
  record. Either way the damaged record is counted once as ``corrupt`` and the reader goes on
  with the next segment. Segments of another format (``ETSPOOL1``, whose checksum did not cover
  the length) are skipped with a warning.
* ``acked``: ``<u64 segment><u64 offset><u32 crc32 of those 16 bytes>``: every record before that
  position is settled (delivered, dead-lettered or appended again). Rewritten in place after each
  batch, never fsynced: losing it only sends copies. Unreadable, the spool starts from its oldest
  segment. Segments wholly before it are deleted; once everything is acknowledged and the current
  segment holds more than ``IDLE_ROTATE_BYTES``, a fresh one is started and the old one deleted.
  Disk use is therefore the unacknowledged records plus at most one segment plus small files.
* ``deadletters.jsonl``: one JSON object per line, ``{"reason", "time", "message"}``, for messages
  the server finally refused, appended under ``flock`` on ``deadletters.lock`` (which ``eventtracking
  deadletters resend`` takes too). It stops growing at ``max_bytes``.
* ``lock``: the ``flock`` of the spool's owner, and its pid.

What is spooled but not yet taken is also kept in memory (up to ``memory_bytes``), so in the
normal case the sender never reads the disk: it reads segments only for what an earlier process
left and for what overflowed memory.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections import deque
from typing import Any, Iterator, Optional

import orjson

from eventtracking.segment.buffer import MemoryBuffer, SenderWait

log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"ETSPOOL2"  # 1: the checksum did not cover the length
RECORD_HEADER = struct.Struct("<II")  # payload length, record_checksum(length, payload)
ACK_RECORD = struct.Struct("<QQI")  # segment number, offset, crc32 of the first 16 bytes
SEGMENT_NAME = re.compile(r"seg-(\d{16})\.log")
LOCK_FILE = "lock"
ACK_FILE = "acked"
DEAD_LETTER_FILE = "deadletters.jsonl"
DEAD_LETTER_LOCK = "deadletters.lock"
SEGMENT_BYTES = 4 * 1024 * 1024
IDLE_ROTATE_BYTES = 256 * 1024
READ_CHUNK = 256 * 1024

_START = len(SEGMENT_MAGIC)  # offset of a segment's first record
_HEADER = RECORD_HEADER.size
_LENGTH = struct.Struct("<I")
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class SpoolLocked(RuntimeError):
    """Another live Spool (this process or another) owns the directory."""


def segment_path(directory: str, number: int) -> str:
    return os.path.join(directory, f"seg-{number:016d}.log")


def record_checksum(length: int, payload: bytes) -> int:
    """The checksum of a record: zlib.crc32 of its little-endian u32 length, then its payload."""
    return zlib.crc32(payload, zlib.crc32(_LENGTH.pack(length)))


def encode_record(payload: bytes) -> bytes:
    """One record of a segment file: the header, then ``payload``."""
    return RECORD_HEADER.pack(len(payload), record_checksum(len(payload), payload)) + payload


def _record_end(fd: int, position: int, end: int) -> Optional[int]:
    """The offset after the record at ``position`` if it is whole and its checksum matches, else None."""
    header = os.pread(fd, _HEADER, position)
    if len(header) < _HEADER:
        return None
    length, checksum = RECORD_HEADER.unpack(header)
    if length == 0 or position + _HEADER + length > end:
        return None
    payload = os.pread(fd, length, position + _HEADER)
    if len(payload) < length or record_checksum(length, payload) != checksum:
        return None
    return position + _HEADER + length


def iter_records(fd: int, start: int, end: int) -> Iterator[tuple[Optional[bytes], int]]:
    """Yield ``(payload, offset after it)`` for each record of a segment file in ``[start, end)``.

    ``payload`` is None for a damaged record. A record whose checksum does not match is skipped
    alone when its length leads to the end or to a record whose checksum matches; otherwise its
    length may be what is damaged, nothing after it can be found, and it yields ``(None, end)``
    last, as a torn record (header or payload past ``end``, or length 0) does.
    """
    position = start
    while position < end:
        chunk = os.pread(fd, min(end - position, READ_CHUNK), position)
        used = 0
        while used + _HEADER <= len(chunk):
            length, checksum = RECORD_HEADER.unpack_from(chunk, used)
            record_end = used + _HEADER + length
            if length == 0 or position + record_end > end:
                yield None, end
                return
            if record_end > len(chunk):
                if used:
                    break  # the next chunk starts with this record
                chunk = os.pread(fd, _HEADER + length, position)  # one record larger than a chunk
                if len(chunk) < _HEADER + length:
                    break
                continue
            payload = chunk[used + _HEADER : record_end]
            used = record_end
            if record_checksum(length, payload) == checksum:
                yield payload, position + used
            elif position + used == end or _record_end(fd, position + used, end) is not None:
                yield None, position + used  # only the payload was damaged: skip it alone
            else:
                yield None, end
                return
        if not used:  # a header cut short, or the file shrank under us
            yield None, end
            return
        position += used


def _pwrite_all(fd: int, data: bytes, position: int) -> None:
    """Write all of ``data`` at ``position`` (a short write is continued; an error raises OSError)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        if written <= 0:
            raise OSError(errno.EIO, f"write returned {written}")
        view = view[written:]
        position += written


class Spool(SenderWait):
    """A durable, bounded FIFO of encoded messages in ``directory``. Thread-safe; one reader."""

    def __init__(
        self,
        directory: str,
        *,
        max_bytes: int = 1024**3,
        fsync: bool = False,
        memory_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.memory_bytes = min(memory_bytes, max_bytes)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)  # the sender waits here for records
        self._idle = threading.Condition(self._lock)  # flush() waits here for "all acknowledged"
        self._wanted = 0  # the sender waits until this many records are there (0: not waiting)
        self._flushers = 0  # threads in wait_idle(): the sender must not linger
        self._closed = False
        # Not yet taken, in order: first the memory copies (record, segment, end offset), then
        # from _disk_from on what is only on disk. Puts go to memory only while nothing is
        # disk-only, so that take order stays disk order and one acknowledged offset suffices.
        self._memory: deque[tuple[bytes, int, int]] = deque()
        self._memory_used = 0
        self._disk_from: Optional[tuple[int, int]] = None
        self._disk_count = 0  # records from _disk_from on (corrupt ones are found when read)
        self._in_flight: deque[tuple[int, int, tuple[int, int]]] = deque()  # (records, bytes, end)
        self._finished_segments: dict[int, int] = {}  # number -> size, in increasing order
        self._pending_count = 0  # not acknowledged: records, and their bytes on disk
        self._pending_bytes = 0
        self._accepted = 0
        self._spooled = self._spooled_bytes = 0
        self._recovered = self._recovered_bytes = 0
        self._acknowledged = self._acknowledged_bytes = 0
        self._requeued = self._corrupt = self._dead_letters = 0
        self._read_back = 0  # records read from disk: left by an earlier process, or overflowed memory
        self._write_failing = False
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_fd = _lock_directory(self.directory)
        self._ack_fd = -1
        try:
            self._ack_fd = os.open(os.path.join(self.directory, ACK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
            self._recover()
        except BaseException:
            if self._ack_fd >= 0:
                os.close(self._ack_fd)
            _unlock(self._lock_fd)
            raise

    # -- opening -----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Find what an earlier process left after the acknowledged offset; open a new segment."""
        numbers = sorted(
            int(match.group(1)) for match in map(SEGMENT_NAME.fullmatch, os.listdir(self.directory)) if match
        )
        acked = self._read_ack()
        if acked is None:
            if numbers:
                log.warning("spool %s: %s unreadable, sending it all again", self.directory, ACK_FILE)
            acked = (numbers[0] if numbers else 0, _START)
        for number in numbers:
            if number < acked[0]:
                _remove(segment_path(self.directory, number))
        readable = False
        for number in (n for n in numbers if n >= acked[0]):
            start = acked[1] if number == acked[0] else _START
            fd = os.open(segment_path(self.directory, number), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if size > _START and os.pread(fd, _START, 0) != SEGMENT_MAGIC:
                    log.warning("spool %s: segment %d has no spool magic, skipped", self.directory, number)
                    self._corrupt += 1
                    size = _START
                self._finished_segments[number] = size
                readable = readable or size > start
                for payload, _ in iter_records(fd, start, size):
                    if payload is not None:
                        self._recovered += 1
                        self._recovered_bytes += _HEADER + len(payload)
            finally:
                os.close(fd)
        self._write_segment = max(numbers + [acked[0]]) + 1
        self._open_write_segment()
        if readable:  # the reader counts and skips corrupt records, and acknowledges past them
            first = next(iter(self._finished_segments))
            self._disk_from = (first, acked[1] if first == acked[0] else _START)
            self._disk_count = self._pending_count = self._recovered
            self._pending_bytes = self._recovered_bytes
            log.info("spool %s: %d messages left by an earlier process", self.directory, self._recovered)
        else:
            self._acknowledge((self._write_segment, _START))

    def _read_ack(self) -> Optional[tuple[int, int]]:
        data = os.pread(self._ack_fd, ACK_RECORD.size, 0)
        if len(data) != ACK_RECORD.size:
            return None
        segment, offset, checksum = ACK_RECORD.unpack(data)
        return (segment, offset) if zlib.crc32(data[:16]) == checksum else None

    def _open_write_segment(self) -> None:
        path = segment_path(self.directory, self._write_segment)
        # Not O_APPEND: records are written at self._write_offset, so what this process counts as
        # written is what is in the file, whatever a failed write or another writer left past it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _pwrite_all(fd, SEGMENT_MAGIC, 0)
            if self.fsync:  # the file and its directory entry, or a power loss forgets the segment
                _datasync(fd)
                _fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            _remove(path)
            raise
        self._write_fd = fd
        self._write_offset = _START

    # -- the caller's thread -----------------------------------------------------------------

    def put(self, item: bytes) -> bool:
        """Write one encoded message; False (nothing kept) past ``max_bytes`` or when the write fails."""
        record = encode_record(item)
        with self._lock:
            if not item or self._closed or self._pending_bytes + len(record) > self.max_bytes:
                return False
            if not self._append([item], [record]):
                return False
            self._accepted += 1
            self._wake_if_wanted(len(self._memory) + self._disk_count)
        return True

    def _append(self, items: list[bytes], records: list[bytes]) -> bool:
        """Write ``records`` (encoding ``items``) at the tail with one write, then queue ``items``;
        all or nothing: False, with nothing queued, when the write fails (lock held)."""
        data = b"".join(records)
        start = self._write_offset
        try:
            if start + len(data) > self.segment_bytes and start > _START:
                self._rotate()
                start = self._write_offset
            _pwrite_all(self._write_fd, data, start)
            if self.fsync:
                _datasync(self._write_fd)
        except OSError as error:
            # The next write goes to ``start`` again, over whatever this one left; this only
            # keeps a half record from outliving the process (the next one would count it corrupt).
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_fd, start)
            if not self._write_failing:
                log.warning("spool %s: cannot write (%s), dropping messages", self.directory, error)
            self._write_failing = True
            return False
        self._write_failing = False
        self._write_offset = start + len(data)
        self._pending_count += len(items)
        self._pending_bytes += len(data)
        self._spooled += len(items)
        self._spooled_bytes += len(data)
        end = start
        for item, record in zip(items, records):
            end += len(record)
            if self._disk_from is None and self._memory_used + len(item) <= self.memory_bytes:
                self._memory.append((item, self._write_segment, end))
                self._memory_used += len(item)
            else:
                if self._disk_from is None:
                    self._disk_from = (self._write_segment, end - len(record))
                self._disk_count += 1
        return True

    def _rotate(self) -> None:
        """Start the next segment (lock held)."""
        finished, size, fd = self._write_segment, self._write_offset, self._write_fd
        self._write_segment += 1
        try:
            self._open_write_segment()
        except OSError:
            self._write_segment -= 1
            raise
        _trim(fd, size)
        with contextlib.suppress(OSError):
            os.close(fd)
        self._finished_segments[finished] = size

    # -- the sender thread -------------------------------------------------------------------

    def take(self, max_count: int, max_bytes: int, linger: float, stop: threading.Event) -> list[bytes]:
        """The next batch, as :meth:`MemoryBuffer.take`, but [] as soon as ``stop`` is set."""
        while True:
            with self._lock:
                while not self._memory and self._disk_from is None:
                    if stop.is_set() or self._closed:
                        return []
                    self._wait(1, 0.5)
                if linger > 0 and len(self._memory) + self._disk_count < max_count:
                    deadline = time.monotonic() + linger
                    while len(self._memory) + self._disk_count < max_count and not (
                        stop.is_set() or self._flushers or self._closed
                    ):
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wait(max_count, remaining)
                if stop.is_set() or self._closed:
                    return []  # what is left stays on disk for the next process
                if self._memory:
                    return self._take_from_memory(max_count, max_bytes)
                start = self._disk_from
                assert start is not None
                segments = [(n, size) for n, size in self._finished_segments.items() if n >= start[0]]
                segments.append((self._write_segment, self._write_offset))
            # Only this thread reads, and only what was fully written: no lock needed.
            batch, end, corrupt = self._read_from_disk(start, segments, max_count, max_bytes)
            with self._lock:
                if self._closed:
                    return []
                self._corrupt += corrupt
                self._read_back += len(batch)
                if end == (self._write_segment, self._write_offset):
                    self._disk_from, self._disk_count = None, 0  # caught up: puts go to memory again
                else:
                    self._disk_from, self._disk_count = end, max(0, self._disk_count - len(batch))
                if batch:
                    self._in_flight.append((len(batch), sum(map(len, batch)) + _HEADER * len(batch), end))
                    return batch
                if not self._in_flight:  # only corrupt records: acknowledge past them
                    self._acknowledge(end)
                    self._settle_if_idle()

    def _take_from_memory(self, max_count: int, max_bytes: int) -> list[bytes]:
        memory = self._memory
        batch: list[bytes] = []
        size = 0
        while memory and len(batch) < max_count and size + len(memory[0][0]) <= max_bytes:
            item, segment, end = memory.popleft()
            batch.append(item)
            size += len(item)
        if not batch:  # a single record larger than max_bytes: let it go alone
            item, segment, end = memory.popleft()
            batch.append(item)
            size = len(item)
        self._memory_used -= size
        self._in_flight.append((len(batch), size + _HEADER * len(batch), (segment, end)))
        return batch

    def _read_from_disk(
        self, start: tuple[int, int], segments: list[tuple[int, int]], max_count: int, max_bytes: int
    ) -> tuple[list[bytes], tuple[int, int], int]:
        """Read a batch from ``start`` on: (records, position after them, corrupt records skipped)."""
        batch: list[bytes] = []
        size = corrupt = 0
        number, offset = start
        for index, (number, end) in enumerate(segments):
            if index:
                offset = _START
            try:
                fd = os.open(segment_path(self.directory, number), os.O_RDONLY)
            except OSError as error:
                log.warning("spool %s: segment %d unreadable, skipped: %s", self.directory, number, error)
                corrupt += 1
                offset = end
            else:
                try:
                    for payload, after in iter_records(fd, offset, end):
                        if payload is None:
                            corrupt += 1
                        elif batch and (len(batch) >= max_count or size + len(payload) > max_bytes):
                            return batch, (number, offset), corrupt
                        else:
                            batch.append(payload)
                            size += len(payload)
                        offset = after
                except OSError as error:  # EIO: hand over what was read; the next take skips the rest
                    if batch:
                        return batch, (number, offset), corrupt
                    log.warning(
                        "spool %s: segment %d unreadable from offset %d, rest skipped: %s",
                        self.directory, number, offset, error,
                    )
                    corrupt += 1
                    offset = end
                finally:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        return batch, (number, offset), corrupt

    def done(self, batch: list[bytes]) -> None:
        """The server gave its final answer for ``batch``: acknowledge it on disk."""
        with self._lock:
            if self._closed or not self._in_flight:
                return  # closed: not acknowledged, so the next process sends it again
            count, size, end = self._in_flight.popleft()
            self._pending_count -= count
            self._pending_bytes -= size
            self._acknowledged += count
            self._acknowledged_bytes += size
            self._acknowledge(end)
            self._settle_if_idle()

    def _acknowledge(self, position: tuple[int, int]) -> None:
        """Record that everything before ``position`` is settled; delete what that frees (lock held)."""
        segment, offset = position
        if offset >= self._finished_segments.get(segment, offset + 1):  # the end of a finished segment
            later = [n for n in self._finished_segments if n > segment]
            segment, offset = (later[0] if later else self._write_segment), _START
        idle = not self._memory and self._disk_from is None and not self._in_flight
        at_tail = (segment, offset) == (self._write_segment, self._write_offset)
        if idle and at_tail and offset >= IDLE_ROTATE_BYTES:
            try:
                self._rotate()
                segment, offset = self._write_segment, _START
            except OSError as error:
                log.warning("spool %s: cannot start a new segment: %s", self.directory, error)
        try:
            body = struct.pack("<QQ", segment, offset)
            os.pwrite(self._ack_fd, body + struct.pack("<I", zlib.crc32(body)), 0)
        except OSError as error:  # the next process sends copies of what this one acknowledged
            log.warning("spool %s: cannot write %s: %s", self.directory, ACK_FILE, error)
            return
        for number in [n for n in self._finished_segments if n < segment]:
            del self._finished_segments[number]
            _remove(segment_path(self.directory, number))

    def _settle_if_idle(self) -> None:
        if not self._memory and self._disk_from is None and not self._in_flight:
            # Records found corrupt after the opening count leave it too high: all is settled now.
            self._pending_count = self._pending_bytes = 0
            self._idle.notify_all()

    def keep_for_later(self, batch: list[bytes]) -> bool:
        """Append ``batch`` again at the tail (past ``max_bytes`` if need be): it is tried later.

        All or nothing: one write; False, with nothing of ``batch`` queued, when it fails."""
        with self._lock:
            if self._closed or not batch:
                return True  # closed: not acknowledged, so still on disk for the next process
            if not self._append(batch, [encode_record(item) for item in batch]):
                return False  # nothing of it queued again: the caller drops the whole batch
            self._requeued += len(batch)
        return True

    def dead_letter(self, reason: str, batch: list[bytes]) -> None:
        """Append the finally refused messages to ``deadletters.jsonl`` (see the module docstring)."""
        head = b'{"reason":' + orjson.dumps(reason) + b',"time":' + orjson.dumps(utc_now()) + b',"message":'
        lines = b"".join(head + item + b"}\n" for item in batch)
        try:
            written = append_dead_letters(self.directory, lines, fsync=self.fsync, max_bytes=self.max_bytes)
        except OSError as error:
            log.warning("spool %s: cannot write dead letters: %s", self.directory, error)
            return
        if written:
            with self._lock:
                self._dead_letters += len(batch)
        else:
            log.warning("spool %s: %s is full (%d bytes): %d refused messages not kept",
                        self.directory, DEAD_LETTER_FILE, self.max_bytes, len(batch))

    # -- waiting, state, lifecycle -------------------------------------------------------------

    def wake(self) -> None:
        """Wake a sender blocked in ``take``."""
        with self._lock:
            self._readable.notify_all()

    def _is_idle(self) -> bool:
        return not self._memory and self._disk_from is None and not self._in_flight

    def wait_idle(self, timeout: Optional[float]) -> bool:
        """Wait until everything spooled is acknowledged; False when ``timeout`` ran out first."""
        with self._lock:
            self._flushers += 1
            self._readable.notify_all()
            try:
                self._idle.wait_for(lambda: self._closed or self._is_idle(), timeout)
                return self._is_idle()
            finally:
                self._flushers -= 1

    def pending(self) -> tuple[int, int]:
        """(records, bytes on disk) not yet acknowledged, including what an earlier process left."""
        with self._lock:
            return self._pending_count, self._pending_bytes

    @property
    def accepted(self) -> int:
        """Messages ``put`` by this process (the backend's ``accepted``)."""
        return self._accepted

    def stats(self) -> dict[str, Any]:
        """Counts and bytes: spooled (by this process), recovered (left by an earlier one),
        acknowledged, pending, requeued (kept for later), read_back (read from disk rather than
        memory), corrupt, dead_letters, disk_bytes (segment files)."""
        with self._lock:
            disk = sum(self._finished_segments.values()) + (0 if self._closed else self._write_offset)
            return {
                "dir": self.directory,
                "spooled": self._spooled,
                "spooled_bytes": self._spooled_bytes,
                "recovered": self._recovered,
                "recovered_bytes": self._recovered_bytes,
                "acknowledged": self._acknowledged,
                "acknowledged_bytes": self._acknowledged_bytes,
                "pending": self._pending_count,
                "pending_bytes": self._pending_bytes,
                "requeued": self._requeued,
                "read_back": self._read_back,
                "corrupt": self._corrupt,
                "dead_letters": self._dead_letters,
                "disk_bytes": disk,
            }

    def close(self) -> None:
        """Release the directory; what is not acknowledged stays on disk for the next process."""
        with self._lock:
            if self._closed:
                return
            if self._is_idle():  # everything acknowledged: leave no segment behind
                for number in list(self._finished_segments) + [self._write_segment]:
                    _remove(segment_path(self.directory, number))
                self._finished_segments.clear()
            else:
                _trim(self._write_fd, self._write_offset)
            self._closed = True
            for fd in (self._write_fd, self._ack_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._readable.notify_all()
            self._idle.notify_all()
        _unlock(self._lock_fd)

    def discard_inherited(self) -> MemoryBuffer:
        """After ``fork()`` in the child: the parent keeps the spool; return the memory buffer
        the child uses from now on (this Spool object is done with in the child).

        Only ``close`` the inherited descriptors: ``flock(LOCK_UN)`` on them would release the
        parent's lock. The locks are not taken: a thread of the parent may have held them.
        """
        if not self._closed:
            for fd in (self._write_fd, self._ack_fd, self._lock_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._closed = True
        self._memory, self._in_flight = deque(), deque()
        log.warning(
            "process %d was forked from a process that owns the spool %s: it buffers its events in memory "
            "only (not durable); for a spool per worker, create the backend in each worker with its own "
            "spool_dir", os.getpid(), self.directory,
        )
        return MemoryBuffer(self.memory_bytes)


# -- files shared with the command line ------------------------------------------------------


def _lock_directory(directory: str) -> int:
    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SpoolLocked(
            f"spool directory {directory} is in use by process {holder} (it holds {path}); "
            "each process needs a spool_dir of its own"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def _remove(path: str) -> None:
    """Delete ``path``; an error is logged, not raised (a segment left behind is deleted later)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("spool: cannot delete %s: %s", path, error)


def _trim(fd: int, size: int) -> None:
    """Cut what a failed write left past ``size`` in a segment file; errors are ignored."""
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utc_now() -> str:
    """The time of a dead letter: ISO 8601, UTC, milliseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def dead_letter_lock(directory: str) -> Iterator[None]:
    """Hold the (blocking) ``flock`` that serializes writers of ``deadletters.jsonl``."""
    fd = os.open(os.path.join(directory, DEAD_LETTER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def append_dead_letters(
    directory: str, lines: bytes, *, fsync: bool = False, max_bytes: int = 1024**3
) -> bool:
    """Append JSON lines to the dead-letter file; False (nothing written) when it holds ``max_bytes``."""
    with dead_letter_lock(directory):
        fd = os.open(os.path.join(directory, DEAD_LETTER_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size + len(lines) > max_bytes:
                return False
            if size and not _ends_with_newline(directory):
                lines = b"\n" + lines  # a writer killed mid-line: keep the next entry on a line of its own
            os.write(fd, lines)
            if fsync:
                _datasync(fd)
            return True
        finally:
            os.close(fd)


def _ends_with_newline(directory: str) -> bool:
    with open(os.path.join(directory, DEAD_LETTER_FILE), "rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"
