"""The spool directory as a whole: preparing it, scanning it for parts to adopt, and surveying it.

Liveness is the lock, never the pid: a part whose ``lock`` this process can take was left by a
process that is gone, and is adopted (:func:`adopt`); one whose lock is held is measured only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from typing import Any, Optional

from eventtracking.queue.spool.backlog import SpoolCounts
from eventtracking.queue.spool.part import (
    LOCK_FILE,
    PART_PREFIX,
    STAGING_PREFIX,
    Part,
    remove_part_files,
)
from eventtracking.queue.spool.records import SEGMENT_NAME, Position, log, open_nofollow

STAGING_MAX_AGE = 60.0  # a .new-... directory this old whose lock is free was left by a dead process
LEGACY = "."  # the name of the part an earlier version wrote at the top of the directory


class SpoolUnsafe(PermissionError):
    """The spool directory can be written by other users and cannot be made private."""


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


class Adopted:
    """The other parts of a Spool's directory: those it adopted (``parts``; ``bytes``: their
    unacknowledged bytes) and the live ones as measured at the last :meth:`scan` (``live``;
    ``foreign_bytes``: their segment files). ``scan`` runs in one thread at a time, without the
    Spool's lock; every other method, with it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.parts: list[Part] = []
        self.bytes = 0
        self.live: list[dict[str, Any]] = []
        self.foreign_bytes = 0
        self._known: set[str] = set()  # parts adopted (or the own one): never tried again
        self._unreadable: set[str] = set()  # parts it could not look at (warned once)

    def scan(self, own: Optional[str]) -> tuple[list[Part], Optional[list[dict[str, Any]]]]:
        """Lock and read the parts whose owner is gone, skipping ``own`` (this process's): (those
        parts, to :meth:`add`; the live parts, None when the directory cannot be listed)."""
        left, live = _scan(
            self.directory, self._known if own is None else self._known | {own}, self._unreadable
        )
        return [part for part in left if adopt(self.directory, part)], live

    def add(self, part: Part, counts: SpoolCounts) -> bool:
        """Take a part :meth:`scan` read over, counting what it holds: True when it is queued,
        False when it held nothing (it is removed)."""
        self._known.add(part.name)
        counts.adopted += 1
        counts.recovered += part.count
        counts.recovered_bytes += part.bytes
        counts.corrupt += part.corrupt
        if not part.has_unread():
            part.remove()
            return False
        self.parts.append(part)
        self.bytes += part.pending_bytes
        log.info(
            "spool %s: adopted part %s left by process %s: %d messages",
            self.directory,
            part.name,
            part.pid,
            part.count,
        )
        return True

    def measured(self, live: list[dict[str, Any]]) -> None:
        self.live = live
        self.foreign_bytes = sum(part["disk_bytes"] for part in live)

    def next_unread(self) -> Optional[Part]:
        """The oldest adopted part with records not yet taken."""
        return next((part for part in self.parts if part.has_unread()), None)

    def settle(self, part: Part, end: Position, flying: bool) -> None:
        """Everything of ``part`` before ``end`` is settled: acknowledge it; remove the part once
        all of it is taken and nothing of it is in flight."""
        part.acknowledge(end)
        if not part.has_unread() and not flying:
            self.parts.remove(part)
            self.bytes -= part.pending_bytes  # what corrupt records left counted
            part.remove()
            log.info(
                "spool %s: part %s (process %s) delivered and removed", self.directory, part.name, part.pid
            )

    def pending(self) -> tuple[int, int]:
        return sum(part.pending_count for part in self.parts), self.bytes

    def release(self) -> None:
        """Let go of every adopted part as it is (a later scan, here or elsewhere, adopts it again)."""
        for part in self.parts:
            part.release()


def _scan(
    directory: str, known: set[str], unreadable: set[str]
) -> tuple[list[Part], Optional[list[dict[str, Any]]]]:
    """Lock the parts of ``directory`` whose owner is gone, skipping the names in ``known``:
    (those parts, not loaded yet; the live parts as :func:`survey` lists them, None when the
    directory cannot be listed). Removes what dead processes left half-created. A part that
    cannot be looked at is warned about once (its name goes to ``unreadable``) and tried again
    at the next scan."""
    try:
        entries = list(os.scandir(directory))
    except OSError as error:
        log.warning("spool %s: cannot list the directory: %s", directory, error)
        return [], None
    left: list[Part] = []
    live: list[dict[str, Any]] = []
    for entry in entries:
        name = entry.name
        if name in known:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if name.startswith(STAGING_PREFIX):
                _remove_stale_staging(entry.path)
            elif name.startswith(PART_PREFIX):
                part, pid = Part.try_lock(entry.path, name)
                if part is not None:
                    left.append(part)
                elif pid is not None:
                    live.append(_live(entry.path, name, pid))
        except OSError as error:  # e.g. another user's part: said once, tried again each scan
            if name not in unreadable:
                unreadable.add(name)
                log.warning("spool %s: cannot look at %s: %s", directory, name, error)
    if LEGACY not in known and any(SEGMENT_NAME.fullmatch(entry.name) for entry in entries):
        try:  # segments of an earlier version, at the top
            part, _ = Part.try_lock(directory, LEGACY, legacy=True)
        except OSError as error:
            part = None
            if LEGACY not in unreadable:
                unreadable.add(LEGACY)
                log.warning("spool %s: cannot take its old segments over: %s", directory, error)
        if part is not None:
            left.append(part)
    return left, live


def adopt(directory: str, part: Part) -> bool:
    """Read a part locked by :func:`scan` (:meth:`Part.load`); False (logged, lock let go) when
    it cannot be read."""
    try:
        part.load()
    except OSError as error:
        log.warning("spool %s: cannot read part %s: %s", directory, part.name, error)
        part.release()
        return False
    return True


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
        candidates.append((directory, LEGACY, True))
    for path, name, legacy in candidates:
        part, pid = Part.try_lock(path, name, legacy)
        if part is None:
            if pid is not None:
                result.append(_live(path, name, pid))
            continue
        try:
            part.load()
            result.append(
                {
                    "name": name,
                    "pid": part.pid,
                    "state": "left",
                    "pending": part.count,
                    "pending_bytes": part.bytes,
                    "disk_bytes": part.disk_bytes(),
                }
            )
        finally:
            part.release()
    return result


def _live(path: str, name: str, pid: str) -> dict[str, Any]:
    """A part another process holds, as listed: its segment files' size, measured now."""
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            if SEGMENT_NAME.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_size
    return {"name": name, "pid": pid, "state": "live", "disk_bytes": total}


def _remove_stale_staging(path: str) -> None:
    """A ``.new-...`` directory older than a minute whose lock is free: its creator died."""
    if time.time() - os.lstat(path).st_mtime < STAGING_MAX_AGE:
        return
    try:
        fd = open_nofollow(os.path.join(path, LOCK_FILE), os.O_RDWR)
    except FileNotFoundError:
        remove_part_files(path, keep_directory=False, quiet=True)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    finally:
        os.close(fd)
    remove_part_files(path, keep_directory=False, quiet=True)
