"""
Backends: objects with a ``send(event)`` method that persist or forward events.

Backends are constructed from settings by ``eventtracking.loader`` and called by
``eventtracking.backends.routing.RoutingBackend``; this package imports none of them,
so optional dependencies are only needed by the backends actually configured.
"""
