"""The spool's on-disk records: segment files of checksummed records, and a part's ``acked`` file.

A segment file is the magic :data:`SEGMENT_MAGIC`, then records ``<u32 length><u32 checksum>``
(little-endian) each followed by its payload; the checksum is :func:`record_checksum`. ``acked``
is :data:`ACK_RECORD`: the position (segment, offset) before which everything is settled, and a
crc32 of it. The format is described in full in :mod:`eventtracking.queue.spool`.

Every module of the spool logs through :data:`log`, the one logger ``eventtracking.queue.spool``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import struct
import zlib
from typing import Iterator, Optional, cast

# The package's one logger, named after the package (not this module) so that operators see one name.
log = logging.getLogger("eventtracking.queue.spool")

SEGMENT_MAGIC = b"ETSPOOL2"  # 1: the checksum did not cover the length
RECORD_HEADER = struct.Struct("<II")  # payload length, record_checksum(length, payload)
ACK_RECORD = struct.Struct("<QQI")  # segment number, offset, crc32 of the first 16 bytes
SEGMENT_NAME = re.compile(r"seg-(\d{16})\.log")
READ_CHUNK = 256 * 1024

START = len(SEGMENT_MAGIC)  # offset of a segment's first record
HEADER = RECORD_HEADER.size
_LENGTH = struct.Struct("<I")
_POSITION = struct.Struct("<QQ")
_CRC = struct.Struct("<I")
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC
datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync

Position = tuple[int, int]  # (segment number, offset)


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
    header = os.pread(fd, HEADER, position)
    if len(header) < HEADER:
        return None
    length, checksum = cast(tuple[int, int], RECORD_HEADER.unpack(header))
    if length == 0 or position + HEADER + length > end:
        return None
    payload = os.pread(fd, length, position + HEADER)
    if len(payload) < length or record_checksum(length, payload) != checksum:
        return None
    return position + HEADER + length


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
        while used + HEADER <= len(chunk):
            length, checksum = RECORD_HEADER.unpack_from(chunk, used)
            record_end = used + HEADER + length
            if length == 0 or position + record_end > end:
                yield None, end
                return
            if record_end > len(chunk):
                if used:
                    break  # the next chunk starts with this record
                chunk = os.pread(fd, HEADER + length, position)  # one record larger than a chunk
                if len(chunk) < HEADER + length:
                    break
                continue
            payload = chunk[used + HEADER : record_end]
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


def read_batch(
    directory: str, start: Position, segments: list[tuple[int, int]], max_count: int, max_bytes: int
) -> tuple[list[bytes], Position, int]:
    """Read a batch from ``start`` on: (records, position after them, corrupt records skipped).

    ``segments`` are (number, readable size) from ``start``'s segment on."""
    batch: list[bytes] = []
    size = corrupt = 0
    number, offset = start
    for index, (number, end) in enumerate(segments):
        if index:
            offset = START
        try:
            fd = open_nofollow(segment_path(directory, number), os.O_RDONLY)
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


def read_ack(fd: int) -> Optional[Position]:
    """The position in an ``acked`` file; None when it is short or its checksum does not match."""
    data = os.pread(fd, ACK_RECORD.size, 0)
    if len(data) != ACK_RECORD.size:
        return None
    segment, offset, checksum = ACK_RECORD.unpack(data)
    return (segment, offset) if zlib.crc32(data[:16]) == checksum else None


def write_ack(fd: int, position: Position) -> None:
    """Rewrite ``acked`` in place: 20 bytes over 20 bytes, which needs no free space."""
    body = _POSITION.pack(*position)
    os.pwrite(fd, body + _CRC.pack(zlib.crc32(body)), 0)


def pwrite_all(fd: int, data: bytes, position: int) -> None:
    """Write all of ``data`` at ``position`` (a short write is continued; an error raises OSError)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        if written <= 0:
            raise OSError(errno.EIO, f"write returned {written}")
        view = view[written:]
        position += written


def open_nofollow(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symbolic link and never leaks into an exec'ed program."""
    return os.open(path, flags | _OPEN_FLAGS, mode)


def segment_numbers(directory: str) -> list[int]:
    """The numbers of the segment files in ``directory``, increasing (OSError if it cannot be listed)."""
    return sorted(
        int(match.group(1)) for match in map(SEGMENT_NAME.fullmatch, os.listdir(directory)) if match
    )
