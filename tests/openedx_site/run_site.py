"""Start the miniature LMS, emit events through its tracker, report what the site did.

Usage: ``DJANGO_SETTINGS_MODULE=lms_settings python run_site.py < scenario.json``, with this
folder and platform/ on PYTHONPATH and SITE_DB, SITE_LOG, LMS_SEGMENT_KEY set. The scenario::

    {"collector_url": ..., "lrs_url": ..., "users": [ids],
     "events": [{"name": ..., "data": {...}, "context": {...}}],
     "bulk": [events for ERB's xAPI router's bulk_send, or null],
     "bus": true to hand what was published on the event bus back as its consumer would}

Prints one JSON line: the Segment client configured, the tracker's engines, SegmentBackend's
stats, how many tracking logs were published on the bus.
"""

from __future__ import annotations

import json
import sys

import django
import django.apps
from django.conf import settings

CELERY_APP = None


def start_site(scenario: dict) -> None:
    """What an LMS does before serving: the apps (the tracker among them), the database, and
    (ERB installed) an LRS router configuration pointed at the test's xAPI endpoint."""
    from celery import Celery

    global CELERY_APP  # edx-platform's lms/celery.py: the app reads the CELERY_* settings
    CELERY_APP = Celery("lms")
    CELERY_APP.config_from_object("django.conf:settings", namespace="CELERY")
    CELERY_APP.set_default()
    CELERY_APP.set_current()
    django.setup()
    from django.apps import apps

    if not apps.is_installed("event_routing_backends"):
        return
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from event_routing_backends.models import RouterConfiguration

    call_command("migrate", verbosity=0)
    # ERB's settings name the router "xapi", its model stores "xAPI": Open edX's MySQL compares
    # them case-insensitively (its default collation). SQLite gets the same collation here.
    field = RouterConfiguration._meta.get_field("backend_name")
    nocase = field.clone()
    nocase.set_attributes_from_name("backend_name")
    nocase.model = RouterConfiguration
    nocase.db_collation = "NOCASE"
    with connection.schema_editor() as editor:
        editor.alter_field(RouterConfiguration, field, nocase)
    RouterConfiguration.objects.create(
        backend_name=RouterConfiguration.XAPI_BACKEND,
        route_url=scenario["lrs_url"],
        auth_scheme=RouterConfiguration.AUTH_BASIC,
        username="lrs-user",
        password="lrs-password",
        enabled=True,
    )
    for user_id in scenario.get("users", []):
        get_user_model().objects.create(
            id=user_id, username=f"learner{user_id}", email=f"l{user_id}@example.org"
        )


def configure_segment(collector_url: str) -> str:
    """The edx-platform way: after the tracker is built, set the global client's key and host
    (``analytics`` is what edx-platform imports; segment-analytics-python 2.x alone has only
    ``segment.analytics``)."""
    try:
        import analytics

        name = "analytics"
    except ImportError:
        from segment import analytics

        name = "segment.analytics"
    analytics.write_key = settings.LMS_SEGMENT_KEY
    analytics.host = collector_url
    return name


def main() -> int:
    scenario = json.load(sys.stdin)
    start_site(scenario)
    from eventtracking import tracker

    published = []
    if scenario.get("bus"):
        from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED

        def on_the_bus(sender, signal, **kwargs):  # what the configured producer is handed
            if not kwargs.get("from_event_bus"):
                published.append((kwargs["metadata"], kwargs["tracking_log"]))

        TRACKING_EVENT_EMITTED.connect(on_the_bus)

    client = configure_segment(scenario["collector_url"])
    site_tracker = tracker.get_tracker()
    for event in scenario["events"]:
        with site_tracker.context("edx.request", event["context"]):
            tracker.emit(event["name"], event["data"])

    if scenario.get("bus"):
        # The consumer side, as openedx-events' consumers hand a message read from the bus back.
        for metadata, tracking_log in published:
            TRACKING_EVENT_EMITTED.send_event_with_custom_metadata(metadata, tracking_log=tracking_log)
    if scenario.get("bulk"):
        site_tracker.backends["event_transformer"].backends["xapi"].bulk_send(scenario["bulk"])

    segment = site_tracker.backends["segmentio"].backends["segment"]
    flushed = segment.flush(60)
    engines = {name: f"{type(b).__module__}.{type(b).__name__}" for name, b in site_tracker.backends.items()}
    report = {
        "client": client,
        "engines": engines,
        "flushed": flushed,
        "segment": segment.stats(),
        "published": len(published),
        "apps": [app.name for app in django.apps.apps.get_app_configs()],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
