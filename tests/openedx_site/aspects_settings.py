"""The LMS's settings with Aspects' additions: ERB's transformer behind the event bus.

As ERB documents its event-bus configuration (and Aspects applies it): the ``event_transformer``
router becomes an EventBusRoutingBackend whose xAPI router sends synchronously (in the process
that consumes the bus), the tracking-log signal is switched on, and the producer is configured.
"""

from lms_settings import *  # noqa: F403
from lms_settings import EVENT_TRACKING_BACKENDS, INSTALLED_APPS

_transformer = EVENT_TRACKING_BACKENDS["event_transformer"]
_transformer["ENGINE"] = "eventtracking.backends.event_bus.EventBusRoutingBackend"
_xapi = _transformer["OPTIONS"]["backends"]["xapi"]
_xapi["ENGINE"] = "event_routing_backends.backends.sync_events_router.SyncEventsRouter"
_transformer["OPTIONS"]["backends"].pop("caliper")
_transformer["OPTIONS"].pop("backend_name")
if "openedx_events" not in INSTALLED_APPS:
    INSTALLED_APPS.append("openedx_events")
SEND_TRACKING_EVENT_EMITTED_SIGNAL = True
EVENT_BUS_PRODUCER_CONFIG = {
    "org.openedx.analytics.tracking.event.emitted.v1": {
        "analytics": {"event_key_field": "tracking_log.name", "enabled": True}
    }
}
