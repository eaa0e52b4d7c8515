"""
The consumer side of the event bus: tracking logs that come back from the bus reach the backends.

``send_tracking_log_to_backends`` receives openedx-events' ``TRACKING_EVENT_EMITTED`` signal. It
acts only on signals that were read from the event bus (``SIGNAL_PROCESSED_FROM_EVENT_BUS``),
not on the local send that put the event on the bus. For each such message it rebuilds the
event (``name``, ``timestamp``, ``data`` and ``context`` decoded from their JSON) and, for every
top-level ``EventBusRoutingBackend`` of the default tracker, runs that backend's processors and
sends the result to its backends, as the original does. Each of those backends gets its own copy
of the event (the original shared one between them).

Connected by the Django app's ``ready()`` (``eventtracking.django``) when openedx-events is
installed. Needs Django, openedx-events and edx-toggles (the ``eventbus`` extra).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.dispatch import receiver
from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED
from openedx_events.tooling import SIGNAL_PROCESSED_FROM_EVENT_BUS

from eventtracking.backends.event_bus import EventBusRoutingBackend
from eventtracking.backends.routing import isolated_copy
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.tracker import get_tracker

logger = logging.getLogger(__name__)


@receiver(TRACKING_EVENT_EMITTED)
def send_tracking_log_to_backends(sender: Any, signal: Any, **kwargs: Any) -> None:
    """Route a tracking log read from the event bus to every ``EventBusRoutingBackend``'s backends."""
    if not kwargs.get(SIGNAL_PROCESSED_FROM_EVENT_BUS, False):
        logger.debug("Event received from a non-event bus backend, skipping...")
        return
    tracking_log: Any = kwargs["tracking_log"]
    event = {
        "name": tracking_log.name,
        "timestamp": tracking_log.timestamp,
        "data": json.loads(tracking_log.data),
        "context": json.loads(tracking_log.context),
    }
    engines = [
        engine for engine in get_tracker().backends.values() if isinstance(engine, EventBusRoutingBackend)
    ]
    for index, engine in enumerate(engines):
        # The last engine may have the event itself; earlier ones get copies, so that one
        # engine's processors cannot change what the next one sees.
        own = event if index == len(engines) - 1 else isolated_copy(event)
        try:
            processed = engine.process_event(own)
        except EventEmissionExit:
            # Preformatted, as the original logs it: tests across Open edX assert this call.
            logger.info(f"[EventEmissionExit] skipping event {event['name']}")
            continue
        name = event["name"]
        logger.info(f'Successfully processed event "{name}"')
        engine.send_to_backends(processed)
