"""Shared fixtures: the project's own Segment-compatible collector, really listening on loopback."""

from __future__ import annotations

import pytest

from eventtracking import tracker
from eventtracking.collector import Collector


@pytest.fixture
def collector():
    """A collector on an ephemeral loopback port with an in-memory store."""
    with Collector() as running:
        yield running
    running.close()  # stop() keeps the store readable; close() releases it


@pytest.fixture
def saved_trackers():
    """Restore the global tracker registry after the test."""
    saved = dict(tracker.TRACKERS)
    yield
    tracker.TRACKERS.clear()
    tracker.TRACKERS.update(saved)


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port (stopped and started again by outage tests)."""
    from engines import RedisServer

    server = RedisServer(str(tmp_path)).start()
    try:
        yield server
    finally:
        server.stop()


_FIGURES: list = []


@pytest.fixture
def figures():
    """Lines a test reports (measured figures), printed at the end of the run."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in _FIGURES:
            terminalreporter.write_line(line)
