"""The owned-mode pipeline against the real collector: mapping on the wire, faults, fork, exit."""

from __future__ import annotations

import datetime
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter

from eventtracking.backends.segment import SegmentBackend

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 11, 26, 9, 15, 0, 123456, tzinfo=UTC)
KEY = "wk-secret-123"


def make_event(i: int, name: str = "edx.test", **context) -> dict:
    return {
        "name": name,
        "timestamp": WHEN,
        "data": {"i": i},
        "context": {"user_id": i, "path": "/p", "host": "lms.example.org", **context},
    }


def backend_for(collector, **options) -> SegmentBackend:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("retry_timeout", 30)
    return SegmentBackend(write_key=KEY, host=collector.url, **options)


def assert_exactly_once(collector, expected: int) -> list[str]:
    """Every event arrived, none twice (Segment dedupes on messageId, so copies are tolerable
    only as retries of one messageId; distinct ids must match what was sent)."""
    ids = collector.message_ids()
    assert len(set(ids)) == expected, (len(set(ids)), expected)
    return ids


def test_mapping_on_the_wire(collector):
    backend = backend_for(collector)
    backend.send(make_event(1, client_id="ga.9", ip="198.51.100.7", agent="UA/1", referer="https://r/"))
    backend.send({"name": "no.user", "context": {}})
    assert backend.flush(10)
    [message] = collector.messages()
    assert message["type"] == "track"
    assert message["event"] == "edx.test"
    assert message["userId"] == "1"
    assert message["context"]["Google Analytics"] == {"clientId": "ga.9"}
    assert message["context"]["ip"] == "198.51.100.7"
    assert message["context"]["userAgent"] == "UA/1"
    assert message["context"]["page"] == {
        "path": "/p",
        "referrer": "https://r/",
        "url": "https://lms.example.org/p",
    }
    assert message["context"]["library"]["name"] == "eventtracking-segment"
    assert datetime.datetime.fromisoformat(message["timestamp"]) == WHEN
    assert message["properties"]["data"] == {"i": 1}
    assert message["properties"]["name"] == "edx.test"
    assert datetime.datetime.fromisoformat(message["properties"]["timestamp"]) == WHEN
    assert message["messageId"]
    stats = backend.stats()
    assert stats["accepted"] == 1 and stats["delivered"] == 1
    assert stats["skipped"] == {"no_user_id": 1}
    backend.close(5)


def test_message_ids_unique_and_caller_mutation_changes_nothing(collector):
    backend = backend_for(collector)
    event = make_event(1)
    backend.send(event)
    event["data"]["i"] = "mutated"
    event["context"]["user_id"] = 999
    backend.send(make_event(2))
    assert backend.flush(10)
    messages = collector.messages()
    assert [m["properties"]["data"]["i"] for m in messages] == [1, 2]
    assert [m["userId"] for m in messages] == ["1", "2"]
    assert len({m["messageId"] for m in messages}) == 2


def test_given_message_id_is_kept(collector):
    backend = backend_for(collector)
    backend.send(make_event(1), message_id="fixed-id-1")
    assert backend.flush(10)
    assert collector.message_ids() == ["fixed-id-1"]


def test_gzip_batches(collector):
    backend = backend_for(collector, gzip=True)
    for i in range(20):
        backend.send(make_event(i))
    assert backend.flush(10)
    assert_exactly_once(collector, 20)


def test_503_window_is_retried_until_delivered(collector):
    collector.faults.add(status=503, times=3)
    backend = backend_for(collector, max_batch_size=10)
    for i in range(50):
        backend.send(make_event(i))
    assert backend.flush(30)
    assert_exactly_once(collector, 50)
    stats = backend.stats()
    assert stats["retries"] >= 3 and stats["delivered"] == 50 and stats["dropped"] == {}


def test_429_retry_after_is_honoured(collector):
    collector.faults.add(status=429, times=1, retry_after=1)
    backend = backend_for(collector)
    backend.send(make_event(1))
    assert backend.flush(30)
    assert_exactly_once(collector, 1)
    assert backend.stats()["retries"] == 1


