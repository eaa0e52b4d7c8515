"""Tests for eventtracking.segment.encoding: coercion rules, refusals, trimming, and properties."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import enum
import json
import sys
import types
import uuid
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventtracking.segment import encoding
from eventtracking.segment.encoding import (
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    Unserializable,
    encode,
    trim_to_fit,
)

# A value orjson refuses, so a message holding it takes the coercing walk.
FORCE_WALK = 2**64

UTC = datetime.timezone.utc
IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Shape(enum.Enum):
    CORNERS = {4}


class Text(str):
    def __str__(self):
        return "overridden"


class Number(int):
    pass


class Ratio(float):
    pass


class Items(list):
    pass


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Block:
    name: str
    count: int


class OpaqueKey:
    """Stands in for an Open edX CourseKey: only str() gives it meaning."""

    def __str__(self):
        return "course-v1:edX+DemoX+Demo_Course"


class Unprintable:
    def __str__(self):
        raise RuntimeError("no text for you")


class SurrogateText:
    def __str__(self):
        return "bad\udc80"


def encoded_value(value, walk=False):
    """The JSON text `value` becomes inside a message, via the fast path or the coercing walk."""
    message = {"v": value, "force": FORCE_WALK} if walk else {"v": value}
    result = orjson.loads(encode(message))["v"]
    return orjson.dumps(result).decode()


def both_paths(value):
    fast, walked = encoded_value(value), encoded_value(value, walk=True)
    assert fast == walked, "fast path and coercing walk disagree"
    return fast


# --- fast path ----------------------------------------------------------------------------------------


def test_plain_message_is_exactly_orjson_output():
    message = {
        "name": "edx.ui.lms.sequence.next_selected",
        "timestamp": datetime.datetime(2024, 5, 9, 7, 35, 25, 123456),
        "context": {"user_id": 42, "course_id": "course-v1:edX+DemoX+Demo_Course", "ip": "203.0.113.0"},
        "data": {"old": 1, "new": 2.5, "ok": True, "none": None, "id": uuid.UUID(int=7)},
    }
    assert encode(message) == orjson.dumps(message, option=orjson.OPT_NAIVE_UTC)


def test_output_is_compact():
    assert encode({"a": [1, 2], "b": {"c": None}}) == b'{"a":[1,2],"b":{"c":null}}'


# --- coercion rules (exact JSON) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), '"12345678-1234-5678-1234-567812345678"'),
        (datetime.datetime(2024, 1, 2, 3, 4, 5), '"2024-01-02T03:04:05+00:00"'),
        (datetime.datetime(2024, 1, 2, 3, 4, 5, 6), '"2024-01-02T03:04:05.000006+00:00"'),
        (datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=IST), '"2024-01-02T03:04:05+05:30"'),
        (datetime.date(2024, 1, 2), '"2024-01-02"'),
        (datetime.time(3, 4, 5), '"03:04:05"'),
        (datetime.time(3, 4, 5, tzinfo=UTC), '"03:04:05+00:00"'),
        (b"caf\xc3\xa9", '"café"'),
        (b"a\xffb\xc3", '"a\ufffdb\ufffd"'),
        (bytearray(b"xy"), '"xy"'),
        (memoryview(b"xy"), '"xy"'),
        ({3}, "[3]"),
        (frozenset({"a"}), '["a"]'),
        ((1, "a"), '[1,"a"]'),
        (Point(1, 2), "[1,2]"),
        (float("nan"), "null"),
        (float("inf"), "null"),
        (float("-inf"), "null"),
        (Colour.RED, '"red"'),
        (Level.HIGH, "3"),
        (Shape.CORNERS, "[4]"),
        (Text("base"), '"base"'),
        (Number(5), "5"),
        (Ratio(1.5), "1.5"),
        (Items([1, 2]), "[1,2]"),
        (collections.OrderedDict([("b", 1), ("a", 2)]), '{"b":1,"a":2}'),
        (types.MappingProxyType({"a": 1}), '{"a":1}'),
        (Block("x", 2), '{"name":"x","count":2}'),
        (OpaqueKey(), '"course-v1:edX+DemoX+Demo_Course"'),
        (Unprintable(), '"<unprintable Unprintable>"'),
        (SurrogateText(), '"bad\ufffd"'),
    ],
)
def test_values_are_kept(value, expected):
    assert both_paths(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2**64 - 1, "18446744073709551615"),
        (-(2**63), "-9223372036854775808"),
        (2**64, '"18446744073709551616"'),
        (-(2**63) - 1, '"-9223372036854775809"'),
        (Number(2**70), '"1180591620717411303424"'),
    ],
)
def test_integers_beyond_64_bits_become_strings(value, expected):
    assert encoded_value(value) == expected


def test_integer_past_the_str_digit_limit_becomes_hex():
    huge = 1 << 20000  # > 4300 decimal digits
    assert orjson.loads(encode({"v": huge}))["v"] == hex(huge)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.1"), "0.1"),
        (Decimal("2.50"), "2.5"),
        (Decimal("-1.25"), "-1.25"),
        (Decimal("12"), "12"),
        (Decimal("1E+2"), "100"),
        (Decimal("-0"), "0"),
        (Decimal("1E+30"), "1e+30"),
        (Decimal("3.14159265358979323846"), '"3.14159265358979323846"'),
        (Decimal("18446744073709551616"), '"18446744073709551616"'),
        (Decimal("1E-400"), '"1E-400"'),
        (Decimal("1E+1000000"), '"1E+1000000"'),
        (Decimal("NaN"), "null"),
        (Decimal("sNaN"), "null"),
        (Decimal("Infinity"), "null"),
        (Decimal("-Infinity"), "null"),
    ],
)
def test_decimal_rule(value, expected):
    # Compared as JSON values: orjson versions spell some floats differently (1e30, 1e+30).
    assert json.loads(both_paths(value)) == json.loads(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\ud800b", "a\ufffdb"),
        ("\udc00", "\ufffd"),
        ("x\ud800\ud800", "x\ufffd\ufffd"),
        ("\ud83d\ude00", "\U0001f600"),  # a surrogate pair is joined, not replaced
        ("ok \u00e9 \ud800", "ok \u00e9 \ufffd"),
    ],
)
def test_lone_surrogates_in_values_and_keys(text, expected):
    decoded = orjson.loads(encode({"value": text, text: 1, "nested": [{text: text}]}))
    assert decoded == {"value": expected, expected: 1, "nested": [{expected: expected}]}


def test_str_subclass_is_encoded_by_value_not_by_its_str():
    assert encode({"a": Text("base"), Text("key"): 1}) == b'{"a":"base","key":1}'


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (1, "1"),
        (-7, "-7"),
        (2**70, "1180591620717411303424"),
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (1.5, "1.5"),
        ((1, 2), "(1, 2)"),
        (datetime.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05+00:00"),
        (datetime.date(2024, 1, 2), "2024-01-02"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (b"k\xff", "k\ufffd"),
        (Colour.RED, "red"),
        (Level.HIGH, "3"),
        (Decimal("1.50"), "1.50"),
        (Unprintable(), "<unprintable Unprintable>"),
    ],
)
def test_non_string_keys(key, expected):
    assert orjson.loads(encode({"d": {key: "v"}})) == {"d": {expected: "v"}}


def test_colliding_keys_keep_the_later_value():
    assert encode({"d": {1: "first", "1": "second"}}) == b'{"d":{"1":"second"}}'


def test_shared_references_are_not_cycles():
    shared = {"a": [1]}
    assert encode({"x": shared, "y": shared, "z": FORCE_WALK}) == (
        b'{"x":{"a":[1]},"y":{"a":[1]},"z":"18446744073709551616"}'
    )


def test_walk_output_matches_fast_path_for_everything_else():
    message = {
        "when": datetime.datetime(2024, 1, 2, tzinfo=UTC),
        "id": uuid.UUID(int=3),
        "data": {"block": Block("b", 1), "key": OpaqueKey(), "tags": ("a", "b")},
    }
    fast = orjson.loads(encode(message))
    walked = orjson.loads(encode({**message, "force": FORCE_WALK}))
    del walked["force"]
    assert fast == walked


# --- refusals ----------------------------------------------------------------------------------------


def test_dict_cycle_is_refused_with_its_path():
    data = {}
    data["x"] = data
    with pytest.raises(Unserializable, match=r"^cycle at properties\.data\.x$"):
        encode({"properties": {"data": data}})


def test_list_cycle_is_refused_with_its_path():
    items = [1]
    items.append(items)
    with pytest.raises(Unserializable, match=r"^cycle at data\.items\[1\]$"):
        encode({"data": {"items": items}})


def test_walk_refuses_a_cycle_through_a_tuple():
    # Called on the walk directly: orjson 3.13 itself crashes the process on a
    # cycle through a tuple (tuples escape its depth counter), before any fallback.
    items = []
    items.append((items,))
    with pytest.raises(Unserializable, match=r"cycle at a\[0\]\[0\]"):
        encoding._encode_coerced({"a": items})


def nested_lists(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_up_to_the_limit_is_encoded():
    # The message dict is one level, so MAX_DEPTH - 1 more levels fit, also via the walk.
    assert encode({"a": nested_lists(MAX_DEPTH - 1)}).count(b"[") == MAX_DEPTH - 1
    assert encode({"a": nested_lists(MAX_DEPTH - 1), "f": FORCE_WALK}).count(b"[") == MAX_DEPTH - 1


def test_nesting_beyond_the_limit_is_refused():
    with pytest.raises(Unserializable, match=rf"^nesting deeper than {MAX_DEPTH} levels at a\[0\]"):
        # one level past the limit: orjson before 3.12 allows one level more than later ones
        encode({"a": nested_lists(MAX_DEPTH + 1)})


def test_short_interpreter_stack_gives_unserializable_not_recursion_error():
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 100)  # too little stack left for the walk over 200 levels
    try:
        with pytest.raises(Unserializable, match="interpreter stack"):
            encode({"a": nested_lists(200), "f": FORCE_WALK})
    finally:
        sys.setrecursionlimit(limit)


# --- trimming ----------------------------------------------------------------------------------------


def oversized_message():
    return {
        "event": "problem_check",
        "properties": {
            "name": "problem_check",
            "context": {"user_id": 1, "course_id": "course-v1:edX+DemoX+Demo_Course"},
            "data": {
                "answers": {"q1": "a" * 40000},
                "state": {"blob": "b" * 30000, "done": True},
                "attempts": 2,
                "small": "keep me",
            },
        },
    }


def test_message_that_fits_is_returned_untrimmed():
    message = {"properties": {"data": {"a": 1}}}
    assert trim_to_fit(message) == (encode(message), [])


def test_trimming_cuts_largest_values_first_and_records_paths():
    message = oversized_message()
    original = copy.deepcopy(message)

    encoded, trimmed = trim_to_fit(message)

    assert len(encoded) <= MAX_MESSAGE_BYTES
    assert trimmed == ["data.answers.q1"]
    decoded = orjson.loads(encoded)
    assert decoded["properties"]["trimmed"] == trimmed
    data = decoded["properties"]["data"]
    assert data["answers"] == {"q1": '<trimmed 40002 bytes>'}
    assert data["state"] == {"blob": "b" * 30000, "done": True}
    assert data["attempts"] == 2 and data["small"] == "keep me"
    assert message == original  # the caller's objects are untouched


def test_trimming_several_values_with_a_smaller_limit():
    message = oversized_message()
    original = copy.deepcopy(message)

    encoded, trimmed = trim_to_fit(message, limit=2000)

    assert len(encoded) <= 2000
    # q1 alone cannot cover the excess, so "answers" goes whole; "blob" alone covers the rest.
    assert trimmed == ["data.answers", "data.state.blob"]
    data = orjson.loads(encoded)["properties"]["data"]
    assert data["answers"] == "<trimmed 40009 bytes>"
    assert data["state"] == {"blob": "<trimmed 30002 bytes>", "done": True}
    assert data["small"] == "keep me"
    assert message == original


def test_dict_of_many_small_values_is_trimmed_whole():
    message = {"properties": {"data": {"grid": {str(i): "x" * 50 for i in range(2000)}, "id": 1}}}
    encoded, trimmed = trim_to_fit(message, limit=1000)
    assert trimmed == ["data.grid"]
    assert orjson.loads(encoded)["properties"]["data"]["id"] == 1


def test_data_is_emptied_as_a_last_resort():
    message = {"properties": {"data": {str(i): "x" * 30 for i in range(3000)}}}
    encoded, trimmed = trim_to_fit(message, limit=1000)
    assert trimmed == ["data"]
    assert orjson.loads(encoded)["properties"] == {"data": {}, "trimmed": ["data"]}


def test_oversized_context_cannot_be_trimmed():
    message = oversized_message()
    message["properties"]["context"]["agent"] = "z" * 50000
    with pytest.raises(Unserializable, match="even with properties.data emptied"):
        trim_to_fit(message)


def test_message_without_data_cannot_be_trimmed():
    with pytest.raises(Unserializable, match="no properties.data"):
        trim_to_fit({"properties": {"context": {"x": "y" * 100}}}, limit=50)


def test_trimming_refuses_a_cycle():
    data = {"big": "x" * 100}
    data["self"] = data
    with pytest.raises(Unserializable, match="cycle"):
        trim_to_fit({"properties": {"data": data}}, limit=50)


def test_trimming_handles_values_that_need_coercion():
    message = {"properties": {"data": {"blob": b"\xff" * 5000, 7: {"s": "\ud800" * 2000}, "k": "v"}}}
    encoded, trimmed = trim_to_fit(message, limit=300)
    assert len(encoded) <= 300
    assert trimmed == ["data.blob", "data.7.s"]


# --- properties --------------------------------------------------------------------------------------

any_text = st.text(
    alphabet=st.one_of(st.characters(codec=None, exclude_categories=()), st.characters(categories=["Cs"])),
    max_size=12,
)
plain_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
odd_leaves = st.one_of(
    st.integers(),
    st.integers(min_value=2**64, max_value=2**200),
    st.floats(),
    any_text,
    st.binary(max_size=12),
    st.decimals(),
    st.uuids(),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.times(),
    st.sampled_from([Colour.RED, Level.HIGH, Shape.CORNERS, OpaqueKey(), Unprintable(), SurrogateText()]),
)
odd_keys = st.one_of(
    any_text, st.integers(), st.none(), st.floats(), st.tuples(st.integers(), st.text(max_size=3))
)
odd_values = st.recursive(
    st.one_of(plain_leaves, odd_leaves),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.frozensets(st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
        st.sets(st.integers(), max_size=3),
        st.dictionaries(odd_keys, children, max_size=4),
    ),
    max_leaves=25,
)
plain_values = st.recursive(
    plain_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(odd_values)
def test_any_value_encodes_to_strict_json(value):
    try:
        encoded = encode({"properties": {"data": value}})
    except Unserializable:  # pragma: no cover - generated values have neither cycles nor deep nesting
        pytest.fail("generated values are always encodable")
    encoded.decode("utf-8")  # strictly valid UTF-8
    assert orjson.loads(encoded) == json.loads(encoded, parse_constant=pytest.fail)


@settings(max_examples=200, deadline=None)
@given(plain_values)
def test_plain_json_round_trips(value):
    message = {"properties": {"data": value}}
    assert orjson.loads(encode(message)) == message
    assert json.loads(encode(message)) == message


@settings(max_examples=200, deadline=None)
@given(odd_values)
def test_trim_to_fit_always_fits_or_refuses(value):
    message = {"properties": {"context": {"user_id": 1}, "data": {"value": value, "pad": "p" * 300}}}
    before = encode(message)
    encoded, trimmed = trim_to_fit(message, limit=200)
    assert len(encoded) <= 200
    assert orjson.loads(encoded)["properties"]["trimmed"] == trimmed
    assert encode(message) == before  # the caller's message is untouched


@settings(max_examples=200, deadline=None)
@given(odd_values)
def test_fast_path_and_walk_agree(value):
    fast = orjson.loads(encode({"data": value}))
    walked = orjson.loads(encode({"data": value, "force": FORCE_WALK}))
    assert walked["data"] == fast["data"]
