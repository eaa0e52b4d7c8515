"""An event's JSON, encoded once per routing pass for every backend that writes the event whole.

The tracking log's line (``LoggerBackend``) and a Segment message's ``properties``
(``SegmentBackend``) are the same JSON: the event, compact, its ``timestamp`` in UTC. A router
opens a pass around ``send`` (:func:`begin` / :func:`end`); inside it, :func:`shared` encodes an
event the first time a backend asks and hands the same bytes to every later backend that asks
for that very object. Backends that only read their event (``reads_only``) are given the same
object, so the tracker's event is encoded once instead of once per backend, and every backend
writes the same snapshot of it.

What makes reusing the bytes correct:

- Only an object nothing has changed since it was encoded is answered from the pass: a router
  calls :func:`forget` before it hands the event itself (not a copy) to a processor or backend
  that may change it. Copies are other objects, and the pass holds a reference to the encoded
  event, so no other object can take its ``id``.
- Nothing is kept outside a pass (a backend called directly encodes for itself) and the pass is
  per thread.
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


class _Pass(threading.local):
    depth = 0  # routers' send() calls under way on this thread (nested routers call send too)
    event: Any = None  # the event encoded in this pass (held: its id cannot be reused meanwhile)
    data: Optional[bytes] = None


_pass = _Pass()


def dumps(event: Any) -> Optional[bytes]:
    """`event` as compact JSON, its datetime ``timestamp`` written in UTC (naive = UTC); None
    when orjson refuses it (a datetime deeper in the event, a set, a non-string key...)."""
    if type(event) is dict:
        stamp = event.get("timestamp")
        if type(stamp) is datetime:
            if stamp.tzinfo is not None and stamp.tzinfo is not _UTC:
                stamp = stamp.astimezone(_UTC)
            event = {**event, "timestamp": datetime_json(stamp)}
    try:
        return _dumps(event, option=ORJSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return None


def shared(event: Any) -> Optional[bytes]:
    """The pass's encoding of `event` (see the module docstring): encoded at the first call of
    a pass, the same bytes for that object afterwards; None outside a pass, and for an event that
    is not shared (orjson refuses it, or its ``timestamp`` is not in UTC)."""
    state = _pass
    if not state.depth:
        return None
    if state.event is event:
        return state.data
    if type(event) is not dict:
        return None
    stamp = event.get("timestamp")
    if type(stamp) is datetime and stamp.tzinfo is not None and stamp.tzinfo is not _UTC:
        return None
    data = dumps(event)
    state.event, state.data = event, data
    return data


def begin() -> None:
    """Open a pass on this thread (or enter the one open: passes nest)."""
    _pass.depth += 1


def end() -> None:
    """Close what :func:`begin` opened; the outermost end forgets the pass's encoding."""
    state = _pass
    state.depth -= 1
    if not state.depth:
        state.event = state.data = None


def forget() -> None:
    """Forget the pass's encoding: the event is about to be handed to something that may change it."""
    state = _pass
    state.event = state.data = None
