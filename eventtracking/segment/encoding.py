"""Encode a Segment message as compact, strict JSON, whatever the event holds.

Contract of :func:`encode`:

* Returns UTF-8 bytes of compact JSON that any strict parser accepts: never
  ``NaN``/``Infinity`` tokens, never invalid UTF-8.
* Raises nothing but :class:`Unserializable`: for a self-referencing structure ("cycle at
  properties.data.x"), for nesting deeper than :data:`MAX_DEPTH` containers ("nesting deeper
  than 254 levels at ..."), the limit orjson enforces, and for a container another thread
  changed while it was being read ("changed while being encoded at ..."; its ``reason`` is
  ``changed_during_send``, the others' ``unserializable``). All are refused rather than cut
  short because a silently truncated event is worse than a clearly rejected one; the caller
  decides whether to drop or log it.
* No Python code runs inside orjson: neither the caller's (a ``__str__``, a tzinfo, a
  property) nor ours (no ``default=`` hook). Python code running there lets another thread
  change a container orjson is reading, or lets the code itself change it, and orjson then
  reads freed memory: the process crashes (see ``docs/orjson-bug.md``). So:

  - Fast path: one ``orjson.dumps`` of the message as it is, with datetimes and dataclasses
    passed through (refused), then a copy to right-sized bytes. The message's own
    ``timestamp`` and ``properties.timestamp`` (every event has them) are written first as
    JSON fragments, outside orjson's walk, so a plain event stays on the fast path.
  - Anything orjson refuses (a datetime deeper in the event, Decimal, bytes, set, an opaque
    object, a non-string key, a huge int, a lone surrogate...) goes through the coercing walk:
    plain Python that copies the message into fresh plain JSON types (its ``str()`` calls and
    tzinfo lookups run there, on values no other thread holds), and orjson then encodes the
    copy, which nothing else can reach.

Values are kept, not dropped. Rules (identical on the fast path and the walk):

* ``str``/``int``/``dict``/``list`` subclasses (OrderedDict, IntEnum,
  str-Enum, ...) encode as their base value; any other ``Enum`` as its
  ``value``; ``float`` subclasses as the float.
* ``datetime``/``date``/``time``: ISO 8601 as orjson writes it; a naive
  datetime is taken as UTC (``+00:00``). A ``time`` with a tzinfo (which
  orjson refuses) becomes ``str(time)``, also ISO 8601. A datetime whose tzinfo
  fails becomes ``"<unprintable datetime>"``.
* ``UUID``: its canonical hyphenated string. Dataclasses: as orjson does
  (an object of their public attributes).
* ``Decimal``: NaN and infinities become ``null`` (as float NaN does);
  an integral value within 64 bits becomes a JSON integer; otherwise a JSON
  number when the shortest float text for it is numerically the same decimal
  (``Decimal("0.1")`` -> ``0.1``); otherwise the Decimal's ``str()`` as a JSON
  string, so no digit is lost (``Decimal("3.14159265358979323846")``).
* ``bytes``/``bytearray``/``memoryview``: decoded as UTF-8; each invalid
  sequence becomes U+FFFD (Python's ``errors="replace"``).
* ``set``/``frozenset``/``tuple`` (and namedtuples): JSON arrays, in
  iteration order. Other non-dict Mappings: JSON objects.
* Integers outside orjson's 64-bit range (-2**63 .. 2**64-1): decimal
  strings; past Python's int-to-str digit limit, ``hex()`` strings.
* Float NaN/Infinity: ``null``.
* Strings, values and keys alike, with lone surrogates: each lone surrogate
  becomes U+FFFD; a surrogate pair is joined into its character.
* Dict keys that are not strings: ``None``/``True``/``False`` become
  ``"null"``/``"true"``/``"false"`` (as ``json.dumps`` writes them); dates and
  times ISO 8601 as above; bytes decoded as above; an Enum key as its value's
  key; anything else ``str(key)`` (ints, floats, UUIDs, Decimals, tuples).
  When two keys of one dict end up as the same text, the later one wins.
* Any other object: ``str(obj)`` (Open edX CourseKey/UsageKey objects arrive
  this way); if ``str()`` raises, ``"<unprintable TypeName>"``.

Paths in error messages are dotted keys with list indices in brackets:
``properties.data.items[3].x``.

Not guarded (guarding would cost a walk on every message, see ``docs/orjson-bug.md``):
orjson 3.13 serializes tuples itself and crashes the process on a reference cycle through a
tuple (``items = []; items.append((items,))``; some such cycles it refuses instead), and on
tuples nested thousands deep (tuples escape its depth counter); the walk refuses both when it
runs, but a plain event never reaches it.
An ``Enum`` member's ``value`` is read by orjson through the enum module's own property
(standard-library Python, not the caller's).

:func:`trim_to_fit` is the opt-in remedy for messages over the size limit.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import Any, Callable

import orjson

from eventtracking.encoding import datetime_bytes, datetime_json

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "Unserializable",
    "datetime_bytes",
    "datetime_json",
    "encode",
    "text_of",
    "trim_to_fit",
]

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024  # a whole request body
# orjson refuses containers nested deeper than this; the walk enforces the same.
MAX_DEPTH = 254

_OPTIONS = orjson.OPT_NAIVE_UTC
# What orjson would read with Python code (tzinfo methods, dataclass attributes) it refuses.
_FAST_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
# Types the converters turn into plain values in the walk.
_CONVERTED_TYPES = (Decimal, bytes, bytearray, memoryview, set, frozenset, tuple, float, Mapping)
_PATH_TEXT_LIMIT = 200
_DATETIME = datetime.datetime
_fragment = orjson.Fragment
_dumps = orjson.dumps


class Unserializable(ValueError):
    """The message cannot be made into JSON (cycle, nesting too deep, changed while read).

    ``reason`` is the word a backend counts the skip under."""

    def __init__(self, message: str, reason: str = "unserializable") -> None:
        super().__init__(message)
        self.reason = reason


def encode(message: Mapping) -> bytes:
    """Return ``message`` as compact, strict UTF-8 JSON; see the module docstring.

    The bytes are sized to their content, fit to be held in a buffer: orjson 3.12+ returns
    its output in a buffer rounded up to a power of two (8 KB for a 1.4 KB message), and
    joining with b"" copies it to its length for about 0.07 µs.

    Raises :class:`Unserializable` (and nothing else) for cycles, for nesting deeper than
    :data:`MAX_DEPTH` and for a container changed by another thread while being read.
    """
    try:
        encoded = _dumps(_with_written_timestamps(message), option=_FAST_OPTIONS)
    except Exception:
        # orjson refused something (a datetime, surrogate, huge int, non-str key, cycle...):
        # coerce a copy into plain JSON types and encode that.
        encoded = _encode_coerced(message)
    return b"".join((encoded, b""))


def _with_written_timestamps(message: Any) -> Any:
    """``message`` with its ``timestamp`` and ``properties.timestamp`` datetimes as JSON
    fragments (a shallow copy of each dict changed; the caller's stay as they were)."""
    if type(message) is not dict:
        return message
    stamp = message.get("timestamp")
    properties = message.get("properties")
    own = properties.get("timestamp") if type(properties) is dict else None
    if type(stamp) is not _DATETIME and type(own) is not _DATETIME:
        return message
    # This runs for every event: dict.copy() and item assignment are the cheapest copies.
    message = message.copy()
    if type(stamp) is _DATETIME:
        written = datetime_json(stamp)
        message["timestamp"] = written
    if type(own) is _DATETIME:
        properties = properties.copy()  # type: ignore[union-attr]
        properties["timestamp"] = written if own is stamp else datetime_json(own)
        message["properties"] = properties
    return message


def trim_to_fit(message: dict, limit: int = MAX_MESSAGE_BYTES) -> tuple[bytes, list[str]]:
    """Encode ``message``, trimming ``properties.data`` until it fits in ``limit`` bytes.

    Values inside ``message["properties"]["data"]`` are replaced, largest
    encoded size first, by a marker string ``"<trimmed N bytes>"`` (N being
    the encoded size of what it replaced). The walk descends into a dict
    instead of trimming it whole when its largest entry alone would make up
    the remaining excess, so the cut is as deep (as small) as one cut can be.
    The trimmed paths (``"data.answers"``, ``"data.state.blob"``) are recorded
    in ``properties["trimmed"]`` and returned. As a last resort ``data`` is
    emptied (path ``"data"``).

    Returns ``(encoded bytes, trimmed paths)``; the paths list is empty when
    the message already fits. Only copies are changed: the caller's message
    and everything in it stay as they were.

    Raises :class:`Unserializable` when the message cannot be encoded at all,
    or cannot fit even with ``data`` emptied (for instance an oversized
    context), or has no ``properties.data`` to trim.
    """
    encoded = encode(message)
    if len(encoded) <= limit:
        return encoded, []
    properties = message.get("properties") if isinstance(message, Mapping) else None
    if not isinstance(properties, Mapping) or "data" not in properties:
        raise Unserializable(
            f"message is {len(encoded)} bytes, over the {limit}-byte limit, "
            "and has no properties.data to trim"
        )
    data = properties["data"]
    sizes: dict[int, int] = {}  # id -> encoded size; the caller's values stay alive, so ids are stable
    need = len(encoded) - limit
    if isinstance(data, Mapping):
        # A few rounds: the "trimmed" list itself adds bytes the first estimate did not count.
        for _round in range(4):
            trimmed: list[str] = []
            trimmed_data, saved = _shrink(data, need, "data", trimmed, sizes)
            if saved < need:
                break
            encoded = encode(_with_data(message, properties, trimmed_data, trimmed))
            if len(encoded) <= limit:
                return encoded, trimmed
            need += len(encoded) - limit
    encoded = encode(_with_data(message, properties, {}, ["data"]))
    if len(encoded) <= limit:
        return encoded, ["data"]
    raise Unserializable(f"message is {len(encoded)} bytes even with properties.data emptied; limit {limit}")


# --- converters (the walk's, for values orjson refuses) ---------------------------------------------


def _default(value: Any) -> Any:
    """Convert a value the walk meets that is not plain JSON; never raises."""
    try:
        kind = type(value)
        convert = _converters.get(kind)
        if convert is None:
            convert = _converter_for(kind)
            if len(_converters) < _CONVERTER_CACHE_SIZE:
                _converters[kind] = convert
        return convert(value)
    except Exception:
        return _text_of(value)  # a broken container or buffer is still kept, as its text


# Converter per exact type, so a value costs one dict lookup instead of a chain of
# isinstance checks (opaque keys such as CourseKey come through here).
_converters: dict[type, Callable[[Any], Any]] = {}
_CONVERTER_CACHE_SIZE = 256  # bounded: classes made at run time must not pile up


def _converter_for(kind: type) -> Callable[[Any], Any]:
    if issubclass(kind, Decimal):
        return _decimal_value
    if issubclass(kind, (bytes, bytearray, memoryview)):
        return _bytes_text
    if issubclass(kind, (set, frozenset, tuple)):
        return list
    if issubclass(kind, float):
        return float.__float__
    if issubclass(kind, Mapping):
        return dict
    if issubclass(kind, datetime.datetime):
        return _datetime_value
    if issubclass(kind, (datetime.date, datetime.time)):
        return _date_or_time_value
    if issubclass(kind, uuid.UUID):
        return _uuid_text
    if dataclasses.is_dataclass(kind):
        return _dataclass_fields
    return _text_of


def _bytes_text(value: bytes | bytearray | memoryview) -> str:
    return bytes(value).decode("utf-8", "replace")


def _decimal_value(number: Decimal) -> Any:
    if not number.is_finite():
        return None
    # adjusted() guards int() against building a huge int for e.g. 1E+1000000.
    if number.adjusted() < 20 and number == number.to_integral_value():
        integer = int(number)
        if _INT_MIN <= integer <= _INT_MAX:
            return integer
    as_float = float(number)
    if math.isfinite(as_float) and Decimal(repr(as_float)) == number:
        return as_float
    return str(number)


def _datetime_value(value: datetime.datetime) -> Any:
    try:
        return datetime_json(value)
    except Exception:
        return "<unprintable datetime>"


def _date_or_time_value(value: datetime.date | datetime.time) -> Any:
    if isinstance(value, datetime.time) and value.tzinfo is not None:
        return _text_of(value)  # orjson refuses an aware time; str() is ISO 8601 too
    # A plain copy: orjson then meets neither a subclass's methods nor a tzinfo.
    if isinstance(value, datetime.date):
        plain: Any = datetime.date(value.year, value.month, value.day)
    else:
        plain = datetime.time(value.hour, value.minute, value.second, value.microsecond)
    return _fragment(_dumps(plain, option=_OPTIONS))


def _uuid_text(value: uuid.UUID) -> str:
    return str(uuid.UUID(int=value.int))  # the canonical form, whatever a subclass's str() says


def _dataclass_fields(value: Any) -> dict:
    # What orjson writes for a dataclass: its instance dict, or its slots, without "_" names.
    attributes = getattr(value, "__dict__", None)
    if attributes is not None:
        return {key: item for key, item in dict(attributes).items() if not str(key).startswith("_")}
    names = [field.name for field in dataclasses.fields(value)]
    return {name: getattr(value, name) for name in names if not name.startswith("_")}


def _text_of(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def text_of(value: Any) -> str:
    """``value`` as text by the rules above, never raising: a string as it is, an integer
    in decimal (``hex()`` past Python's digit limit), anything else ``str(value)`` or
    ``"<unprintable TypeName>"``. For text built from event values (the page url)."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_text(int.__int__(value))
    return _text_of(value)


# --- coercing walk (only when the fast path refused the message) --------------------------------------


class _Trouble(Exception):
    """Raised inside the walk; collects the path while it unwinds, so the walk tracks none."""

    def __init__(self, reason: str, word: str = "unserializable") -> None:
        super().__init__(reason)
        self.reason = reason
        self.word = word
        self.path: list[str | int] = []  # innermost first


def _encode_coerced(message: Any) -> bytes:
    try:
        # The copy is fresh plain data no other thread can reach: orjson runs no Python on it.
        return orjson.dumps(_coerce(message, 1, set()), option=_OPTIONS)
    except _Trouble as trouble:
        raise Unserializable(f"{trouble.reason} at {_path_text(trouble.path)}", trouble.word) from None
    except RecursionError:
        raise Unserializable("nesting too deep for the interpreter stack") from None
    except Exception as error:
        raise Unserializable(f"cannot encode message: {type(error).__name__}") from error


def _coerce(value: Any, depth: int, active: set[int]) -> Any:
    """Return ``value`` as plain JSON types or an orjson.Fragment.

    ``active`` holds the ids of the containers currently being walked (cycle detection).
    """
    kind = type(value)
    if kind is str:
        return _clean_text(value)
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else _int_text(value)
    if kind is float or kind is bool or value is None:
        return value
    if isinstance(value, dict):
        return _coerce_dict(value, depth, active)
    if isinstance(value, list):
        return _coerce_list(value, depth, active)
    if isinstance(value, str):
        return _clean_text(str.__str__(value))
    if isinstance(value, int):
        return _coerce(int.__int__(value), depth, active)
    if isinstance(value, Enum):
        return _coerce(value.value, depth, active)
    if isinstance(value, orjson.Fragment):
        return value
    converted = _default(value)
    if converted is value:  # a converter handing back what it got: keep its text
        return _clean_text(_text_of(value))
    return _coerce(converted, depth, active)


def _coerce_dict(mapping: dict, depth: int, active: set[int]) -> dict:
    _enter(mapping, depth, active)
    result = {}
    key = None
    try:
        for key, item in dict.items(mapping):
            text = _clean_text(key) if type(key) is str else _key_text(key)
            result[text] = _coerce(item, depth + 1, active)
    except _Trouble as trouble:
        trouble.path.append(_key_text(key))
        raise
    except RecursionError:
        raise
    except RuntimeError:  # "dictionary changed size during iteration": another thread wrote
        raise _Trouble("changed while being encoded", "changed_during_send") from None
    active.discard(id(mapping))
    return result


def _coerce_list(items: list, depth: int, active: set[int]) -> list:
    _enter(items, depth, active)
    result: list = []
    try:
        # A list iterator re-checks the length at each step: a list another thread changes
        # meanwhile gives some version of its items, never freed memory.
        for item in items:
            result.append(_coerce(item, depth + 1, active))
    except _Trouble as trouble:
        trouble.path.append(len(result))
        raise
    active.discard(id(items))
    return result


def _enter(container: Any, depth: int, active: set[int]) -> None:
    if depth > MAX_DEPTH:
        raise _Trouble(f"nesting deeper than {MAX_DEPTH} levels")
    if id(container) in active:
        raise _Trouble("cycle")
    active.add(id(container))


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return _clean_text(str.__str__(key))
    if key is None:
        return "null"
    if key is True:
        return "true"
    if key is False:
        return "false"
    if isinstance(key, int):
        return _int_text(int.__int__(key))
    if isinstance(key, Enum):
        return _key_text(key.value)
    if isinstance(key, (datetime.date, datetime.time)):
        written = _default(key)  # a Fragment of quoted text with nothing to escape, or text
        if isinstance(written, orjson.Fragment):
            return orjson.loads(orjson.dumps(written))
        return _clean_text(written)
    if isinstance(key, (bytes, bytearray, memoryview)):
        return _clean_text(_default(key))  # never raises, and gives text for bytes-like
    return _clean_text(_text_of(key))


def _int_text(number: int) -> str:
    try:
        return str(number)
    except ValueError:  # beyond sys.get_int_max_str_digits(); hex has no such limit
        return hex(number)


def _clean_text(text: str) -> str:
    """Replace each lone surrogate with U+FFFD (pairs are joined); other text is returned as is."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _path_text(segments: list[str | int]) -> str:
    parts: list[str] = []
    for segment in reversed(segments):
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            parts.append(f".{segment}" if parts else segment)
    text = "".join(parts) or "<message>"
    return text if len(text) <= _PATH_TEXT_LIMIT else text[:_PATH_TEXT_LIMIT] + "..."


# --- trimming -------------------------------------------------------------------------------------


def _with_data(message: Mapping, properties: Mapping, data: Any, trimmed: list[str]) -> dict:
    new_properties = dict(properties)
    new_properties["data"] = data
    new_properties["trimmed"] = trimmed
    new_message = dict(message)
    new_message["properties"] = new_properties
    return new_message


def _size(value: Any, sizes: dict[int, int]) -> int:
    size = sizes.get(id(value))
    if size is None:
        size = sizes[id(value)] = len(encode(value))
    return size


def _marker(size: int) -> str:
    return f"<trimmed {size} bytes>"


def _saving(size: int) -> int:
    """Bytes saved by replacing a value of encoded ``size`` with its marker (ASCII, quoted)."""
    return size - (len(_marker(size)) + 2)


def _shrink(
    node: Mapping, need: int, prefix: str, trimmed: list[str], sizes: dict[int, int]
) -> tuple[dict, int]:
    """Return a copy of ``node`` with its largest values trimmed to save ``need`` bytes, and bytes saved."""
    children = sorted(node.items(), key=lambda item: _size(item[1], sizes), reverse=True)
    copy = dict(node)
    saved = 0
    for key, value in children:
        remaining = need - saved
        if remaining <= 0:
            break
        path = f"{prefix}.{_key_text(key)}"
        if isinstance(value, Mapping) and value and _one_entry_suffices(value, remaining, sizes):
            copy[key], gained = _shrink(value, remaining, path, trimmed, sizes)
        else:
            size = _size(value, sizes)
            gained = _saving(size)
            if gained <= 0:
                break  # sorted: every later value is smaller still
            copy[key] = _marker(size)
            trimmed.append(path)
        saved += gained
    return copy, saved


def _one_entry_suffices(node: Mapping, need: int, sizes: dict[int, int]) -> bool:
    largest = max(_size(value, sizes) for value in node.values())
    return _saving(largest) >= need
