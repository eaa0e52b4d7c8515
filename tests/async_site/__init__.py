"""A minimal Open edX-like site for the engine tests: Django settings and a Celery app, as an LMS
has them (``lms/__init__.py`` imports its Celery app, so every process of the site has it).

It runs in our environment and in ``.envs/original`` (Open edX's event-tracking 4.1.5): the same
settings drive both, so a test can mix producers and workers of either.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
