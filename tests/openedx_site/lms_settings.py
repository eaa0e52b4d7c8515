"""An LMS's settings, as edx-platform writes them (lms/envs/common.py and production.py), reduced
to what event tracking touches. Read from the environment: SITE_DB (SQLite file), SITE_LOG (the
tracking log file), LMS_SEGMENT_KEY.

- EVENT_TRACKING_BACKENDS: edx-platform's own: ``tracking_logs`` (LoggerBackend on the
  "tracking" logger, behind the platform's legacy-shape processors) and ``segmentio`` (a
  whitelist, extended from EVENT_TRACKING_SEGMENTIO_EMIT_WHITELIST as production.py does, then
  SegmentBackend in drop-in mode: the platform configures the global ``analytics`` client).
- Plugins: as edx-platform, every installed ``lms.djangoapp`` plugin's app is installed and its
  settings applied; event-routing-backends is one when installed (its ``event_transformer``).
- The site narrows ERB's events the way ERB offers (``event_tracking_backends_config`` with the
  site's own lists): enrollment deactivations go to Caliper only (disabled here), mode changes
  nowhere.
"""

import os
import sys

from edx_django_utils.plugins import add_plugins, get_plugin_apps

SECRET_KEY = "openedx-site-test"
DEBUG = False
USE_TZ = True
LMS_ROOT_URL = "https://lms.example.org"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["SITE_DB"]}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "celery_utils",
    "eventtracking.django.apps.EventTrackingConfig",
]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LMS_SEGMENT_KEY = os.environ.get("LMS_SEGMENT_KEY")

# Celery runs tasks in this process here (a real worker is the async-engines tests' part).
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"raw": {"format": "%(message)s"}},
    "handlers": {
        "tracking": {"class": "logging.FileHandler", "filename": os.environ["SITE_LOG"], "formatter": "raw"}
    },
    "loggers": {"tracking": {"handlers": ["tracking"], "level": "INFO", "propagate": False}},
}

# edx-platform: lms/envs/common.py
TRACK_MAX_EVENT = 50000
EVENT_TRACKING_ENABLED = True
EVENT_TRACKING_BACKENDS = {
    "tracking_logs": {
        "ENGINE": "eventtracking.backends.routing.RoutingBackend",
        "OPTIONS": {
            "backends": {
                "logger": {
                    "ENGINE": "eventtracking.backends.logger.LoggerBackend",
                    "OPTIONS": {"name": "tracking", "max_event_size": TRACK_MAX_EVENT},
                }
            },
            "processors": [
                {"ENGINE": "common.djangoapps.track.shim.LegacyFieldMappingProcessor"},
                {"ENGINE": "common.djangoapps.track.shim.PrefixedEventProcessor"},
            ],
        },
    },
    "segmentio": {
        "ENGINE": "eventtracking.backends.routing.RoutingBackend",
        "OPTIONS": {
            "backends": {"segment": {"ENGINE": "eventtracking.backends.segment.SegmentBackend"}},
            "processors": [
                {
                    "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
                    "OPTIONS": {"whitelist": []},
                },
                {"ENGINE": "common.djangoapps.track.shim.GoogleAnalyticsProcessor"},
            ],
        },
    },
}
EVENT_TRACKING_PROCESSORS = []

# edx-platform: lms/envs/production.py
EVENT_TRACKING_SEGMENTIO_EMIT_WHITELIST = [
    "edx.course.enrollment.activated",
    "edx.course.enrollment.deactivated",
]
EVENT_TRACKING_BACKENDS["segmentio"]["OPTIONS"]["processors"][0]["OPTIONS"]["whitelist"].extend(
    EVENT_TRACKING_SEGMENTIO_EMIT_WHITELIST
)

# edx-platform, at the end of lms/envs/common.py: the plugins' apps and settings.
INSTALLED_APPS.extend(get_plugin_apps("lms.djangoapp"))
add_plugins(__name__, "lms.djangoapp", "common")

if "event_transformer" in EVENT_TRACKING_BACKENDS:  # event-routing-backends is installed
    from event_routing_backends.utils.settings import event_tracking_backends_config

    EVENT_TRACKING_BACKENDS_ALLOWED_CALIPER_EVENTS = ["edx.course.enrollment.deactivated"]
    _kept_from_xapi = {"edx.course.enrollment.deactivated", "edx.course.enrollment.mode_changed"}
    EVENT_TRACKING_BACKENDS_ALLOWED_XAPI_EVENTS = [
        name
        for name in EVENT_TRACKING_BACKENDS_ALLOWED_XAPI_EVENTS  # noqa: F821 (set by ERB's plugin settings)
        if name not in _kept_from_xapi
    ]
    EVENT_TRACKING_BACKENDS.update(
        event_tracking_backends_config(
            sys.modules[__name__],
            EVENT_TRACKING_BACKENDS_ALLOWED_XAPI_EVENTS,
            EVENT_TRACKING_BACKENDS_ALLOWED_CALIPER_EVENTS,
        )
    )
