"""One ``spool_dir`` shared by a whole real server: a Django site under gunicorn (4 sync workers:
plain, --preload, --max-requests) and uWSGI (a master and 4 processes, with and without
--lazy-apps), one worker SIGKILLed during a collector outage; once the collector is back every
event arrives exactly once, and no part of the spool is left behind when the site stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections import Counter

import pytest

SITE = """
import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="spool-site",
    INSTALLED_APPS=["eventtracking.django"],
    EVENT_TRACKING_ENABLED=True,
    EVENT_TRACKING_PROCESSORS=[],
    EVENT_TRACKING_BACKENDS={
        "segment": {
            "ENGINE": "eventtracking.backends.segment.SegmentBackend",
            "OPTIONS": {
                "write_key": "wk-site",
                "host": os.environ["COLLECTOR_URL"],
                "spool_dir": os.environ["SPOOL_DIR"],
            },
        },
    },
)

import django  # noqa: E402

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from eventtracking import tracker  # noqa: E402


def emit(request):
    n = int(request.GET["n"])
    with tracker.get_tracker().context("request", {"user_id": n}):
        tracker.emit("site.event", {"n": n})
    return HttpResponse(str(os.getpid()))


def ping(request):
    return HttpResponse(str(os.getpid()))


urlpatterns = [path("emit", emit), path("ping", ping)]
application = get_wsgi_application()
open(os.path.join(os.environ["READY_DIR"], str(os.getpid())), "w").close()  # this process loaded the site
"""


def parts(spool_dir) -> list:
    return sorted(spool_dir.glob("part-*"))


def wait_until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def gunicorn(fd: int, directory, options: tuple) -> list[str]:
    """gunicorn with 4 sync workers on the inherited socket ``fd``."""
    return [
        sys.executable, "-m", "gunicorn", "--workers", "4", "--bind", f"fd://{fd}", "--no-control-socket",
        "--graceful-timeout", "60", "--chdir", str(directory), *options, "spoolsite:application",
    ]  # fmt: skip


def uwsgi(fd: int, directory, options: tuple) -> list[str]:
    """uWSGI with a master and 4 processes (forked in C: no Python at-fork hooks) on ``fd``;
    threads enabled (the sender is a thread); SIGTERM stops it (``--die-on-term``)."""
    return [
        os.path.join(os.path.dirname(sys.executable), "uwsgi"), "--master", "--processes", "4",
        "--http-socket", f"fd://{fd}", "--chdir", str(directory), "--module", "spoolsite:application",
        "--enable-threads", "--die-on-term", "--need-app", *options,
    ]  # fmt: skip


class Site:
    """The site under a real server on a listening socket made here (port 0), its log in a file."""

    def __init__(self, directory, collector_url: str, spool_dir, command) -> None:
        (directory / "spoolsite.py").write_text(textwrap.dedent(SITE))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.log_path = directory / "server.log"
        self.log = open(self.log_path, "wb")
        fd = self.listener.fileno()
        os.set_inheritable(fd, True)
        self.ready_dir = directory / "ready"
        self.ready_dir.mkdir(exist_ok=True)
        env = dict(
            os.environ, COLLECTOR_URL=collector_url, SPOOL_DIR=str(spool_dir), READY_DIR=str(self.ready_dir)
        )
        self.process = subprocess.Popen(
            command(fd, directory), env=env, pass_fds=[fd], stdout=self.log, stderr=subprocess.STDOUT
        )

    def workers(self) -> set[int]:
        """The server's worker processes (the master's children) alive now."""
        found = set()
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.process.pid and fields[0] != "Z":
                    found.add(int(name))
        return found

    def settled(self) -> bool:
        """Every worker has the site loaded (itself, or inherited from the master that loaded it):
        a server stopped while a worker still loads it may kill that worker outright."""
        loaded = {int(path.name) for path in self.ready_dir.iterdir()}
        return self.process.pid in loaded or self.workers() <= loaded

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=10) as response:
                return response.status == 200
        except OSError:
            return False

    def get(self, n: int) -> int:
        with urllib.request.urlopen(f"{self.url}/emit?n={n}", timeout=60) as response:
            assert response.status == 200
            return int(response.read())

    def load(self, numbers: range, threads: int = 8) -> Counter:
        """Emit one event per number, from ``threads`` clients; how many each worker pid served."""
        served: Counter = Counter()
        lock = threading.Lock()
        chunks = [list(numbers)[index::threads] for index in range(threads)]

        def client(chunk: list[int]) -> None:
            for n in chunk:
                pid = self.get(n)
                with lock:
                    served[pid] += 1

        workers = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(300)
        assert sum(served.values()) == len(numbers), "some requests failed: see the site's log"
        return served

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM to the master, as systemd or Docker stop it; its exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=60)
        self.log.close()
        self.listener.close()


@pytest.fixture
def site_factory(tmp_path):
    sites: list[Site] = []

    def start(collector_url: str, spool_dir, command) -> Site:
        site = Site(tmp_path, collector_url, spool_dir, command)
        sites.append(site)
        return site

    yield start
    for site in sites:
        site.close()


def events_by_number(collector) -> Counter:
    return Counter(message["properties"]["data"]["n"] for message in collector.messages(event="site.event"))


# Plain workers build the backend after the fork; with --preload (gunicorn) or by default (uWSGI,
# whose workers are forked in C, without Python's at-fork hooks) the master builds it and each
# worker takes a part of its own at its first event; the master, which never emits, leaves none.
# --max-requests: workers recycled during the outage leave their parts (the exit flush cannot
# deliver), which live workers adopt. --lazy-apps (uWSGI): each worker loads the site itself.
MODES = {
    "gunicorn": (gunicorn, ()),
    "gunicorn-preload": (gunicorn, ("--preload",)),
    "gunicorn-max-requests": (gunicorn, ("--max-requests", "120")),
    "uwsgi": (uwsgi, ()),
    "uwsgi-lazy-apps": (uwsgi, ("--lazy-apps",)),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_worker_killed_in_an_outage_loses_nothing_with_one_shared_spool_dir(
    collector, tmp_path, site_factory, mode
):
    server, options = MODES[mode]
    spool_dir = tmp_path / "spool"
    site = site_factory(collector.url, spool_dir, lambda fd, directory: server(fd, directory, options))
    wait_until(lambda: site.answers() or site.process.poll() is not None)
    assert site.process.poll() is None, site.output()  # the site boots
    collector.faults.add(status=503, times=None)  # the collector is down
    served = site.load(range(0, 400))
    if mode != "gunicorn-max-requests":  # (there, recycled workers' parts are adopted meanwhile)
        owners = {int(part.name.split("-")[1]) for part in parts(spool_dir)}
        assert owners == set(served), site.output()  # a part per worker that emitted, none other
    victim, victim_served = served.most_common(1)[0]
    os.kill(victim, signal.SIGKILL)  # with its events spooled, none of them delivered
    wait_until(lambda: not os.path.exists(f"/proc/{victim}") or _is_zombie(victim))
    site.load(range(400, 600))  # the site goes on, the master has started a new worker
    assert collector.count() == 0
    collector.faults.clear()  # the collector is back
    wait_until(lambda: len(events_by_number(collector)) >= 600 or site.process.poll() is not None)
    assert site.process.poll() is None, site.output()
    received = events_by_number(collector)
    assert set(received) == set(range(600)), site.output()
    assert [n for n, times in received.items() if times > 1] == []  # none twice
    assert victim_served > 0
    # The killed worker's part was found by a live worker, delivered and removed: no restart.
    wait_until(lambda: not any(part.name.startswith(f"part-{victim}-") for part in parts(spool_dir)))
    wait_until(site.settled)
    assert site.stop() == 0, site.output()
    assert list(spool_dir.iterdir()) == [], site.output()  # no directory left behind
    assert sum(events_by_number(collector).values()) == 600


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
