"""The event → Segment track message mapping, rule by rule (the original backend's contract)."""

from __future__ import annotations

import datetime

import pytest

from eventtracking.segment.mapping import (
    DEFAULT_OPTIONS,
    LIBRARY,
    MappingOptions,
    SkipEvent,
    segment_context,
    to_track_message,
)

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 11, 26, 12, 30, 15, 250000, tzinfo=UTC)


def event(**context) -> dict:
    return {"name": "edx.test", "timestamp": WHEN, "data": {"k": 1}, "context": {"user_id": 7, **context}}


def skip_reason(value, options=DEFAULT_OPTIONS) -> str:
    with pytest.raises(SkipEvent) as raised:
        to_track_message(value, options)
    return raised.value.reason


def test_track_message_shape():
    source = event()
    message = to_track_message(source)
    assert message["type"] == "track"
    assert message["event"] == "edx.test"
    assert message["userId"] == "7"
    assert message["properties"] == source
    assert message["timestamp"] == WHEN
    assert "messageId" not in message  # the backend assigns it
    assert message["context"] == {"library": LIBRARY}


def test_properties_carry_the_entire_event_including_unknown_fields():
    source = event(extra="x")
    source["event_source"] = "server"
    assert to_track_message(source)["properties"] == source


@pytest.mark.parametrize("missing", [{"name": None}, {"context": {}}, {"context": {"user_id": None}}])
def test_skipped_without_name_or_user_id(missing):
    source = {**event(), **missing}
    assert skip_reason(source) in ("no_name", "no_user_id")


def test_skipped_without_context():
    assert skip_reason({"name": "x"}) == "no_user_id"


@pytest.mark.parametrize(
    "user_id, wire", [(0, "0"), ("abc", "abc"), (12345678901234567890, "12345678901234567890")]
)
def test_valid_user_ids_go_on_the_wire_as_strings(user_id, wire):
    assert to_track_message(event(user_id=user_id))["userId"] == wire


@pytest.mark.parametrize("user_id", ["", True, False, 1.5, ["1"], {"id": 1}])
def test_invalid_user_ids_are_skipped(user_id):
    assert skip_reason(event(user_id=user_id)) == "bad_user_id"


@pytest.mark.parametrize("bad, reason", [("", "no_name"), (["x"], "bad_name"), (True, "bad_name")])
def test_invalid_names_are_skipped(bad, reason):
    source = event()
    source["name"] = bad
    assert skip_reason(source) == reason


def test_numeric_name_is_sent_as_text():
    source = event()
    source["name"] = 42
    assert to_track_message(source)["event"] == "42"


@pytest.mark.parametrize(
    "value, reason", [(None, "not_a_mapping"), ("x", "not_a_mapping"), ([1], "not_a_mapping")]
)
def test_non_mapping_events_are_skipped(value, reason):
    assert skip_reason(value) == reason


def test_context_that_is_not_a_mapping_is_skipped():
    assert skip_reason({"name": "x", "context": "user=1"}) == "bad_context"


def test_lifted_context_values():
    context = segment_context(event(client_id="ga.1", ip="198.51.100.7", agent="UA/1")["context"])
    assert context == {"Google Analytics": {"clientId": "ga.1"}, "ip": "198.51.100.7", "userAgent": "UA/1"}


def test_lifted_context_values_absent_when_none():
    context = to_track_message(event(client_id=None, ip=None, agent=None))["context"]
    assert context == {"library": LIBRARY}


def test_page_from_path_referer_and_page():
    page = to_track_message(event(path="/p", referer="https://r/", page="https://h/p?x"))["context"]["page"]
    assert page == {"path": "/p", "referrer": "https://r/", "url": "https://h/p?x"}


@pytest.mark.parametrize("page", [None, ""])
def test_url_built_from_host_and_path_when_page_absent_or_empty(page):
    context = event(path="/courses/x", host="lms.example.org")
    if page is not None:
        context["context"]["page"] = page
    assert to_track_message(context)["context"]["page"]["url"] == "https://lms.example.org/courses/x"


def test_empty_page_kept_when_no_host():
    page = to_track_message(event(path="/p", page=""))["context"]["page"]
    assert page == {"path": "/p", "url": ""}


@pytest.mark.parametrize("context", [{"path": "", "host": "h"}, {"path": "/p", "host": ""}, {"path": "/p"}])
def test_no_url_without_both_path_and_host(context):
    page = to_track_message(event(**context))["context"]["page"]
    assert "url" not in page
    assert page["path"] == context["path"]


def test_no_page_key_when_nothing_is_there():
    assert "page" not in to_track_message(event(host="h"))["context"]


def test_referer_alone_makes_a_page():
    assert to_track_message(event(referer="https://r/"))["context"]["page"] == {"referrer": "https://r/"}


def test_naive_timestamp_means_utc():
    source = event()
    source["timestamp"] = WHEN.replace(tzinfo=None)
    assert to_track_message(source)["timestamp"] == WHEN


def test_aware_timestamp_kept_in_its_zone():
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    source = event()
    source["timestamp"] = WHEN.astimezone(plus_two)
    stamp = to_track_message(source)["timestamp"]
    assert stamp == WHEN and stamp.utcoffset() == datetime.timedelta(hours=2)


@pytest.mark.parametrize(
    "text", ["2026-11-26T12:30:15.250000Z", "2026-11-26T12:30:15.250+00:00", "2026-11-26T12:30:15.25"]
)
def test_iso_string_timestamp(text):
    source = event()
    source["timestamp"] = text
    assert to_track_message(source)["timestamp"] == WHEN


def test_unusable_timestamp_is_left_to_the_server():
    source = event()
    source["timestamp"] = "yesterday"
    assert "timestamp" not in to_track_message(source)


def test_mapping_does_not_mutate_the_event():
    source = event(ip="198.51.100.7", path="/p", host="h", username="u")
    snapshot = repr(source)
    to_track_message(source, MappingOptions(exclude_fields=("context.username",), anonymize_ip=True))
    assert repr(source) == snapshot


def test_exclude_fields_removes_from_properties_and_lifted_context():
    options = MappingOptions(exclude_fields=("context.username", "context.ip", "data.k"))
    message = to_track_message(event(username="u", ip="198.51.100.7"), options)
    assert "username" not in message["properties"]["context"]
    assert "ip" not in message["context"] and "ip" not in message["properties"]["context"]
    assert message["properties"]["data"] == {}


def test_anonymize_ip_in_context_and_properties():
    message = to_track_message(event(ip="198.51.100.7"), MappingOptions(anonymize_ip=True))
    assert message["context"]["ip"] == "198.51.100.0"
    assert message["properties"]["context"]["ip"] == "198.51.100.0"


def test_anonymous_id_field_used_when_no_user():
    options = MappingOptions(anonymous_id_field="context.session")
    message = to_track_message(event(user_id=None, session="s-1"), options)
    assert message["anonymousId"] == "s-1" and "userId" not in message
    assert to_track_message(event(session="s-1"), options)["userId"] == "7"
    assert skip_reason(event(user_id=None), options) == "no_user_id"


def test_bad_exclude_path_is_a_configuration_error():
    with pytest.raises(ValueError):
        MappingOptions(exclude_fields=("context..x",))