def test_dropped_connections_are_retried(collector):
    collector.faults.add(drop=True, times=2)
    backend = backend_for(collector)
    for i in range(30):
        backend.send(make_event(i))
    assert backend.flush(30)
    assert_exactly_once(collector, 30)


def test_slow_responses_past_the_timeout_are_retried_without_new_ids(collector):
    collector.faults.add(delay=1.5, times=1)
    backend = backend_for(collector, timeout=0.5)
    for i in range(10):
        backend.send(make_event(i))
    assert backend.flush(30)
    ids = assert_exactly_once(collector, 10)
    # the slow answer was stored too: the copies carry the same messageIds
    assert len(ids) in (10, 20)
    assert backend.stats()["retries"] >= 1


def test_a_refused_message_does_not_take_the_batch_down(collector):
    collector.faults.reject_event("poison")
    errors = []
    backend = backend_for(collector, on_error=lambda reason, msgs: errors.append((reason, msgs)))
    for i in range(20):
        backend.send(make_event(i, name="poison" if i == 11 else "good"))
    assert backend.flush(30)
    messages = collector.messages()
    assert sorted(m["properties"]["data"]["i"] for m in messages) == [i for i in range(20) if i != 11]
    assert backend.stats()["dropped"] == {"refused": 1}
    assert [(reason, [m["event"] for m in msgs]) for reason, msgs in errors] == [("refused", ["poison"])]


def test_wrong_write_key_is_final_not_retried(caplog):
    from eventtracking.collector import Collector

    with Collector(write_key="the-right-key") as collector:
        backend = backend_for(collector)
        with caplog.at_level(logging.DEBUG):
            backend.send(make_event(1))
            assert backend.flush(10)
        stats = backend.stats()
        assert stats["dropped"] == {"refused": 1} and stats["retries"] == 0
        assert collector.count() == 0
    assert "401" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in repr(backend) and KEY not in str(backend.stats())


def test_flush_timeout_returns_false_and_says_what_is_pending(collector, caplog):
    collector.faults.add(delay=2, times=1)
    backend = backend_for(collector)
    for i in range(5):
        backend.send(make_event(i))
    with caplog.at_level(logging.WARNING):
        assert backend.flush(0.3) is False
    assert "5 messages" in caplog.text
    assert backend.stats()["in_flight"] == 5
    assert backend.flush(30) is True
    assert_exactly_once(collector, 5)


def test_close_with_an_unreachable_host_returns_false_in_time():
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    errors = []
    backend = SegmentBackend(
        write_key=KEY,
        host=f"http://127.0.0.1:{port}",
        flush_interval=0.01,
        on_error=lambda r, m: errors.append(r),
    )
    backend.send(make_event(1))
    assert backend.close(1.0) is False
    assert backend.stats()["dropped"] == {"gave_up": 1}
    assert errors == ["gave_up"]


def test_buffer_full_drops_are_counted_and_warned(collector, caplog):
    collector.faults.add(delay=1, times=1)
    backend = backend_for(collector, max_buffer_bytes=4000, max_batch_size=1)
    with caplog.at_level(logging.WARNING):
        for i in range(40):
            backend.send(make_event(i))
    stats = backend.stats()
    dropped = stats["dropped"].get("buffer_full", 0)
    assert dropped > 0
    assert "buffer full" in caplog.text
    assert backend.flush(30)
    assert len(set(collector.message_ids())) == 40 - dropped == backend.stats()["delivered"]


