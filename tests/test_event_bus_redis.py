"""The event bus on real engines: openedx-events with edx-event-bus-redis over a real Redis.

The test site's web process (``async_site.produce``, ``SITE_ROUTE=eventbus``) emits through
``eventtracking.tracker``; its ``EventBusRoutingBackend`` puts the tracking logs on the bus from
its publisher's thread. A real consumer run (openedx-events' ``consume_events`` command with
edx-event-bus-redis' consumer) reads them back, and ``eventtracking.handlers`` hands each one to
the bus backend's backends: the site's SegmentBackend, delivering to the project's collector.
"""

from __future__ import annotations

import json
import subprocess

from engines import OURS_PYTHON, TESTS, site_env, stop_process, wait_until
from test_celery import produce, seqs

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


def test_300_events_go_through_the_bus_and_are_delivered_once(redis_server, collector, tmp_path):
    env = site_env(SITE_REDIS_URL=redis_server.url, SITE_COLLECTOR_URL=collector.url, SITE_ROUTE="eventbus")
    log_path = tmp_path / "consumer.log"
    with open(log_path, "wb") as log:
        consumer = subprocess.Popen(
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
    try:
        report = produce(
            OURS_PYTHON, env, str(tmp_path / "report.json"), "--whitelisted", "300", "--others", "60"
        )
        stats = report["stats"]["event_bus"]
        assert stats["accepted"] == 300 and stats["dropped"] == {}  # the others are not on the bus's list

        def arrived() -> bool:
            assert consumer.poll() is None, log_path.read_text()
            return collector.count() >= 300 and consumer_caught_up(redis_server)

        wait_until(arrived, 180, f"300 events through the bus (consumer log: {log_path})")
    finally:
        stop_process(consumer)
    assert sorted(seqs(collector)) == sorted(
        seq for seq, name, _, _ in report["emitted"] if name == "edx.site.whitelisted"
    )
    assert len(collector.messages()) == 300  # once each
