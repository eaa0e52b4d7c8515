"""Django application configuration for ``eventtracking.django``."""

from __future__ import annotations

import importlib.util
import logging

from django.apps import AppConfig

LOG = logging.getLogger(__name__)


class EventTrackingConfig(AppConfig):
    """
    Install a ``DjangoTracker`` as the default tracker when Django starts.

    The label is ``eventtracking_django`` (the last dotted component, ``django``,
    would clash), matching the original package so existing ``INSTALLED_APPS`` and
    references to the label keep working.
    """

    name = "eventtracking.django"
    label = "eventtracking_django"
    verbose_name = "Event tracking"

    def ready(self) -> None:
        """
        Register the default tracker if ``EVENT_TRACKING_ENABLED`` is truthy, and connect the
        event-bus receiver (:mod:`eventtracking.handlers`) when openedx-events is installed.
        """
        super().ready()
        # Imported here: settings must be fully loaded before the tracker reads them.
        from eventtracking.django.django_tracker import override_default_tracker

        override_default_tracker()
        connect_event_bus_handlers()


def connect_event_bus_handlers() -> bool:
    """
    Import :mod:`eventtracking.handlers` (which connects its receiver) if openedx-events is
    installed; return whether it was connected.

    The original always imported it (openedx-events was one of its requirements); here the event
    bus is optional, so a site without openedx-events simply has no receiver. With openedx-events
    but without edx-toggles the receiver cannot work: that is said as a warning, not a crash.
    """
    if importlib.util.find_spec("openedx_events") is None:
        return False
    if importlib.util.find_spec("edx_toggles") is None:
        LOG.warning(
            "openedx-events is installed but edx-toggles is not: tracking logs from the event bus will "
            "not reach EventBusRoutingBackend's backends; install event-tracking[eventbus]"
        )
        return False
    from eventtracking import handlers  # noqa: F401  (importing it connects the receiver)

    return True
