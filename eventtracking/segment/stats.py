"""Counters of what a backend did with the events it was given, safe to bump from any thread."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Counters:
    """Totals (``accepted``, ``delivered``, ``retries``, ``batches``, ``trimmed``, ``deferred``)
    and per-reason tallies (``skipped``, ``dropped``).
    ``snapshot()`` returns plain dicts, never live state."""

    TOTALS = ("accepted", "delivered", "retries", "batches", "trimmed", "deferred")
    GROUPS = ("skipped", "dropped")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._groups: dict[str, Counter[str]] = {group: Counter() for group in self.GROUPS}

    def add(self, total: str, n: int = 1) -> None:
        with self._lock:
            self._totals[total] += n

    def add_reason(self, group: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self._groups[group][reason] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            result: dict[str, Any] = {name: self._totals[name] for name in self.TOTALS}
            for group, reasons in self._groups.items():
                result[group] = dict(reasons)
        return result

    def reset_after_fork(self) -> None:
        """The child counts its own work; the parent's lock may have been held at fork time."""
        Counters.__init__(self)
