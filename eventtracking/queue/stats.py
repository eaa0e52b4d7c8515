"""Counters of what a backend did with the events it was given, safe to bump from any thread."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Progress:
    """Where a backend's deliveries stand, typed: what a caller that watches them (the replay's
    back-pressure, drain, stop and checkpoint rules) reads instead of ``stats()`` keys.

    ``accepted`` .. ``deferred``, ``skipped``, ``dropped``, ``reasons`` and ``last_error`` are the
    :class:`Counters` of the same names; ``in_flight`` and ``buffered_bytes`` what the buffer holds
    not yet answered (messages, bytes); ``dead_letters`` the messages a spool kept as refused (0
    without a spool). A copy: never live state.
    """

    accepted: int = 0
    delivered: int = 0
    retries: int = 0
    deferred: int = 0
    in_flight: int = 0
    buffered_bytes: int = 0
    last_error: Optional[str] = None
    dead_letters: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)
    dropped: Mapping[str, int] = field(default_factory=dict)
    reasons: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> Progress:
        """The progress in a backend's ``stats()`` (a :meth:`Counters.snapshot` with, when it has
        a buffer, ``in_flight``, ``buffered_bytes`` and a spool's ``spool``)."""
        spool = stats.get("spool") or {}
        return cls(
            accepted=stats.get("accepted", 0),
            delivered=stats.get("delivered", 0),
            retries=stats.get("retries", 0),
            deferred=stats.get("deferred", 0),
            in_flight=stats.get("in_flight", 0),
            buffered_bytes=stats.get("buffered_bytes", 0),
            last_error=stats.get("last_error"),
            dead_letters=spool.get("dead_letters") or 0,
            skipped=dict(stats.get("skipped") or {}),
            dropped=dict(stats.get("dropped") or {}),
            reasons={str(reason): str(detail) for reason, detail in (stats.get("reasons") or {}).items()},
        )


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
