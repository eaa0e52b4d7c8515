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
