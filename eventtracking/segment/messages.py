"""Segment's message of each call type, from the arguments of segment-analytics-python's calls:
pure functions, one per type (:func:`track`, :func:`identify`, :func:`group`, :func:`alias`,
:func:`page`, :func:`screen`), with the official signatures (``message_id`` last).

Each returns the message in Segment's spec shape for its type, or raises
:class:`~eventtracking.segment.mapping.SkipEvent` with a stable reason word for input the
official client would raise on (and a few it would let through malformed):

===================  ===========================================================================
reason               input
===================  ===========================================================================
``no_user_id``       neither ``user_id`` nor ``anonymous_id`` (alias: no ``user_id``)
``bad_user_id``      ``user_id`` (``anonymous_id``: ``bad_anonymous_id``) not a non-empty
                     string or a number (``bool`` is not an id); numbers are sent as strings
``bad_event``        track's ``event`` not a non-empty string
``bad_properties``   ``properties`` not a mapping (``bad_traits``: ``traits``)
``bad_context``      ``context`` not a mapping (``bad_integrations``: ``integrations``)
``bad_group_id``     group's ``group_id`` missing or not an id (``bad_previous_id``: alias's)
``bad_name``         page/screen ``name`` (``bad_category``: ``category``) given, not a string
``bad_timestamp``    ``timestamp`` not a datetime nor an ISO 8601 string
``bad_message_id``   ``message_id`` not a non-empty string, an int or a UUID
===================  ===========================================================================

The message: ``type``; ``userId`` and/or ``anonymousId``; the type's own fields (``event`` and
``properties``; ``traits``; ``groupId``; ``previousId``; ``name``, ``category``); ``context``
(a copy of the caller's, which is never changed, with ``library`` added when it has none);
``integrations`` when given; ``timestamp`` (the caller's, as ISO 8601 with its offset, written
as orjson writes datetimes: an aware datetime as it is, an ISO 8601 string parsed, a naive
datetime as local time when it is within 5 s of the local clock's now, as the official client
guesses ``datetime.now()``, else as UTC; the current UTC time when none);
``messageId`` when given (as a string; the client assigns one otherwise). ``properties`` and
``traits`` are the caller's own dicts, not copies: the client encodes them before it returns.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any, Optional

import orjson

from eventtracking.segment.encoding import datetime_bytes
from eventtracking.segment.mapping import LIBRARY, UTC, SkipEvent, event_time

NAIVE_IS_LOCAL_WITHIN = datetime.timedelta(seconds=5)
_DUMPS = orjson.dumps  # of a datetime with a datetime.timezone: no Python code runs inside


def track(
    user_id: Any = None,
    event: Any = None,
    properties: Any = None,
    context: Any = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Any = None,
    message_id: Any = None,
) -> dict:
    """Segment's track message (see the module docstring)."""
    # Every call of an application runs this: the common types are tested first.
    if type(event) is not str or not event:
        raise SkipEvent("bad_event")
    message = _identified("track", user_id, anonymous_id)
    message["event"] = event
    message["properties"] = properties if type(properties) is dict else _mapping(properties, "bad_properties")
    return _common(message, context, timestamp, integrations, message_id)


def identify(
    user_id: Any = None,
    traits: Any = None,
    context: Any = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Any = None,
    message_id: Any = None,
) -> dict:
    """Segment's identify message."""
    message = _identified("identify", user_id, anonymous_id)
    message["traits"] = _mapping(traits, "bad_traits")
    return _common(message, context, timestamp, integrations, message_id)


def group(
    user_id: Any = None,
    group_id: Any = None,
    traits: Any = None,
    context: Any = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Any = None,
    message_id: Any = None,
) -> dict:
    """Segment's group message."""
    message = _identified("group", user_id, anonymous_id)
    message["groupId"] = _id(group_id, "bad_group_id")
    message["traits"] = _mapping(traits, "bad_traits")
    return _common(message, context, timestamp, integrations, message_id)


def alias(
    previous_id: Any = None,
    user_id: Any = None,
    context: Any = None,
    timestamp: Any = None,
    integrations: Any = None,
    message_id: Any = None,
) -> dict:
    """Segment's alias message: both ids are required."""
    if user_id is None or user_id == "":
        raise SkipEvent("no_user_id")
    message = {
        "type": "alias",
        "userId": _id(user_id, "bad_user_id"),
        "previousId": _id(previous_id, "bad_previous_id"),
    }
    return _common(message, context, timestamp, integrations, message_id)


