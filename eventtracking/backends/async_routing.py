"""
A router whose backends run in a Celery worker instead of the web process.

``AsyncRoutingBackend`` runs its processors on the caller's thread, then queues the result as
the Celery task ``eventtracking.tasks.send_event(backend_name, processed_event)``; a worker runs
the task, which sends the event to this backend's backends (event-routing-backends configures
its xAPI and Caliper routers this way). The task's name and arguments are the original's, so
workers and web processes of either package share one queue.

Unlike the original, the caller never waits for the broker: ``send()`` encodes the processed
event (kombu's JSON, with its type tags, so the worker gets back what the original sends) and
hands it to a background :class:`~eventtracking.publisher.Publisher`, whose thread publishes the
tasks. While the broker is unreachable the events wait in a bounded buffer (or a spool with
``spool_dir``) and are published once it is back; see :mod:`eventtracking.publisher`. With
``task_always_eager`` (tests, ERB's test settings) the task runs in ``send()``, as the original.

The Celery app is the one the caller's thread sees (``celery.current_app``, the site's app on a
Django site), taken at the first ``send()``: nothing of ours needs configuring.

Needs Celery (the ``celery`` extra).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from eventtracking import kombu_json
from eventtracking.backends import event_name
from eventtracking.backends.routing import Processor, RoutingBackend
from eventtracking.processors.exceptions import EventEmissionExit
from eventtracking.publisher import Publisher, PublisherSlot
from eventtracking.tasks import BATCH_TASK_NAME, TASK_NAME, send_event

logger = logging.getLogger(__name__)

_TASK = send_event  # the task itself: ``send_event`` is looked up at each send, so a patch is seen


class AsyncRoutingBackend(RoutingBackend):
    """
    Route events to `backends` in a Celery worker, after `processors` ran here.

    `backend_name` must be this backend's name among the default tracker's backends: the worker
    finds the backend again by that name. So, as with the original, it works only as a top-level
    backend of the default tracker, and every process (web and worker) must build the same
    tracker from the same settings.

    ``send(event)`` never mutates `event` (it works on a copy, as every router does), never
    blocks on the broker and never raises. A parent router hands it its own copy through
    ``_route``. Options beyond the original's (all optional): ``max_buffer_bytes`` (64 MiB),
    ``spool_dir``, ``spool_max_bytes``, ``fsync`` and ``exit_timeout`` (5 s) of the publisher
    (:class:`~eventtracking.publisher.Publisher`); ``batch_size`` (1: one ``send_event`` task
    per event, the original's; N > 1: up to N events per ``send_events`` task, which only workers
    running this package know, so upgrade every worker first). ``flush(timeout)``, ``close(timeout)`` and
    ``stats()`` are the publisher's (``skipped.unserializable`` counts events JSON cannot hold).
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
        batch_size: int = 1,
    ) -> None:
        if not isinstance(batch_size, int) or not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be an integer from 1 to 1000")
        self.backend_name = backend_name
        self.batch_size = batch_size
        super().__init__(processors=processors, backends=backends)
        self._eager = False
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

    def _route(self, event: Any) -> None:
        """Run the processors on `event` (owned by this backend) and queue the result."""
        # The log calls are the original's, preformatted: tests across Open edX assert them.
        try:
            processed = self.process_event(event)
        except EventEmissionExit:
            logger.info(f"[EventEmissionExit] skipping event {event_name(event)}")
            return
        logger.info(f'Successfully processed event "{event_name(event)}"')
        try:
            self.publish(processed)
        except Exception:  # the application must never pay for a bug here
            logger.exception(
                "AsyncRoutingBackend %r could not queue event %r", self.backend_name, event_name(event)
            )
            return
        logger.info(f'Scheduled celery task for event "{event_name(event)}" processing and routing')

    def publish(self, processed_event: Any) -> None:
        """Queue the Celery task for `processed_event`: encoded here, published by the background
        publisher (in this process, at once, when Celery runs tasks eagerly).

        When this module's ``send_event`` is not our task (a test patched it, as tests across
        Open edX do), it is called here, ``send_event.delay(backend_name, processed_event)``, on
        the caller's thread, as the original did; the same as ``SegmentBackend`` honours a
        patched ``analytics``."""
        if send_event is not _TASK:
            send_event.delay(self.backend_name, processed_event)
            return
        publisher = self._publishing.get()
        if self._eager:
            send_event.delay(self.backend_name, processed_event)
            return
        try:
            item = kombu_json.dumps(processed_event)
        except kombu_json.Unserializable as error:
            publisher.counters.add_reason("skipped", "unserializable")
            logger.warning("AsyncRoutingBackend: event %r skipped: %s", event_name(processed_event), error)
            return
        publisher.put(item)

    def _make_publisher(self, **options: Any) -> Publisher:
        """The publisher (made once, at the first send), with the Celery app this (the caller's)
        thread sees."""
        from celery import current_app

        app = current_app._get_current_object()
        self._eager = bool(app.conf.task_always_eager)
        channel = CeleryChannel(app, self.backend_name, self.batch_size)
        if not self._eager:
            channel.prepare()
        name = f"celery-{self.backend_name}"
        return Publisher(channel, name, batch_count=max(100, self.batch_size), **options)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every event sent so far was published; False when ``timeout`` ran out."""
        return self._publishing.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush within ``timeout`` and stop publishing; True when nothing was left behind."""
        return self._publishing.close(timeout)

    def stats(self) -> dict[str, Any]:
        """The publisher's counters (accepted, published, retries, outages, dropped and skipped
        by reason, pending); all zero before the first send."""
        return self._publishing.stats()


