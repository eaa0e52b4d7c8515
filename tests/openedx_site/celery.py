"""The site's Celery app, configured from Django settings the way Celery's Django guide (and an
Open edX site) does it: ``CELERY_``-prefixed settings, tasks discovered in the installed apps.
Nothing here is specific to eventtracking."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openedx_site.settings")

app = Celery("openedx_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
