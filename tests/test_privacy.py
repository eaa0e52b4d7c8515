"""Tests for eventtracking.segment.privacy."""

from __future__ import annotations

import copy
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventtracking.segment.privacy import anonymize_ip, compile_paths, get_path, without_paths

# --- anonymize_ip -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("1.2.3.4", "1.2.3.0"),
        ("203.0.113.255", "203.0.113.0"),
        ("10.0.0.0", "10.0.0.0"),
        (" 1.2.3.4\n", "1.2.3.0"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1::"),
        ("2001:0db8:0001:ffff:ffff:ffff:ffff:ffff", "2001:db8:1::"),
        ("::1", "::"),
        ("fe80::1%eth0", "fe80::"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.0"),
        ("::ffff:102:304", "::ffff:1.2.3.0"),
    ],
)
def test_anonymize_ip(ip, expected):
    assert anonymize_ip(ip) == expected


@pytest.mark.parametrize(
    "ip",
    ["", "unknown", "1.2.3", "1.2.3.4:8080", "1.2.3.4, 5.6.7.8", "01.2.3.4", "2001:db8::g", None, 16909060],
)
def test_anonymize_ip_returns_anything_else_unchanged(ip):
    assert anonymize_ip(ip) == ip


@given(st.ip_addresses(v=4))
def test_anonymized_ipv4_keeps_first_three_octets(address):
    result = anonymize_ip(str(address))
    assert result.split(".")[:3] == str(address).split(".")[:3]
    assert result.endswith(".0")


@given(st.ip_addresses(v=6))
def test_anonymized_ipv6_is_idempotent(address):
    once = anonymize_ip(str(address))
    assert anonymize_ip(once) == once


# --- compile_paths ------------------------------------------------------------------------------------


def test_compile_paths_splits_and_dedupes():
    assert compile_paths(["context.username", "data.a.b", "ip", "context.username"]) == (
        ("context", "username"),
        ("data", "a", "b"),
        ("ip",),
    )


def test_compile_paths_accepts_any_iterable():
    assert compile_paths(path for path in ["a.b"]) == (("a", "b"),)
    assert compile_paths([]) == ()


@pytest.mark.parametrize("path", ["a..b", ".a", "a.", "."])
def test_compile_paths_rejects_empty_segments_naming_the_path(path):
    with pytest.raises(ValueError, match=f"path '{path}' has an empty segment"):
        compile_paths(["ok", path])


def test_compile_paths_rejects_empty_path():
    with pytest.raises(ValueError, match="empty path"):
        compile_paths([""])


def test_compile_paths_rejects_a_single_string():
    with pytest.raises(TypeError, match="single string"):
        compile_paths("context.username")


def test_compile_paths_rejects_non_strings():
    with pytest.raises(TypeError, match="int"):
        compile_paths(["a", 3])


# --- without_paths ------------------------------------------------------------------------------------


def sample_event():
    return {
        "name": "problem_check",
        "context": {"username": "alice", "ip": "1.2.3.4", "module": {"display_name": "Q1", "usage_key": "k"}},
        "data": {"answers": {"q1": "a"}, "grade": 1},
        "list": [{"username": "in a list"}],
    }


def test_without_paths_removes_values_and_leaves_the_input_alone():
    event = sample_event()
    original = copy.deepcopy(event)

    result = without_paths(event, compile_paths(["context.username", "context.module.usage_key", "name"]))

    assert result == {
        "context": {"ip": "1.2.3.4", "module": {"display_name": "Q1"}},
        "data": {"answers": {"q1": "a"}, "grade": 1},
        "list": [{"username": "in a list"}],
    }
    assert event == original


def test_without_paths_copies_only_dicts_along_removed_paths():
    event = sample_event()
    result = without_paths(event, [("context", "module", "usage_key")])
    assert result is not event
    assert result["context"] is not event["context"]
    assert result["context"]["module"] is not event["context"]["module"]
    assert result["data"] is event["data"]  # shared: nothing removed there
    assert result["list"] is event["list"]


def test_without_paths_ignores_missing_paths_and_non_dicts_in_the_way():
    event = sample_event()
    result = without_paths(event, ["nope", "context.nope", "name.x", "list.0.username", "data.grade.x"])
    assert result == event
    assert result is not event
    assert result["context"] is event["context"]  # a missing leaf copies nothing


def test_without_paths_accepts_dotted_strings():
    assert without_paths({"a": {"b": 1, "c": 2}}, ["a.b"]) == {"a": {"c": 2}}


def test_without_paths_handles_overlapping_paths():
    event = sample_event()
    paths = compile_paths(["context.module.display_name", "context.module", "context.ip"])
    result = without_paths(event, paths)
    assert result["context"] == {"username": "alice"}
    assert event == sample_event()


def test_without_paths_copies_shared_subdicts_once_per_place():
    shared = {"secret": 1, "keep": 2}
    event = {"a": shared, "b": shared}
    result = without_paths(event, ["a.secret"])
    assert result == {"a": {"keep": 2}, "b": {"secret": 1, "keep": 2}}
    assert shared == {"secret": 1, "keep": 2}


def test_without_paths_accepts_read_only_mappings():
    event = types.MappingProxyType({"context": types.MappingProxyType({"username": "u", "x": 1})})
    assert without_paths(event, ["context.username"]) == {"context": {"x": 1}}


nested_events = st.recursive(
    st.integers(),
    lambda children: st.dictionaries(st.sampled_from("abc"), children, max_size=3),
    max_leaves=20,
)
dotted_paths = st.lists(st.sampled_from("abc"), min_size=1, max_size=4).map(".".join)


@given(nested_events.filter(lambda value: isinstance(value, dict)), st.lists(dotted_paths, max_size=4))
def test_without_paths_matches_deleting_from_a_deep_copy(event, paths):
    original = copy.deepcopy(event)
    expected = copy.deepcopy(event)
    for path in paths:
        *parents, leaf = path.split(".")
        node = expected
        for segment in parents:
            node = node.get(segment) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)

    assert without_paths(event, compile_paths(paths)) == expected
    assert event == original


# --- get_path -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("name", "problem_check"),
        ("context.username", "alice"),
        (("context", "module", "display_name"), "Q1"),
        ("context.module", {"display_name": "Q1", "usage_key": "k"}),
        ("context.nope", None),
        ("nope.deeper", None),
        ("name.x", None),  # a str in the way
        ("list.0", None),  # lists are not indexed
    ],
)
def test_get_path(path, expected):
    assert get_path(sample_event(), path) == expected
