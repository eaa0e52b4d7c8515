"""Exceptions at the module path the original package uses (``eventtracking.exceptions``)."""

from eventtracking.processors.exceptions import EventEmissionExit, ImproperlyConfigured

__all__ = ["EventEmissionExit", "ImproperlyConfigured"]
