"""
The contract of the processors that keep or drop events (whitelist, regex filter): they fail closed.

A filter decides, for each event, whether it is kept (``keeps(event) -> bool``). Called on one
event it returns the event or raises ``EventEmissionExit``; called on a list of events (as
event-routing-backends does with batches) it returns a new list of the kept ones, in order.

A filter never lets an event through because it failed: when it cannot decide (the event is not
a mapping, its name cannot be compared, a bug), the event is dropped, counted by reason in
``stats()["undecided"]`` and logged (a warning the first time for each reason, then at debug
level). In a list each event is decided on its own, so one bad event costs no other. And if a
filter raises anyway, ``RoutingBackend`` drops the event instead of skipping the processor
(``fails_closed``), which it does for other processors.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Mapping

from eventtracking.backends import event_name
from eventtracking.processors.exceptions import EventEmissionExit

LOG = logging.getLogger(__name__)


class Undecidable(Exception):
    """Raised by ``keeps`` when the event gives it nothing to decide on; the message is the reason."""


def name_of(event: Any) -> Any:
    """The event's ``name`` (None when absent); ``Undecidable`` when `event` is not a mapping."""
    if type(event) is dict or isinstance(event, Mapping):  # the exact type first: it is most events, and fast
        return event.get("name")
    raise Undecidable(f"the event is a {type(event).__name__}, not a mapping")


class EventFilter:
    """Base of filtering processors; subclasses implement ``keeps``. See the module docstring."""

    # RoutingBackend drops the event when a processor with this flag raises (anything but
    # EventEmissionExit) instead of skipping it: a filter's failure must not let an event through.
    fails_closed = True

    def keeps(self, event: Any) -> bool:
        """Whether `event` passes; raise (``Undecidable`` or anything) when it cannot be decided."""
        raise NotImplementedError

    def __call__(self, event: Any) -> Any:
        """Return `event` if kept, else raise ``EventEmissionExit``; a list gives the kept list."""
        if isinstance(event, list):
            return [item for item in event if self._decide(item)]
        try:
            kept = self.keeps(event)
        except Exception as error:
            self._count_undecided(event, error)
            raise EventEmissionExit() from None
        if kept:
            return event
        raise EventEmissionExit()

    def _decide(self, event: Any) -> bool:
        try:
            return bool(self.keeps(event))
        except Exception as error:
            self._count_undecided(event, error)
            return False

    def _count_undecided(self, event: Any, error: Exception) -> None:
        reason = str(error) if isinstance(error, Undecidable) else type(error).__name__
        with _LOCK:
            # Made on first use: subclasses need not call an __init__ of ours.
            undecided = self.__dict__.setdefault("_undecided", Counter())
            undecided[reason] += 1
            first = undecided[reason] == 1
        log = LOG.warning if first else LOG.debug
        log(
            "%s dropped event %r: cannot decide (%s)%s",
            type(self).__name__,
            event_name(event),
            reason,
            "; further drops for this reason are logged at debug level" if first else "",
            exc_info=not isinstance(error, Undecidable),
        )

    def stats(self) -> dict[str, Any]:
        """``{"undecided": {reason: count}}``: the events dropped because they could not be decided."""
        with _LOCK:
            return {"undecided": dict(self.__dict__.get("_undecided", {}))}


_LOCK = threading.Lock()  # counting happens only on the failure path: one lock for all filters
