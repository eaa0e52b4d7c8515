"""Where replayed lines come from: files (plain or gzip), directories, stdin, object storage.

:func:`find_sources` turns the command's PATH arguments into an ordered list of
:class:`Source`\\ s; :func:`read_lines` yields a source's lines in lists, one list per chunk
read, so memory stays flat in the file size and the caller's loop runs over plain lists.

Compression is recognised by content (the gzip magic number), not by name, so ``tracking.log.1``
that is really gzip, and gzip piped into stdin, both work. Multi-member gzip files (rotated
logs appended to one another) are read whole.

A directory is walked recursively, in the order of its files' paths below it compared name by
name (``2024/01/b.log`` before ``2024/02/a.log`` before ``2024/10/a.log``: zero-padded date
folders come in time order; in each directory, names sort by their bytes). Hidden files and
hidden directories (a leading ``.``) are left out. Symbolic links are followed only when they
lead to a file inside the directory given (whose own path is used then); a link leading out of
it, and a link to a directory, is not followed, and is named in :attr:`Found.not_followed`.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Iterator, List, Optional, cast

from eventtracking.replay.storage import StorageError, list_objects, local_path, open_object, scheme_of
from eventtracking.wording import plural

STDIN = "-"
CHUNK_BYTES = 1 << 20
# A line longer than this is not kept in memory (Segment takes 32 KB per message anyway).
MAX_LINE_BYTES = 16 << 20
# Stands for a line longer than MAX_LINE_BYTES: it has no "{", so it is never parsed.
OVERLONG_LINE = b"\x00<overlong line>"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Source:
    """One input: ``name`` is what the summary shows, ``key`` what the checkpoint records."""

    name: str
    key: str
    size: Optional[int] = None  # an object's size, as listed (a local file's is looked up)
    # A part of a plain local file (``eventtracking replay --celery`` splits large ones): its
    # bytes from ``start`` (just after a newline) to ``end`` (None: the end of the file), whose
    # first line is line ``first_line + 1`` of the file.
    start: int = 0
    end: Optional[int] = None
    first_line: int = 0

    @property
    def is_stdin(self) -> bool:
        return self.key == STDIN

    @property
    def is_object(self) -> bool:
        """An object in object storage (its key is its URL: :mod:`eventtracking.replay.storage`)."""
        return scheme_of(self.key) is not None


class SourceError(Exception):
    """A PATH argument that names nothing readable."""


@dataclass
class Found:
    """What :func:`find_sources` found: the ``sources`` in order, what it looked at
    (``looked_at``, the PATH arguments) and the links it did not follow (``not_followed``)."""

    sources: List[Source]
    looked_at: List[str]
    not_followed: List[str]

    def nothing_readable(self) -> str:
        """Why there is no input, naming what was looked at (for the usage error)."""
        what = ", ".join(self.looked_at)
        links = f" ({plural(len(self.not_followed), 'link')} not followed)" if self.not_followed else ""
        return (
            f"no input to replay: {what} holds no files (directories are walked recursively; hidden "
            f"files and links out of the directory are left out){links}"
        )


def find_sources(paths: Iterable[str], exclude: Iterable[str] = ()) -> Found:
    """The sources the PATH arguments name, in order. Raises :class:`SourceError`.

    ``exclude`` lists files never to read (the checkpoint, when it sits in a replayed directory).
    """
    excluded = {os.path.realpath(path) for path in exclude}
    found = Found([], [], [])
    for path in paths:
        found.looked_at.append("<stdin>" if path == STDIN else path)
        scheme = scheme_of(path)
        if scheme == "file":
            path = local_path(path)
        elif scheme is not None:
            try:
                found.sources += [Source(url, url, size) for url, size in list_objects(path)]
            except StorageError as exc:
                raise SourceError(str(exc)) from None
            continue
        if path == STDIN:
            found.sources.append(Source("<stdin>", STDIN))
        elif os.path.isdir(path):
            for full in _walk(path, found.not_followed):
                if os.path.realpath(full) not in excluded:
                    found.sources.append(Source(full, os.path.abspath(full)))
        elif os.path.isfile(path):
            found.sources.append(Source(path, os.path.abspath(path)))
        elif os.path.exists(path):
            raise SourceError(f"{path}: not a regular file or directory")
        else:
            raise SourceError(f"{path}: no such file or directory")
    if sum(source.is_stdin for source in found.sources) > 1:
        raise SourceError("'-' (stdin) can be given only once")
    return found


def _walk(top: str, not_followed: List[str]) -> Iterator[str]:
    """The regular files below ``top`` in the documented order (see the module doc)."""
    root = os.path.realpath(top)

    def files_in(directory: str) -> Iterator[str]:
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: os.fsencode(entry.name))
        except OSError as exc:
            raise SourceError(f"{directory}: cannot list it: {exc.strerror}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if os.path.commonpath([root, target]) == root and os.path.isfile(target):
                    yield entry.path
                else:
                    not_followed.append(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                yield from files_in(entry.path)
            elif entry.is_file(follow_symlinks=False):
                yield entry.path

    return files_in(top)


@contextmanager
def open_source(source: Source) -> Iterator[BinaryIO]:
    """A binary stream of the source's decompressed bytes; closed after (stdin is left open)."""
    if source.is_stdin:
        raw = sys.stdin.buffer
        # A pipe's first read may give a single byte: read until 2 bytes (or the end) before
        # deciding, then give those bytes back in front of the rest.
        head = b""
        while len(head) < 2:
            piece = raw.read(2 - len(head))
            if not piece:
                break
            head += piece
        stream = io.BufferedReader(_Prefixed(head, raw), CHUNK_BYTES)
        yield gzip.GzipFile(fileobj=stream, mode="rb") if head == _GZIP_MAGIC else stream  # type: ignore[misc]
        return
    if source.is_object:
        with open_object(source.key) as buffered:
            if buffered.peek(2)[:2] == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=buffered, mode="rb") as unzipped:
                    yield unzipped  # type: ignore[misc]
            else:
                yield buffered
        return
    with open(source.key, "rb", buffering=CHUNK_BYTES) as raw:
        if source.start or source.end is not None:  # a part of a plain file
            raw.seek(source.start)
            if source.end is not None:
                limited = _Limited(raw, source.end - source.start)
                yield io.BufferedReader(limited, CHUNK_BYTES)
            else:
                yield raw
            return
        # A regular file's read gives all it asks for: two bytes tell gzip from plain text.
        if cast(io.BufferedReader, raw).peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw


