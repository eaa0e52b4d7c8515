"""eventtracking.metrics: every background sender's stats() through the OpenTelemetry metrics API,
read with the SDK's InMemoryMetricReader while the collector answers 200, then 503, then 200."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from engines import wait_until
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eventtracking import metrics
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.segment import SegmentBackend

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY = "metrics-secret-write-key"


def event(name: str = "course.enrolled", **data: Any) -> dict:
    return {"name": name, "timestamp": "2026-01-01T00:00:00+00:00", "context": {"user_id": 1}, "data": data}


class Reader:
    """The instruments on an SDK meter provider of the test's own, read with InMemoryMetricReader."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        metrics.create_instruments(self.provider.get_meter(metrics.METER_NAME), metrics.Figures())

    def read(self, **match: str) -> dict[str, dict[str, int]]:
        """{instrument: {reason or "": value}} of the data points whose attributes hold ``match``."""
        result: dict[str, dict[str, int]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes)
                        assert all(WRITE_KEY not in str(value) for value in attributes.values())
                        if all(attributes.get(key) == value for key, value in match.items()):
                            reasons = result.setdefault(metric.name, {})
                            reasons[attributes.get("reason", "")] = point.value
        return result

    def close(self) -> None:
        self.provider.shutdown()


@pytest.fixture
def reader():
    reading = Reader()
    yield reading
    reading.close()


def expected_from(stats: dict) -> dict[str, dict[str, int]]:
    """What the instruments must say, from one stats() (the mapping the docs describe)."""
    result = {
        "eventtracking.accepted": {"": stats["accepted"]},
        "eventtracking.delivered": {"": stats.get("delivered", stats.get("published"))},
        "eventtracking.retries": {"": stats["retries"]},
        "eventtracking.pending": {"": stats.get("in_flight", stats.get("pending"))},
        "eventtracking.pending.size": {"": stats.get("buffered_bytes", stats.get("pending_bytes"))},
        "eventtracking.spool.size": {"": stats.get("spool", {}).get("disk_bytes", 0)},
    }
    for group in ("dropped", "skipped"):
        if stats[group]:
            result[f"eventtracking.{group}"] = dict(stats[group])
    return result


def test_counts_match_stats_while_the_collector_answers_200_then_503_then_200(reader, collector, tmp_path):
    backend = SegmentBackend(
        write_key=WRITE_KEY, host=collector.url, flush_interval=0.01, spool_dir=str(tmp_path / "spool")
    )
    ours = {"eventtracking.sender": "SegmentBackend", "eventtracking.host": collector.url}
    try:
        # 200: everything delivered.
        for number in range(10):
            backend.send(event(n=number))
        assert backend.flush(timeout=30)
        stats = backend.stats()
        assert stats["delivered"] == 10
        assert reader.read(**ours) == expected_from(stats)

        # 503 until cleared: accepted grows, delivered does not, retries count up, 5 pending.
        collector.faults.add(status=503, times=None)
        for number in range(5):
            backend.send(event(n=number))
        wait_until(lambda: backend.stats()["retries"] >= 2, 60, "the sender to retry")
        before = backend.stats()
        during = reader.read(**ours)
        after = backend.stats()
        assert during["eventtracking.accepted"] == {"": 15}
        assert during["eventtracking.delivered"] == {"": 10}
        assert during["eventtracking.pending"] == {"": 5}
        assert before["buffered_bytes"] > 0
        assert during["eventtracking.pending.size"] == {"": before["buffered_bytes"]}
        assert before["retries"] <= during["eventtracking.retries"][""] <= after["retries"]
        assert during["eventtracking.spool.size"][""] > 0

        # 200 again: the 5 delivered; one refused event and one oversized are counted by reason.
        collector.faults.clear()
        collector.faults.reject_event("course.refused")
        backend.send(event("course.refused"))
        backend.send(event(blob="x" * 40_000))
        assert backend.flush(timeout=30)
        stats = backend.stats()
        assert stats["delivered"] == 15 and stats["retries"] >= 2
        assert stats["dropped"] == {"refused": 1} and stats["skipped"] == {"oversized": 1}
        assert reader.read(**ours) == expected_from(stats)
    finally:
        backend.close(timeout=10)


