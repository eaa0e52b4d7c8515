"""Deprecated: the buffers moved to :mod:`eventtracking.queue`. This module re-exports them for
one release (see CHANGELOG.rst)."""

from eventtracking.queue.base import Buffer, SenderWait
from eventtracking.queue.factory import open_buffer
from eventtracking.queue.memory import MemoryBuffer

__all__ = ["Buffer", "MemoryBuffer", "SenderWait", "open_buffer"]
