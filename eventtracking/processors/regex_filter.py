"""Keep or drop events by matching their names against regular expressions."""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable

from eventtracking.processors.exceptions import ImproperlyConfigured
from eventtracking.processors.filtering import EventFilter, name_of

ALLOWLIST = "allowlist"
BLOCKLIST = "blocklist"

logger = logging.getLogger(__name__)


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
            # The original's log call, preformatted: tests across Open edX assert it.
            logger.error(
                f"Unsupported filter type {filter_type} is set. "
                f"Allowed types are only {ALLOWLIST} and {BLOCKLIST}."
            )
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
        self.compiled_expressions: list[re.Pattern] = []
        invalid: list[tuple[Any, Exception]] = []
        for pattern in self.regular_expressions:
            try:
                self.compiled_expressions.append(re.compile(pattern))
            except (re.error, TypeError) as error:
                invalid.append((pattern, error))
        if invalid:
            # The original's log call and message first (its text, "configured" and "for" run
            # together, kept: tests across Open edX assert it), then each pattern's error.
            logger.error(
                "The following invalid regular expressions are configured"
                f'for setting "ASYNC_ROUTING_BACKENDS_FILTERS": {[pattern for pattern, _ in invalid]}'
            )
            reasons = "; ".join(f"{pattern!r}: {error}" for pattern, error in invalid)
            raise ImproperlyConfigured(f"Invalid Regular Expressions are configured. {reasons}")

    def matches(self, name: Any) -> bool:
        """Return whether `name` matches any configured expression (non-strings never match)."""
        if not isinstance(name, str):
            return False
        return any(expression.match(name) for expression in self.compiled_expressions)

    def keeps(self, event: Any) -> bool:
        """Whether `event` passes: its name matches an allowlist, or does not match a blocklist."""
        return self.matches(name_of(event)) == (self.filter_type == ALLOWLIST)
