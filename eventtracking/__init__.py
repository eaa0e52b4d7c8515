"""Event tracking for Python applications, API-compatible with Open edX ``event-tracking``."""

__version__ = "5.0.0"
