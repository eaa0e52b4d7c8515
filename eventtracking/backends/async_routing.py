"""
A router whose backends run in a Celery worker instead of the web process.

``AsyncRoutingBackend`` runs its processors on the caller's thread, then queues the result as
the Celery task ``eventtracking.tasks.send_event(backend_name, processed_event)``; a worker runs
the task, which sends the event to this backend's backends (event-routing-backends configures
its xAPI and Caliper routers this way). The same behaviour as the original: the task is queued
(``publish``) synchronously on the caller's thread.

Needs Celery (the ``celery`` extra).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from eventtracking.backends import event_name
from eventtracking.backends.routing import Processor, RoutingBackend
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.tasks import send_event

logger = logging.getLogger(__name__)


class AsyncRoutingBackend(RoutingBackend):
    """
    Route events to `backends` in a Celery worker, after `processors` ran here.

    `backend_name` must be this backend's name among the default tracker's backends: the worker
    finds the backend again by that name. So, as with the original, it works only as a top-level
    backend of the default tracker, and every process (web and worker) must build the same
    tracker from the same settings.

    ``send(event)`` never mutates `event` (it works on a copy, as every router does). A
    parent router hands it its own copy through ``_route``. What ``publish`` raises (the broker
    refused or is unreachable) reaches the caller, as with the original; a parent router logs it.
    """

    def __init__(
        self,
        processors: Iterable[Processor] | None = None,
        backends: Mapping[Any, Any] | None = None,
        backend_name: str = "",
    ) -> None:
        self.backend_name = backend_name
        super().__init__(processors=processors, backends=backends)

    def _route(self, event: Any) -> None:
        """Run the processors on `event` (owned by this backend) and queue the result."""
        try:
            processed = self.process_event(event)
        except EventEmissionExit:
            logger.info("[EventEmissionExit] skipping event %s", event_name(event))
            return
        logger.info('Successfully processed event "%s"', event_name(event))
        self.publish(processed)
        logger.info('Scheduled celery task for event "%s" processing and routing', event_name(event))

    def publish(self, processed_event: Any) -> None:
        """Queue the Celery task for `processed_event`; it runs in a worker (in this process when
        Celery is configured to run tasks eagerly)."""
        send_event.delay(self.backend_name, processed_event)
