"""eventtracking.segment.Client against the project's collector: return values, bad input (each a
counted reason and a log line; nothing raises; no other message lost), the pipeline it shares
with SegmentBackend, install_global_client on segment-analytics-python 2.x (drop-in backend
included) and the Django setting EVENT_TRACKING_SEGMENT_CLIENT."""

from __future__ import annotations

import datetime
import logging
import threading

import pytest

from eventtracking.backends.segment import SegmentBackend
from eventtracking.segment import Client, install_global_client
from eventtracking.segment.encoding import MAX_MESSAGE_BYTES

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
KEY = "wk-client"


@pytest.fixture
def client(collector):
    made = Client(KEY, host=collector.url, upload_interval=0.05)
    yield made
    made.close(10)


def test_calls_return_the_official_values(client, collector):
    success, message = client.track("u1", "Signed Up", {"plan": "pro"}, timestamp=WHEN, message_id="m-1")
    assert success is True
    assert message["messageId"] == "m-1" and message["timestamp"] == WHEN.isoformat()
    assert client.identify("u1", {"email": "a@example.org"})[0] is True
    assert client.flush(10) is None and client.join() is None
    for _ in range(2):
        success, late = client.track("u1", "late")  # closed: refused, with the message it made
        assert success is False and late["event"] == "late"
    assert client.stats()["skipped"] == {"closed": 2}
    assert {m["messageId"] for m in collector.messages()} >= {"m-1"}
    assert collector.count() == 2
    assert bool(client) is True  # the official module tests `if not default_client`


OVERSIZED = {"blob": "x" * (MAX_MESSAGE_BYTES + 1)}
CYCLE: dict = {}
CYCLE["self"] = CYCLE

BAD_CALLS = [
    ("track", dict(event="no one"), "no_user_id"),
    ("track", dict(user_id={"not": "an id"}, event="e"), "bad_user_id"),
    ("track", dict(user_id="u", event=None), "bad_event"),
    ("track", dict(user_id="u", event="e", properties=["a", "list"]), "bad_properties"),
    ("track", dict(user_id="u", event="e", timestamp="not a time"), "bad_timestamp"),
    ("track", dict(user_id="u", event="e", properties=OVERSIZED), "oversized"),
    ("identify", dict(user_id="u", traits={"loop": CYCLE}), "unserializable"),
    ("group", dict(user_id="u", group_id=None), "bad_group_id"),
    ("alias", dict(previous_id="p"), "no_user_id"),
    ("page", dict(user_id="u", name=42), "bad_name"),
]


@pytest.mark.parametrize("call,arguments,reason", BAD_CALLS, ids=[f"{c}-{r}" for c, _, r in BAD_CALLS])
def test_bad_input_is_counted_logged_and_costs_no_other_message(
    client, collector, caplog, call, arguments, reason
):
    client.track("u", "before", message_id="before")
    with caplog.at_level(logging.WARNING, logger="eventtracking.segment.client"):
        success, _ = getattr(client, call)(**arguments)  # never raises
    client.track("u", "after", message_id="after")
    assert success is False
    client.flush(10)
    assert sorted(collector.message_ids()) == ["after", "before"]
    stats = client.stats()
    assert stats["skipped"] == {reason: 1}
    assert f"Client.{call} refused a message: {reason}" in caplog.text
    assert KEY not in caplog.text


