"""Django settings of the test site, written as an Open edX site writes them.

The engines come from the environment the tests set: ``SITE_REDIS_URL`` (the broker and the event
bus), ``SITE_COLLECTOR_URL`` (where the site's Segment backend delivers: the project's collector).
The same settings serve our package and Open edX's event-tracking 4.1.5 (``.envs/original``);
the only difference is how the Segment backend is configured (the original's reads the global
``analytics`` module).
"""

import importlib.util
import os
from importlib.metadata import version

ORIGINAL = version("event-tracking").startswith("4.")

REDIS_URL = os.environ.get("SITE_REDIS_URL", "redis://127.0.0.1:6379/0")
COLLECTOR_URL = os.environ.get("SITE_COLLECTOR_URL", "http://127.0.0.1:9")
WRITE_KEY = "site-write-key"
WHITELIST = ["edx.site.whitelisted"]

SECRET_KEY = "test-site-not-secret"
USE_TZ = True
EVENT_TRACKING_ENABLED = True
DATABASES = {}
INSTALLED_APPS = [
    "eventtracking.django.apps.EventTrackingConfig",
    "openedx_events",
]
if importlib.util.find_spec("edx_event_bus_redis") is not None:  # not in .envs/original
    INSTALLED_APPS.append("edx_event_bus_redis")

if os.environ.get("SITE_CELERY_NAMES") == "original":
    # Celery 3's names, read from the settings as they are (event-routing-backends' celeryconfig)
    BROKER_URL = REDIS_URL
    CELERYD_HIJACK_ROOT_LOGGER = False
else:
    # Celery, as Celery's Django guide has it (the site's app reads CELERY_-prefixed settings).
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
    CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# The event bus over the same Redis, as openedx-events and edx-event-bus-redis document it.
SEND_TRACKING_EVENT_EMITTED_SIGNAL = True
EVENT_BUS_TRACKING_LOGS = WHITELIST
EVENT_BUS_PRODUCER = "edx_event_bus_redis.create_producer"
EVENT_BUS_CONSUMER = "edx_event_bus_redis.RedisEventConsumer"
EVENT_BUS_REDIS_CONNECTION_URL = REDIS_URL
EVENT_BUS_TOPIC_PREFIX = "site"
EVENT_BUS_PRODUCER_CONFIG = {
    "org.openedx.analytics.tracking.event.emitted.v1": {
        "analytics": {"event_key_field": "tracking_log.name", "enabled": True},
    },
}

if ORIGINAL:
    import analytics  # analytics-python 1.x: the original backend uses its global client

    analytics.write_key = WRITE_KEY
    analytics.host = COLLECTOR_URL
    SEGMENT = {"ENGINE": "eventtracking.backends.segment.SegmentBackend"}
else:
    SEGMENT = {
        "ENGINE": "eventtracking.backends.segment.SegmentBackend",
        "OPTIONS": {"write_key": WRITE_KEY, "host": COLLECTOR_URL, "flush_interval": 0.1},
    }

WHITELIST_PROCESSOR = {
    "ENGINE": "eventtracking.processors.whitelist.NameWhitelistProcessor",
    "OPTIONS": {"whitelist": WHITELIST},
}

# SITE_ROUTE picks the path under test: "celery" (AsyncRoutingBackend, as event-routing-backends
# configures it) or "eventbus" (EventBusRoutingBackend, as Aspects does).
ROUTE = os.environ.get("SITE_ROUTE", "celery")
ASYNC_OPTIONS = {}  # our publisher's options (spool_dir, batch_size), from the environment
if os.environ.get("SITE_SPOOL_DIR") and not ORIGINAL:
    ASYNC_OPTIONS["spool_dir"] = os.environ["SITE_SPOOL_DIR"]
if os.environ.get("SITE_BATCH_SIZE") and not ORIGINAL and ROUTE == "celery":
    ASYNC_OPTIONS["batch_size"] = int(os.environ["SITE_BATCH_SIZE"])

if ROUTE == "celery":
    EVENT_TRACKING_BACKENDS = {
        "segment_async": {
            "ENGINE": "eventtracking.backends.async_routing.AsyncRoutingBackend",
            "OPTIONS": {
                "backend_name": "segment_async",
                "processors": [WHITELIST_PROCESSOR],
                "backends": {"segment": SEGMENT},
                **ASYNC_OPTIONS,
            },
        },
    }
else:
    EVENT_TRACKING_BACKENDS = {
        "event_bus": {
            "ENGINE": "eventtracking.backends.event_bus.EventBusRoutingBackend",
            "OPTIONS": {
                "backend_name": "event_bus",
                "processors": [],
                "backends": {"segment": SEGMENT},
                **ASYNC_OPTIONS,
            },
        },
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
