"""
Backend that publishes tracking logs to the Open edX event bus (openedx-events).

``EventBusRoutingBackend.send(event)`` does what the original's does: when the
``SEND_TRACKING_EVENT_EMITTED_SIGNAL`` setting is True and the event's name is listed in
``EVENT_BUS_TRACKING_LOGS``, it turns the event into a ``TrackingLogData`` (``data`` and
``context`` as JSON text written by ``DateTimeJSONEncoder``, ``timestamp`` a datetime) and
publishes the ``TRACKING_EVENT_EMITTED`` signal. Its own processors and backends do not run
here: the consumer side (:mod:`eventtracking.handlers`) runs them on each message that comes
back from the bus, so an event is put on the bus once whatever its number of destinations.

Needs Django, openedx-events and edx-toggles (the ``eventbus`` extra).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Iterable, Mapping

from openedx_events.analytics.data import TrackingLogData
from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED

from eventtracking.backends.logger import DateTimeJSONEncoder
from eventtracking.backends.routing import Processor, RoutingBackend
from eventtracking.config import SEND_TRACKING_EVENT_EMITTED_SIGNAL, event_bus_tracking_logs

logger = logging.getLogger(__name__)

# The format the original parses string timestamps with (the tracker's isoformat with microseconds).
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"


class EventBusRoutingBackend(RoutingBackend):
    """
    Publish tracking logs to the event bus; route the ones that come back to `backends`.

    `processors` and `backends` are those of a ``RoutingBackend``; they run in the process that
    consumes the bus (see :func:`eventtracking.handlers.send_tracking_log_to_backends`).
    `backend_name` is accepted for the original's settings and kept as an attribute.

    ``send`` raises what building the message raises (an event whose data JSON cannot encode,
    a string timestamp in another format), as the original does; a parent router logs it.
    """

    def __init__(
        self,
        processors: Iterable[Processor] | None = None,
        backends: Mapping[Any, Any] | None = None,
        backend_name: str = "",
    ) -> None:
        self.backend_name = backend_name
        super().__init__(processors=processors, backends=backends)

    def send(self, event: Mapping[str, Any]) -> None:
        """Publish `event` on the bus if the toggle is on and its name is listed; else nothing."""
        if not SEND_TRACKING_EVENT_EMITTED_SIGNAL.is_enabled():
            return
        if event.get("name") not in event_bus_tracking_logs():
            return
        self.publish(tracking_log_from_event(event))

    def publish(self, tracking_log: TrackingLogData) -> None:
        """Hand one ``TrackingLogData`` to openedx-events (which gives it to the configured producer)."""
        TRACKING_EVENT_EMITTED.send_event(tracking_log=tracking_log)
        logger.info("Tracking log %s emitted to the event bus.", tracking_log.name)


def tracking_log_from_event(event: Mapping[str, Any]) -> TrackingLogData:
    """The ``TrackingLogData`` the original builds for `event` (the same fields, the same JSON)."""
    timestamp = event.get("timestamp")
    if isinstance(timestamp, str):
        timestamp = datetime.strptime(timestamp, TIMESTAMP_FORMAT)
    return TrackingLogData(
        name=event.get("name"),
        timestamp=timestamp,
        data=json.dumps(event.get("data"), cls=DateTimeJSONEncoder),
        context=json.dumps(event.get("context"), cls=DateTimeJSONEncoder),
    )
