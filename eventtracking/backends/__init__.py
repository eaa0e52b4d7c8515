"""
Backends: objects with a ``send(event)`` method that persist or forward events.

Backends are constructed from settings by ``eventtracking.loader`` and called by
``eventtracking.backends.routing.RoutingBackend``; this package imports none of them,
so optional dependencies are only needed by the backends actually configured.
"""

from __future__ import annotations

from typing import Any


def event_name(event: Any) -> Any:
    """The event's name for log messages, without ever raising (events can be anything)."""
    try:
        return event.get("name")
    except Exception:
        return type(event).__name__