def page(
    user_id: Any = None,
    category: Any = None,
    name: Any = None,
    properties: Any = None,
    context: Any = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Any = None,
    message_id: Any = None,
) -> dict:
    """Segment's page message."""
    return _named(
        "page",
        user_id,
        category,
        name,
        properties,
        context,
        timestamp,
        anonymous_id,
        integrations,
        message_id,
    )


def screen(
    user_id: Any = None,
    category: Any = None,
    name: Any = None,
    properties: Any = None,
    context: Any = None,
    timestamp: Any = None,
    anonymous_id: Any = None,
    integrations: Any = None,
    message_id: Any = None,
) -> dict:
    """Segment's screen message."""
    return _named(
        "screen",
        user_id,
        category,
        name,
        properties,
        context,
        timestamp,
        anonymous_id,
        integrations,
        message_id,
    )


def _named(kind: str, user_id: Any, category: Any, name: Any, properties: Any, *rest: Any) -> dict:
    message = _identified(kind, user_id, rest[2])
    if name is not None and name != "":
        if not isinstance(name, str):
            raise SkipEvent("bad_name")
        message["name"] = name
    if category is not None and category != "":
        if not isinstance(category, str):
            raise SkipEvent("bad_category")
        message["category"] = category
    message["properties"] = _mapping(properties, "bad_properties")
    context, timestamp, _, integrations, message_id = rest
    return _common(message, context, timestamp, integrations, message_id)


def _identified(kind: str, user_id: Any, anonymous_id: Any) -> dict:
    """The message's start: its type and who (``userId`` and/or ``anonymousId``)."""
    message: dict[str, Any] = {"type": kind}
    if type(user_id) is str and user_id:
        message["userId"] = user_id
    elif user_id is not None and user_id != "":
        message["userId"] = _id(user_id, "bad_user_id")
    if anonymous_id is not None and anonymous_id != "":
        message["anonymousId"] = (
            anonymous_id if type(anonymous_id) is str else _id(anonymous_id, "bad_anonymous_id")
        )
    if len(message) == 1:
        raise SkipEvent("no_user_id")
    return message


def _common(message: dict, context: Any, timestamp: Any, integrations: Any, message_id: Any) -> dict:
    """What every type has: context (with library), integrations, timestamp, messageId."""
    if type(context) is dict:
        context = context.copy()
    elif context is None:
        context = {}
    elif isinstance(context, Mapping):
        context = dict(context)
    else:
        raise SkipEvent("bad_context")
    if "library" not in context:
        context["library"] = LIBRARY
    message["context"] = context
    if integrations is not None:
        message["integrations"] = _mapping(integrations, "bad_integrations")
    message["timestamp"] = timestamp_text(timestamp)
    if type(message_id) is str and message_id:
        message["messageId"] = message_id
    elif message_id is not None and message_id != "":
        if not isinstance(message_id, (int, uuid.UUID)) or isinstance(message_id, bool):
            raise SkipEvent("bad_message_id")
        message["messageId"] = str(message_id)
    return message


def timestamp_text(value: Any, now: Optional[datetime.datetime] = None) -> str:
    """The message's ``timestamp`` as ISO 8601 with its offset (see the module docstring);
    raises SkipEvent("bad_timestamp").

    ``now`` is the local clock (for tests; default: read it when a naive datetime needs it).
    """
    if type(value) is datetime.datetime and type(value.tzinfo) is datetime.timezone:
        return _DUMPS(value)[1:-1].decode()  # the common case first: aware, a fixed offset
    if value is None:
        return _DUMPS(datetime.datetime.now(UTC))[1:-1].decode()
    if isinstance(value, datetime.datetime):
        try:
            if value.tzinfo is None or value.utcoffset() is None:
                local_now = datetime.datetime.now() if now is None else now
                if abs(local_now - value.replace(tzinfo=None)) < NAIVE_IS_LOCAL_WITHIN:
                    value = value.astimezone()  # naive local time, as datetime.now() makes it
                else:
                    value = value.replace(tzinfo=UTC)
            return datetime_bytes(value)[1:-1].decode()
        except Exception:  # a tzinfo that raises: the caller's code, not a reason to raise here
            raise SkipEvent("bad_timestamp") from None
    if isinstance(value, str):
        parsed = event_time(value)
        if parsed is not None:
            return datetime_bytes(parsed)[1:-1].decode()
    raise SkipEvent("bad_timestamp")


def _mapping(value: Any, reason: str) -> Any:
    if value is None:
        return {}
    if type(value) is dict or isinstance(value, Mapping):
        return value
    raise SkipEvent(reason)


def _id(value: Any, reason: str) -> str:
    if isinstance(value, str):
        if value:
            return value
        raise SkipEvent(reason)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise SkipEvent(reason)
