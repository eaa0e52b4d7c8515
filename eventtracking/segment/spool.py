"""Deprecated: the spool moved to :mod:`eventtracking.queue.spool`. This module re-exports its
public names for one release (see CHANGELOG.rst)."""

from eventtracking.queue.spool import *  # noqa: F403  (the deprecated path keeps every public name)
from eventtracking.queue.spool import __all__ as __all__
