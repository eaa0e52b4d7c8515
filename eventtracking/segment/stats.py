"""Deprecated: the counters moved to :mod:`eventtracking.queue.stats`. This module re-exports them
for one release (see CHANGELOG.rst)."""

from eventtracking.queue.stats import WARNING_INTERVAL, Counters, DropWarning

__all__ = ["WARNING_INTERVAL", "Counters", "DropWarning"]
