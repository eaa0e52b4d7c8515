"""An event's JSON, encoded once per routing pass for every backend that writes the event whole.

The tracking log's line (``LoggerBackend``) and a Segment message's ``properties``
(``SegmentBackend``) are the same JSON: the event, compact, its ``timestamp`` in UTC. A router's
``send`` pins the event it was given (:func:`pin` / :func:`unpin`); the backends that only read
(``reads_only``) are handed that very object, and :func:`shared` encodes it the first time one
of them asks and gives the same bytes to every later one. So the tracker's event is encoded
once instead of once per backend, and every backend writes the same snapshot of it.

What makes reusing the bytes correct:

- Only the pinned object is answered from the pin, and a router never hands the event it was
  given (which is not its own) to anything that may change it: processors and backends that
  may change it get copies, which are other objects. The pin holds a reference to the event,
  so no other object can take its ``id`` meanwhile.
- Nothing is kept outside a ``send`` (a backend called directly encodes for itself), and pins
  are per thread.
- The bytes are those both backends write on their fast path: orjson with no Python code running
  inside it (datetimes and dataclasses refused, no ``default=`` hook), the event's ``timestamp``
  written beforehand. An event orjson refuses, or whose ``timestamp`` has an offset other than
  UTC (which the log writes in UTC and Segment as it is), is not shared: :func:`shared` answers
  None and each backend encodes it its own way.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Optional

import orjson

from eventtracking.segment.encoding import datetime_json

# orjson alone, and only on what it reads without running Python code: datetimes (whose
# tzinfo may be Python) and dataclasses are refused, and there is no default= hook.
ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_UTC = timezone.utc
_dumps = orjson.dumps
_fragment = orjson.Fragment


_local = threading.local()  # .pin: [event, its bytes or _UNSET], or None
_UNSET = b""  # not encoded yet (no event encodes to nothing)


def dumps(event: Any) -> Optional[bytes]:
    """`event` as compact JSON, its datetime ``timestamp`` written in UTC (naive = UTC); None
    when orjson refuses it (a datetime deeper in the event, a set, a non-string key...)."""
    if type(event) is dict:
        stamp = event.get("timestamp")
        if type(stamp) is datetime:
            if stamp.tzinfo is not None and stamp.tzinfo is not _UTC:
                stamp = stamp.astimezone(_UTC)
            event = {**event, "timestamp": _written(stamp)}
    try:
        return _dumps(event, option=ORJSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return None


def _written(stamp: datetime) -> orjson.Fragment:
    """A datetime in UTC, or naive, as a JSON fragment: orjson reads ``timezone.utc`` (a C
    object) without running Python code; anything else goes through ``datetime_json``."""
    if stamp.tzinfo is _UTC and type(stamp) is datetime:
        return _fragment(_dumps(stamp))
    return datetime_json(stamp)


def shared(event: Any) -> Optional[bytes]:
    """The pinned event's encoding (see the module docstring), made at the first call; None for
    any other object, outside a ``send``, and for an event that is not shared (orjson refuses
    it, or its ``timestamp`` is not in UTC)."""
    pinned = getattr(_local, "pin", None)
    if pinned is None or pinned[0] is not event:
        return None
    data = pinned[1]
    if data is _UNSET:
        data = pinned[1] = dumps(event) if _shareable(event) else None
    return data


def _shareable(event: Any) -> bool:
    """A plain dict whose ``timestamp``, if a datetime, is in UTC or naive: what the log and
    Segment write alike."""
    if type(event) is not dict:
        return False
    stamp = event.get("timestamp")
    return type(stamp) is not datetime or stamp.tzinfo is None or stamp.tzinfo is _UTC


def pin(event: Any) -> Any:
    """Pin `event` on this thread for :func:`shared`; returns the pin it replaces, for
    :func:`unpin` (a router's send may run inside another's)."""
    prior = getattr(_local, "pin", None)
    _local.pin = [event, _UNSET]
    return prior


def unpin(prior: Any) -> None:
    """Put back the pin :func:`pin` replaced."""
    _local.pin = prior
