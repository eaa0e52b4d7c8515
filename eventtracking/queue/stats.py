"""Counters of what a backend did with the events it was given, safe to bump from any thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, Optional

WARNING_INTERVAL = 10.0  # seconds between two warnings of one DropWarning


class Counters:
    """Totals (``accepted``, ``delivered``, ``retries``, ``batches``, ``trimmed``, ``deferred``),
    per-reason tallies (``skipped``, ``dropped``), and what the failures were: ``reasons``
    (reason -> the latest detail, e.g. ``"gave_up": "network error: connection refused
    (http://127.0.0.1:9)"``) and ``last_error`` (the latest unsuccessful answer, retried or
    not; None before any). ``snapshot()`` returns plain dicts, never live state."""

    TOTALS: tuple[str, ...] = ("accepted", "delivered", "retries", "batches", "trimmed", "deferred")
    GROUPS: tuple[str, ...] = ("skipped", "dropped")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Counter[str] = Counter()
        self._groups: dict[str, Counter[str]] = {group: Counter() for group in self.GROUPS}
        self._reasons: dict[str, str] = {}
        self._last_error: Optional[str] = None

    def add(self, total: str, n: int = 1) -> None:
        with self._lock:
            self._totals[total] += n

    def add_reason(self, group: str, reason: str, n: int = 1, detail: Optional[str] = None) -> None:
        """Count ``n`` under ``group``/``reason``; ``detail`` (one line) is kept as the latest
        detail of ``reason`` in ``reasons``."""
        with self._lock:
            self._groups[group][reason] += n
            if detail:
                self._reasons[reason] = detail

    def note_error(self, detail: str) -> None:
        """Remember the latest unsuccessful answer (``last_error``), even one retried later."""
        with self._lock:
            self._last_error = detail

    @property
    def last_error(self) -> Optional[str]:
        return self._last_error

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            result: dict[str, Any] = {name: self._totals[name] for name in self.TOTALS}
            for group, reasons in self._groups.items():
                result[group] = dict(reasons)
            result["reasons"] = dict(self._reasons)
            result["last_error"] = self._last_error
        return result

    def reset_after_fork(self) -> None:
        """The child counts its own work; the parent's lock may have been held at fork time."""
        Counters.__init__(self)


class DropWarning:
    """A warning said at most once every ``interval`` seconds, with how many drops it covers.

    ``dropped(log, message, *args)`` counts one drop and, when the last warning is old enough,
    logs ``message % (*args, drops since the last warning)``: a flood of drops costs one log line
    per interval, not one per event.
    """

    def __init__(self, interval: float = WARNING_INTERVAL) -> None:
        self.interval = interval
        self._since_warning = 0
        self._last_warning = 0.0

    def dropped(self, log: logging.Logger, message: str, *args: Any) -> None:
        self._since_warning += 1
        now = time.monotonic()
        if now - self._last_warning >= self.interval:
            log.warning(message, *args, self._since_warning)
            self._last_warning = now
            self._since_warning = 0