def may_grow(source: Source, stream: BinaryIO) -> bool:
    """True when more may be appended to the source later: a plain file (a live ``tracking.log``),
    not stdin (a stream that ended), an object (written whole) nor gzip (a rotated, finished log)."""
    return not (source.is_stdin or source.is_object or isinstance(stream, gzip.GzipFile))


class _Prefixed(io.RawIOBase):
    """A raw stream that gives ``head`` first, then what ``stream`` gives (not closing it)."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._read = stream.read1 if hasattr(stream, "read1") else stream.read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            data, self._head = self._head[: len(buffer)], self._head[len(buffer) :]
        else:
            data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Limited(io.RawIOBase):
    """The next ``length`` bytes of ``stream`` (not closing it)."""

    def __init__(self, stream: BinaryIO, length: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(min(len(buffer), self._left)) if self._left > 0 else b""
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


def read_lines(stream: BinaryIO) -> Iterator[List[bytes]]:
    """Yield the stream's lines (without the newline), a list per chunk read (see :class:`LineReader`)."""
    return iter(LineReader(stream))


class LineReader:
    """Iterate over a stream's lines (without the newline), a list per chunk read.

    Chunks come from ``read1``: what one read of the file, the pipe or the gzip member gives
    (at most :data:`CHUNK_BYTES`), so a slow pipe is followed as it goes and a truncated gzip
    file loses only its last piece. A line longer than :data:`MAX_LINE_BYTES` comes out as
    :data:`OVERLONG_LINE`. A last line without a newline is still a line: it comes last, alone
    in its list, and :attr:`unterminated` is True from then on (a live file's line being written,
    or a file that simply ends without a newline).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.unterminated = False

    def __iter__(self) -> Iterator[List[bytes]]:
        stream = self.stream
        read = stream.read1 if hasattr(stream, "read1") else stream.read
        pending = b""
        overlong = False  # inside a line already found too long: drop bytes until its newline
        while True:
            chunk = read(CHUNK_BYTES)
            if not chunk:
                break
            lines = chunk.split(b"\n")
            tail = lines.pop()
            if lines:
                if overlong:
                    lines[0] = OVERLONG_LINE
                    overlong = False
                elif pending:
                    lines[0] = pending + lines[0]
                    if len(lines[0]) > MAX_LINE_BYTES:
                        lines[0] = OVERLONG_LINE
                pending = tail
                yield lines
            elif not overlong:
                pending += tail
            if not overlong and len(pending) > MAX_LINE_BYTES:
                overlong = True
                pending = b""
        if overlong or pending:
            self.unterminated = True
            yield [OVERLONG_LINE if overlong else pending]
