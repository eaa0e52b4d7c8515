"""A tracker whose backends and processors come from Django settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from eventtracking import tracker
from eventtracking.loader import load
from eventtracking.locator import ThreadLocalContextLocator

DJANGO_BACKEND_SETTING_NAME = "EVENT_TRACKING_BACKENDS"
DJANGO_PROCESSOR_SETTING_NAME = "EVENT_TRACKING_PROCESSORS"
DJANGO_ENABLED_SETTING_NAME = "EVENT_TRACKING_ENABLED"


class DjangoTracker(tracker.Tracker):
    """
    A ``Tracker`` built from Django settings, with a per-thread/per-task context.

    Backends come from the setting named `backends_settings_name` (default
    ``EVENT_TRACKING_BACKENDS``), a dict of name -> ENGINE specification::

        EVENT_TRACKING_BACKENDS = {
            "logger": {
                "ENGINE": "eventtracking.backends.logger.LoggerBackend",
                "OPTIONS": {"name": "tracking"},
            },
        }

    Processors come from `processors_settings_name` (default
    ``EVENT_TRACKING_PROCESSORS``), a list of ENGINE specifications. Both are built with
    ``eventtracking.loader.load``, so specifications may nest (e.g. a
    ``RoutingBackend`` with its own backends and processors). A missing setting means
    no backends / no processors. Configuration errors raise at construction.
    """

    def __init__(
        self,
        backends_settings_name: str = DJANGO_BACKEND_SETTING_NAME,
        processors_settings_name: str = DJANGO_PROCESSOR_SETTING_NAME,
    ) -> None:
        backends = self.create_backends_from_settings(backends_settings_name)
        processors = self.create_processors_from_settings(processors_settings_name)
        super().__init__(backends, ThreadLocalContextLocator(), processors)

    def create_backends_from_settings(self, settings_name: str) -> dict[str, Any]:
        """Build the backends described by the Django setting `settings_name`."""
        return self._instantiate_objects(getattr(settings, settings_name, None) or {})

    def create_processors_from_settings(self, settings_name: str) -> list[Any]:
        """Build the processors described by the Django setting `settings_name`."""
        return self._instantiate_objects(getattr(settings, settings_name, None) or [])

    def _instantiate_objects(self, node: Any) -> Any:
        # Kept under the original's name for code that subclasses DjangoTracker.
        return load(node)


def override_default_tracker() -> None:
    """Register a new ``DjangoTracker`` as the default tracker if ``EVENT_TRACKING_ENABLED``."""
    if getattr(settings, DJANGO_ENABLED_SETTING_NAME, False):
        tracker.register_tracker(DjangoTracker())
