"""
Django integration: a tracker configured from Django settings, and the Django app
(label ``eventtracking_django``) that installs it as the default tracker.

``DjangoTracker`` is importable from here for compatibility; it is imported on first
access so that importing this package does not touch Django settings.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DjangoTracker"]


def __getattr__(name: str) -> Any:
    if name == "DjangoTracker":
        from eventtracking.django.django_tracker import DjangoTracker

        return DjangoTracker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
