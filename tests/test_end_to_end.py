"""From an application's tracker, configured the Open edX way, to the collector, and the demo itself."""

from __future__ import annotations

import os
import subprocess
import sys

from eventtracking.loader import load
from eventtracking.tracker import Tracker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import demo  # noqa: E402  (the demo's Open edX-style settings are what this test runs)


def test_tracker_to_collector_through_routing_and_whitelist(collector):
    tracker = Tracker(backends=load(demo.settings(collector.url)))
    with tracker.context("edx.request", {"user_id": 3, "host": "lms.example.org", "path": "/enroll"}):
        with tracker.context("edx.course", {"course_id": "course-v1:X+Y+Z"}):
            tracker.emit("edx.course.enrollment.activated", {"mode": "audit"})
        tracker.emit("edx.not.whitelisted", {})
    segment = tracker.get_backend("segmentio").backends["segment"]
    assert segment.flush(10)
    [message] = collector.messages()
    assert message["event"] == "edx.course.enrollment.activated"
    assert message["userId"] == "3"
    assert message["context"]["page"]["url"] == "https://lms.example.org/enroll"
    assert message["properties"]["context"]["course_id"] == "course-v1:X+Y+Z"
    assert message["properties"]["data"] == {"mode": "audit"}
    segment.close(5)


def test_the_demo_runs_and_shows_what_arrived():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the collector received 4 track messages" in result.stdout
    assert result.stdout.count("edx.video.played") == 2
    assert "https://courses.example.org/about" in result.stdout
