"""
The Celery task that ``AsyncRoutingBackend`` queues: ``eventtracking.tasks.send_event``.

Its name, arguments and retry policy are the original's, so that during a rolling upgrade
processes running the original package and processes running this one share one queue in both
directions: ``send_event(backend_name, processed_event)``, where `processed_event` is the event
after the top-level processors (as Celery's JSON serializer gives it back: dicts, lists, strings,
numbers, and datetimes as kombu encodes them), and `backend_name` the name of the
``AsyncRoutingBackend`` among the default tracker's backends. The worker looks that backend up
and sends the event to its backends. ``NoTransformerImplemented`` and ``NoBackendEnabled`` are
logged at info and not retried; any other failure is logged and retried up to ``MAX_RETRIES``
times, ``COUNTDOWN`` seconds apart.

``send_events(backend_name, processed_events)`` (``eventtracking.tasks.send_events``) is the opt-in
batch form that ``AsyncRoutingBackend(batch_size=N)`` queues: several events per task, each sent
as ``send_event`` would; the events that fail are retried alone, with the same policy. Only
workers running this package know it: upgrade every worker before turning it on.

Needs Celery (the ``celery`` extra). On an Open edX site, edx-django-utils' code-owner monitoring
attribute is set as the original does; without edx-django-utils that step is left out.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.utils.log import get_task_logger

from eventtracking.processors.exceptions import NoBackendEnabled, NoTransformerImplemented
from eventtracking.tracker import get_tracker

try:  # monitoring only: present on Open edX sites, not needed anywhere else
    from edx_django_utils.monitoring import set_code_owner_attribute_from_module
except ImportError:
    set_code_owner_attribute_from_module = None

logger = get_task_logger(__name__)

TASK_NAME = "eventtracking.tasks.send_event"
BATCH_TASK_NAME = "eventtracking.tasks.send_events"
MAX_RETRIES = 3  # retries before giving up on routing an event
COUNTDOWN = 30  # seconds before a retry


def _set_code_owner(module: str) -> None:
    """edx-django-utils' monitoring attribute, as the original sets it; monitoring never fails the
    task (it needs Django settings, which a worker without Django does not have)."""
    if set_code_owner_attribute_from_module is None:
        return
    try:
        set_code_owner_attribute_from_module(module)
    except Exception as error:
        logger.debug("[send_event] no code owner attribute: %r", error)


@shared_task(bind=True, name=TASK_NAME)
def send_event(self: Any, backend_name: str, processed_event: dict) -> None:
    """
    Send `processed_event` to the backends of the default tracker's backend `backend_name`.

    Only for ``AsyncRoutingBackend``: the top-level processors have already run on the event,
    and the named backend is a ``RoutingBackend`` (or a subclass).
    """
    _set_code_owner(self.__module__)
    try:
        backend = get_tracker().backends[backend_name]
        backend.send_to_backends(processed_event.copy())
    except (NoTransformerImplemented, NoBackendEnabled) as exc:
        logger.info(
            "[send_event] Failed to send event [%s] with backend [%s], [%s]",
            processed_event["name"],
            backend_name,
            exc,
        )
    except Exception as exc:
        logger.exception(
            "[send_event] Failed to send event [%s] with backend [%s], [%s]",
            processed_event["name"],
            backend_name,
            repr(exc),
        )
        raise self.retry(exc=exc, countdown=COUNTDOWN, max_retries=MAX_RETRIES) from exc


@shared_task(bind=True, name=BATCH_TASK_NAME)
def send_events(self: Any, backend_name: str, processed_events: list) -> None:
    """
    Send each of `processed_events` as ``send_event`` does; retry only the ones that failed.

    Queued by ``AsyncRoutingBackend(batch_size=N)``; not known to the original's workers.
    """
    _set_code_owner(self.__module__)
    failed = []
    for processed_event in processed_events:
        try:
            backend = get_tracker().backends[backend_name]
            backend.send_to_backends(processed_event.copy())
        except (NoTransformerImplemented, NoBackendEnabled) as exc:
            logger.info(
                "[send_events] Failed to send event [%s] with backend [%s], [%s]",
                processed_event["name"],
                backend_name,
                exc,
            )
        except Exception as exc:
            logger.exception(
                "[send_events] Failed to send event [%s] with backend [%s], [%s]",
                processed_event["name"],
                backend_name,
                repr(exc),
            )
            failed.append((processed_event, exc))
    if failed:
        raise self.retry(
            args=(backend_name, [event for event, _ in failed]),
            exc=failed[-1][1],
            countdown=COUNTDOWN,
            max_retries=MAX_RETRIES,
        )


# The task of `eventtracking replay --celery`: a worker whose app imports this module runs it.
from eventtracking.replay import tasks as _replay_tasks  # noqa: E402,F401
