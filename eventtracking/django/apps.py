"""Django application configuration for ``eventtracking.django``."""

from __future__ import annotations

from django.apps import AppConfig


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
        """Register the default tracker if ``EVENT_TRACKING_ENABLED`` is truthy."""
        super().ready()
        # Imported here: settings must be fully loaded before the tracker reads them.
        from eventtracking.django.django_tracker import override_default_tracker

        override_default_tracker()
