"""
Run by test_async_routing.py under two interpreters (this package's and the original
event-tracking 4.1.5's), to show that both put the same Celery message on the queue and that
each one's worker takes the other's.

    python celery_wire.py produce            -> prints the message AsyncRoutingBackend queued
    python celery_wire.py consume < message  -> runs send_event from it, prints what the
                                                nested backend received

The broker is kombu's in-process memory transport: the message is the real serialized one
(headers, JSON body), only the network is left out.
"""

import datetime
import json
import sys

from django.conf import settings

settings.configure(
    EVENT_TRACKING_ENABLED=True,
    EVENT_TRACKING_BACKENDS={
        "xapi": {
            "ENGINE": "eventtracking.backends.async_routing.AsyncRoutingBackend",
            "OPTIONS": {
                "backend_name": "xapi",
                "processors": [
                    {
                        "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
                        "OPTIONS": {"whitelist": ["edx.course.enrollment.activated"]},
                    }
                ],
                "backends": {"recorder": {"ENGINE": "__main__.Recorder"}},
            },
        }
    },
)

from celery import Celery  # noqa: E402
from kombu import serialization  # noqa: E402

import eventtracking  # noqa: E402

app = Celery("wire", broker="memory://")
app.set_default()
app.conf.task_always_eager = False


class Recorder:
    events = []

    def send(self, event):
        Recorder.events.append(event)


def tracker():
    from eventtracking.django.django_tracker import override_default_tracker
    from eventtracking.tracker import get_tracker

    override_default_tracker()
    return get_tracker()


def produce():
    event = {
        "name": "edx.course.enrollment.activated",
        "timestamp": datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc),
        "data": {"course_id": "course-v1:a+b+c", "mode": "audit", "when": datetime.date(2026, 1, 2)},
        "context": {"user_id": 7, "path": "/x", "nested": {"list": [1, 2.5, None, True]}},
    }
    tracker().backends["xapi"].send(event)
    tracker().backends["xapi"].send(dict(event, name="not.whitelisted"))
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("celery")
        message = queue.get(timeout=10)
        left = queue.qsize()
        print(
            json.dumps(
                {
                    "task": message.headers["task"],
                    "argsrepr": message.headers.get("argsrepr"),
                    "content_type": message.content_type,
                    "content_encoding": message.content_encoding,
                    "body": message.body if isinstance(message.body, str) else message.body.decode(),
                    "left": left,
                    "package": eventtracking.__file__,
                }
            )
        )


def consume():
    message = json.loads(sys.stdin.read())
    args, kwargs, _embed = serialization.loads(
        message["body"], message["content_type"], message["content_encoding"]
    )
    tracker()
    from eventtracking.tasks import send_event

    assert send_event.name == message["task"], (send_event.name, message["task"])
    send_event.apply(args, kwargs).get()
    print(json.dumps(Recorder.events, default=lambda value: {"datetime": value.isoformat()}))


if __name__ == "__main__":
    {"produce": produce, "consume": consume}[sys.argv[1]]()