class CeleryChannel:
    """Publishes ``send_event(backend_name, event)`` tasks (``batch_size`` > 1: ``send_events(
    backend_name, [event, ...])``) through a Celery app, one connection per batch. An encoding
    error is a refusal for good; anything else (the broker unreachable, a connection lost) means
    "not now": the publisher tries the rest again later."""

    def __init__(self, app: Any, backend_name: str, batch_size: int = 1) -> None:
        self.app = app
        self.backend_name = backend_name
        self.batch_size = batch_size

    def prepare(self) -> None:
        """Import, on the caller's thread, what publishing imports on first use (Celery's AMQP
        module, the broker's kombu transport and client library), making no connection. A
        process forked while the publisher's thread was in the middle of such an import would
        inherit a half-initialised module (``partially initialized module 'celery.app.amqp'``)
        and could never publish."""
        self.app.amqp.producer_pool  # noqa: B018  (celery.app.amqp, kombu's pools)
        with self.app.connection_for_write() as connection:
            connection.transport  # noqa: B018  (kombu.transport.redis, redis-py; no socket yet)

    def after_fork_in_child(self) -> None:
        """Drop the app's connection and producer pools: they are the parent's (its sockets, a
        lock its publishing thread may have held). Celery does the same for its own worker
        processes (``Celery._after_fork``), but only through multiprocessing's fork hooks."""
        reset = getattr(self.app, "_after_fork", None)
        if reset is not None:
            reset()
        else:
            self.app._pool = None

    def publish(self, items: Sequence[bytes], refuse: Callable[[str, bytes], None]) -> int:
        from kombu.exceptions import EncodeError

        with self.app.producer_or_acquire() as producer:
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                events = []
                for item in chunk:
                    try:
                        events.append(kombu_json.loads(item))
                    except ValueError:
                        refuse("undecodable", item)
                if not events:
                    continue
                if self.batch_size == 1:
                    name, args = TASK_NAME, (self.backend_name, events[0])
                else:
                    name, args = BATCH_TASK_NAME, (self.backend_name, events)
                try:
                    # retry=False: the publisher waits out an outage, not kombu inside this call
                    self.app.send_task(name, args, producer=producer, retry=False)
                except EncodeError:  # the site's serializer cannot hold it (e.g. msgpack and bytes)
                    for item in chunk:
                        refuse("unencodable", item)
                except Exception:
                    if start == 0:
                        raise  # the publisher says why it waits
                    return start
        return len(items)
