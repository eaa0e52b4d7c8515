"""Drop events whose names are not on a configured whitelist."""

from __future__ import annotations

from typing import Any, Iterable

from eventtracking.processors.filtering import EventFilter, name_of

_MESSAGE = (
    'The NameWhitelistProcessor must be passed a collection of allowed names using the "whitelist" parameter'
)


class NameWhitelistProcessor(EventFilter):
    """
    Let through only events whose ``name`` is in ``whitelist``; drop the rest.

    Called on one event it returns it or raises ``EventEmissionExit``; called on a list of events
    (event-routing-backends' batches) it returns the list of the whitelisted ones, as the
    original does. An event it cannot decide on (not a mapping, an unhashable name) is dropped
    and counted: see :mod:`eventtracking.processors.filtering`. An event without a name is not
    whitelisted.

    `whitelist` is a collection of event names (list, tuple, set...). A single string is
    rejected with the original's ``TypeError`` because iterating it would whitelist characters,
    and so is a missing or non-iterable value. Extra keyword arguments are accepted and ignored,
    as in the original package, so existing settings keep loading.
    """

    reads_only = True  # it never changes nor keeps the event: routers need not copy it

    def __init__(self, whitelist: Iterable[str] | None = None, **_kwargs: Any) -> None:
        if whitelist is None or isinstance(whitelist, (str, bytes)):
            raise TypeError(f"{_MESSAGE}, got {whitelist!r}")
        try:
            self.whitelist = frozenset(whitelist)
        except TypeError as error:
            raise TypeError(f"{_MESSAGE}, got {whitelist!r}") from error

    def keeps(self, event: Any) -> bool:
        """Whether the event's name is whitelisted (raises ``TypeError`` for an unhashable name)."""
        # Every event of a site is decided here: a plain dict's name is read without name_of.
        return (event.get("name") if type(event) is dict else name_of(event)) in self.whitelist
