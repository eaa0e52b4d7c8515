"""Real servers running the test site: every event the view emitted arrives exactly once after
the server is stopped the way its documentation says (see the README's deployment section)."""

from __future__ import annotations

import signal
import threading

import pytest
from harness import assert_each_arrived_once, gunicorn, uvicorn, uwsgi, wait_until

pytestmark = pytest.mark.servers

# A long flush_interval with big batches keeps a tail of events buffered when the stop comes:
# only the exit path can deliver it.
TAIL = {"flush_interval": 10, "max_batch_size": 5000}

GUNICORN = {
    "sync": ("--workers", "4"),
    "sync-preload": ("--workers", "4", "--preload"),
    "max-requests": ("--workers", "4", "--max-requests", "40", "--max-requests-jitter", "10"),
    "gthread": ("--workers", "2", "--worker-class", "gthread", "--threads", "4"),
}


@pytest.mark.parametrize("mode", list(GUNICORN))
def test_gunicorn(start_site, collector, mode):
    site = start_site(gunicorn(*GUNICORN[mode]), backend_options=TAIL)
    site.load(range(400))
    assert site.stop(signal.SIGTERM) == 0, site.output()  # gunicorn: TERM is a graceful shutdown
    assert_each_arrived_once(collector, site.logged(), site)


# uWSGI 2.0: SIGTERM reloads unless --die-on-term; SIGINT and SIGQUIT stop at once. Without
# --lazy-apps the app (and its backend) is built in the master and the workers are forked in C,
# without Python's at-fork hooks: the backend's fork check does the reset, under 8 threads.
UWSGI_STOPS = {"die-on-term": (("--die-on-term",), signal.SIGTERM), "SIGINT": ((), signal.SIGINT)}


@pytest.mark.parametrize("lazy", [(), ("--lazy-apps",)], ids=["forked", "lazy-apps"])
@pytest.mark.parametrize("stop", list(UWSGI_STOPS))
def test_uwsgi_processes_and_threads(start_site, collector, lazy, stop):
    options, signum = UWSGI_STOPS[stop]
    site = start_site(uwsgi("--processes", "2", "--threads", "8", *lazy, *options), backend_options=TAIL)
    site.load(range(600), threads=16)
    # These stops are brutal: uWSGI skips Python's exit in a worker still inside a request, and
    # the last client has its answer a moment before its worker closed the request.
    site.wait_until_idle()
    site.stop(signum)
    assert_each_arrived_once(collector, site.logged(), site)


def slow_request(site, seconds: float) -> tuple[threading.Thread, list]:
    """One request held in flight for ``seconds`` on another thread, and the list that gets its
    answer (or its error); returns once a worker of the site is inside it."""
    answers: list = []

    def ask() -> None:
        try:
            answers.append(site.get(f"/slow?s={seconds}", timeout=seconds + 60))
        except OSError as error:  # a brutal stop ends it unanswered
            answers.append(error)

    asking = threading.Thread(target=ask)
    asking.start()
    wait_until(
        lambda: any(worker["status"] != "idle" for worker in site.uwsgi_workers()),
        60,
        "the slow request in a worker",
    )
    return asking, answers


@pytest.mark.parametrize("lazy", [(), ("--lazy-apps",)], ids=["forked", "lazy-apps"])
def test_uwsgi_graceful_shutdown_with_a_request_in_flight(start_site, collector, lazy):
    site = start_site(uwsgi("--processes", "2", "--threads", "8", *lazy), backend_options=TAIL)
    site.load(range(600), threads=16)
    asking, answers = slow_request(site, 2)
    assert site.stop_uwsgi_gracefully() == 0, site.output()
    asking.join(120)
    assert answers and isinstance(answers[0], str), answers  # the request was let finish
    assert_each_arrived_once(collector, site.logged(), site)


def test_uwsgi_brutal_stop_of_a_busy_worker_keeps_its_events_in_the_spool(start_site, collector, tmp_path):
    # uWSGI's own rule: a brutal stop (SIGINT, SIGQUIT, --die-on-term's SIGTERM) skips Python's
    # exit in a worker that is inside a request, so nothing of ours can run there. What it had
    # buffered is lost in memory; a spool keeps it for the next process.
    spool = {"SPOOL_DIR": str(tmp_path / "spool")}
    tail = {**TAIL, "flush_interval": 600}  # nothing is sent before the stop, however slow the load
    site = start_site(uwsgi("--processes", "1", "--threads", "4"), backend_options=tail, env=spool)
    site.load(range(100))
    asking, _ = slow_request(site, 300)
    site.stop(signal.SIGINT)
    asking.join(120)
    assert collector.count() == 0, "the busy worker ran Python's exit after all: update docs/deploying.rst"
    assert list((tmp_path / "spool").glob("part-*")), site.output()
    again = start_site(uwsgi("--processes", "1", "--threads", "4"), env=spool)  # the next start
    again.load([100])
    again.wait_until_idle()
    again.stop(signal.SIGINT)
    logged = site.logged() + again.logged()
    assert_each_arrived_once(collector, logged, again)
    assert list((tmp_path / "spool").glob("part-*")) == [], again.output()


# uvicorn re-raises SIGTERM with its default action after its graceful shutdown: no atexit. The
# site's ASGI application is wrapped with eventtracking.asgi.deliver_on_shutdown (the README's
# one line), which delivers at the lifespan shutdown; Django itself does not speak lifespan.
def test_uvicorn_workers(start_site, collector):
    site = start_site(uvicorn("--workers", "2"), backend_options=TAIL)
    site.load(range(400))
    site.stop(signal.SIGTERM)
    assert_each_arrived_once(collector, site.logged(), site)


def test_uvicorn_stopped_under_load(start_site, collector):
    import threading

    site = start_site(uvicorn("--workers", "2"), backend_options=TAIL)
    loading = threading.Thread(target=site.load, args=(range(100000),))
    loading.start()
    try:
        while sum(site.logged().values()) < 300:
            assert loading.is_alive(), site.output()
            threading.Event().wait(0.05)
        site.stop(signal.SIGTERM)
    finally:
        site.stopping.set()
        loading.join(300)
    assert_each_arrived_once(collector, site.logged(), site)


def test_gunicorn_with_the_uvicorn_worker(start_site, collector):
    worker = gunicorn(
        "--workers", "2", "--worker-class", "uvicorn.workers.UvicornWorker", app="testsite:asgi_application"
    )
    site = start_site(worker, backend_options=TAIL)
    site.load(range(400))
    assert site.stop(signal.SIGTERM) == 0, site.output()
    assert_each_arrived_once(collector, site.logged(), site)
