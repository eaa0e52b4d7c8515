"""Keep or drop events by matching their names against regular expressions."""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from eventtracking.processors.exceptions import EventEmissionExit, ImproperlyConfigured

ALLOWLIST = "allowlist"
BLOCKLIST = "blocklist"


class RegexFilter:
    """
    Filter events by name with regular expressions.

    A name "matches" when any expression matches at its start (``re.match``; anchor
    with ``$`` to require a full match). With ``filter_type="allowlist"`` only matching
    events pass; with ``"blocklist"`` matching events are dropped. Dropping means
    raising ``EventEmissionExit``.

    An unknown `filter_type` or an invalid expression raises ``ImproperlyConfigured``
    at construction, naming the offending value, so bad settings fail at startup
    instead of silently filtering everything.
    """

    def __init__(
        self, filter_type: str = ALLOWLIST, regular_expressions: Iterable[str] | None = None
    ) -> None:
        if filter_type not in (ALLOWLIST, BLOCKLIST):
            raise ImproperlyConfigured(
                f"RegexFilter filter_type must be {ALLOWLIST!r} or {BLOCKLIST!r}, got {filter_type!r}"
            )
        if isinstance(regular_expressions, (str, bytes)):
            # A lone string would be iterated character by character.
            raise ImproperlyConfigured(
                f"RegexFilter regular_expressions must be a list of patterns, got {regular_expressions!r}"
            )
        self.filter_type = filter_type
        self.regular_expressions = list(regular_expressions or [])
        self.compiled_expressions = [self._compile(pattern) for pattern in self.regular_expressions]

    @staticmethod
    def _compile(pattern: str) -> re.Pattern:
        try:
            return re.compile(pattern)
        except (re.error, TypeError) as error:
            raise ImproperlyConfigured(
                f"RegexFilter got an invalid regular expression {pattern!r}: {error}"
            ) from error

    def matches(self, name: Any) -> bool:
        """Return whether `name` matches any configured expression (non-strings never match)."""
        if not isinstance(name, str):
            return False
        return any(expression.match(name) for expression in self.compiled_expressions)

    def __call__(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return `event` if it passes the filter, else raise ``EventEmissionExit``."""
        is_match = self.matches(event.get("name"))
        if is_match == (self.filter_type == ALLOWLIST):
            return event
        raise EventEmissionExit()
