"""Exceptions raised by processors and by configuration loading."""

from __future__ import annotations


class EventEmissionExit(Exception):
    """
    Raised by a processor to drop the current event.

    No later processor runs and no backend receives the event. This is the normal,
    silent way to filter events; it is never logged as an error.
    """


class NoTransformerImplemented(Exception):
    """
    Raised by a backend (event-routing-backends' transformers) that has no transformer for an event.

    A router logs it at info level, not as an error: the event simply is not for that backend.
    """


class NoBackendEnabled(Exception):
    """
    Raised by a backend that is not enabled for an event.

    A router logs it at info level, not as an error, as the original package does.
    """


class ImproperlyConfigured(ValueError):
    """
    Raised at construction time when settings cannot be turned into working objects.

    Examples: an ENGINE that cannot be imported, an invalid regular expression, an
    unknown filter type. It subclasses ``ValueError`` because the original package
    raised ``ValueError`` for bad ENGINE strings, and callers catch that.
    """
