"""Django application configuration for ``eventtracking.django``."""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Optional

from django.apps import AppConfig

if TYPE_CHECKING:
    from eventtracking.segment.client import Client

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
        Register the default tracker if ``EVENT_TRACKING_ENABLED`` is truthy, connect the
        event-bus receiver (:mod:`eventtracking.handlers`) when openedx-events is installed, and
        install the global Segment client when ``EVENT_TRACKING_SEGMENT_CLIENT`` is set.
        """
        super().ready()
        # Imported here: settings must be fully loaded before the tracker reads them.
        from eventtracking.django.django_tracker import override_default_tracker

        override_default_tracker()
        connect_event_bus_handlers()
        install_segment_client()


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


SEGMENT_KEY_SETTINGS = ("LMS_SEGMENT_KEY", "CMS_SEGMENT_KEY", "SEGMENT_KEY")


def install_segment_client() -> Optional[Client]:
    """
    Install :func:`eventtracking.segment.install_global_client` from the Django setting
    ``EVENT_TRACKING_SEGMENT_CLIENT`` (a dict of :class:`eventtracking.segment.Client` options),
    so that every Segment call of the site (``analytics.track(...)``, drop-in ``SegmentBackend``)
    delivers through it. Return the client, or None when nothing was installed.

    Without a ``write_key`` in the dict, the key is the site's setting named by its
    ``write_key_setting`` entry, by default the first set of ``LMS_SEGMENT_KEY``,
    ``CMS_SEGMENT_KEY``, ``SEGMENT_KEY``. No key, or options the client refuses: one log line,
    nothing installed (the site still starts).
    """
    from django.conf import settings

    options = getattr(settings, "EVENT_TRACKING_SEGMENT_CLIENT", None)
    if not options:
        return None
    options = dict(options)
    key_setting = options.pop("write_key_setting", None)
    if not options.get("write_key"):
        names = (key_setting,) if key_setting else SEGMENT_KEY_SETTINGS
        key = next((value for value in (getattr(settings, name, None) for name in names) if value), None)
        if not key:
            LOG.warning(
                "EVENT_TRACKING_SEGMENT_CLIENT is set but no write key was found (in its write_key, "
                "nor in the setting %s): the global Segment client is not installed",
                " / ".join(names),
            )
            return None
        options["write_key"] = key
    from eventtracking.segment import install_global_client

    try:
        return install_global_client(**options)
    except (TypeError, ValueError) as error:
        LOG.error("EVENT_TRACKING_SEGMENT_CLIENT: the global Segment client is not installed: %s", error)
        return None
