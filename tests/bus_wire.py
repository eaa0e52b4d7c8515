"""
Run by test_event_bus.py under this package's interpreter and the original event-tracking
4.1.5's: prints the TrackingLogData each one's EventBusRoutingBackend publishes for the same
events, so the test can compare them field by field.
"""

import datetime
import json

from django.conf import settings

settings.configure(
    SEND_TRACKING_EVENT_EMITTED_SIGNAL=True,
    EVENT_BUS_TRACKING_LOGS=["edx.course.enrollment.activated", "edx.string.time"],
)

from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED  # noqa: E402

import eventtracking  # noqa: E402
from eventtracking.backends.event_bus import EventBusRoutingBackend  # noqa: E402

published = []


def listen(sender, signal, **kwargs):
    log = kwargs["tracking_log"]
    published.append([log.name, log.timestamp.isoformat(), log.data, log.context])


TRACKING_EVENT_EMITTED.connect(listen)
UTC = datetime.timezone.utc
backend = EventBusRoutingBackend(backend_name="bus")
backend.send(
    {
        "name": "edx.course.enrollment.activated",
        "timestamp": datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "data": {"course_id": "c", "when": datetime.datetime(2026, 1, 1), "day": datetime.date(2026, 1, 1)},
        "context": {"user_id": 7, "nested": {"list": [1, "é", None]}},
    }
)
backend.send(
    {"name": "edx.string.time", "timestamp": "2026-01-02T03:04:05.000001+02:00", "data": {}, "context": {}}
)
backend.send({"name": "not.listed", "timestamp": datetime.datetime.now(UTC), "data": {}, "context": {}})
print(json.dumps({"package": eventtracking.__file__, "published": published}))