def test_a_celery_publisher_is_reported_by_its_name_through_a_broker_outage(reader, redis_server):
    app = Celery("metrics-tests", broker=redis_server.url, set_as_current=True)
    app.set_current()
    backend = AsyncRoutingBackend(backend_name="metrics")
    ours = {"eventtracking.sender": "celery-metrics"}
    try:
        for number in range(5):
            backend.send(event(n=number))
        assert backend.flush(30)
        stats = backend.stats()
        assert stats["published"] == 5
        assert reader.read(**ours) == expected_from(stats)

        redis_server.stop()
        for number in range(5):
            backend.send(event(n=number))
        wait_until(lambda: backend.stats()["retries"] >= 2, 60, "the publisher to retry")
        during = reader.read(**ours)
        assert during["eventtracking.accepted"] == {"": 10}
        assert during["eventtracking.delivered"] == {"": 5}
        assert during["eventtracking.pending"] == {"": 5}

        redis_server.start()
        assert backend.flush(60)
        stats = backend.stats()
        assert stats["published"] == 10 and stats["retries"] >= 2
        assert reader.read(**ours) == expected_from(stats)
    finally:
        backend.close(5)
        app.close()


def owner_classes_with_stats() -> dict[str, set[str]]:
    """{module:class: its methods} of every class of the package that is a background owner
    (after_fork_in_child) with stats(), read from the source (importing runs nothing)."""
    found = {}
    for path in sorted((ROOT / "eventtracking").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
                if {"after_fork_in_child", "stats"} <= methods:
                    found[f"{path.relative_to(ROOT)}:{node.name}"] = methods
    return found


def test_every_background_sender_class_that_offers_stats_names_itself_for_the_metrics():
    classes = owner_classes_with_stats()
    assert {
        "eventtracking/segment/pipeline.py:Pipeline",
        "eventtracking/publisher.py:Publisher",
    } <= set(classes)
    # A sender added later (the Segment client) is covered only with metric_attributes().
    assert [name for name, methods in classes.items() if "metric_attributes" not in methods] == []


def test_the_stats_line_says_the_same_figures(collector, caplog):
    backend = SegmentBackend(write_key=WRITE_KEY, host=collector.url, flush_interval=0.01)
    try:
        backend.send(event())
        backend.send(event(blob="x" * 40_000))
        assert backend.flush(timeout=30)
        with caplog.at_level(logging.INFO, logger="eventtracking.metrics"):
            metrics.log_stats_every(0.05)
            wait_until(
                lambda: any(collector.url in record.getMessage() for record in caplog.records), 30, "the line"
            )
            metrics.log_stats_every(0)
        line = next(record.getMessage() for record in caplog.records if collector.url in record.getMessage())
        assert f"SegmentBackend {collector.url}: accepted=1 delivered=1 retries=0" in line
        assert "dropped=0 skipped=1 skipped.oversized=1 pending=0 (0 bytes) spool=0 bytes" in line
        assert WRITE_KEY not in caplog.text
    finally:
        backend.close(timeout=5)


def test_the_global_provider_gets_the_instruments_and_a_fork_never_makes_a_counter_go_back(collector):
    """In a process of its own: the first sender installs the instruments on the global provider
    (the library's own hook), the site's SDK provider set afterwards gets them, and a forked
    child's figures go on from the parent's last reported ones although its sender starts from zero."""
    script = textwrap.dedent(
        """
        import json, os, sys
        from opentelemetry import metrics as otel
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from eventtracking.backends.segment import SegmentBackend

        def delivered():
            for resource in reader.get_metrics_data().resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name == "eventtracking.delivered":
                            return sum(point.value for point in metric.data.data_points)

        backend = SegmentBackend(write_key="k", host=sys.argv[1], flush_interval=0.01)
        # The site sets its provider after the first sender made the instruments: they follow.
        reader = InMemoryMetricReader()
        otel.set_meter_provider(MeterProvider(metric_readers=[reader]))
        for n in range(3):
            backend.send({"name": "e", "context": {"user_id": 1}, "data": {"n": n}})
        assert backend.flush(timeout=30)
        parent = delivered()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            at_start = delivered()  # the child's sender starts from zero
            backend.send({"name": "e", "context": {"user_id": 1}, "data": {"n": 9}})
            ok = backend.flush(timeout=30)
            result = [at_start, delivered(), backend.stats()["delivered"], ok]
            os.write(write, json.dumps(result).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"parent": parent, "child": json.loads(os.read(read, 1000))}))
        backend.close(timeout=5)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, collector.url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["parent"] == 3
    at_start, after_send, child_stats, flushed = figures["child"]
    assert flushed and child_stats == 1  # the child's own sender counts only its own
    assert at_start == 3 and after_send == 4  # the reported counter goes on, never back
    assert collector.wait_for(4) == 4
