"""A Celery site whose tasks emit Segment messages, for the tests of delivery from Celery workers
(tests/test_celery_workers.py). ``celery -A celery_site worker`` finds the app here; the tasks,
the tracker and the emit modes are in :mod:`celery_site.worker`."""

from .worker import app

__all__ = ["app"]
