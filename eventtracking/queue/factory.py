"""Choosing a worker's buffer from its options: memory, or a spool directory."""

from __future__ import annotations

import logging
from typing import Optional

from eventtracking.queue.base import Buffer
from eventtracking.queue.memory import MemoryBuffer

log = logging.getLogger(__name__)


def open_buffer(
    owner: str,
    memory_bytes: int,
    spool_dir: Optional[str] = None,
    spool_max_bytes: int = 1024**3,
    fsync: bool = False,
) -> Buffer:
    """The buffer of a sender: memory, or the spool in ``spool_dir`` (this process's part of it).

    When the directory cannot be used at all, memory, with a warning naming ``owner``: the
    application must start.
    """
    if spool_dir is None:
        return MemoryBuffer(memory_bytes)
    from eventtracking.queue.spool import Spool  # only spooling workers pay for it

    try:
        return Spool(spool_dir, max_bytes=spool_max_bytes, fsync=fsync, memory_bytes=memory_bytes)
    except OSError as error:
        log.warning("%s: cannot open the spool in %s (%s): buffering in memory", owner, spool_dir, error)
        return MemoryBuffer(memory_bytes)
