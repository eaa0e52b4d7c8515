"""One part of a spool directory: a sub-directory of segment files, an ``acked`` file and a ``lock``.

A :class:`Part` is either this process's own (created by :meth:`Part.create`, written at its
tail) or one adopted from a process that is gone (locked by :meth:`Part.try_lock`, then
:meth:`Part.load`\\ ed). Both are read and acknowledged the same way, and removed once all of
them is acknowledged. The Spool (:mod:`eventtracking.queue.spool`) holds its lock around every
call but ``load``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from typing import Any, Optional

from eventtracking.queue.spool.records import (
    HEADER,
    SEGMENT_MAGIC,
    START,
    Position,
    datasync,
    iter_records,
    log,
    open_nofollow,
    pwrite_all,
    read_ack,
    segment_numbers,
    segment_path,
    write_ack,
)

PART_PREFIX = "part-"
STAGING_PREFIX = ".new-"  # a part being created: renamed to part-... once its lock is held
LOCK_FILE = "lock"
ACK_FILE = "acked"


class Part:
    """The files of one part. ``segments`` are its finished segment files (number -> size,
    increasing); the own part also writes segment ``segment`` (descriptor ``write_fd``) up to
    ``offset``. ``pending_count``/``pending_bytes``: records (and their bytes on disk) not yet
    acknowledged. An adopted part is read from ``position`` on."""

    def __init__(self, path: str, name: str, lock_fd: int, pid: str, legacy: bool = False) -> None:
        self.path = path
        self.name = name
        self.pid = pid
        self.legacy = legacy  # segments at the top of the spool directory (an earlier version)
        self.lock_fd = lock_fd
        self.ack_fd = self.write_fd = -1
        self.segments: dict[int, int] = {}
        self.segment, self.offset = 0, START  # the tail: where the own part writes next
        self.position: Position = (0, START)  # an adopted part: the next record to read
        self.count = self.bytes = 0  # an adopted part: what it held when adopted
        self.pending_count = self.pending_bytes = 0
        self.corrupt = 0  # an adopted part: segments found without the magic

    # -- creating and taking over ------------------------------------------------------------

    @classmethod
    def create(cls, directory: str, fsync: bool) -> Part:
        """This process's new part in ``directory``: built under a staging name, renamed once locked,
        so no other process ever sees it unlocked. OSError when it cannot be (nothing is left)."""
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        staging = os.path.join(directory, STAGING_PREFIX + token)
        os.mkdir(staging, 0o700)
        fds: list[int] = []
        try:
            lock_fd = open_nofollow(os.path.join(staging, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_EXCL)
            fds.append(lock_fd)
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else has it
            os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
            ack_fd = open_nofollow(os.path.join(staging, ACK_FILE), os.O_RDWR | os.O_CREAT | os.O_EXCL)
            fds.append(ack_fd)
            write_ack(ack_fd, (1, START))
            write_fd = create_segment(staging, 1, fsync)
            fds.append(write_fd)
            name = PART_PREFIX + token
            path = os.path.join(directory, name)
            os.rename(staging, path)
            if fsync:
                fsync_directory(directory)
        except BaseException:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            remove_part_files(staging, keep_directory=False)
            raise
        part = cls(path, name, lock_fd, str(os.getpid()))
        part.ack_fd, part.write_fd = ack_fd, write_fd
        part.segment = 1
        return part

    @classmethod
    def try_lock(cls, path: str, name: str, legacy: bool = False) -> tuple[Optional[Part], Optional[str]]:
        """Try the lock of the part at ``path``: (the part, locked by us, None) when its owner is
        gone, (None, owner's pid) when it is alive, (None, None) when it is not a part (any more)."""
        try:
            fd = open_nofollow(os.path.join(path, LOCK_FILE), os.O_RDWR)  # never created: born locked
        except FileNotFoundError:
            if not legacy:  # a removal cut short after its lock went: finish it
                remove_part_files(path, keep_directory=False, quiet=True)
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
        return cls(path, name, fd, pid, legacy), None

    def load(self) -> None:
        """An adopted part: find the acknowledged position and count what is after it (one read
        of the backlog). OSError when it cannot be read."""
        self.ack_fd = open_nofollow(os.path.join(self.path, ACK_FILE), os.O_RDWR | os.O_CREAT)
        numbers = segment_numbers(self.path)
        acked = read_ack(self.ack_fd)
        if acked is None:
            if numbers:
                log.warning("spool %s: %s unreadable, sending it all again", self.path, ACK_FILE)
            acked = (numbers[0] if numbers else 0, START)
        for number in numbers:
            if number < acked[0]:
                remove_file(segment_path(self.path, number))
                continue
            start = acked[1] if number == acked[0] else START
            fd = open_nofollow(segment_path(self.path, number), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if size > START and os.pread(fd, START, 0) != SEGMENT_MAGIC:
                    log.warning("spool %s: segment %d has no spool magic, skipped", self.path, number)
                    self.corrupt += 1
                    size = START
                self.segments[number] = size
                for payload, _ in iter_records(fd, start, size):
                    if payload is not None:
                        self.count += 1
                        self.bytes += HEADER + len(payload)
            finally:
                os.close(fd)
        if self.segments:
            first = next(iter(self.segments))
            self.position = (first, acked[1] if first == acked[0] else START)
        self.pending_count, self.pending_bytes = self.count, self.bytes

    # -- writing (the own part) --------------------------------------------------------------

    def write(self, data: bytes, segment_bytes: int, fsync: bool) -> int:
        """Write ``data`` (whole records) at the tail with one write, in the next segment when
        this one would pass ``segment_bytes``; return the offset it starts at (in ``segment``).
        OSError: nothing counts as written, and what the write left is cut off (if it can be:
        else the next write goes over it)."""
        start = self.offset
        try:
            if start + len(data) > segment_bytes and start > START:
                self._rotate(fsync)
                start = self.offset
            pwrite_all(self.write_fd, data, start)
            if fsync:
                datasync(self.write_fd)
        except OSError:
            # Only so that a half record does not outlive the process (the next one would
            # count it corrupt).
            with contextlib.suppress(OSError):
                os.ftruncate(self.write_fd, start)
            raise
        self.offset = start + len(data)
        return start

    def _rotate(self, fsync: bool) -> None:
        fd = create_segment(self.path, self.segment + 1, fsync)
        trim(self.write_fd, self.offset)
        with contextlib.suppress(OSError):
            os.close(self.write_fd)
        self.segments[self.segment] = self.offset
        self.segment += 1
        self.write_fd, self.offset = fd, START

    # -- reading and acknowledging -----------------------------------------------------------

    def _sizes(self) -> dict[int, int]:
        """Every segment: number -> readable size, increasing (the tail's up to ``offset``)."""
        if self.write_fd < 0:
            return self.segments
        return {**self.segments, self.segment: self.offset}

    def has_unread(self) -> bool:
        """An adopted part: records after ``position``."""
        if not self.segments:
            return False
        last = next(reversed(self.segments))
        return self.position < (last, self.segments[last])

    def to_read(self, start: Position) -> list[tuple[int, int]]:
        """(number, readable size) of the segments from ``start``'s on."""
        return [(number, size) for number, size in self._sizes().items() if number >= start[0]]

    def disk_bytes(self) -> int:
        return sum(self.segments.values()) + (self.offset if self.write_fd >= 0 else 0)

    def row(self, state: str) -> dict[str, Any]:
        """The part as the Spool's ``stats()["parts"]`` lists it, in ``state`` (own, adopted)."""
        return {
            "name": self.name,
            "pid": self.pid,
            "state": state,
            "pending": self.pending_count,
            "pending_bytes": self.pending_bytes,
            "disk_bytes": self.disk_bytes(),
        }

    def acknowledge(self, position: Position, truncate_from: Optional[int] = None) -> None:
        """Everything before ``position`` is settled: say so in ``acked`` and delete the segments
        that frees (neither needs free space). With ``truncate_from`` (nothing of the part is
        pending), a tail at least that far into its segment is first cut back to empty."""
        number, offset = position
        sizes = self._sizes()
        later = [n for n in sizes if n > number]
        if later and offset >= sizes.get(number, 0):  # the end of a finished segment
            number, offset = later[0], START
        at_tail = self.write_fd >= 0 and (number, offset) == (self.segment, self.offset)
        if at_tail and truncate_from is not None and offset > START and offset >= truncate_from:
            try:
                # Cut first: a crash before the new acked is written leaves an offset past the
                # end of the file, which reads as nothing, never as the old records.
                os.ftruncate(self.write_fd, START)
                self.offset = offset = START
            except OSError as error:
                log.warning("spool %s: cannot truncate segment %d: %s", self.path, number, error)
        try:
            write_ack(self.ack_fd, (number, offset))
        except OSError as error:  # the next process sends copies of what this one acknowledged
            log.warning("spool %s: cannot write %s: %s", self.path, ACK_FILE, error)
            return
        for done in [n for n in self.segments if n < number]:
            del self.segments[done]
            remove_file(segment_path(self.path, done))

    # -- letting go --------------------------------------------------------------------------

    def close(self, settled: bool) -> None:
        """Let go of the part: removed when ``settled`` (all of it acknowledged), else left as it
        is (what a failed write left past the tail cut off) for a live process to adopt."""
        if settled:
            self.remove()
        else:
            if self.write_fd >= 0:
                trim(self.write_fd, self.offset)
            self.release()

    def remove(self) -> None:
        """Delete the part (it is all acknowledged): its files, its lock last (still held), its directory."""
        for number in listed_segments(self.path):
            remove_file(segment_path(self.path, number))
        self.segments.clear()
        remove_part_files(self.path, keep_directory=self.legacy)
        self.release()

    def release(self) -> None:
        """Close the part's descriptors, never unlocking them first (after ``fork()`` that would
        release the parent's lock): a later scan adopts it again from its ``acked``."""
        for fd in (self.write_fd, self.ack_fd, self.lock_fd):  # closing the lock releases it
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.write_fd = self.ack_fd = self.lock_fd = -1


# -- files ----------------------------------------------------------------------------------


def create_segment(directory: str, number: int, fsync: bool) -> int:
    """Create segment ``number`` in ``directory`` holding only the magic; its descriptor."""
    path = segment_path(directory, number)
    # Not O_APPEND: records are written at the owner's offset, so what it counts as written is
    # what is in the file, whatever a failed write left past it.
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        pwrite_all(fd, SEGMENT_MAGIC, 0)
        if fsync:  # the file and its directory entry, or a power loss forgets the segment
            datasync(fd)
            fsync_directory(directory)
    except OSError:
        os.close(fd)
        remove_file(path)
        raise
    return fd


def listed_segments(path: str) -> list[int]:
    try:
        return segment_numbers(path)
    except OSError:
        return []


def remove_part_files(path: str, *, keep_directory: bool, quiet: bool = False) -> None:
    """Delete a part's files, its lock last, then (unless ``keep_directory``) the directory."""
    for number in listed_segments(path):
        remove_file(segment_path(path, number))
    remove_file(os.path.join(path, ACK_FILE))
    remove_file(os.path.join(path, LOCK_FILE))
    if not keep_directory:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            if not quiet:
                log.warning("spool: cannot delete %s: %s", path, error)


def remove_file(path: str) -> None:
    """Delete ``path``; an error is logged, not raised (a segment left behind is deleted later)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("spool: cannot delete %s: %s", path, error)


def trim(fd: int, size: int) -> None:
    """Cut what a failed write left past ``size`` in a segment file; errors are ignored."""
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)


def fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
