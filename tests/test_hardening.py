"""Any input through the real backend and the real collector: nothing raised, nothing silently lost."""

from __future__ import annotations

import datetime
import decimal
import logging
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventtracking.backends.segment import SegmentBackend
from eventtracking.collector import Collector

UTC = datetime.timezone.utc
KEY = "hardening-secret-key"


def backend_for(collector, **options) -> SegmentBackend:
    return SegmentBackend(write_key=KEY, host=collector.url, flush_interval=0.02, **options)


def good(i: int, **data) -> dict:
    return {
        "name": "good",
        "timestamp": datetime.datetime(2026, 1, 1, tzinfo=UTC),
        "data": {"i": i, **data},
        "context": {"user_id": i},
    }


class Opaque:
    """Like an Open edX CourseKey: not JSON, but has a meaningful str()."""

    def __str__(self) -> str:
        return "course-v1:edX+DemoX+2026"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def cyclic() -> dict:
    data: dict = {"a": 1}
    data["self"] = data
    return data


def deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "event, reason",
    [
        (None, "not_a_mapping"),
        ("edx.event", "not_a_mapping"),
        (42, "not_a_mapping"),
        ([{"name": "x"}], "not_a_mapping"),
        ({"name": "x", "context": "user=1"}, "bad_context"),
        ({"name": "x", "context": ["user", 1]}, "bad_context"),
        ({"name": object(), "context": {"user_id": 1}}, "bad_name"),
        ({"name": "", "context": {"user_id": 1}}, "no_name"),
        ({"context": {"user_id": 1}}, "no_name"),
        ({"name": "x", "context": {"user_id": True}}, "bad_user_id"),
        ({"name": "x", "context": {"user_id": ""}}, "bad_user_id"),
        ({"name": "x", "context": {"user_id": 1.5}}, "bad_user_id"),
        ({"name": "x", "context": {"user_id": object()}}, "bad_user_id"),
        ({"name": "x", "context": {}}, "no_user_id"),
        ({"name": "x", "context": {"user_id": 1}, "data": cyclic()}, "unserializable"),
        ({"name": "x", "context": {"user_id": 1}, "data": deep(300)}, "unserializable"),
        ({"name": "x", "context": {"user_id": 1}, "data": {"blob": "x" * 40000}}, "oversized"),
    ],
)
def test_bad_input_is_skipped_with_a_reason_and_costs_no_other_event(collector, event, reason, caplog):
    backend = backend_for(collector)
    with caplog.at_level(logging.DEBUG, logger="eventtracking"):
        backend.send(good(1))
        backend.send(event)  # must not raise
        backend.send(good(2))
    assert backend.flush(10)
    stats = backend.stats()
    assert stats["skipped"] == {reason: 1}
    assert stats["delivered"] == 2 and stats["dropped"] == {}
    assert [m["properties"]["data"]["i"] for m in collector.messages()] == [1, 2]
    assert reason in caplog.text


def test_oversized_warning_names_the_event_and_its_size(collector, caplog):
    backend = backend_for(collector)
    with caplog.at_level(logging.WARNING):
        backend.send({"name": "big.one", "context": {"user_id": 1}, "data": {"blob": "x" * 40000}})
    assert "'big.one'" in caplog.text and "40" in caplog.text and "bytes" in caplog.text


def test_trim_oversized_sends_the_event_with_the_trimmed_paths(collector):
    backend = backend_for(collector, trim_oversized=True)
    backend.send({"name": "big", "context": {"user_id": 1}, "data": {"keep": "k", "answers": "a" * 40000}})
    assert backend.flush(10)
    [message] = collector.messages()
    assert message["properties"]["trimmed"] == ["data.answers"]
    assert message["properties"]["data"]["keep"] == "k"
    assert message["properties"]["data"]["answers"].startswith("<trimmed")
    assert backend.stats()["trimmed"] == 1


def test_exotic_values_are_kept_on_the_wire(collector):
    backend = backend_for(collector)
    data = {
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "decimal": decimal.Decimal("12.5"),
        "precise": decimal.Decimal("3.14159265358979323846"),
        "naive": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "date": datetime.date(2026, 1, 2),
        "bytes": b"caf\xc3\xa9\xff",
        "set": {3},
        "tuple": (1, "a"),
        "huge": 2**70,
        "nan": float("nan"),
        "inf": float("inf"),
        "surrogate": "a\ud800b",
        "keys": {1: "int", None: "none"},
        "course_key": Opaque(),
        "unprintable": Unprintable(),
    }
    backend.send(good(1, **data))
    assert backend.flush(10)
    [message] = collector.messages()
    sent = message["properties"]["data"]
    assert sent["uuid"] == "12345678-1234-5678-1234-567812345678"
    assert sent["decimal"] == 12.5
    assert sent["precise"] == "3.14159265358979323846"
    assert sent["naive"] == "2026-01-02T03:04:05+00:00"
    assert sent["date"] == "2026-01-02"
    assert sent["bytes"] == "café\ufffd"
    assert sent["set"] == [3] and sent["tuple"] == [1, "a"]
    assert sent["huge"] == str(2**70)
    assert sent["nan"] is None and sent["inf"] is None
    assert sent["surrogate"] == "a\ufffdb"
    assert sent["keys"] == {"1": "int", "null": "none"}
    assert sent["course_key"] == "course-v1:edX+DemoX+2026"
    assert sent["unprintable"] == "<unprintable Unprintable>"


