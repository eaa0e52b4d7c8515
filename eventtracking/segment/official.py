"""The official Segment clients' global modules, where they are installed: the drop-in backend
delivers through them, and :func:`eventtracking.segment.install_global_client` replaces their
``default_client``."""

from __future__ import annotations

from typing import Any


def import_clients() -> tuple[Any, Any]:
    """The official clients' global modules, None where not installed: ``analytics`` (the 1.x
    API; analytics-python 1.4.post1, which edx-platform pins, installs it beside a 2.x
    ``segment.analytics``) and ``segment.analytics`` (segment-analytics-python 2.x)."""
    try:
        import analytics as one_x
    except ImportError:
        one_x = None
    try:
        from segment import analytics as two_x
    except ImportError:
        two_x = None
    return one_x, two_x
