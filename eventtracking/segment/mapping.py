"""Map one tracking event to one Segment track message: a pure function.

The mapping is the original Open edX ``SegmentBackend``'s, kept exactly:

================================  =============================================
Segment message                   comes from the event
================================  =============================================
``event``                         ``name``
``userId`` (a string)             ``context.user_id``
``properties``                    the entire event (after ``exclude_fields``)
``context["Google Analytics"]``   ``{"clientId": context.client_id}``
``context.ip``                    ``context.ip``
``context.userAgent``             ``context.agent``
``context.page.path``             ``context.path``
``context.page.referrer``         ``context.referer``
``context.page.url``              ``context.page``, or ``https://{host}{path}``
                                  when page is absent or empty and both
                                  host and path are non-empty
``timestamp``                     the event's own ``timestamp`` (naive = UTC)
``context.library``               this library's name and version
================================  =============================================

Each lifted context value is set only when it is not ``None``; ``context.page`` exists only
when at least one of path, referrer and url does. The ``messageId`` is not the mapping's
business: the backend assigns it when it accepts the event.

An event that cannot become a message raises :class:`SkipEvent` with a short reason, which
the backend counts and logs; nothing else is raised for a mapping-shaped input.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from eventtracking import __version__
from eventtracking.segment import privacy
from eventtracking.segment.encoding import text_of

UTC = datetime.timezone.utc
LIBRARY = {"name": "eventtracking-segment", "version": __version__}


class SkipEvent(Exception):
    """The event is not sent; ``reason`` says why (a stable, countable word)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class MappingOptions:
    """What the mapping may do beyond the original contract. The defaults are the original.

    - ``exclude_fields``: dotted paths (``context.username``, ``data.answers``) removed from the
      properties and therefore from everything lifted into the Segment context.
    - ``anonymize_ip``: zero the host part of the ip (last IPv4 octet, last 80 bits of IPv6),
      both in the Segment context and in the properties.
    - ``anonymous_id_field``: a dotted path; when the event has no user id but has a value
      there, the message is sent with ``anonymousId`` instead of being skipped.
    """

    exclude_fields: tuple[str, ...] = ()
    anonymize_ip: bool = False
    anonymous_id_field: Optional[str] = None
    # Compiled by __post_init__ (frozen: through object.__setattr__); not arguments.
    _excluded: tuple[tuple[str, ...], ...] = field(default=(), init=False, repr=False, compare=False)
    _anonymous_path: Optional[tuple[str, ...]] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Validated once, at construction, so a typo is a configuration error, not a skip.
        object.__setattr__(self, "_excluded", privacy.compile_paths(self.exclude_fields))
        object.__setattr__(
            self,
            "_anonymous_path",
            privacy.compile_paths([self.anonymous_id_field])[0] if self.anonymous_id_field else None,
        )


DEFAULT_OPTIONS = MappingOptions()


def to_track_message(event: Any, options: MappingOptions = DEFAULT_OPTIONS) -> dict:
    """Return the Segment track message for ``event``, or raise :class:`SkipEvent`.

    What counts as an id: a non-empty string, or an integer (``0`` included; ``bool`` is not an
    id). Ids are sent as strings. An event name is a non-empty string or a number.
    The returned message shares ``properties`` with the event (no copy is made here): the
    backend snapshots it by encoding before ``send()`` returns.
    """
    # This runs on the application's thread for every event: the `type(x) is` tests are the
    # common case, checked before the slower general ones.
    if type(event) is not dict and not isinstance(event, Mapping):
        raise SkipEvent("not_a_mapping")
    if options._excluded:
        event = privacy.without_paths(event, options._excluded)
    context = event.get("context")
    if context is None:
        context = {}
    elif type(context) is not dict and not isinstance(context, Mapping):
        raise SkipEvent("bad_context")

    name = event.get("name")
    if type(name) is not str or not name:
        name = _event_name(name)

    user_id = context.get("user_id")
    if user_id is not None:
        identity = ("userId", str(user_id) if type(user_id) is int else _identity(user_id, "bad_user_id"))
    elif (
        options._anonymous_path is not None
        and (anonymous_id := privacy.get_path(event, options._anonymous_path)) is not None
    ):
        identity = ("anonymousId", _identity(anonymous_id, "bad_anonymous_id"))
    else:
        raise SkipEvent("no_user_id")

    if options.anonymize_ip and isinstance(context.get("ip"), str):
        context = dict(context, ip=privacy.anonymize_ip(context["ip"]))
        event = dict(event, context=context)

    lifted = segment_context(context)
    lifted["library"] = LIBRARY
    message = {
        "type": "track",
        "event": name,
        identity[0]: identity[1],
        "properties": event,
        "context": lifted,
    }
    timestamp = event.get("timestamp")
    if type(timestamp) is not datetime.datetime or timestamp.tzinfo is None:
        timestamp = event_time(timestamp)
    if timestamp is not None:
        message["timestamp"] = timestamp
    return message


def segment_context(context: Mapping) -> dict:
    """The Segment ``context`` lifted out of an eventtracking context (see the module table)."""
    lifted: dict[str, Any] = {}
    client_id = context.get("client_id")
    if client_id is not None:
        lifted["Google Analytics"] = {"clientId": client_id}
    ip = context.get("ip")
    if ip is not None:
        lifted["ip"] = ip
    agent = context.get("agent")
    if agent is not None:
        lifted["userAgent"] = agent

    path = context.get("path")
    referer = context.get("referer")
    url = context.get("page")
    if path and not url:
        host = context.get("host")
        if host:
            # Segment ignores the scheme for GA but extracts host and path from the url.
            if type(host) is str and type(path) is str:
                url = f"https://{host}{path}"
            else:  # whatever they are, as text by the encoder's rules (a str() may raise)
                url = f"https://{text_of(host)}{text_of(path)}"
    if path is not None or referer is not None or url is not None:
        page = {}
        if path is not None:
            page["path"] = path
        if referer is not None:
            page["referrer"] = referer
        if url is not None:
            page["url"] = url
        lifted["page"] = page
    return lifted


def _event_name(name: Any) -> str:
    if isinstance(name, str):
        if name:
            return name
        raise SkipEvent("no_name")
    if name is None:
        raise SkipEvent("no_name")
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        return str(name)
    raise SkipEvent("bad_name")


def _identity(value: Any, reason: str) -> str:
    if isinstance(value, str):
        if value:
            return value
        raise SkipEvent(reason)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SkipEvent(reason)


def event_time(value: Any) -> Optional[datetime.datetime]:
    """An event's time (a datetime or an ISO 8601 string) as an aware datetime; naive means
    UTC; anything unusable gives None."""
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        # Before Python 3.11 fromisoformat takes only 3 or 6 fractional digits.
        text = _FRACTION.sub(lambda match: match[0][:7].ljust(7, "0"), text, count=1)
        try:
            parsed = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


_FRACTION = re.compile(r"(?<=:\d\d)\.\d+")
