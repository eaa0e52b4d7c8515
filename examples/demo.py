"""A newcomer's demo: an application's tracker → RoutingBackend → SegmentBackend → a local collector.

Run with ``make demo``. No Segment account and no network: the collector is the project's own
Segment-compatible server, started here on loopback with a SQLite file.

The tracker is built from an Open edX-style settings dict (the same shape as Open edX's
``EVENT_TRACKING_BACKENDS``): a RoutingBackend whose whitelist processor lets two event names
through to a SegmentBackend in owned mode, pointed at the collector.
"""

from __future__ import annotations

import os
import sys
import tempfile

from eventtracking import tracker
from eventtracking.cli.received import format_table
from eventtracking.collector import Collector
from eventtracking.loader import load
from eventtracking.wording import plural

WHITELIST = ["edx.course.enrollment.activated", "edx.video.played"]


def settings(collector_url: str) -> dict:
    """What an Open edX site would put in EVENT_TRACKING_BACKENDS, pointed at the collector."""
    return {
        "segmentio": {
            "ENGINE": "eventtracking.backends.routing.RoutingBackend",
            "OPTIONS": {
                "backends": {
                    "segment": {
                        "ENGINE": "eventtracking.backends.segment.SegmentBackend",
                        "OPTIONS": {"write_key": "demo-write-key", "host": collector_url},
                    }
                },
                "processors": [
                    {
                        "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
                        "OPTIONS": {"whitelist": WHITELIST},
                    }
                ],
            },
        }
    }


def emit_some_events(app_tracker: tracker.Tracker) -> None:
    """A handful of realistic events, emitted inside request and course contexts."""
    request = {
        "user_id": 42,
        "username": "ada",
        "host": "courses.example.org",
        "ip": "203.0.113.9",
        "agent": "Mozilla/5.0 (demo)",
        "session": "7f3c0a",
        "client_id": "GA1.2.123.456",
        "referer": "https://courses.example.org/dashboard",
    }
    course = "course-v1:edX+DemoX+2026"
    with app_tracker.context("edx.request", {**request, "path": f"/courses/{course}/enroll"}):
        app_tracker.emit("edx.course.enrollment.activated", {"course_id": course, "mode": "audit"})
        app_tracker.emit("edx.ui.lms.link_clicked", {"target": "/help"})  # not whitelisted
    with app_tracker.context("edx.request", {**request, "path": f"/courses/{course}/courseware/intro"}):
        with app_tracker.context("edx.course", {"course_id": course, "org_id": "edX"}):
            app_tracker.emit("edx.video.played", {"id": "intro-video", "currentTime": 12.5})
            app_tracker.emit("edx.video.played", {"id": "intro-video", "currentTime": 95.0})
    with app_tracker.context("edx.request", {"user_id": 7, "page": "https://courses.example.org/about"}):
        app_tracker.emit("edx.course.enrollment.activated", {"course_id": course, "mode": "verified"})
    with app_tracker.context("edx.request", {"session": "anon-1", "path": "/"}):
        app_tracker.emit("edx.video.played", {"id": "teaser"})  # no user id: skipped by rule


def main() -> int:
    with (
        tempfile.TemporaryDirectory() as tmp,
        Collector(db_path=os.path.join(tmp, "demo.sqlite3")) as collector,
    ):
        print(f"collector listening on {collector.url}")
        backends = load(settings(collector.url))
        app_tracker = tracker.Tracker(backends=backends)
        emit_some_events(app_tracker)
        segment = app_tracker.get_backend("segmentio").backends["segment"]
        if not segment.flush(timeout=10):
            print("flush timed out", file=sys.stderr)
            return 1
        messages = collector.messages()
        print(f"\nthe collector received {plural(len(messages), 'track message')}:\n")
        print(format_table(list(enumerate(messages, 1))), end="")  # as `eventtracking received` shows it
        stats = segment.stats()
        print(
            f"\nSegmentBackend: accepted {stats['accepted']}, delivered {stats['delivered']}, "
            f"skipped {stats['skipped']}, dropped {stats['dropped']}"
        )
        print("(one event was not whitelisted, one had no user id: both stopped before Segment, by rule)")
        segment.close(5)
        return 0 if stats["delivered"] == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