def test_eight_threads_sending_at_once(collector):
    backend = backend_for(collector)
    per_thread = 500

    def work(t: int) -> None:
        for i in range(per_thread):
            backend.send(make_event(t * per_thread + i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert backend.flush(60)
    ids = assert_exactly_once(collector, 8 * per_thread)
    assert len(ids) == 8 * per_thread  # no retries happened, so no copies either
    users = Counter(m["userId"] for m in collector.messages())
    assert len(users) == 8 * per_thread


def run_script(code: str, collector) -> subprocess.CompletedProcess:
    script = textwrap.dedent(code).replace("URL", collector.url)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def test_exit_without_flush_loses_nothing(collector):
    result = run_script(
        """
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host="URL")
        for i in range(5000):
            backend.send({"name": "exit.test", "context": {"user_id": i}, "data": {"i": i}})
        """,
        collector,
    )
    assert result.returncode == 0, result.stderr
    assert len(set(collector.message_ids())) == 5000


def test_fork_children_send_and_parent_goes_on(collector):
    result = run_script(
        """
        import os, sys
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host="URL", flush_interval=0.05)
        def send(tag, n):
            for i in range(n):
                backend.send({"name": tag, "context": {"user_id": i}})
        send("parent.before", 100)
        children = []
        for c in range(2):
            pid = os.fork()
            if pid == 0:
                send(f"child{c}", 100)
                ok = backend.flush(30)
                os._exit(0 if ok else 3)
            children.append(pid)
        send("parent.after", 100)
        codes = [os.waitpid(pid, 0)[1] for pid in children]
        assert backend.flush(30)
        print(codes)
        sys.exit(1 if any(codes) else 0)
        """,
        collector,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = Counter(m["event"] for m in collector.messages())
    assert names == {"parent.before": 100, "child0": 100, "child1": 100, "parent.after": 100}
    assert len(set(collector.message_ids())) == 400


def test_full_batches_fit_the_body_limit(collector):
    backend = backend_for(collector, flush_interval=1)
    for i in range(1500):  # about 1.1 KB each: batches are bounded by bytes, not count
        backend.send(make_event(i, pad="x" * 1000))
    assert backend.flush(30)
    assert_exactly_once(collector, 1500)
    assert collector.requests.get("refused", 0) == 0  # no body over 500 KB, so no split was needed
    assert backend.stats()["batches"] == collector.requests["accepted"]


def test_send_after_close_is_skipped_not_buffered(collector):
    backend = backend_for(collector)
    backend.send(make_event(1))
    assert backend.close(10)
    backend.send(make_event(2))
    stats = backend.stats()
    assert stats["skipped"] == {"closed": 1} and stats["in_flight"] == 0
    assert collector.count() == 1


def test_buffered_messages_cost_their_size_not_orjson_s_capacity():
    import tracemalloc

    backend = SegmentBackend(write_key=KEY, host="http://127.0.0.1:9", max_buffer_bytes=10**9)
    backend._pipeline.worker.background.thread = "not started: keep everything buffered"  # no network needed
    tracemalloc.start()
    for i in range(2000):
        backend.send(make_event(i, pad="x" * 1000))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    buffered = backend.stats()["buffered_bytes"]
    assert buffered > 2000 * 1000
    assert held < buffered * 1.3, (held, buffered)  # orjson's raw output would be several times more
    backend._pipeline.worker.background.thread = None
    assert backend.close(0.2) is False  # nothing listens on port 9: given up, and said so


def test_the_sender_survives_a_failing_buffer(collector, caplog):
    from eventtracking.queue.memory import MemoryBuffer

    class FlakyBuffer(MemoryBuffer):
        failures = 1

        def take(self, *args):
            if self.failures:
                self.failures -= 1
                raise OSError("disk hiccup")
            return super().take(*args)

    backend = backend_for(collector)
    backend._pipeline.buffer.__class__ = FlakyBuffer  # the same object the sender holds
    with caplog.at_level(logging.ERROR):
        backend.send(make_event(1))
        assert backend.flush(10)
    assert collector.message_ids() and "could not take a batch" in caplog.text


def test_a_spool_the_disk_refuses_falls_back_to_memory(collector, tmp_path, caplog):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    with caplog.at_level(logging.WARNING):
        backend = backend_for(collector, spool_dir=str(not_a_directory))
    assert "buffering in memory" in caplog.text
    backend.send(make_event(1))
    assert backend.flush(10)
    assert collector.count() == 1


def test_a_batch_body_holds_its_messages_as_they_are_and_a_sent_at():
    from eventtracking.segment.transport import batch_body

    for messages in ([], [b'{"a":1}'], [b'{"a":1}', b'{"b":2}'], [b'{"n":%d}' % i for i in range(5)]):
        body = json.loads(batch_body(messages))
        assert body["batch"] == [json.loads(message) for message in messages]
        assert datetime.datetime.fromisoformat(body["sentAt"]).tzinfo is not None
