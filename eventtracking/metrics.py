"""Delivery metrics of every background sender, through the OpenTelemetry metrics API.

Every owner registered with :mod:`eventtracking.background` that is a :class:`Reporter` (it
offers ``stats()`` and ``metric_attributes()``: the owned SegmentBackend, the publishers of
:mod:`eventtracking.publisher`, the Segment client) is reported, read only when the site's
OpenTelemetry SDK collects: the instruments are *observable*, their callbacks read ``stats()``, and
``send()`` pays nothing. Without ``opentelemetry-api`` (the ``metrics`` extra; the SDK brings it)
nothing is installed; without an SDK configured, the API is a no-op.

Instruments (meter ``eventtracking``):

- counters: ``eventtracking.accepted``, ``eventtracking.delivered`` (a publisher's ``published``),
  ``eventtracking.retries``; ``eventtracking.dropped`` and ``eventtracking.skipped`` with
  attribute ``reason``;
- up-down counters (levels): ``eventtracking.pending`` (accepted, not yet settled),
  ``eventtracking.pending.size`` and ``eventtracking.spool.size`` (the spool's files), in bytes.

Attributes: the owner's own (``eventtracking.sender``: ``SegmentBackend``, ``Client`` or the
publisher's name; ``eventtracking.host``: the Segment host, ``https://api.segment.io``), and
``host.name`` (this machine). Never
the write key: attributes name a destination, not credentials. Senders with the same attributes
are summed.

Counters stay monotonic across fork: a forked child's senders start from zero
(``after_fork_in_child``), so the child reports what its process last reported before the fork
plus its own counts; a figure never goes back.

``EVENTTRACKING_STATS_LOG_INTERVAL`` (seconds; unset or 0: off), or :func:`log_stats_every`, adds
one INFO line per sender at that interval on logger ``eventtracking.metrics``, with the same figures.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import weakref
from typing import Any, Callable, Iterable, Optional, Protocol, runtime_checkable

from eventtracking import background

log = logging.getLogger(__name__)

METER_NAME = "eventtracking"
LOG_INTERVAL_VARIABLE = "EVENTTRACKING_STATS_LOG_INTERVAL"
Key = tuple[str, str]  # (counter, reason): ("delivered", ""), ("dropped", "gave_up")


@runtime_checkable
class Reporter(Protocol):
    """A background sender whose figures are reported.

    ``stats()`` is its plain-data snapshot: ``accepted``, ``delivered`` (a publisher says
    ``published``), ``retries``, ``dropped`` / ``skipped`` (``{reason: count}``), ``in_flight`` /
    ``buffered_bytes`` (a publisher: ``pending`` / ``pending_bytes``) and, with a spool,
    ``spool["disk_bytes"]``. ``metric_attributes()`` names it: ``{"eventtracking.sender": ...}``,
    and ``"eventtracking.host"`` (a URL's scheme, host and port) where it has one; never a key.
    """

    def stats(self) -> dict[str, Any]: ...

    def metric_attributes(self) -> dict[str, str]: ...


def counts(stats: dict[str, Any]) -> dict[Key, int]:
    """The monotonic figures of one ``stats()``."""
    result: dict[Key, int] = {
        ("accepted", ""): stats.get("accepted", 0),
        ("delivered", ""): stats.get("delivered", stats.get("published", 0)),
        ("retries", ""): stats.get("retries", 0),
    }
    for group in ("dropped", "skipped"):
        for reason, number in (stats.get(group) or {}).items():
            result[(group, reason)] = number
    return result


def levels(stats: dict[str, Any]) -> dict[str, int]:
    """What one ``stats()`` holds now: ``pending`` (events), ``pending.size`` and ``spool.size``."""
    return {
        "pending": stats.get("in_flight", stats.get("pending", 0)),
        "pending.size": stats.get("buffered_bytes", stats.get("pending_bytes", 0)),
        "spool.size": (stats.get("spool") or {}).get("disk_bytes", 0),
    }


class _Totals:
    """One reporter's counts as reported in this process: a fork folds the last ones into ``base``."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.base: dict[Key, int] = {}
        self.last: dict[Key, int] = {}

    def observe(self, current: dict[Key, int]) -> dict[Key, int]:
        pid = os.getpid()
        if pid != self.pid:  # a fork's child: its sender started from zero; its figures go on
            self.pid, self.base = pid, dict(self.last)
        for key in self.base.keys() | current.keys():
            value = self.base.get(key, 0) + current.get(key, 0)
            self.last[key] = max(value, self.last.get(key, 0))
        return dict(self.last)


class Figures:
    """Every reporter's figures, read from ``stats()`` when asked (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: weakref.WeakKeyDictionary[Any, _Totals] = weakref.WeakKeyDictionary()
        self.host = socket.gethostname()

    def read(self) -> list[tuple[dict[str, str], dict[Key, int], dict[str, int]]]:
        """``(attributes, counts, levels)`` of every live reporter, in registration order."""
        result = []
        for owner in background.owners():
            if not isinstance(owner, Reporter):
                continue
            try:
                stats = owner.stats()
                attributes = {**owner.metric_attributes(), "host.name": self.host}
            except Exception:  # a reporter's bug must not cost the others their figures
                log.exception("metrics: %r could not report", owner)
                continue
            with self._lock:
                totals = self._totals.get(owner)
                if totals is None:
                    totals = self._totals[owner] = _Totals()
                observed = totals.observe(counts(stats))
            result.append((attributes, observed, levels(stats)))
        return result


COUNTERS: dict[str, tuple[str, str, str]] = {  # instrument -> (counts' name, unit, description)
    "eventtracking.accepted": ("accepted", "{event}", "events accepted for delivery"),
    "eventtracking.delivered": ("delivered", "{event}", "events the destination took"),
    "eventtracking.retries": ("retries", "{retry}", "requests tried again"),
    "eventtracking.dropped": ("dropped", "{event}", "events lost, by reason"),
    "eventtracking.skipped": ("skipped", "{event}", "events not sent, by reason"),
}
LEVELS: dict[str, tuple[str, str, str]] = {  # instrument -> (levels' name, unit, description)
    "eventtracking.pending": ("pending", "{event}", "events accepted, not yet settled"),
    "eventtracking.pending.size": ("pending.size", "By", "bytes of the pending events"),
    "eventtracking.spool.size": ("spool.size", "By", "bytes of the spool's files"),
}


def create_instruments(meter: Any, figures: Figures) -> list[Any]:
    """Create the observable instruments on ``meter`` (an ``opentelemetry.metrics.Meter``)."""
    from opentelemetry.metrics import CallbackOptions, Observation

    def counter(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            summed: dict[tuple[tuple[str, str], ...], int] = {}
            for attributes, observed, _ in figures.read():
                for (figure, reason), value in observed.items():
                    if figure == name:
                        labels = {**attributes, "reason": reason} if reason else attributes
                        key = tuple(sorted(labels.items()))
                        summed[key] = summed.get(key, 0) + value
            return [Observation(value, dict(key)) for key, value in summed.items()]

        return observe

    def level(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            summed: dict[tuple[tuple[str, str], ...], int] = {}
            for attributes, _, now in figures.read():
                key = tuple(sorted(attributes.items()))
                summed[key] = summed.get(key, 0) + now[name]
            return [Observation(value, dict(key)) for key, value in summed.items()]

        return observe

    instruments = [
        meter.create_observable_counter(
            instrument, callbacks=[counter(figure)], unit=unit, description=description
        )
        for instrument, (figure, unit, description) in COUNTERS.items()
    ]
    instruments += [
        meter.create_observable_up_down_counter(
            instrument, callbacks=[level(figure)], unit=unit, description=description
        )
        for instrument, (figure, unit, description) in LEVELS.items()
    ]
    return instruments


FIGURES = Figures()
_installed: Optional[list[Any]] = None
_install_lock = threading.Lock()


def install() -> bool:
    """Create the instruments on the global meter provider (once per process) and start the INFO
    line when ``EVENTTRACKING_STATS_LOG_INTERVAL`` asks for it; False without opentelemetry-api.
    Called by the first :class:`~eventtracking.queue.worker.BatchWorker` of a process; never raises."""
    global _installed
    try:
        interval = float(os.environ.get(LOG_INTERVAL_VARIABLE) or 0)
    except ValueError:
        log.warning("%s must be a number of seconds: the stats line stays off", LOG_INTERVAL_VARIABLE)
        interval = 0.0
    if interval > 0:
        log_stats_every(interval)
    with _install_lock:
        if _installed is not None:
            return True
        try:
            from opentelemetry import metrics as otel
        except ImportError:
            return False
        try:
            _installed = create_instruments(otel.get_meter(METER_NAME), FIGURES)
        except Exception:
            log.exception("metrics: the OpenTelemetry instruments could not be created")
            return False
        return True


def format_line(attributes: dict[str, str], observed: dict[Key, int], now: dict[str, int]) -> str:
    """One sender's figures as the INFO line says them (the same figures as the instruments)."""
    name = " ".join(value for key, value in attributes.items() if key != "host.name")
    parts = [f"{figure}={observed.get((figure, ''), 0)}" for figure in ("accepted", "delivered", "retries")]
    for group in ("dropped", "skipped"):
        reasons = {reason: value for (figure, reason), value in observed.items() if figure == group}
        parts.append(f"{group}={sum(reasons.values())}")
        parts.extend(f"{group}.{reason}={value}" for reason, value in sorted(reasons.items()))
    parts.append(f"pending={now['pending']} ({now['pending.size']} bytes)")
    parts.append(f"spool={now['spool.size']} bytes")
    return f"{name}: " + " ".join(parts)


class StatsLog:
    """The periodic INFO line: a background owner with a thread of its own (off until started)."""

    exit_timeout = 0.0

    def __init__(self, figures: Figures) -> None:
        self.figures = figures
        self.interval = 0.0
        self.worker = background.BackgroundThread(self._run, "eventtracking-stats-log")
        background.register(self)

    def start(self, interval: float) -> None:
        self.interval = interval
        self.worker.ensure_started()

    def log_once(self) -> None:
        for attributes, observed, now in self.figures.read():
            log.info("eventtracking stats: %s", format_line(attributes, observed, now))

    def _run(self) -> None:
        while not self.worker.stopping.wait(self.interval):
            try:
                self.log_once()
            except Exception:
                log.exception("metrics: the stats line failed")

    def after_fork_in_child(self) -> None:
        self.worker.after_fork_in_child()
        if self.interval > 0:
            self.worker.ensure_started()

    def close(self, timeout: Optional[float] = None) -> bool:
        self.worker.stop()
        self.worker.join(timeout)
        return True


_stats_log: Optional[StatsLog] = None
_stats_log_lock = threading.Lock()


def log_stats_every(interval: float) -> None:
    """Log every sender's figures at INFO every ``interval`` seconds (0: stop)."""
    global _stats_log
    with _stats_log_lock:
        if _stats_log is not None and (interval <= 0 or interval != _stats_log.interval):
            _stats_log.close(timeout=1.0)
            background.unregister(_stats_log)
            _stats_log = None
        if interval > 0 and _stats_log is None:
            _stats_log = StatsLog(FIGURES)
            _stats_log.start(interval)
