"""The Celery app, the tracker and the task of the worker tests; configured by the environment.

- ``SITE_REDIS_URL``: the broker; ``SITE_COLLECTOR_URL``: the Segment API (the project's collector).
- ``SITE_EMIT_MODES``: a comma-separated list of the ways each task emits its message; every
  mode sends one message named ``celery.<mode>`` with the task's ``seq``:

  - ``tracker``: ``eventtracking.tracker.emit`` into an owned-mode ``SegmentBackend``;
  - ``async``: ``eventtracking.tracker.emit`` into an ``AsyncRoutingBackend``, whose follow-up
    task (``eventtracking.tasks.send_event``, run by the same worker) sends it to an owned-mode
    ``SegmentBackend``;
  - ``official``: the official client, configured as edx-platform does (``analytics.write_key``
    and ``analytics.host`` at startup, then ``analytics.track``): analytics-python 1.4.post1.
  - ``global``: ``eventtracking.segment.install_global_client(write_key=..., host=...)`` at
    startup, then edx-platform's calls on the global module: ``analytics.track`` (``celery.global``)
    and ``analytics.identify`` (whose traits name it ``celery.global_identify``, with the seq).

  A mode is one entry of :data:`EMITTERS`: what it sets up at startup, and how it emits. The
  global client's mode, for instance, is the line::

      "global": Mode(_install_global_client, partial(_track, "global")),

  with ``_install_global_client`` calling ``eventtracking.segment.install_global_client(
  write_key=WRITE_KEY, host=COLLECTOR_URL)``. Modes that configure the same global module
  (``analytics``: ``official`` and ``global``) cannot share a run.
- ``SITE_SPOOL_DIR``: give every backend a spool (a directory of its own under it).
- ``SITE_FLUSH_INTERVAL``: the SegmentBackends' ``flush_interval`` (default: theirs).
- ``SITE_BUILD``: ``import`` (default) builds the tracker when the worker imports this module,
  before it forks its pool, as an LMS does; ``child`` builds it in each prefork child
  (``worker_process_init``), so every background owner is made after the fork.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Callable, NamedTuple

from celery import Celery, signals

from eventtracking import tracker
from eventtracking.backends.async_routing import AsyncRoutingBackend
from eventtracking.backends.routing import RoutingBackend
from eventtracking.backends.segment import SegmentBackend
from eventtracking.locator import ThreadLocalContextLocator
from eventtracking.processors.whitelist import NameWhitelistProcessor

REDIS_URL = os.environ.get("SITE_REDIS_URL", "redis://127.0.0.1:6379/0")
COLLECTOR_URL = os.environ.get("SITE_COLLECTOR_URL", "http://127.0.0.1:9")
MODES = [mode for mode in os.environ.get("SITE_EMIT_MODES", "tracker,async,official").split(",") if mode]
SPOOL_DIR = os.environ.get("SITE_SPOOL_DIR")
FLUSH_INTERVAL = os.environ.get("SITE_FLUSH_INTERVAL")
BUILD = os.environ.get("SITE_BUILD", "import")
WRITE_KEY = "celery-site-key"
USER_ID = "7"

app = Celery("celery_site", broker=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_acks_late=False,
    worker_prefetch_multiplier=1,
)
app.conf.include = ["eventtracking.tasks"]  # the follow-up task of the async mode


def _spool(name: str) -> dict:
    return {"spool_dir": os.path.join(SPOOL_DIR, name)} if SPOOL_DIR else {}


def _segment(name: str) -> SegmentBackend:
    options: dict = _spool(name)
    if FLUSH_INTERVAL:
        options["flush_interval"] = float(FLUSH_INTERVAL)
    return SegmentBackend(write_key=WRITE_KEY, host=COLLECTOR_URL, **options)


def build_tracker() -> None:
    """The default tracker: one route per mode of ours, each to its own owned-mode backend."""
    backends = {
        "segment": RoutingBackend(
            processors=[NameWhitelistProcessor(whitelist=["celery.tracker"])],
            backends={"segment": _segment("segment")},
        ),
        "segment_async": AsyncRoutingBackend(
            backend_name="segment_async",
            processors=[NameWhitelistProcessor(whitelist=["celery.async"])],
            backends={"segment": _segment("segment_after_async")},
            **_spool("publisher"),
        ),
    }
    tracker.register_tracker(tracker.Tracker(backends=backends, context_locator=ThreadLocalContextLocator()))


def _emit(name: str, seq: int) -> None:
    with tracker.get_tracker().context("celery_site.task", {"user_id": USER_ID}):
        tracker.emit(name, {"seq": seq})


def _track(mode: str, seq: int) -> None:
    """edx-platform's way: the global module's ``track`` (common/djangoapps/track/segment.py)."""
    import analytics

    analytics.track(USER_ID, f"celery.{mode}", {"seq": seq})


def _configure_official() -> None:
    """edx-platform's startup: ``analytics.write_key = settings.LMS_SEGMENT_KEY`` (and a host)."""
    import analytics

    analytics.write_key = "celery-site-official-key"
    analytics.host = COLLECTOR_URL


def _install_global_client() -> None:
    """install_global_client as EVENT_TRACKING_SEGMENT_CLIENT does it at a site's startup."""
    from eventtracking.segment import install_global_client

    options: dict = _spool("global")
    if FLUSH_INTERVAL:
        options["upload_interval"] = float(FLUSH_INTERVAL)
    install_global_client(write_key=WRITE_KEY, host=COLLECTOR_URL, **options)


def _track_and_identify(seq: int) -> None:
    import analytics

    analytics.track(USER_ID, "celery.global", {"seq": seq})
    analytics.identify(USER_ID, {"seq": seq, "emitted_by": "celery.global_identify"})


def _nothing() -> None:
    pass


class Mode(NamedTuple):
    set_up: Callable[[], None]  # at startup, as the site's settings and apps would do it
    emit: Callable[[int], None]  # in the task, with the task's seq


EMITTERS: dict[str, Mode] = {
    "tracker": Mode(_nothing, partial(_emit, "celery.tracker")),
    "async": Mode(_nothing, partial(_emit, "celery.async")),
    "official": Mode(_configure_official, partial(_track, "official")),
    "global": Mode(_install_global_client, _track_and_identify),
}


def set_up() -> None:
    """Set up every mode of the run."""
    unknown = set(MODES) - set(EMITTERS)
    if unknown:
        raise ValueError(f"unknown SITE_EMIT_MODES: {sorted(unknown)}")
    for mode in MODES:
        EMITTERS[mode].set_up()


set_up()
if BUILD == "import":
    build_tracker()
elif BUILD == "child":
    signals.worker_process_init.connect(lambda **_: build_tracker(), weak=False)
else:
    raise ValueError(f"unknown SITE_BUILD: {BUILD!r}")


@app.task(name="celery_site.emit")
def emit(seq: int, sleep: float = 0.0) -> None:
    """Emit message ``seq`` once per mode (after ``sleep`` seconds: a task that takes time)."""
    if sleep:
        time.sleep(sleep)
    for mode in MODES:
        EMITTERS[mode].emit(seq)
