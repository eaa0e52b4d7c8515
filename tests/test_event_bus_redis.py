"""The event bus on real engines: openedx-events with edx-event-bus-redis over a real Redis.

The test site's web process (``async_site.produce``, ``SITE_ROUTE=eventbus``) emits through
``eventtracking.tracker``; its ``EventBusRoutingBackend`` puts the tracking logs on the bus from
its publisher's thread. A real consumer run (openedx-events' ``consume_events`` command with
edx-event-bus-redis' consumer) reads them back, and ``eventtracking.handlers`` hands each one to
the bus backend's backends: the site's SegmentBackend, delivering to the project's collector.
"""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest
from engines import OURS_PYTHON, TESTS, site_env, stop_process, wait_until
from test_celery import emit_figures, produce, seqs

# Real processes on a machine that may be loaded: generous bounds, each still a bound.
pytestmark = pytest.mark.timeout(600)

STREAM = "site-analytics"  # EVENT_BUS_TOPIC_PREFIX-topic
GROUP = "tracking"


def consumer_caught_up(redis_server) -> bool:
    """The consumer group has read the whole stream and acknowledged every message."""
    client = redis_server.client()
    try:
        if not client.exists(STREAM):
            return False
        last = client.xinfo_stream(STREAM)["last-generated-id"]
        [group] = [group for group in client.xinfo_groups(STREAM) if group["name"] in (GROUP, GROUP.encode())]
        return group["pending"] == 0 and group["last-delivered-id"] == last
    finally:
        client.close()


def start_consumer(env: dict, log_path) -> subprocess.Popen:
    """openedx-events' consume_events command with edx-event-bus-redis' consumer, from the
    stream's beginning (check_backlog)."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [
                OURS_PYTHON,
                "-m",
                "django",
                "consume_events",
                "-t",
                "analytics",
                "-g",
                GROUP,
                "--extra",
                json.dumps({"consumer_name": "c1", "check_backlog": True}),
            ],
            env=env,
            cwd=TESTS,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_300_events_go_through_the_bus_and_are_delivered_once(redis_server, collector, tmp_path):
    env = site_env(SITE_REDIS_URL=redis_server.url, SITE_COLLECTOR_URL=collector.url, SITE_ROUTE="eventbus")
    log_path = tmp_path / "consumer.log"
    consumer = start_consumer(env, log_path)
    try:
        report = produce(
            OURS_PYTHON, env, str(tmp_path / "report.json"), "--whitelisted", "300", "--others", "60"
        )
        stats = report["stats"]["event_bus"]
        assert stats["accepted"] == 300 and stats["dropped"] == {}  # the others are not on the bus's list

        def arrived() -> bool:
            assert consumer.poll() is None, log_path.read_text()
            return collector.count() >= 300 and consumer_caught_up(redis_server)

        wait_until(arrived, 300, f"300 events through the bus (consumer log: {log_path})")
    finally:
        stop_process(consumer)
    assert sorted(seqs(collector)) == sorted(
        seq for seq, name, _, _ in report["emitted"] if name == "edx.site.whitelisted"
    )
    assert len(collector.messages()) == 300  # once each


def test_while_the_bus_is_down_the_request_does_not_wait_and_nothing_is_lost(
    redis_server, collector, tmp_path, figures
):
    env = site_env(SITE_REDIS_URL=redis_server.url, SITE_COLLECTOR_URL=collector.url, SITE_ROUTE="eventbus")
    redis_server.stop()
    out = str(tmp_path / "report.json")
    producer = subprocess.Popen(
        [OURS_PYTHON, "-m", "async_site.produce", "--out", out, "--whitelisted", "100", "--hold"],
        env=env,
        cwd=TESTS,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert producer.stdout.readline().strip() == "emitted", producer.stderr.read()
        with open(out) as file:
            report = json.load(file)
        assert report["stats"]["event_bus"]["published"] == 0
        redis_server.start()
        producer.stdin.write("exit\n")
        producer.stdin.flush()
        assert producer.wait(60) == 0, producer.stderr.read()
    finally:
        stop_process(producer)
    log_path = tmp_path / "consumer.log"
    consumer = start_consumer(env, log_path)
    try:
        wait_until(
            lambda: collector.count() >= 100 and consumer_caught_up(redis_server),
            300,
            f"100 events through the bus (consumer log: {log_path})",
        )
    finally:
        stop_process(consumer)
    assert sorted(seqs(collector)) == list(range(100))
    durations = report["durations"]
    figures.append(f"EventBusRoutingBackend, bus down: emit() {emit_figures(durations)}; 100 of 100 arrived")
    assert statistics.median(durations) < 0.1  # a sanity bound only (no timing test)
