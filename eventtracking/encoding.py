"""Datetimes as the JSON orjson writes for them, with no Python code running inside orjson.

Shared by every encoder of the package (the tracking log's :mod:`eventtracking.backends.logger`,
the Segment message's :mod:`eventtracking.segment.encoding`, the messages of the Segment
client): each writes an event's datetimes first, as JSON fragments, and then lets orjson walk
only plain data with ``OPT_PASSTHROUGH_DATETIME``, so orjson never calls a tzinfo or a
subclass's method. Python code running inside orjson lets another thread change what orjson is
reading, which crashes the process (``docs/orjson-bug.md``).
"""

from __future__ import annotations

import datetime

import orjson

# A naive datetime is UTC; the option only matters for the datetimes given to datetime_bytes.
_OPTIONS = orjson.OPT_NAIVE_UTC
_DATETIME = datetime.datetime
_UTC_TYPE = datetime.timezone  # a C type: orjson reads it without running Python code
_fragment = orjson.Fragment
_dumps = orjson.dumps


def datetime_json(value: datetime.datetime) -> orjson.Fragment:
    """A datetime as the JSON orjson writes for it (naive = UTC), computed so that no Python
    code runs inside orjson: a tzinfo that is not ``datetime.timezone`` (pytz, dateutil,
    ZoneInfo, the caller's own) is asked for its offset here first. Raises what that raises.

    The last plain datetime written (naive or in a ``datetime.timezone``, whose JSON cannot
    change) is remembered with its JSON: every backend of an event writes the same timestamp
    object, and writing one costs more than the rest of this function."""
    global _last_written
    last = _last_written
    if last[0] is value:
        return last[1]
    zone = value.tzinfo
    if type(value) is _DATETIME and (zone is None or type(zone) is _UTC_TYPE):
        written = _fragment(_dumps(value, option=_OPTIONS))
        _last_written = (value, written)  # one tuple: a thread reads both halves or neither
        return written
    return _fragment(datetime_bytes(value))


_last_written: tuple[object, orjson.Fragment] = (object(), _fragment(b"null"))


def datetime_bytes(value: datetime.datetime) -> bytes:
    """The JSON string of :func:`datetime_json` (ISO 8601, quoted), as bytes."""
    zone = value.tzinfo
    if zone is not None and type(zone) is not _UTC_TYPE:
        offset = value.utcoffset()
        value = datetime.datetime.replace(value, tzinfo=None if offset is None else datetime.timezone(offset))
    if type(value) is not _DATETIME:  # a subclass: orjson must not meet its methods either
        value = datetime.datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.tzinfo,
            fold=value.fold,
        )
    return _dumps(value, option=_OPTIONS)
