"""The site's Celery app, configured from Django settings the way Celery's Django guide does it:
``CELERY_``-prefixed settings (``CELERY_BROKER_URL``), tasks discovered in the installed apps; or,
with ``SITE_CELERY_NAMES=original``, as event-routing-backends' ``celeryconfig.py`` does it (the
settings object as it is, with Celery 3's names: ``BROKER_URL``). Nothing here is specific to
eventtracking."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "async_site.settings")

app = Celery("async_site")
if os.environ.get("SITE_CELERY_NAMES") == "original":
    # event-routing-backends' celeryconfig style: every Django setting, Celery 3's names (BROKER_URL)
    app.config_from_object("django.conf:settings")
else:
    app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
