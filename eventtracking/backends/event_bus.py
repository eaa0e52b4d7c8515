"""
Backend that publishes tracking logs to the Open edX event bus (openedx-events).

``EventBusRoutingBackend.send(event)`` does what the original's does: when the
``SEND_TRACKING_EVENT_EMITTED_SIGNAL`` setting is True and the event's name is listed in
``EVENT_BUS_TRACKING_LOGS``, it turns the event into a ``TrackingLogData`` (``data`` and
``context`` as JSON text written by ``DateTimeJSONEncoder``, ``timestamp`` a datetime) and
publishes the ``TRACKING_EVENT_EMITTED`` signal. Its own processors and backends do not run
here: the consumer side (:mod:`eventtracking.handlers`) runs them on each message that comes
back from the bus, so an event is put on the bus once whatever its number of destinations.

Unlike the original, the request does not wait for the bus: the tracking log is built on the
caller's thread and the signal is sent from a background
:class:`~eventtracking.publisher.Publisher` (so openedx-events' producer, e.g.
edx-event-bus-redis', and any other receiver of the signal run on that thread). When the
producer is edx-event-bus-redis' (which logs and swallows its own errors), the publisher pings
its Redis before each message and, while Redis does not answer, keeps the messages in its
bounded buffer and sends them once it is back, instead of losing them. Options beyond the
original's: those of the publisher (``max_buffer_bytes``, ``spool_dir``, ``spool_max_bytes``,
``fsync``, ``exit_timeout``); ``flush(timeout)``, ``close(timeout)`` and ``stats()``.

Needs Django, openedx-events and edx-toggles (the ``eventbus`` extra).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import orjson
from openedx_events.analytics.data import TrackingLogData
from openedx_events.analytics.signals import TRACKING_EVENT_EMITTED

from eventtracking.backends.logger import DateTimeJSONEncoder
from eventtracking.backends.routing import Processor, RoutingBackend
from eventtracking.config import SEND_TRACKING_EVENT_EMITTED_SIGNAL, event_bus_tracking_logs
from eventtracking.publisher import Publisher, PublisherSlot

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
    Publishing happens in the background (see the module docstring).
    """

    def __init__(
        self,
        processors: Iterable[Processor] | None = None,
        backends: Mapping[Any, Any] | None = None,
        backend_name: str = "",
        *,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        spool_dir: Optional[str] = None,
        spool_max_bytes: int = 1024**3,
        fsync: bool = False,
        exit_timeout: float = 5.0,
    ) -> None:
        self.backend_name = backend_name
        super().__init__(processors=processors, backends=backends)
        self._publishing = PublisherSlot(
            self._make_publisher,
            max_buffer_bytes=max_buffer_bytes,
            spool_dir=spool_dir,
            spool_max_bytes=spool_max_bytes,
            fsync=fsync,
            exit_timeout=exit_timeout,
        )
        if spool_dir is not None:
            self._publishing.get()  # at once: what an earlier process left in the spool is published now

    def send(self, event: Mapping[str, Any]) -> None:
        """Publish `event` on the bus if the toggle is on and its name is listed; else nothing."""
        if not SEND_TRACKING_EVENT_EMITTED_SIGNAL.is_enabled():
            return
        if event.get("name") not in event_bus_tracking_logs():
            return
        self.publish(tracking_log_from_event(event))

    def publish(self, tracking_log: TrackingLogData) -> None:
        """Queue one ``TrackingLogData``: the publisher's thread sends the signal, and so hands it
        to openedx-events' configured producer.

        When this module's ``TRACKING_EVENT_EMITTED`` or its ``send_event`` is patched (tests
        across Open edX do), the signal is sent here, on the caller's thread, as the original
        did."""
        if _signal_patched():
            emit(tracking_log)
            return
        timestamp = tracking_log.timestamp.isoformat() if tracking_log.timestamp is not None else None
        item = orjson.dumps([tracking_log.name, timestamp, tracking_log.data, tracking_log.context])
        self._publishing.get().put(item)

    def _make_publisher(self, **options: Any) -> Publisher:
        """The publisher, made once, at the first publish."""
        name = f"event-bus-{self.backend_name}" if self.backend_name else "event-bus"
        # Import and make the producer here, not first on the publisher's thread: a process
        # forked during that import would inherit half-initialised modules.
        _producer_ping()
        return Publisher(EventBusChannel(), name, **options)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every tracking log sent so far was handed to the bus; False when
        ``timeout`` ran out first."""
        return self._publishing.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush within ``timeout`` and stop publishing; True when nothing was left behind."""
        return self._publishing.close(timeout)

    def stats(self) -> dict[str, Any]:
        """The publisher's counters (accepted, published, retries, outages, dropped by reason,
        pending); all zero before the first publish."""
        return self._publishing.stats()


def _producer_ping() -> Optional[Callable[[], Any]]:
    """The ping of the configured producer's Redis client (edx-event-bus-redis), or None."""
    from django.conf import settings

    if not getattr(settings, "EVENT_BUS_PRODUCER", None):
        return None  # no producer: openedx-events would not produce either (and would warn)
    from openedx_events.event_bus import get_producer

    return getattr(getattr(get_producer(), "client", None), "ping", None)


class EventBusChannel:
    """Sends each queued tracking log as the ``TRACKING_EVENT_EMITTED`` signal, with the event's
    own time in the metadata. With edx-event-bus-redis' producer, Redis is pinged first: no
    answer means "not now" (that producer would log the error and lose the message)."""

    def publish(self, items: Sequence[bytes], refuse: Callable[[str, bytes], None]) -> int:
        ping = _producer_ping()
        for index, item in enumerate(items):
            try:
                name, timestamp, data, context = orjson.loads(item)
                when = datetime.fromisoformat(timestamp) if timestamp is not None else None
                tracking_log = TrackingLogData(name=name, timestamp=when, data=data, context=context)
            except (ValueError, TypeError):
                refuse("undecodable", item)
                continue
            if ping is not None:
                try:
                    ping()
                except Exception:
                    if index == 0:
                        raise  # the publisher says why it waits
                    return index
            try:
                emit(tracking_log)
            except Exception:  # a receiver raised and openedx-events let it through (DEBUG)
                logger.exception("TRACKING_EVENT_EMITTED failed for tracking log %s", name)
                refuse("receiver_error", item)
        return len(items)


_SIGNAL = TRACKING_EVENT_EMITTED
_SEND_EVENT = type(TRACKING_EVENT_EMITTED).send_event


def _signal_patched() -> bool:
    """Whether this module's signal, or its ``send_event``, is not openedx-events' own (patched)."""
    signal = TRACKING_EVENT_EMITTED  # looked up at each call, so a patch is seen
    return signal is not _SIGNAL or getattr(signal.send_event, "__func__", None) is not _SEND_EVENT


def emit(tracking_log: TrackingLogData) -> None:
    """Send the ``TRACKING_EVENT_EMITTED`` signal for `tracking_log`, with the event's own time
    in the metadata; raises what a receiver raises."""
    when = tracking_log.timestamp
    metadata_time = when.astimezone(timezone.utc) if when is not None and when.tzinfo else None
    TRACKING_EVENT_EMITTED.send_event(time=metadata_time, tracking_log=tracking_log)
    # The original's log call, preformatted: tests across Open edX assert it.
    logger.info(f"Tracking log {tracking_log.name} emitted to the event bus.")


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
