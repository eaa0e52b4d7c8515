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
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import struct
import threading
import time
import zlib
from collections import deque
from typing import Any, Iterator, Optional, Union, cast

import orjson

from eventtracking.queue.base import SenderWait

log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"ETSPOOL2"  # 1: the checksum did not cover the length
RECORD_HEADER = struct.Struct("<II")  # payload length, record_checksum(length, payload)
ACK_RECORD = struct.Struct("<QQI")  # segment number, offset, crc32 of the first 16 bytes
SEGMENT_NAME = re.compile(r"seg-(\d{16})\.log")
PART_PREFIX = "part-"
STAGING_PREFIX = ".new-"  # a part being created: renamed to part-... once its lock is held
LOCK_FILE = "lock"
ACK_FILE = "acked"
DEAD_LETTER_FILE = "deadletters.jsonl"
DEAD_LETTER_LOCK = "deadletters.lock"
SEGMENT_BYTES = 4 * 1024 * 1024
IDLE_ROTATE_BYTES = 256 * 1024  # all acknowledged and the segment is this big: truncate it
READ_CHUNK = 256 * 1024
SCAN_INTERVAL = 1.0
STAGING_MAX_AGE = 60.0  # a .new-... directory this old whose lock is free was left by a dead process

_START = len(SEGMENT_MAGIC)  # offset of a segment's first record
_HEADER = RECORD_HEADER.size
_LENGTH = struct.Struct("<I")
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

Position = tuple[int, int]  # (segment number, offset)


class SpoolUnsafe(PermissionError):
    """The spool directory can be written by other users and cannot be made private."""


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
    length, checksum = cast(tuple[int, int], RECORD_HEADER.unpack(header))
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


def _open(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symbolic link and never leaks into an exec'ed program."""
    return os.open(path, flags | _OPEN_FLAGS, mode)


def _segment_numbers(directory: str) -> list[int]:
    return sorted(
        int(match.group(1)) for match in map(SEGMENT_NAME.fullmatch, os.listdir(directory)) if match
    )


def _read_ack(fd: int) -> Optional[Position]:
    data = os.pread(fd, ACK_RECORD.size, 0)
    if len(data) != ACK_RECORD.size:
        return None
    segment, offset, checksum = ACK_RECORD.unpack(data)
    return (segment, offset) if zlib.crc32(data[:16]) == checksum else None


def _write_ack(fd: int, position: Position) -> None:
    """Rewrite ``acked`` in place: 20 bytes over 20 bytes, which needs no free space."""
    body = struct.pack("<QQ", *position)
    os.pwrite(fd, body + struct.pack("<I", zlib.crc32(body)), 0)


def _create_segment(directory: str, number: int, fsync: bool) -> int:
    """Create segment ``number`` in ``directory`` holding only the magic; its descriptor."""
    path = segment_path(directory, number)
    # Not O_APPEND: records are written at the owner's offset, so what it counts as written is
    # what is in the file, whatever a failed write left past it.
    fd = _open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        _pwrite_all(fd, SEGMENT_MAGIC, 0)
        if fsync:  # the file and its directory entry, or a power loss forgets the segment
            _datasync(fd)
            _fsync_directory(directory)
    except OSError:
        os.close(fd)
        _remove(path)
        raise
    return fd


def _read_batch(
    directory: str, start: Position, segments: list[tuple[int, int]], max_count: int, max_bytes: int
) -> tuple[list[bytes], Position, int]:
    """Read a batch from ``start`` on: (records, position after them, corrupt records skipped).

    ``segments`` are (number, readable size) from ``start``'s segment on."""
    batch: list[bytes] = []
    size = corrupt = 0
    number, offset = start
    for index, (number, end) in enumerate(segments):
        if index:
            offset = _START
        try:
            fd = _open(segment_path(directory, number), os.O_RDONLY)
        except OSError as error:
            log.warning("spool %s: segment %d unreadable, skipped: %s", directory, number, error)
            corrupt += 1
            offset = end
            continue
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
                directory,
                number,
                offset,
                error,
            )
            corrupt += 1
            offset = end
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    return batch, (number, offset), corrupt


class _Flight:
    """A batch handed to the sender and not yet ``done``: where it came from and where it ends."""

    __slots__ = ("source", "count", "size", "start", "end", "rewound")

    def __init__(
        self, source: Union[None, Spool, _Orphan], count: int, size: int, start: Position, end: Position
    ):
        self.source = source  # None: memory only; the Spool: its own part; else an adopted part
        self.count = count
        self.size = size  # bytes on disk (records), 0 for memory only
        self.start = start
        self.end = end
        self.rewound = False  # left on disk to be read again: done() must not acknowledge it


