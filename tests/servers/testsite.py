"""The site the server tests run: Django, one view that emits one event through the tracker into
an owned-mode SegmentBackend pointing at the project's collector (``/emit?n=N``), and one that
keeps its request in flight for a while (``/slow?s=SECONDS``).

Environment (set by :class:`conftest.Site`):

- ``COLLECTOR_URL``: the collector the backend sends to;
- ``TRACKING_LOG``: a file to which the view appends the number of each event it emitted, one
  line written with one ``write()`` after the emit (the tests compare it with the collector);
- ``BACKEND_OPTIONS``: JSON, more SegmentBackend options (e.g. ``{"flush_interval": 10}``, which
  keeps a tail of events buffered when the server is stopped);
- ``SPOOL_DIR`` (optional): the backend's ``spool_dir``;
- ``SEGMENT_CALLS`` (optional): ``global`` makes the view call ``segment.analytics.track``
  instead of the tracker, after ``EVENT_TRACKING_SEGMENT_CLIENT`` installed our global client
  (with ``BACKEND_OPTIONS`` as Client options); ``official``: the same call on the official
  client, configured the edx-platform way (``write_key`` and ``host`` on the module).

WSGI: ``testsite:application``. ASGI: ``testsite:asgi_application``, wrapped with the one line
of :mod:`eventtracking.asgi` as the README tells uvicorn users, and ``testsite:bare_asgi_application``
without it.
"""

import json
import os
import time

from django.conf import settings

OPTIONS = {"write_key": "wk-site", "host": os.environ["COLLECTOR_URL"]}
OPTIONS.update(json.loads(os.environ.get("BACKEND_OPTIONS", "{}")))
if os.environ.get("SPOOL_DIR"):
    OPTIONS["spool_dir"] = os.environ["SPOOL_DIR"]

SEGMENT_CALLS = os.environ.get("SEGMENT_CALLS", "")
CLIENT_OPTIONS = {"host": os.environ["COLLECTOR_URL"], **json.loads(os.environ.get("BACKEND_OPTIONS", "{}"))}

settings.configure(
    LMS_SEGMENT_KEY="wk-site",
    EVENT_TRACKING_SEGMENT_CLIENT=CLIENT_OPTIONS if SEGMENT_CALLS == "global" else None,
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="server-tests",
    INSTALLED_APPS=["eventtracking.django"],
    EVENT_TRACKING_ENABLED=True,
    EVENT_TRACKING_PROCESSORS=[],
    EVENT_TRACKING_BACKENDS={}
    if SEGMENT_CALLS
    else {"segment": {"ENGINE": "eventtracking.backends.segment.SegmentBackend", "OPTIONS": OPTIONS}},
    LOGGING_CONFIG=None,
)

import django  # noqa: E402

django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from eventtracking import tracker  # noqa: E402
from eventtracking.asgi import deliver_on_shutdown  # noqa: E402

if SEGMENT_CALLS:
    from segment import analytics

    if SEGMENT_CALLS == "official":
        analytics.write_key, analytics.host = "wk-site", os.environ["COLLECTOR_URL"]
    else:
        assert analytics.default_client and analytics.write_key == "wk-site", "not installed by ready()"

TRACKING_LOG = os.open(os.environ["TRACKING_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def emit(request):
    n = int(request.GET["n"])
    if SEGMENT_CALLS:
        analytics.track(user_id=n, event="site.event", properties={"data": {"n": n}})
    else:
        with tracker.get_tracker().context("request", {"user_id": n}):
            tracker.emit("site.event", {"n": n})
    os.write(TRACKING_LOG, f"{n}\n".encode())  # one write: lines of concurrent workers never mix
    return HttpResponse(str(os.getpid()))


def ready(request):
    return HttpResponse(str(os.getpid()))


def slow(request):
    """A request that stays in flight for ``?s=`` seconds (a stop that finds its worker busy)."""
    time.sleep(float(request.GET["s"]))
    return HttpResponse(str(os.getpid()))


urlpatterns = [path("emit", emit), path("ready", ready), path("slow", slow)]
application = get_wsgi_application()
bare_asgi_application = get_asgi_application()
asgi_application = deliver_on_shutdown(bare_asgi_application)
