"""A spool's dead letters: ``deadletters.jsonl``, the messages the server finally refused.

One JSON object per line, ``{"reason", "time", "message"}``, appended under ``flock`` on
``deadletters.lock`` by the backends sharing the directory, read (and rewritten, keeping what
was appended meanwhile) by ``eventtracking deadletters``. It stops growing at the spool's
``max_bytes``. Opened with ``O_NOFOLLOW``: a symbolic link in its place is refused (ELOOP).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
from typing import Any, Iterator, Optional

import orjson

from eventtracking.queue.spool.records import datasync, log, open_nofollow

DEAD_LETTER_FILE = "deadletters.jsonl"
DEAD_LETTER_LOCK = "deadletters.lock"

# One line of the file: its bytes, and its entry (None when it cannot be read as one).
DeadLetter = tuple[bytes, Optional[dict[str, Any]]]


def utc_now() -> str:
    """The time of a dead letter: ISO 8601, UTC, milliseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


# -- writing ----------------------------------------------------------------------------------


@contextlib.contextmanager
def dead_letter_lock(directory: str) -> Iterator[None]:
    """Hold the (blocking) ``flock`` that serializes writers of ``deadletters.jsonl``."""
    fd = open_nofollow(os.path.join(directory, DEAD_LETTER_LOCK), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def open_dead_letters(directory: str, flags: int = os.O_RDONLY) -> int:
    """A descriptor on ``deadletters.jsonl``, never through a symbolic link (0600 when created)."""
    return open_nofollow(os.path.join(directory, DEAD_LETTER_FILE), flags)


def dead_letter_head(reason: str, time: str) -> bytes:
    """The start of a line, up to its message: the line is this, the encoded message, ``}``."""
    return b'{"reason":' + orjson.dumps(reason) + b',"time":' + orjson.dumps(time) + b',"message":'


def dead_letter_lines(reason: str, batch: list[bytes]) -> bytes:
    """The lines of ``deadletters.jsonl`` for encoded messages refused for ``reason``, now."""
    head = dead_letter_head(reason, utc_now())
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
                datasync(fd)
            return True
        finally:
            os.close(fd)


def write_dead_letters(
    directory: str, reason: str, batch: list[bytes], *, fsync: bool, max_bytes: int
) -> bool:
    """A spool's ``dead_letter``: append ``batch``, refused for ``reason``; False when it was not
    kept (the file is full, or cannot be written: logged)."""
    try:
        written = append_dead_letters(
            directory, dead_letter_lines(reason, batch), fsync=fsync, max_bytes=max_bytes
        )
    except OSError as error:
        log.warning("spool %s: cannot write dead letters: %s", directory, error)
        return False
    if not written:
        log.warning(
            "spool %s: %s is full (%d bytes): %d refused messages not kept",
            directory,
            DEAD_LETTER_FILE,
            max_bytes,
            len(batch),
        )
    return written


# -- reading and rewriting (``eventtracking deadletters``) ------------------------------------


def read_dead_letter_file(directory: str) -> bytes:
    """The file's bytes (b"" when there is none); a symbolic link in its place is refused (ELOOP)."""
    try:
        fd = open_dead_letters(directory)
    except FileNotFoundError:
        return b""
    with os.fdopen(fd, "rb") as file:
        return file.read()


def parse_dead_letters(data: bytes) -> list[DeadLetter]:
    """Each non-empty line of dead-letter file contents, with its entry (None when unreadable:
    not JSON, or without a ``message`` object)."""
    result: list[DeadLetter] = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("message"), dict):
            entry = None
        result.append((line, entry))
    return result


def read_dead_letters(directory: str) -> list[DeadLetter]:
    """Each non-empty line of the dead-letter file, with its entry (None when unreadable)."""
    return parse_dead_letters(read_dead_letter_file(directory))


def replace_dead_letters(directory: str, original: bytes, lines: list[bytes]) -> Optional[list[bytes]]:
    """Replace the file, read as ``original``, by ``lines`` followed by what writers appended
    since; return those appended lines. None, leaving the file, when it no longer starts with
    ``original`` (someone else rewrote it). The new file is fsynced before it replaces the old
    one. OSError when it cannot be rewritten (the file is left as it was)."""
    with dead_letter_lock(directory):
        current = read_dead_letter_file(directory)
        if not current.startswith(original):
            return None
        appended = [line for line in current[len(original) :].split(b"\n") if line.strip()]
        _rewrite(os.path.join(directory, DEAD_LETTER_FILE), lines + appended)
    return appended


def _rewrite(path: str, lines: list[bytes]) -> None:
    """Replace ``path`` by ``lines``, through a temporary file fsynced first (lock held)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with os.fdopen(
            os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb"
        ) as file:
            file.write(b"".join(line + b"\n" for line in lines))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    with contextlib.suppress(OSError):  # the rename itself, against a power loss
        directory = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