class _Orphan:
    """A part whose owner is gone, adopted by this process: read-only, locked by us, removed
    once all of it is acknowledged. Read and acknowledged by the sender thread only."""

    def __init__(self, path: str, name: str, lock_fd: int, pid: str, legacy: bool = False) -> None:
        self.path = path
        self.name = name
        self.pid = pid
        self.legacy = legacy  # segments at the top of the spool directory (an earlier version)
        self.lock_fd = lock_fd
        self.ack_fd = -1
        self.segments: dict[int, int] = {}  # number -> size, increasing
        self.position: Position = (0, _START)
        self.count = self.bytes = 0  # found when adopted
        self.pending_count = self.pending_bytes = 0
        self.corrupt = 0

    def load(self) -> None:
        """Find the acknowledged position and count what is after it (one read of the backlog)."""
        self.ack_fd = _open(os.path.join(self.path, ACK_FILE), os.O_RDWR | os.O_CREAT)
        numbers = _segment_numbers(self.path)
        acked = _read_ack(self.ack_fd)
        if acked is None:
            if numbers:
                log.warning("spool %s: %s unreadable, sending it all again", self.path, ACK_FILE)
            acked = (numbers[0] if numbers else 0, _START)
        for number in numbers:
            if number < acked[0]:
                _remove(segment_path(self.path, number))
                continue
            start = acked[1] if number == acked[0] else _START
            fd = _open(segment_path(self.path, number), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if size > _START and os.pread(fd, _START, 0) != SEGMENT_MAGIC:
                    log.warning("spool %s: segment %d has no spool magic, skipped", self.path, number)
                    self.corrupt += 1
                    size = _START
                self.segments[number] = size
                for payload, _ in iter_records(fd, start, size):
                    if payload is not None:
                        self.count += 1
                        self.bytes += _HEADER + len(payload)
            finally:
                os.close(fd)
        if self.segments:
            first = next(iter(self.segments))
            self.position = (first, acked[1] if first == acked[0] else _START)
        self.pending_count, self.pending_bytes = self.count, self.bytes

    def has_unread(self) -> bool:
        if not self.segments:
            return False
        last = next(reversed(self.segments))
        return self.position < (last, self.segments[last])

    def to_read(self) -> list[tuple[int, int]]:
        return [(number, size) for number, size in self.segments.items() if number >= self.position[0]]

    def disk_bytes(self) -> int:
        return sum(self.segments.values())

    def acknowledge(self, position: Position) -> None:
        """Everything before ``position`` is settled: say so in ``acked``; delete what that frees."""
        number, offset = position
        later = [n for n in self.segments if n > number]
        if later and offset >= self.segments.get(number, 0):
            number, offset = later[0], _START
        try:
            _write_ack(self.ack_fd, (number, offset))
        except OSError as error:
            log.warning("spool %s: cannot write %s: %s", self.path, ACK_FILE, error)
            return
        for done in [n for n in self.segments if n < number]:
            del self.segments[done]
            _remove(segment_path(self.path, done))

    def remove(self) -> None:
        """Delete the part (it is all acknowledged): its files, its lock last (still held), its directory."""
        for number in _listed_segments(self.path):
            _remove(segment_path(self.path, number))
        self.segments.clear()
        _remove_part_files(self.path, keep_directory=self.legacy)
        self.release()

    def release(self) -> None:
        """Let go of the part as it is (its ``acked`` is current): a later scan adopts it again."""
        for fd in (self.ack_fd, self.lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.ack_fd = self.lock_fd = -1


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
        self._readable = threading.Condition(self._lock)  # the sender waits here for records
        self._idle = threading.Condition(self._lock)  # flush() waits here for "all acknowledged"
        self._wanted = 0  # the sender waits until this many records are there (0: not waiting)
        self._flushers = 0  # threads in wait_idle(): the sender must not linger
        self._closed = False
        self._pid = os.getpid()  # the process this state belongs to
        self._next_scan = 0.0
        # This process's part (None while it cannot be created: events go to memory only).
        self._part_dir: Optional[str] = None
        self._part_name: Optional[str] = None
        self._lock_fd = self._ack_fd = self._write_fd = -1
        self._part_retry_at = 0.0  # after a failure to create the part: not before this time
        self._write_segment, self._write_offset = 1, _START
        # Not yet taken, in order: first the memory copies (record, segment, end offset), then
        # from _disk_from on what is only on disk. Puts go to memory only while nothing is
        # disk-only, so that take order stays disk order and one acknowledged offset suffices.
        self._memory: deque[tuple[bytes, int, int]] = deque()
        self._memory_used = 0
        self._disk_from: Optional[Position] = None
        self._disk_count = 0  # records from _disk_from on (corrupt ones are found when read)
        self._finished_segments: dict[int, int] = {}  # number -> size, in increasing order
        self._pending_count = self._pending_bytes = 0  # own part: not acknowledged
        # Messages the disk refused, kept in memory only until delivered.
        self._volatile: deque[bytes] = deque()
        self._volatile_bytes = 0
        self._volatile_pending = 0  # in _volatile or in flight
        self._in_flight: deque[_Flight] = deque()
        self._orphans: list[_Orphan] = []
        self._orphan_bytes = 0  # unacknowledged bytes of the adopted parts
        self._foreign_bytes = 0  # segment bytes of the other live parts, at the last scan
        self._live_parts: list[dict[str, Any]] = []
        self._known: set[str] = set()  # parts this Spool owns or adopted: never tried again
        self._unreadable: set[str] = set()  # parts it could not look at (warned once)
        self._accepted = 0
        self._spooled = self._spooled_bytes = 0
        self._recovered = self._recovered_bytes = 0
        self._adopted = 0
        self._acknowledged = self._acknowledged_bytes = 0
        self._requeued = self._rewound = self._corrupt = self._dead_letters = 0
        self._memory_fallback = 0
        self._read_back = 0  # records read from disk: adopted, or overflowed memory
        self._write_error: Optional[str] = None  # set while the disk refuses writes

    # -- this process's part -------------------------------------------------------------------

    def _open_part(self) -> None:
        """Create this process's part: built under a staging name, renamed once locked."""
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        staging = os.path.join(self.directory, STAGING_PREFIX + token)
        os.mkdir(staging, 0o700)
        fds: list[int] = []
        try:
            lock_fd = _open(os.path.join(staging, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_EXCL)
            fds.append(lock_fd)
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
            os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
            ack_fd = _open(os.path.join(staging, ACK_FILE), os.O_RDWR | os.O_CREAT | os.O_EXCL)
            fds.append(ack_fd)
            _write_ack(ack_fd, (1, _START))
            write_fd = _create_segment(staging, 1, self.fsync)
            fds.append(write_fd)
            name = PART_PREFIX + token
            path = os.path.join(self.directory, name)
            os.rename(staging, path)
            if self.fsync:
                _fsync_directory(self.directory)
        except BaseException:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            _remove_part_files(staging, keep_directory=False)
            raise
        self._part_dir, self._part_name = path, name
        self._known.add(name)
        self._lock_fd, self._ack_fd, self._write_fd = lock_fd, ack_fd, write_fd
        self._write_segment, self._write_offset = 1, _START
        self._finished_segments = {}
        if self._write_error is not None:
            log.warning("spool %s: part %s created: events are durable again", self.directory, name)
            self._write_error = None

    def _create_part(self) -> bool:
        """Create this process's part at its first write (a process that never writes, such as
        a preforking server's master, leaves none behind); after a failure, not again for
        ``scan_interval`` (lock held)."""
        if self._closed or time.monotonic() < self._part_retry_at:
            return False
        try:
            self._open_part()
            return True
        except OSError as error:
            self._part_retry_at = time.monotonic() + self.scan_interval
            self._part_failed(error)
            return False

    def _part_failed(self, error: OSError) -> None:
        if self._write_error is None:
            log.warning(
                "spool %s: cannot create this process's part (%s): events are kept in memory only "
                "(not durable, counted as memory_fallback) until it can",
                self.directory,
                error,
            )
        self._write_error = str(error)

    # -- the caller's thread -----------------------------------------------------------------

    def put(self, item: bytes) -> bool:
        """Write one encoded message; False (nothing kept) past ``max_bytes``, or when the disk
        refuses it and memory is full too."""
        record = encode_record(item)
        with self._lock:
            if not item or self._closed:
                return False
            if self._pending_bytes + self._orphan_bytes + self._foreign_bytes + len(record) > self.max_bytes:
                return False
            if not self._append([item], [record]):
                if self._volatile_bytes + len(item) > self.memory_bytes:
                    return False
                self._volatile.append(item)
                self._volatile_bytes += len(item)
                self._volatile_pending += 1
                self._memory_fallback += 1
            self._accepted += 1
            self._wake_if_wanted(len(self._volatile) + len(self._memory) + self._disk_count)
        return True

    def _append(self, items: list[bytes], records: list[bytes]) -> bool:
        """Write ``records`` (encoding ``items``) at the tail with one write, then queue ``items``;
        all or nothing: False, with nothing queued, when the write fails (lock held)."""
        if self._write_fd < 0 and not self._create_part():
            return False
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
            if self._write_error is None:
                log.warning(
                    "spool %s: cannot write (%s): new events are kept in memory only (not durable, "
                    "counted as memory_fallback) until it can",
                    self.directory,
                    error,
                )
            self._write_error = str(error)
            return False
        if self._write_error is not None:
            log.warning(
                "spool %s: writing to disk again (%d events were kept in memory only)",
                self.directory,
                self._memory_fallback,
            )
            self._write_error = None
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
        assert self._part_dir is not None
        fd = _create_segment(self._part_dir, self._write_segment + 1, self.fsync)
        _trim(self._write_fd, self._write_offset)
        with contextlib.suppress(OSError):
            os.close(self._write_fd)
        self._finished_segments[self._write_segment] = self._write_offset
        self._write_segment += 1
        self._write_fd, self._write_offset = fd, _START

    # -- the sender thread -------------------------------------------------------------------

    def take(self, max_count: int, max_bytes: int, linger: float, stop: threading.Event) -> list[bytes]:
        """The next batch, as :meth:`MemoryBuffer.take`, but [] as soon as ``stop`` is set.
        Between batches, and while it waits, it scans for parts to adopt (``scan_interval``)."""
        while True:
            self._maybe_scan()
            with self._lock:
                if stop.is_set() or self._closed:
                    return []  # what is left stays on disk for the next process
                if not self._has_records():
                    self._wait(1, max(0.01, min(0.5, self._next_scan - time.monotonic())))
                    continue
                orphan = next((o for o in self._orphans if o.has_unread()), None)
                if orphan is None and linger > 0 and self._available() < max_count:
                    deadline = time.monotonic() + linger
                    while self._available() < max_count and not (
                        stop.is_set() or self._flushers or self._closed
                    ):
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wait(max_count, remaining)
                    if stop.is_set() or self._closed:
                        return []
                if self._volatile:
                    return self._take_volatile(max_count, max_bytes)
                source: Union[Spool, _Orphan]
                if orphan is not None:
                    source, directory, start, segments = (
                        orphan,
                        orphan.path,
                        orphan.position,
                        orphan.to_read(),
                    )
                elif self._memory:
                    return self._take_from_memory(max_count, max_bytes)
                else:
                    assert self._disk_from is not None and self._part_dir is not None
                    source, directory, start = self, self._part_dir, self._disk_from
                    segments = [(n, size) for n, size in self._finished_segments.items() if n >= start[0]]
                    segments.append((self._write_segment, self._write_offset))
            # Only this thread reads, and only what was fully written: no lock needed.
            batch, end, corrupt = _read_batch(directory, start, segments, max_count, max_bytes)
            with self._lock:
                if self._closed:
                    return []
                self._corrupt += corrupt
                self._read_back += len(batch)
                if source is self:
                    if end == (self._write_segment, self._write_offset):
                        self._disk_from, self._disk_count = None, 0  # caught up: puts go to memory again
                    else:
                        self._disk_from, self._disk_count = end, max(0, self._disk_count - len(batch))
                else:
                    assert isinstance(source, _Orphan)
                    source.position = end
                if batch:
                    size = sum(map(len, batch)) + _HEADER * len(batch)
                    self._in_flight.append(_Flight(source, len(batch), size, start, end))
                    return batch
                if not any(flight.source is source for flight in self._in_flight):
                    self._settle(source, end)  # only corrupt records: acknowledge past them
                    self._settle_if_idle()

    def _has_records(self) -> bool:
        return bool(
            self._volatile
            or self._memory
            or self._disk_from is not None
            or any(orphan.has_unread() for orphan in self._orphans)
        )

    def _available(self) -> int:
        return len(self._volatile) + len(self._memory) + self._disk_count

    def _take_volatile(self, max_count: int, max_bytes: int) -> list[bytes]:
        batch: list[bytes] = []
        size = 0
        while (
            self._volatile
            and len(batch) < max_count
            and (not batch or size + len(self._volatile[0]) <= max_bytes)
        ):
            item = self._volatile.popleft()
            batch.append(item)
            size += len(item)
        self._volatile_bytes -= size
        self._in_flight.append(_Flight(None, len(batch), 0, (0, 0), (0, 0)))
        return batch

    def _take_from_memory(self, max_count: int, max_bytes: int) -> list[bytes]:
        memory = self._memory
        first, segment, first_end = memory[0]
        start = (segment, first_end - _HEADER - len(first))
        batch: list[bytes] = []
        size = 0
        while memory and len(batch) < max_count and (not batch or size + len(memory[0][0]) <= max_bytes):
            item, segment, end = memory.popleft()  # a single record larger than max_bytes goes alone
            batch.append(item)
            size += len(item)
        self._memory_used -= size
        self._in_flight.append(_Flight(self, len(batch), size + _HEADER * len(batch), start, (segment, end)))
        return batch

    def done(self, batch: list[bytes]) -> None:
        """The server gave its final answer for ``batch``: acknowledge it on disk."""
        with self._lock:
            if self._closed or not self._in_flight:
                return  # closed: not acknowledged, so the next process sends it again
            flight = self._in_flight.popleft()
            if flight.rewound:  # still on disk, read again by the next take
                return
            self._acknowledged += flight.count
            self._acknowledged_bytes += flight.size
            source = flight.source
            if source is None:
                self._volatile_pending -= flight.count
            elif source is self:
                self._pending_count -= flight.count
                self._pending_bytes -= flight.size
            else:
                assert isinstance(source, _Orphan)
                source.pending_count -= flight.count
                source.pending_bytes -= flight.size
                self._orphan_bytes -= flight.size
            if source is not None:
                self._settle(source, flight.end)
            self._settle_if_idle()

    def _settle(self, source: Union[Spool, _Orphan], end: Position) -> None:
        """Everything of ``source`` before ``end`` is settled (lock held)."""
        if source is self:
            self._acknowledge(end)
            return
        assert isinstance(source, _Orphan)
        source.acknowledge(end)
        if not source.has_unread() and not any(flight.source is source for flight in self._in_flight):
            self._orphans.remove(source)
            self._orphan_bytes -= source.pending_bytes  # what corrupt records left counted
            source.remove()
            log.info(
                "spool %s: part %s (process %s) delivered and removed",
                self.directory,
                source.name,
                source.pid,
            )

    def _acknowledge(self, position: Position) -> None:
        """Record that everything of this process's part before ``position`` is settled; free
        what that frees: whole segments are deleted, and the current one is truncated in place
        once all is acknowledged (neither needs free space)."""
        segment, offset = position
        if offset >= self._finished_segments.get(segment, offset + 1):  # the end of a finished segment
            later = [n for n in self._finished_segments if n > segment]
            segment, offset = (later[0] if later else self._write_segment), _START
        idle = (
            not self._memory
            and self._disk_from is None
            and not any(f.source is self for f in self._in_flight)
        )
        at_tail = (segment, offset) == (self._write_segment, self._write_offset)
        if idle and at_tail and offset > _START and (offset >= IDLE_ROTATE_BYTES or self._write_error):
            try:
                # Cut first: a crash before the new acked is written leaves an offset past the
                # end of the file, which reads as nothing, never as the old records.
                os.ftruncate(self._write_fd, _START)
                self._write_offset = offset = _START
            except OSError as error:
                log.warning("spool %s: cannot truncate segment %d: %s", self.directory, segment, error)
        try:
            _write_ack(self._ack_fd, (segment, offset))
        except OSError as error:  # the next process sends copies of what this one acknowledged
            log.warning("spool %s: cannot write %s: %s", self.directory, ACK_FILE, error)
            return
        assert self._part_dir is not None
        for number in [n for n in self._finished_segments if n < segment]:
            del self._finished_segments[number]
            _remove(segment_path(self._part_dir, number))

    def _settle_if_idle(self) -> None:
        if self._is_idle():
            # Records found corrupt after the count leave it too high: all is settled now.
            self._pending_count = self._pending_bytes = 0
            self._idle.notify_all()

    def keep_for_later(self, batch: list[bytes]) -> bool:
        """Keep ``batch`` (part of the batch in flight) to be tried again later: appended again
        at the tail with one write (past ``max_bytes`` if need be); when that write fails, the
        batch in flight stays where it is on disk (or, memory only, goes back to the front) and is
        taken again. Always True: a spool never gives up on a message."""
        with self._lock:
            if self._closed or not batch:
                return True  # closed: not acknowledged, so still on disk for the next process
            if self._append(batch, [encode_record(item) for item in batch]):
                self._requeued += len(batch)
                return True
            flight = self._in_flight[-1] if self._in_flight else None
            if flight is None or flight.source is None:
                self._volatile.extendleft(reversed(batch))
                self._volatile_bytes += sum(map(len, batch))
                self._volatile_pending += len(batch)
                if flight is None:
                    self._memory_fallback += len(batch)
            elif not flight.rewound:
                self._rewind(flight.source)
            return True

    def _rewind(self, source: Union[Spool, _Orphan]) -> None:
        """Leave the batches of ``source`` in flight on disk, to be read again from the first one."""
        flights = [flight for flight in self._in_flight if flight.source is source and not flight.rewound]
        for flight in flights:
            flight.rewound = True
        count = sum(flight.count for flight in flights)
        self._rewound += count
        if isinstance(source, _Orphan):
            source.position = flights[0].start
            return
        # What is queued in memory lies after it on disk: read it from there (memory copies go).
        self._disk_count += count + len(self._memory)
        self._disk_from = flights[0].start
        self._memory.clear()
        self._memory_used = 0

    def dead_letter(self, reason: str, batch: list[bytes]) -> None:
        """Append the finally refused messages to ``deadletters.jsonl`` (see the module docstring)."""
        lines = dead_letter_lines(reason, batch)
        try:
            written = append_dead_letters(self.directory, lines, fsync=self.fsync, max_bytes=self.max_bytes)
        except OSError as error:
            log.warning("spool %s: cannot write dead letters: %s", self.directory, error)
            return
        if written:
            with self._lock:
                self._dead_letters += len(batch)
        else:
            log.warning(
                "spool %s: %s is full (%d bytes): %d refused messages not kept",
                self.directory,
                DEAD_LETTER_FILE,
                self.max_bytes,
                len(batch),
            )

    # -- other processes' parts ----------------------------------------------------------------

    def _maybe_scan(self) -> None:
        if time.monotonic() >= self._next_scan:
            self._scan()

    def _scan(self) -> None:
        """Adopt the parts whose owner is gone; measure the live ones (no lock held while it reads)."""
        self._next_scan = time.monotonic() + self.scan_interval
        try:
            entries = list(os.scandir(self.directory))
        except OSError as error:
            log.warning("spool %s: cannot list the directory: %s", self.directory, error)
            return
        live: list[dict[str, Any]] = []
        for entry in entries:
            name = entry.name
            if name in self._known:
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if name.startswith(STAGING_PREFIX):
                    _remove_stale_staging(entry.path)
                elif name.startswith(PART_PREFIX):
                    orphan, pid = _try_lock(entry.path, name)
                    if orphan is not None:
                        self._adopt(orphan)
                    elif pid is not None:
                        live.append(
                            {"name": name, "pid": pid, "state": "live", "disk_bytes": _part_bytes(entry.path)}
                        )
            except OSError as error:  # e.g. another user's part: said once, tried again each scan
                if name not in self._unreadable:
                    self._unreadable.add(name)
                    log.warning("spool %s: cannot look at %s: %s", self.directory, name, error)
        if "." not in self._known and any(SEGMENT_NAME.fullmatch(entry.name) for entry in entries):
            try:  # segments of an earlier version, at the top
                orphan, _ = _try_lock(self.directory, ".", legacy=True)
            except OSError as error:
                orphan = None
                if "." not in self._unreadable:
                    self._unreadable.add(".")
                    log.warning("spool %s: cannot take its old segments over: %s", self.directory, error)
            if orphan is not None:
                self._adopt(orphan)
        with self._lock:
            self._live_parts = live
            self._foreign_bytes = sum(part["disk_bytes"] for part in live)

    def _adopt(self, orphan: _Orphan) -> None:
        try:
            orphan.load()
        except OSError as error:
            log.warning("spool %s: cannot read part %s: %s", self.directory, orphan.name, error)
            orphan.release()
            return
        with self._lock:
            if self._closed:
                orphan.release()
                return
            self._known.add(orphan.name)
            self._adopted += 1
            self._recovered += orphan.count
            self._recovered_bytes += orphan.bytes
            self._corrupt += orphan.corrupt
            if not orphan.has_unread():
                orphan.remove()
                return
            self._orphans.append(orphan)
            self._orphan_bytes += orphan.pending_bytes
            self._readable.notify_all()
        log.info(
            "spool %s: adopted part %s left by process %s: %d messages",
            self.directory,
            orphan.name,
            orphan.pid,
            orphan.count,
        )

    # -- waiting, state, lifecycle -------------------------------------------------------------

    def wake(self) -> None:
        """Wake a sender blocked in ``take``."""
        with self._lock:
            self._readable.notify_all()

    def _is_idle(self) -> bool:
        return (
            not (self._memory or self._volatile or self._orphans or self._in_flight)
            and self._disk_from is None
        )

    def wait_idle(self, timeout: Optional[float]) -> bool:
        """Wait until everything spooled (and adopted) is acknowledged; False when ``timeout``
        ran out first."""
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
            count = self._pending_count + self._volatile_pending + sum(o.pending_count for o in self._orphans)
            return count, self._pending_bytes + self._volatile_bytes + self._orphan_bytes

    @property
    def accepted(self) -> int:
        """Messages ``put`` by this process (the backend's ``accepted``)."""
        return self._accepted

    def stats(self) -> dict[str, Any]:
        """Counts and bytes: spooled (written by this process), memory_fallback (kept in memory
        only: the disk refused them) and memory_only (of those, not yet delivered), recovered
        (found in adopted parts; ``adopted``: how many parts), acknowledged, pending, requeued
        (kept for later, appended again), rewound (kept for later where they were), read_back
        (read from disk rather than memory), corrupt, dead_letters, disk_bytes (this process's
        segment files and those it adopted), ``disk_error`` (while the disk refuses writes), and
        ``parts``: what each part of the directory holds (``state`` own, adopted, or live:
        another process's, as measured at the last scan)."""
        with self._lock:
            own_disk = sum(self._finished_segments.values()) + (
                self._write_offset if self._write_fd >= 0 else 0
            )
            parts: list[dict[str, Any]] = []
            if self._part_name is not None and not self._closed:
                parts.append(
                    {
                        "name": self._part_name,
                        "pid": str(os.getpid()),
                        "state": "own",
                        "pending": self._pending_count,
                        "pending_bytes": self._pending_bytes,
                        "disk_bytes": own_disk,
                    }
                )
            for orphan in self._orphans:
                parts.append(
                    {
                        "name": orphan.name,
                        "pid": orphan.pid,
                        "state": "adopted",
                        "pending": orphan.pending_count,
                        "pending_bytes": orphan.pending_bytes,
                        "disk_bytes": orphan.disk_bytes(),
                    }
                )
            parts.extend(dict(part) for part in self._live_parts)
            count = self._pending_count + self._volatile_pending + sum(o.pending_count for o in self._orphans)
            return {
                "dir": self.directory,
                "spooled": self._spooled,
                "spooled_bytes": self._spooled_bytes,
                "memory_fallback": self._memory_fallback,
                "memory_only": self._volatile_pending,
                "recovered": self._recovered,
                "recovered_bytes": self._recovered_bytes,
                "adopted": self._adopted,
                "acknowledged": self._acknowledged,
                "acknowledged_bytes": self._acknowledged_bytes,
                "pending": count,
                "pending_bytes": self._pending_bytes + self._volatile_bytes + self._orphan_bytes,
                "requeued": self._requeued,
                "rewound": self._rewound,
                "read_back": self._read_back,
                "corrupt": self._corrupt,
                "dead_letters": self._dead_letters,
                "disk_bytes": (0 if self._closed else own_disk) + sum(o.disk_bytes() for o in self._orphans),
                "disk_error": self._write_error,
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
            if self._volatile_pending:
                log.warning(
                    "spool %s: closing with %d messages kept in memory only (the disk refused "
                    "them) not delivered: lost",
                    self.directory,
                    self._volatile_pending,
                )
            own_flights = any(flight.source is self for flight in self._in_flight)
            own_idle = not self._memory and self._disk_from is None and not own_flights
            if self._part_dir is not None:
                if own_idle:  # everything acknowledged: leave nothing behind
                    for number in list(self._finished_segments) + [self._write_segment]:
                        _remove(segment_path(self._part_dir, number))
                    self._finished_segments.clear()
                    _remove_part_files(self._part_dir, keep_directory=False)
                else:
                    _trim(self._write_fd, self._write_offset)
            for orphan in self._orphans:
                orphan.release()
            for fd in (self._write_fd, self._ack_fd, self._lock_fd):  # closing the lock releases it
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._write_fd = self._ack_fd = self._lock_fd = -1
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
        for fd in (self._write_fd, self._ack_fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for orphan in self._orphans:
            orphan.release()
        self._write_fd = self._ack_fd = self._lock_fd = -1
        self._orphans = []


# -- directories and files, shared with the command line --------------------------------------


def prepare_directory(directory: str) -> None:
    """Create the spool directory (0700), or check the one there: writable by other users, it is
    made ``go-w`` when this user owns it, else refused with :class:`SpoolUnsafe`."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    status = os.stat(directory)
    if not stat.S_ISDIR(status.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "spool_dir is not a directory", directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "spool_dir is not writable by this user", directory)
    mode = stat.S_IMODE(status.st_mode)
    if not mode & 0o022:
        return
    if status.st_uid != os.geteuid() or mode & stat.S_ISVTX:
        raise SpoolUnsafe(
            errno.EACCES,
            f"spool directory is writable by other users (mode {mode:o}, owner uid {status.st_uid}); "
            "refused: give it to the application's user with mode 0700",
            directory,
        )
    os.chmod(directory, mode & ~0o022)
    log.warning(
        "spool directory %s was writable by other users (mode %o): made it %o", directory, mode, mode & ~0o022
    )


def _try_lock(path: str, name: str, legacy: bool = False) -> tuple[Optional[_Orphan], Optional[str]]:
    """Try the lock of the part at ``path``: (the part, adopted, None) when its owner is gone,
    (None, owner's pid) when it is alive, (None, None) when it is not a part (any more)."""
    try:
        fd = _open(os.path.join(path, LOCK_FILE), os.O_RDWR)  # never created: a part is born locked
    except FileNotFoundError:
        if not legacy:  # a removal cut short after its lock went: finish it
            _remove_part_files(path, keep_directory=False, quiet=True)
        return None, None
    try:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None, pid
    except OSError:
        os.close(fd)
        raise
    if os.fstat(fd).st_nlink == 0:  # removed by whoever held it before us
        os.close(fd)
        return None, None
    return _Orphan(path, name, fd, pid, legacy), None


def survey(directory: str) -> list[dict[str, Any]]:
    """What each part of a spool directory holds, without taking anything over: ``name``,
    ``pid`` (of its owner), ``state`` (``live``: its owner holds it; ``left``: its owner is gone,
    a live process or ``eventtracking spool drain`` delivers it), ``disk_bytes``, and for a left
    part ``pending`` (records not yet acknowledged; counted by reading it)."""
    result: list[dict[str, Any]] = []
    entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    candidates = [
        (entry.path, entry.name, False)
        for entry in entries
        if entry.name.startswith(PART_PREFIX) and entry.is_dir(follow_symlinks=False)
    ]
    if any(SEGMENT_NAME.fullmatch(entry.name) for entry in entries):
        candidates.append((directory, ".", True))
    for path, name, legacy in candidates:
        orphan, pid = _try_lock(path, name, legacy)
        if orphan is None:
            if pid is not None:
                result.append({"name": name, "pid": pid, "state": "live", "disk_bytes": _part_bytes(path)})
            continue
        try:
            orphan.load()
            result.append(
                {
                    "name": name,
                    "pid": orphan.pid,
                    "state": "left",
                    "pending": orphan.count,
                    "pending_bytes": orphan.bytes,
                    "disk_bytes": orphan.disk_bytes(),
                }
            )
        finally:
            orphan.release()
    return result


def _part_bytes(path: str) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            if SEGMENT_NAME.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def _listed_segments(path: str) -> list[int]:
    try:
        return _segment_numbers(path)
    except OSError:
        return []


def _remove_part_files(path: str, *, keep_directory: bool, quiet: bool = False) -> None:
    """Delete a part's files, its lock last, then (unless ``keep_directory``) the directory."""
    for number in _listed_segments(path):
        _remove(segment_path(path, number))
    _remove(os.path.join(path, ACK_FILE))
    _remove(os.path.join(path, LOCK_FILE))
    if not keep_directory:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            if not quiet:
                log.warning("spool: cannot delete %s: %s", path, error)


def _remove_stale_staging(path: str) -> None:
    """A ``.new-...`` directory older than a minute whose lock is free: its creator died."""
    if time.time() - os.lstat(path).st_mtime < STAGING_MAX_AGE:
        return
    try:
        fd = _open(os.path.join(path, LOCK_FILE), os.O_RDWR)
    except FileNotFoundError:
        _remove_part_files(path, keep_directory=False, quiet=True)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    finally:
        os.close(fd)
    _remove_part_files(path, keep_directory=False, quiet=True)


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
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
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
    fd = _open(os.path.join(directory, DEAD_LETTER_LOCK), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def open_dead_letters(directory: str, flags: int = os.O_RDONLY) -> int:
    """A descriptor on ``deadletters.jsonl``, never through a symbolic link (0600 when created)."""
    return _open(os.path.join(directory, DEAD_LETTER_FILE), flags)


def dead_letter_lines(reason: str, batch: list[bytes]) -> bytes:
    """The lines of ``deadletters.jsonl`` for encoded messages refused for ``reason``, now."""
    head = b'{"reason":' + orjson.dumps(reason) + b',"time":' + orjson.dumps(utc_now()) + b',"message":'
    return b"".join(head + item + b"}\n" for item in batch)


def append_dead_letters(
    directory: str, lines: bytes, *, fsync: bool = False, max_bytes: int = 1024**3
) -> bool:
    """Append JSON lines to the dead-letter file; False (nothing written) when it holds ``max_bytes``."""
    with dead_letter_lock(directory):
        fd = open_dead_letters(directory, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size + len(lines) > max_bytes:
                return False
            if size and os.pread(fd, 1, size - 1) != b"\n":
                lines = b"\n" + lines  # a writer killed mid-line: keep the next entry on a line of its own
            os.write(fd, lines)
            if fsync:
                _datasync(fd)
            return True
        finally:
            os.close(fd)
