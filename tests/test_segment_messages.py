"""The pure message functions of the Segment client (eventtracking.segment.messages): Segment's
spec shape for each call type, and a stable reason for each bad input."""

from __future__ import annotations

import datetime
import uuid

import pytest

from eventtracking.segment import messages
from eventtracking.segment.mapping import LIBRARY, SkipEvent

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
CONTEXT = {"ip": "198.51.100.7", "locale": "fr"}


def test_track():
    properties = {"plan": "pro"}
    message = messages.track("u1", "Signed Up", properties, CONTEXT, WHEN, None, {"All": False}, "m-1")
    assert message == {
        "type": "track",
        "userId": "u1",
        "event": "Signed Up",
        "properties": {"plan": "pro"},
        "context": {"ip": "198.51.100.7", "locale": "fr", "library": LIBRARY},
        "integrations": {"All": False},
        "timestamp": "2026-01-02T03:04:05.600000+00:00",
        "messageId": "m-1",
    }
    assert message["properties"] is properties  # the caller's, encoded by the client at once
    assert CONTEXT == {"ip": "198.51.100.7", "locale": "fr"}  # the caller's context is not changed


def test_identify():
    message = messages.identify(anonymous_id="a-9", traits={"email": "x@example.org"}, timestamp=WHEN)
    assert message["type"] == "identify" and message["anonymousId"] == "a-9" and "userId" not in message
    assert message["traits"] == {"email": "x@example.org"}
    assert message["context"] == {"library": LIBRARY}
    assert "messageId" not in message  # the client assigns one
    assert "integrations" not in message


def test_group():
    message = messages.group(7, "g-1", {"name": "Org"}, timestamp=WHEN)
    assert message["type"] == "group" and message["userId"] == "7"
    assert message["groupId"] == "g-1" and message["traits"] == {"name": "Org"}


def test_alias():
    message = messages.alias("anon-1", "u-1", timestamp=WHEN, message_id=uuid.UUID(int=5))
    assert message == {
        "type": "alias",
        "userId": "u-1",
        "previousId": "anon-1",
        "context": {"library": LIBRARY},
        "timestamp": WHEN.isoformat(),
        "messageId": "00000000-0000-0000-0000-000000000005",
    }


@pytest.mark.parametrize("kind", ["page", "screen"])
def test_page_and_screen(kind):
    build = getattr(messages, kind)
    message = build("u", "Docs", "Install", {"path": "/install"}, timestamp=WHEN)
    assert message["type"] == kind
    assert (message["category"], message["name"], message["properties"]) == (
        "Docs",
        "Install",
        {"path": "/install"},
    )
    bare = build("u", timestamp=WHEN)
    assert "name" not in bare and "category" not in bare and bare["properties"] == {}


def test_the_callers_library_is_kept():
    context = {"library": {"name": "mine", "version": "1"}}
    assert messages.track("u", "e", context=context)["context"]["library"] == {"name": "mine", "version": "1"}


def test_timestamps():
    assert messages.timestamp_text(WHEN) == "2026-01-02T03:04:05.600000+00:00"
    paris = datetime.timezone(datetime.timedelta(hours=1))
    assert messages.timestamp_text(WHEN.astimezone(paris)) == "2026-01-02T04:04:05.600000+01:00"
    assert messages.timestamp_text("2026-01-02T03:04:05Z") == "2026-01-02T03:04:05+00:00"
    naive = datetime.datetime(2020, 5, 6, 7, 8, 9)  # far from now: UTC, as the official client guesses
    assert messages.timestamp_text(naive) == "2020-05-06T07:08:09+00:00"
    local_now = datetime.datetime.now()  # datetime.now(): local time, with the local offset
    text = messages.timestamp_text(local_now, now=local_now)
    assert datetime.datetime.fromisoformat(text) == local_now.astimezone()
    now = datetime.datetime.fromisoformat(messages.timestamp_text(None))
    assert abs(now - datetime.datetime.now(UTC)) < datetime.timedelta(seconds=60)


class BadZone(datetime.tzinfo):
    def utcoffset(self, dt):
        raise RuntimeError("no offset")


BAD_INPUTS = [
    ("track", dict(event="e"), "no_user_id"),
    ("track", dict(user_id="u"), "bad_event"),
    ("track", dict(user_id="u", event=5), "bad_event"),
    ("track", dict(user_id=True, event="e"), "bad_user_id"),
    ("track", dict(user_id=["u"], event="e"), "bad_user_id"),
    ("track", dict(anonymous_id={"a": 1}, event="e"), "bad_anonymous_id"),
    ("track", dict(user_id="u", event="e", properties=["not", "a", "dict"]), "bad_properties"),
    ("track", dict(user_id="u", event="e", context="ctx"), "bad_context"),
    ("track", dict(user_id="u", event="e", integrations=[1]), "bad_integrations"),
    ("track", dict(user_id="u", event="e", timestamp="yesterday"), "bad_timestamp"),
    ("track", dict(user_id="u", event="e", timestamp=12345), "bad_timestamp"),
    (
        "track",
        dict(user_id="u", event="e", timestamp=datetime.datetime(2026, 1, 1, tzinfo=BadZone())),
        "bad_timestamp",
    ),
    ("track", dict(user_id="u", event="e", message_id={"id": 1}), "bad_message_id"),
    ("identify", dict(user_id="u", traits="t"), "bad_traits"),
    ("identify", dict(traits={}), "no_user_id"),
    ("group", dict(user_id="u"), "bad_group_id"),
    ("group", dict(user_id="u", group_id=object()), "bad_group_id"),
    ("group", dict(user_id="u", group_id="g", traits=3), "bad_traits"),
    ("alias", dict(previous_id="p"), "no_user_id"),
    ("alias", dict(user_id="u"), "bad_previous_id"),
    ("page", dict(user_id="u", name=5), "bad_name"),
    ("screen", dict(user_id="u", category=5), "bad_category"),
    ("page", dict(user_id="u", properties="p"), "bad_properties"),
]


@pytest.mark.parametrize("kind,arguments,reason", BAD_INPUTS, ids=[f"{k}-{r}" for k, _, r in BAD_INPUTS])
def test_bad_input_is_a_reason(kind, arguments, reason):
    with pytest.raises(SkipEvent) as refused:
        getattr(messages, kind)(**arguments)
    assert refused.value.reason == reason


def test_ids_that_are_numbers_are_strings():
    assert messages.track(0, "e")["userId"] == "0"  # 0 is an id (the official client refuses it)
    assert messages.track(anonymous_id=12.5, event="e")["anonymousId"] == "12.5"
    assert messages.track("u", "e", message_id=42)["messageId"] == "42"
