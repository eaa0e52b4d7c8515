"""Keep or drop events by matching their names against regular expressions."""

from __future__ import annotations

import re
from typing import Any, Iterable

from eventtracking.processors.exceptions import ImproperlyConfigured
from eventtracking.processors.filtering import EventFilter, name_of

ALLOWLIST = "allowlist"
BLOCKLIST = "blocklist"


class RegexFilter(EventFilter):
    """
    Filter events by name with regular expressions.

    A name "matches" when any expression matches at its start (``re.match``; anchor
    with ``$`` to require a full match). With ``filter_type="allowlist"`` only matching
    events pass; with ``"blocklist"`` matching events are dropped. A name that is not a
    string matches nothing (a blocklist keeps it). Called on one event it returns it or
    raises ``EventEmissionExit``; on a list of events it returns the list of those that
    pass (the original raised on a list, which let the whole batch through). An event it
    cannot decide on (not a mapping) is dropped and counted: see
    :mod:`eventtracking.processors.filtering`.

    An unknown `filter_type` or an invalid expression raises ``ImproperlyConfigured``
    at construction, naming the offending value, so bad settings fail at startup
    instead of silently filtering everything.
    """

    reads_only = True  # it never changes nor keeps the event: routers need not copy it

    def __init__(
        self, filter_type: str = ALLOWLIST, regular_expressions: Iterable[str] | None = None
    ) -> None:
        if filter_type not in (ALLOWLIST, BLOCKLIST):
            raise ImproperlyConfigured(
                f"Invalid filter type is configured: RegexFilter filter_type must be {ALLOWLIST!r} or "
                f"{BLOCKLIST!r}, got {filter_type!r}"
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
                f"Invalid Regular Expressions are configured: {pattern!r}: {error}"
            ) from error

    def matches(self, name: Any) -> bool:
        """Return whether `name` matches any configured expression (non-strings never match)."""
        if not isinstance(name, str):
            return False
        return any(expression.match(name) for expression in self.compiled_expressions)

    def keeps(self, event: Any) -> bool:
        """Whether `event` passes: its name matches an allowlist, or does not match a blocklist."""
        return self.matches(name_of(event)) == (self.filter_type == ALLOWLIST)
