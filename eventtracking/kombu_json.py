"""Events as kombu's JSON serializer writes them, made with orjson on the caller's thread.

``dumps(event)`` gives the JSON that kombu (Celery's default ``json`` serializer) would write for
the event, type tags included (``{"__type__": "datetime", "__value__": "..."}`` for datetimes,
dates, times, Decimals, bytes), so that ``loads`` (kombu's own) gives back what the original's
``send_event.delay(name, event)`` would have had the worker see. It costs about a tenth of
kombu's encoder; what orjson refuses (integers beyond 64 bits, a cycle) goes to kombu's encoder.

Two differences, both on values kombu cannot encode at all (the original's ``delay()`` raises
``EncodeError`` into the request and the event is lost): an object kombu knows nothing about
becomes ``str(obj)`` (Open edX course and usage keys), as the Segment encoder does; and a
``uuid.UUID`` becomes its text (orjson writes UUIDs natively), which is what a JSON consumer
sees anyway. A self-referencing event raises :class:`Unserializable`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from kombu.utils import json as kombu_json

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME  # non-string keys take the fallback (kombu makes them strings)
_kombu_default = kombu_json.JSONEncoder().default


class Unserializable(ValueError):
    """The event cannot be written as JSON (it refers to itself)."""


def _default(value: Any) -> Any:
    if type(value) is datetime:  # every event's timestamp: the fast way to kombu's tag
        return {"__type__": "datetime", "__value__": value.isoformat()}
    try:
        return _kombu_default(value)  # kombu's tags (datetime, Decimal, bytes...), __json__
    except TypeError:
        return str(value)


def dumps(event: Any) -> bytes:
    """The event as kombu-compatible JSON bytes (see the module docstring)."""
    try:
        return orjson.dumps(event, default=_default, option=_OPTIONS)
    except TypeError:
        pass  # e.g. an integer beyond 64 bits, or nesting orjson refuses: kombu's own encoder
    try:
        return kombu_json.dumps(event, default=_default).encode("utf-8")
    except (ValueError, RecursionError) as error:
        raise Unserializable(str(error)) from None


def loads(data: bytes) -> Any:
    """kombu's decoder: tags become datetimes, Decimals, bytes again."""
    return kombu_json.loads(data)