def test_a_nan_event_in_the_middle_of_a_batch(collector):
    backend = backend_for(collector)
    for i in range(10):
        backend.send(good(i, score=float("nan") if i == 5 else 1.0))
    assert backend.flush(10)
    messages = collector.messages()
    assert sorted(m["properties"]["data"]["i"] for m in messages) == list(range(10))
    assert [m["properties"]["data"]["score"] for m in messages if m["properties"]["data"]["i"] == 5] == [None]
    assert collector.requests.get("refused", 0) == 0


def test_exclude_fields_never_leave_the_process(collector):
    backend = backend_for(collector, exclude_fields=["context.username", "context.session", "data.answers"])
    event = good(1, answers=["secret"])
    event["context"].update(username="ada", session="s3cr3t", ip="198.51.100.7")
    backend.send(event)
    assert backend.flush(10)
    [message] = collector.messages()
    assert "username" not in message["properties"]["context"]
    assert "session" not in message["properties"]["context"]
    assert "answers" not in message["properties"]["data"]
    assert message["context"]["ip"] == "198.51.100.7"
    assert event["context"]["username"] == "ada"  # the caller's event is untouched


@pytest.mark.parametrize(
    "ip, anonymized", [("198.51.100.7", "198.51.100.0"), ("2001:db8:1:2:3:4:5:6", "2001:db8:1::")]
)
def test_anonymize_ip_on_the_wire(collector, ip, anonymized):
    backend = backend_for(collector, anonymize_ip=True)
    event = good(1)
    event["context"]["ip"] = ip
    backend.send(event)
    assert backend.flush(10)
    [message] = collector.messages()
    assert message["context"]["ip"] == anonymized
    assert message["properties"]["context"]["ip"] == anonymized
    assert ip not in str(message)


def test_anonymous_events_with_an_anonymous_id_field(collector):
    backend = backend_for(collector, anonymous_id_field="context.session")
    backend.send({"name": "anon", "context": {"session": "sess-1"}})
    backend.send({"name": "nobody", "context": {}})
    assert backend.flush(10)
    [message] = collector.messages()
    assert message["anonymousId"] == "sess-1" and "userId" not in message
    assert backend.stats()["skipped"] == {"no_user_id": 1}


def test_the_write_key_never_shows(caplog):
    with Collector(write_key="another-key") as collector, caplog.at_level(logging.DEBUG):
        backend = backend_for(collector, retry_timeout=0.5)
        backend.send(good(1))
        backend.send(None)
        assert backend.flush(10)
        text = caplog.text + repr(backend) + str(backend.stats())
    assert KEY not in text


# -- properties: random nested values through the real encoder and the real collector --------------

keys = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),  # NaN and infinities included
    st.text(alphabet=st.characters(codec=None), max_size=12),  # lone surrogates included
    st.binary(max_size=12),
    st.decimals(places=None),
    st.uuids(),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC))),
    st.dates(),
    st.builds(Opaque),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=4),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def shared_collector():
    with Collector() as running:
        yield running


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(values, min_size=1, max_size=10))
def test_random_events_are_all_delivered_once_and_never_refused(shared_collector, payloads):
    backend = backend_for(shared_collector)
    ids = [f"prop-{uuid.uuid4().hex}" for _ in payloads]
    for message_id, payload in zip(ids, payloads):
        backend.send(
            {"name": "random", "context": {"user_id": 1}, "data": {"value": payload}}, message_id=message_id
        )
    assert backend.flush(30)
    stats = backend.stats()
    backend.close(5)
    assert stats["skipped"] == {} and stats["dropped"] == {}
    assert stats["delivered"] == len(payloads)
    arrived = set(shared_collector.message_ids())
    assert set(ids) <= arrived
    assert shared_collector.requests.get("refused", 0) == 0


def test_a_single_string_for_exclude_fields_is_a_configuration_error():
    with pytest.raises(TypeError, match="single string"):
        SegmentBackend(write_key=KEY, host="http://127.0.0.1:9", exclude_fields="context.username")


def test_a_page_url_from_values_whose_text_fails_is_coerced_not_an_internal_error(collector):
    # The page url is built from context.host and context.path: a str() that raises, or an
    # int past Python's 4,300-digit str() limit, used to skip the whole event as internal_error.
    backend = backend_for(collector)
    huge = 10**5000
    backend.send({"name": "page", "context": {"user_id": 1, "host": Unprintable(), "path": "/courses"}})
    backend.send({"name": "page", "context": {"user_id": 2, "host": "example.com", "path": huge}})
    backend.send({"name": "page", "context": {"user_id": 3, "host": huge, "path": Opaque()}})
    assert backend.flush(10)
    stats = backend.stats()
    assert stats["skipped"] == {} and stats["delivered"] == 3
    urls = [m["context"]["page"]["url"] for m in collector.messages()]
    assert urls == [
        "https://<unprintable Unprintable>/courses",
        f"https://example.com{hex(huge)}",
        f"https://{hex(huge)}course-v1:edX+DemoX+2026",
    ]
    paths = [m["context"]["page"]["path"] for m in collector.messages()]
    assert paths[1] == hex(huge)  # the same coercion as the value itself