def test_a_reason_is_warned_once_then_logged_at_debug(client, caplog):
    with caplog.at_level(logging.DEBUG, logger="eventtracking.segment.client"):
        for _ in range(3):
            client.track(event="anonymous")
    levels = [record.levelno for record in caplog.records if "no_user_id" in record.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert client.stats()["skipped"] == {"no_user_id": 3}


def test_a_full_buffer_returns_false_and_counts(collector):
    client = Client(KEY, host=collector.url, max_buffer_bytes=2000, upload_interval=5, upload_size=5000)
    results = [client.track("u", "e", {"pad": "x" * 300})[0] for _ in range(20)]
    assert results.count(True) >= 1 and results.count(False) >= 1
    assert client.stats()["dropped"]["buffer_full"] == results.count(False)
    assert client.close(10)
    assert collector.count() == results.count(True)


def test_send_false_builds_and_sends_nothing(collector):
    client = Client(KEY, host=collector.url, send=False)
    assert client.track("u", "e")[0] is True
    client.flush(5)
    assert collector.count() == 0 and client.stats()["skipped"] == {"send_disabled": 1}
    client.close(5)


def test_sync_mode_returns_once_delivered(collector):
    client = Client(KEY, host=collector.url, sync_mode=True, upload_interval=10)
    assert client.track("u", "now", message_id="sync-1")[0] is True
    assert collector.message_ids() == ["sync-1"]  # answered before the call returned
    client.close(5)


def test_options_map_onto_the_pipeline(collector):
    client = Client(KEY, host=collector.url, max_queue_size=10, upload_size=7, upload_interval=0.2, gzip=True)
    delivery = client._pipeline.delivery
    assert delivery.max_buffer_bytes == 10 * MAX_MESSAGE_BYTES  # at least max_queue_size messages
    assert (delivery.batch_count, delivery.linger, delivery.gzip_level) == (7, 0.2, 6)
    assert KEY not in repr(client) and KEY not in repr(delivery)
    with pytest.raises(TypeError, match="no_such_option"):
        Client(KEY, host=collector.url, no_such_option=1)
    with pytest.raises(ValueError, match="write_key"):
        Client(None)
    client.close(5)


def test_a_backend_and_a_client_with_the_same_options_share_one_thread(collector):
    backend = SegmentBackend(write_key=KEY, host=collector.url)
    client = Client(KEY, host=collector.url)
    assert client._pipeline is backend._pipeline
    other = Client(KEY, host=collector.url, upload_size=10)  # other options: its own pipeline
    assert other._pipeline is not backend._pipeline
    other.close(5)
    backend.send({"name": "from.backend", "context": {"user_id": 1}})
    client.track("u", "from.client")
    senders = [t for t in threading.enumerate() if t.name == "eventtracking-segment-sender" and t.is_alive()]
    assert backend._pipeline.worker.thread in senders
    assert backend.close(10)  # the client still uses the pipeline: it goes on
    client.track("u", "after.backend.closed")
    assert client.close(10)
    assert sorted(m["event"] for m in collector.messages()) == [
        "after.backend.closed",
        "from.backend",
        "from.client",
    ]
    assert backend._pipeline.worker.thread is None  # the last user closed it


@pytest.fixture
def official_module():
    """segment.analytics (2.x) as the application left it, restored after the test."""
    from segment import analytics

    saved = (analytics.write_key, analytics.host, analytics.default_client)
    yield analytics
    analytics.write_key, analytics.host, analytics.default_client = saved


def test_install_global_client_routes_the_module_and_the_drop_in_backend(official_module, collector):
    client = install_global_client(write_key=KEY, host=collector.url, upload_interval=0.05)
    assert official_module.default_client is client and official_module.write_key == KEY
    success, message = official_module.track(
        "u1", "module.call", {"a": 1}, timestamp=WHEN, message_id="mod-1"
    )
    assert success and message["messageId"] == "mod-1"
    official_module.identify("u1", {"email": "a@example.org"}, message_id="mod-2")
    backend = SegmentBackend()  # drop-in: through the global module, so through our client
    backend.send({"name": "edx.drop.in", "timestamp": WHEN, "context": {"user_id": 5, "ip": "192.0.2.1"}})
    assert backend.flush(10)
    official_module.flush()
    by_event = {m.get("event", m["type"]): m for m in collector.messages()}
    assert set(by_event) == {"module.call", "identify", "edx.drop.in"}
    dropped_in = by_event["edx.drop.in"]
    assert dropped_in["userId"] == "5" and dropped_in["context"]["ip"] == "192.0.2.1"
    assert datetime.datetime.fromisoformat(dropped_in["timestamp"]) == WHEN
    assert by_event["identify"]["traits"] == {"email": "a@example.org"}
    client.close(5)


def test_the_django_setting_installs_the_client(official_module, collector, caplog):
    from django.conf import settings
    from django.test.utils import override_settings

    from eventtracking.django.apps import install_segment_client

    if not settings.configured:
        settings.configure()
    options = {"host": collector.url, "upload_interval": 0.05}
    with override_settings(EVENT_TRACKING_SEGMENT_CLIENT=options, LMS_SEGMENT_KEY="", CMS_SEGMENT_KEY=KEY):
        client = install_segment_client()  # the key: the first of the site's keys that is set
    assert (
        client is not None and official_module.default_client is client and official_module.write_key == KEY
    )
    official_module.track("u", "via.settings")
    client.close(10)
    assert [m["event"] for m in collector.messages()] == ["via.settings"]

    official_module.default_client = None
    named = dict(options, write_key_setting="MY_KEY")
    with override_settings(EVENT_TRACKING_SEGMENT_CLIENT=named, MY_KEY="mine", LMS_SEGMENT_KEY=KEY):
        other = install_segment_client()
    assert other is not None and official_module.write_key == "mine"
    other.close(5)

    official_module.default_client = None
    with caplog.at_level(logging.WARNING), override_settings(EVENT_TRACKING_SEGMENT_CLIENT=options):
        assert install_segment_client() is None  # no key anywhere: one line, nothing installed
    assert "no write key was found" in caplog.text and official_module.default_client is None
    with override_settings(EVENT_TRACKING_SEGMENT_CLIENT={"write_key": KEY, "bogus": 1}):
        assert install_segment_client() is None
    assert "not installed: Client got unexpected options: bogus" in caplog.text


def test_max_retries_gives_a_batch_up_after_that_many_retries(collector, caplog):
    collector.faults.add(status=503, times=None)
    refused = []
    client = Client(
        KEY, host=collector.url, max_retries=2, on_error=lambda reason, batch: refused.append(reason)
    )
    client.track("u", "doomed")
    with caplog.at_level(logging.WARNING):
        client.flush(30)
    stats = client.stats()
    assert stats["batches"] == 3 and stats["retries"] == 2  # the first try and two retries
    assert stats["dropped"] == {"gave_up": 1} and refused == ["gave_up"]
    assert refused[0].detail.startswith("HTTP 503")
    collector.faults.clear()
    client.track("u", "later")
    client.close(10)
    assert [m["event"] for m in collector.messages()] == ["later"]


def test_by_default_a_batch_is_retried_until_the_server_takes_it(collector):
    collector.faults.add(status=503, times=12)
    client = Client(KEY, host=collector.url)
    client._pipeline.sender.backoff_base, client._pipeline.sender.backoff_max = 0.01, 0.05  # a quick test
    client.track("u", "patient")
    assert client.close(60)
    assert [m["event"] for m in collector.messages()] == ["patient"]
    assert client.stats()["retries"] == 12


FORK_SCRIPT = """
import os, sys
from eventtracking.segment import Client

client = Client("KEY", host="URL", upload_interval=5)
for i in range(5):
    client.track("u", "parent.before", {"i": i})
pid = os.fork()
if pid == 0:  # the child: a sender of its own, none of the parent's messages, counts of its own
    for i in range(7):
        client.track("u", "child", {"i": i})
    stats = client.stats()
    assert stats["accepted"] == 7 and stats["skipped"] == {}, stats
    sys.exit(0)  # a plain exit: atexit delivers the child's messages
client.track(event="no user")  # counted in the parent only
_, status = os.waitpid(pid, 0)
assert status == 0, status
assert client.stats()["skipped"] == {"no_user_id": 1}
"""


def test_a_forked_child_delivers_its_own_calls_and_the_parent_its_own(collector):
    import subprocess
    import sys

    script = FORK_SCRIPT.replace("KEY", KEY).replace("URL", collector.url)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    events = [m["event"] for m in collector.messages()]
    assert sorted(events) == ["child"] * 7 + ["parent.before"] * 5
    assert len(set(collector.message_ids())) == 12


def test_sharing_a_pipeline_each_caller_counts_its_own_refusals(collector):
    backend = SegmentBackend(write_key=KEY, host=collector.url, exit_timeout=2)
    client = Client(KEY, host=collector.url, exit_timeout=7)
    pipeline = client._pipeline
    assert pipeline is backend._pipeline and pipeline.exit_timeout == 7  # the largest budget
    backend.send({"name": "no.user", "context": {}})
    client.track(event="no user either")
    backend.send({"name": "ok", "context": {"user_id": 1}})
    client.track("u", "ok")
    client.flush(10)
    mine, theirs = client.stats(), backend.stats()
    assert mine["skipped"] == {"no_user_id": 1} and theirs["skipped"] == {"no_user_id": 1}
    assert mine["delivered"] == theirs["delivered"] == 2  # the pipeline's, shared
    backend.close(5)
    client.close(5)
