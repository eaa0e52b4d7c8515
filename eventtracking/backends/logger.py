"""Backend that writes each event as one JSON line to a standard Python logger."""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import date, datetime, time, timezone
from typing import Any

import orjson

from eventtracking.backends import event_name
from eventtracking.backends.logging_call import log_line
from eventtracking.encoding import datetime_json
from eventtracking.processors.exceptions import ImproperlyConfigured

MAX_EVENT_SIZE = 1024  # the original's default; Open edX's settings raise it to 50000
LOG = logging.getLogger(__name__)

# orjson alone, and only on what it reads without running Python code: datetimes (whose
# tzinfo may be Python) and dataclasses are refused, and there is no default= hook.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class LoggerBackend:
    """
    Log every event as a single JSON line through ``logging.getLogger(name)``.

    `name` is the logger name (default: the root logger, as in the original), to be configured with
    the usual ``logging`` mechanisms. `level` is a level name such as ``"info"`` or
    ``"warning"`` (or a numeric level). `max_event_size` is the largest encoded event,
    in UTF-8 bytes, that will be logged; ``None`` means no limit.

    Encoding: datetimes become ISO 8601 in UTC (naive datetimes are taken to be UTC),
    dates ISO 8601, sets lists, and any other value orjson cannot encode is written
    as ``str(value)``.

    An oversized event is not logged; it is counted in ``skipped_oversized`` and
    reported with a DEBUG message naming the event and its size. ``send`` never raises:
    any other failure is logged on this module's logger and counted in ``errors``.
    When the target logger is not enabled for `level`, events are not even encoded.

    It only reads its event (:class:`~eventtracking.backends.routing.ReadsOnly`): a router
    hands it the event without copying it.
    """

    reads_only = True

    def __init__(
        self,
        name: str | None = None,
        max_event_size: int | None = MAX_EVENT_SIZE,
        level: str | int = "info",
        **_kwargs: Any,
    ) -> None:
        # Unknown options are ignored, as the original's **kwargs constructor did.
        self.event_logger = logging.getLogger(name)
        self.max_event_size = max_event_size
        self.level = _level_number(level)
        self.skipped_oversized = 0
        self.errors = 0
        self._lock = threading.Lock()

    def send(self, event: Any) -> None:
        """Encode `event` and log it, unless it is too large. Never raises."""
        try:
            if not self.event_logger.isEnabledFor(self.level):
                return
            encoded = encode_event(event)
            if self.max_event_size is not None and len(encoded) > self.max_event_size:
                with self._lock:
                    self.skipped_oversized += 1
                LOG.debug(
                    "Skipping event %r: encoded size %d bytes exceeds max_event_size %d",
                    event_name(event),
                    len(encoded),
                    self.max_event_size,
                )
                return
            log_line(self.event_logger, self.level, encoded.decode("utf-8"), sys._getframe())
        except Exception:
            with self._lock:
                self.errors += 1
            try:
                LOG.exception("Unable to log event %r", event_name(event))
            except Exception:
                pass  # logging itself is broken; there is nowhere left to report it


def encode_event(event: Any) -> bytes:
    """
    Return `event` as compact JSON (UTF-8 bytes), datetimes as ISO 8601 UTC.

    orjson does the work for plain data, with no Python code running inside it (no hook, no
    tzinfo, no ``__str__``: such code lets another thread change the event under orjson,
    which then crashes the process). The event's own ``timestamp`` is written before orjson
    runs. Anything else orjson refuses (a datetime deeper in the event, objects, sets, integers
    beyond 64 bits, dict keys that are not strings) goes to the stdlib ``json`` module, which
    raises instead of crashing when the event changes under it.
    """
    try:
        return orjson.dumps(_with_written_timestamp(event), option=_ORJSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        text = json.dumps(_stringify_keys(event), default=_default, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")


def _with_written_timestamp(event: Any) -> Any:
    """``event`` with its datetime ``timestamp`` as a JSON fragment in UTC (a shallow copy)."""
    if type(event) is dict:
        stamp = event.get("timestamp")
        if type(stamp) is datetime:
            if stamp.tzinfo is not None and stamp.tzinfo is not timezone.utc:
                stamp = stamp.astimezone(timezone.utc)
            return {**event, "timestamp": datetime_json(stamp)}
    return event


class DateTimeJSONEncoder(json.JSONEncoder):
    """
    ``json.JSONEncoder`` that writes datetimes as ISO 8601 in UTC and dates as ISO 8601.

    The original package's encoder, with the same output (event-routing-backends and the event
    bus backend use it with ``json.dumps(..., cls=DateTimeJSONEncoder)``): a naive datetime is
    taken to be UTC, an aware one is converted to UTC. Any other type JSON cannot encode raises
    ``TypeError``, as ``json.JSONEncoder`` does.
    """

    def default(self, o: Any) -> Any:
        """Return the ISO 8601 text of a datetime (in UTC) or a date; else ``TypeError``."""
        if isinstance(o, datetime):
            return utc_isoformat(o)
        if isinstance(o, date):
            return o.isoformat()
        return super().default(o)


def utc_isoformat(value: datetime) -> str:
    """`value` in UTC as ISO 8601 (``+00:00``); a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    else:
        value = value.astimezone(timezone.utc)
    return value.isoformat()


def _default(value: Any) -> Any:
    """Encode what JSON has no type for; called by orjson and by json."""
    if isinstance(value, datetime):
        return utc_isoformat(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


def _stringify_keys(value: Any) -> Any:
    """Make dict keys JSON-compatible for the stdlib fallback (non-scalar keys -> str)."""
    if isinstance(value, dict):
        return {
            (key if isinstance(key, (str, int, float, bool)) or key is None else _key_text(key)): (
                _stringify_keys(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_stringify_keys(item) for item in value]
    return value


def _key_text(key: Any) -> str:
    text = _default(key)
    return text if isinstance(text, str) else str(key)


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise ImproperlyConfigured(f"LoggerBackend got an unknown logging level {level!r}")
    return number
