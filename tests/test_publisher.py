"""The background publisher of AsyncRoutingBackend, in this process, on a real Redis broker: what it
counts and says when the broker is away, its bound, its exit bound, what it refuses.

What reaches the broker is read back from Redis itself (the ``celery`` queue's length and
messages); the worker side is in test_celery.py.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging

import pytest
from celery import Celery
from engines import wait_until

from eventtracking.backends.async_routing import AsyncRoutingBackend

# Real processes on a machine that may be loaded: generous bounds, each still a bound.
pytestmark = pytest.mark.timeout(600)

UTC = datetime.timezone.utc


@pytest.fixture
def app(redis_server):
    app = Celery("publisher-tests", broker=redis_server.url, set_as_current=True)
    app.set_current()
    yield app
    app.close()


def queued(redis_server) -> list:
    client = redis_server.client()
    try:
        return [json.loads(raw) for raw in client.lrange("celery", 0, -1)]
    finally:
        client.close()


def event(seq: int, **extra) -> dict:
    return {
        "name": "edx.x",
        "timestamp": datetime.datetime.now(UTC),
        "data": {"seq": seq, **extra},
        "context": {},
    }


def test_events_are_published_as_the_original_task(app, redis_server):
    backend = AsyncRoutingBackend(backend_name="xapi")
    for seq in range(20):
        backend.send(event(seq))
    assert backend.flush(30)
    messages = queued(redis_server)
    assert len(messages) == 20
    assert {message["headers"]["task"] for message in messages} == {"eventtracking.tasks.send_event"}
    stats = backend.stats()
    assert stats["accepted"] == stats["published"] == 20 and stats["pending"] == 0
    backend.close(5)


def test_past_the_bound_events_are_dropped_counted_and_warned_about(app, redis_server, caplog):
    redis_server.stop()
    one = len(json.dumps(event(0), default=str))
    backend = AsyncRoutingBackend(backend_name="xapi", max_buffer_bytes=one * 10)
    with caplog.at_level(logging.WARNING, logger="eventtracking.publisher"):
        for seq in range(200):
            backend.send(event(seq))
    stats = backend.stats()
    assert stats["published"] == 0
    assert stats["dropped"]["buffer_full"] == 200 - stats["accepted"] > 0
    assert "buffer full" in caplog.text
    redis_server.start()
    assert backend.flush(60)  # what was kept is published once the broker is back
    assert len(queued(redis_server)) == backend.stats()["accepted"] == backend.stats()["published"]
    backend.close(5)


def test_close_with_the_broker_down_keeps_its_bound_and_counts_what_it_left(app, redis_server, caplog):
    redis_server.stop()
    backend = AsyncRoutingBackend(backend_name="xapi")
    for seq in range(30):
        backend.send(event(seq))
    wait_until(lambda: backend.stats()["outages"] == 1, 30, "the publisher to notice the outage")
    with caplog.at_level(logging.WARNING, logger="eventtracking.publisher"):
        assert backend.close(1.0) is False
        wait_until(
            lambda: backend.stats()["dropped"].get("exit_timeout") == 30, 30, "30 events counted as left"
        )
    assert backend.stats()["published"] == 0
    assert "flush timed out" in caplog.text and "the broker did not take in time" in caplog.text
    backend.send(event(99))  # after close
    assert backend.stats()["dropped"]["closed"] == 1


def test_an_event_json_cannot_hold_is_skipped_and_counted_others_go_on(app, redis_server):
    backend = AsyncRoutingBackend(backend_name="xapi")
    cyclic = event(1)
    cyclic["data"]["self"] = cyclic["data"]
    backend.send(event(0, course_key=object(), amount=2**80))  # str(obj) and a big int: kept
    backend.send(cyclic)
    backend.send(event(2))
    assert backend.flush(30)
    stats = backend.stats()
    assert stats["skipped"] == {"unserializable": 1}
    bodies = [json.loads(base64.b64decode(message["body"])) for message in queued(redis_server)]
    sent = sorted(body[0][1]["data"]["seq"] for body in bodies)
    assert sent == [0, 2]
    backend.close(5)


def test_what_a_channel_refuses_for_good_is_counted_by_reason_not_as_published(caplog):
    """A unit test of the Publisher's accounting (no broker: the channel is a small stand-in)."""
    from eventtracking.publisher import Publisher

    published = []

    class Channel:
        def publish(self, items, refuse):
            for item in items:
                if item == b"bad":
                    refuse("unencodable", item)
                else:
                    published.append(item)
            return len(items)

    publisher = Publisher(Channel(), "unit")
    with caplog.at_level(logging.WARNING, logger="eventtracking.publisher"):
        for item in (b"1", b"bad", b"2"):
            assert publisher.put(item)
        assert publisher.flush(10)
    stats = publisher.stats()
    assert published == [b"1", b"2"]
    assert stats["published"] == 2 and stats["dropped"] == {"unencodable": 1} and stats["accepted"] == 3
    assert "unencodable" in caplog.text
    assert publisher.close(5)
