"""Fault injection for the collector: the failures a delivery pipeline must survive.

Queued faults are consumed one per incoming message request (``/v1/batch`` and the
single-message routes), first added first used.  Rejected event names persist until
:meth:`FaultPlan.clear`.  Every method is thread-safe.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Deque, FrozenSet, Iterable, List, Optional


@dataclass(frozen=True)
class Fault:
    """What to do to one request.

    ``delay`` seconds are slept first; then ``status`` is answered (nothing stored), or the
    connection is dropped without a response (``drop``), or, with neither, the request is
    handled normally.
    """

    status: Optional[int] = None
    retry_after: Optional[float] = None
    drop: bool = False
    delay: Optional[float] = None


class FaultPlan:
    """The collector's queue of faults to inject (``collector.faults``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # [fault, remaining uses]; remaining None means "until clear()".
        self._queue: Deque[List] = deque()
        self._rejected_events: FrozenSet[str] = frozenset()

    def add(
        self,
        status: Optional[int] = None,
        times: Optional[int] = 1,
        retry_after: Optional[float] = None,
        drop: bool = False,
        delay: Optional[float] = None,
    ) -> FaultPlan:
        """Inject a fault into the next ``times`` requests (``None``: every request until clear).

        ``status``: answer with this HTTP status and store nothing; ``retry_after``
        (seconds, only with a status) adds a ``Retry-After`` header.  ``drop``: read the
        request, then close the connection without answering.  ``delay``: sleep that
        many seconds first (combined with neither of the others, the request is then
        handled and stored normally).  Returns the plan, so calls can be chained.
        """
        if status is None and not drop and delay is None:
            raise ValueError("a fault needs a status, drop=True or a delay")
        if status is not None and drop:
            raise ValueError("a dropped request gets no status")
        if status is not None and not 200 <= status <= 599:
            raise ValueError("status must be an HTTP status from 200 to 599")
        if retry_after is not None and (status is None or retry_after < 0):
            raise ValueError("retry_after needs a status and must be >= 0")
        if delay is not None and delay < 0:
            raise ValueError("delay must be >= 0")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None for every request)")
        fault = Fault(status=status, retry_after=retry_after, drop=drop, delay=delay)
        with self._lock:
            self._queue.append([fault, times])
        return self

    def reject_event(self, event: str) -> FaultPlan:
        """Refuse (400) every request holding a message whose ``event`` is ``event``, until clear()."""
        with self._lock:
            self._rejected_events = self._rejected_events | {event}
        return self

    def clear(self) -> None:
        """Forget every queued fault and rejected event."""
        with self._lock:
            self._queue.clear()
            self._rejected_events = frozenset()

    @property
    def pending(self) -> Optional[int]:
        """How many queued fault uses are left (``None`` if one repeats until clear())."""
        with self._lock:
            remaining = [times for _, times in self._queue]
        return None if None in remaining else sum(remaining)

    def take(self) -> Optional[Fault]:
        """Consume and return the fault for the request being handled, if any."""
        with self._lock:
            if not self._queue:
                return None
            entry = self._queue[0]
            fault, times = entry
            if times is not None:
                if times <= 1:
                    self._queue.popleft()
                else:
                    entry[1] = times - 1
            return fault

    def rejected_event_in(self, messages: Iterable[dict]) -> Optional[str]:
        """The first rejected event name found among ``messages``, or None."""
        rejected = self._rejected_events  # an immutable snapshot: no lock needed
        if not rejected:
            return None
        for message in messages:
            event = message.get("event")
            if isinstance(event, str) and event in rejected:
                return event
        return None
