"""
Track application events. Supports sending events to multiple backends.

An event is a dict::

    {"name": str, "timestamp": aware UTC datetime, "data": dict, "context": dict}

``context`` is the merge of every context entered (and not yet exited) at emit time,
later contexts overriding the keys of earlier ones.

Best practices (as in Open edX event-tracking):

* Namespace event names with dots to avoid collisions, e.g. ``org.edx.video.stop``.
* Do not emit events that you do not own; document equivalences instead.
"""

from __future__ import annotations

import logging
from contextlib import ContextDecorator
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from eventtracking.backends.routing import Processor, RoutingBackend
from eventtracking.locator import DefaultContextLocator

UNKNOWN_EVENT_TYPE = "unknown"
DEFAULT_TRACKER_NAME = "default"
TRACKERS: dict[str, Tracker] = {}
LOG = logging.getLogger(__name__)

_MISSING = object()


class Tracker:
    """
    Build events and hand them to a ``RoutingBackend`` made of `backends` and `processors`.

    `backends` maps names to objects with a ``send(event)`` method; `processors` is a
    list of callables run on each event first (see ``RoutingBackend`` for the exact
    rules). `context_locator` decides where the context stack lives; the default
    shares one stack across threads, ``ThreadLocalContextLocator`` isolates threads
    and asyncio tasks.

    ``emit`` never raises because of a backend or processor failure: those are logged
    and swallowed.
    """

    def __init__(
        self,
        backends: Mapping[Any, Any] | None = None,
        context_locator: Any = None,
        processors: Iterable[Processor] | None = None,
    ) -> None:
        self.routing_backend = RoutingBackend(backends=backends, processors=processors)
        self.context_locator = context_locator or DefaultContextLocator()

    @property
    def located_context(self) -> Any:
        """The context stack (name -> context dict) visible to the caller."""
        return self.context_locator.get()

    @property
    def backends(self) -> Mapping[Any, Any]:
        """The registered backends, by name, in the order they are called."""
        return self.routing_backend.backends

    @property
    def processors(self) -> list[Processor]:
        """The registered processors, in the order they run."""
        return self.routing_backend.processors

    def get_backend(self, name: Any) -> Any:
        """Return the backend registered as `name`; ``KeyError`` if there is none."""
        return self.backends[name]

    def emit(self, name: str | None = None, data: Mapping[str, Any] | None = None) -> None:
        """
        Emit an event named `name` (default ``"unknown"``) carrying `data` (default ``{}``).

        The event is stamped with the current time as an aware UTC datetime and with the
        resolved context. Neither `data` nor the entered contexts are mutated: the
        router works on a copy.
        """
        try:
            event = {
                "name": name or UNKNOWN_EVENT_TYPE,
                # `datetime` is looked up on this module so tests can patch
                # eventtracking.tracker.datetime, as they did with the original.
                "timestamp": datetime.now(timezone.utc),
                "data": data or {},
                "context": self.resolve_context(),
            }
            self.routing_backend.send(event)
        except Exception:
            # RoutingBackend.send already swallows backend/processor errors; this only
            # guards against a broken context locator or a replaced routing_backend.
            LOG.exception("Unable to emit event %r", name)

    def resolve_context(self) -> dict[str, Any]:
        """
        Return a new dict merging all entered contexts; later contexts override
        the keys of earlier ones.
        """
        contexts = self.located_context.values()
        if len(contexts) == 1:  # a request's one context, the common case: one C-level copy
            for ctx in contexts:
                return dict(ctx)
        merged: dict[str, Any] = {}
        for ctx in contexts:
            merged.update(ctx)
        return merged

    def enter_context(self, name: Any, ctx: Mapping[str, Any]) -> None:
        """
        Enter the context `name`: events emitted until it is exited include `ctx`'s
        key-value pairs, unless a context entered later overrides them.

        Entering a name that is already entered replaces its dict in place (it keeps
        its original position in the stack).
        """
        self.located_context[name] = ctx

    def exit_context(self, name: Any) -> None:
        """Exit the context `name`. Raises ``KeyError`` if it was not entered."""
        del self.located_context[name]

    def context(self, name: Any, ctx: Mapping[str, Any]) -> ContextDecorator:
        """
        Apply context `name` for the duration of the ``with`` block (or of each call of a
        function it decorates, as the original's ``contextmanager`` allowed).

        The context is exited even if the block raises. If `name` was already entered
        when the block started, its previous dict is restored on exit rather than
        removed, so nesting the same name is safe.
        """
        return _EnteredContext(self, name, ctx)


class _EnteredContext(ContextDecorator):
    """``Tracker.context``: a class, which costs a request about half what a generator-based
    ``contextmanager`` does."""

    def __init__(self, tracker: Tracker, name: Any, ctx: Mapping[str, Any]) -> None:
        self._tracker = tracker
        self._name = name
        self._ctx = ctx
        self._previous: Any = _MISSING

    def _recreate_cm(self) -> _EnteredContext:
        # Each call of a decorated function enters on its own (recursion and threads included).
        return _EnteredContext(self._tracker, self._name, self._ctx)

    def __enter__(self) -> None:
        tracker = self._tracker
        self._previous = tracker.located_context.get(self._name, _MISSING)
        tracker.enter_context(self._name, self._ctx)

    def __exit__(self, *_exc: Any) -> None:
        if self._previous is _MISSING:
            self._tracker.exit_context(self._name)
        else:
            self._tracker.located_context[self._name] = self._previous


def register_tracker(tracker: Tracker, name: str = DEFAULT_TRACKER_NAME) -> None:
    """
    Make `tracker` globally available as `name`. Without `name` it becomes the default
    tracker used by the module-level ``emit``.
    """
    TRACKERS[name] = tracker


def get_tracker(name: str = DEFAULT_TRACKER_NAME) -> Tracker:
    """Return the tracker registered as `name`; ``KeyError`` if none was registered."""
    return TRACKERS[name]


def emit(name: str | None = None, data: Mapping[str, Any] | None = None) -> None:
    """Call ``emit`` on the default tracker (``KeyError`` if none is registered)."""
    return get_tracker().emit(name=name, data=data)
