"""Drop events whose names are not on a configured whitelist."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from eventtracking.processors.exceptions import EventEmissionExit


class NameWhitelistProcessor:
    """
    Let through only events whose ``name`` is in ``whitelist``; drop the rest.

    `whitelist` is a collection of event names (list, tuple, set...). A single string
    is rejected with ``TypeError`` because iterating it would whitelist characters, and
    so is a missing or non-iterable value.

    Extra keyword arguments are accepted and ignored, as in the original package, so
    existing settings keep loading.
    """

    def __init__(self, whitelist: Iterable[str] | None = None, **_kwargs: Any) -> None:
        if whitelist is None or isinstance(whitelist, (str, bytes)):
            raise TypeError(
                "NameWhitelistProcessor needs a collection of allowed event names in the "
                f"'whitelist' option, got {whitelist!r}"
            )
        try:
            self.whitelist = frozenset(whitelist)
        except TypeError as error:
            raise TypeError(
                "NameWhitelistProcessor needs a collection of allowed event names in the "
                f"'whitelist' option, got {whitelist!r}"
            ) from error

    def __call__(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return `event` unchanged if its name is whitelisted, else raise ``EventEmissionExit``."""
        if event.get("name") not in self.whitelist:
            raise EventEmissionExit()
        return event
