"""One ``spool_dir`` shared by a whole real server: a Django site under gunicorn with 4 sync
workers, one of them SIGKILLed during a collector outage; once the collector is back every event
arrives exactly once, and no part of the spool is left behind when the site stops."""

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


urlpatterns = [path("emit", emit)]
application = get_wsgi_application()
"""


def parts(spool_dir) -> list:
    return sorted(spool_dir.glob("part-*"))


def wait_until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Site:
    """The site under gunicorn on a listening socket made here (port 0), its log in a file."""

    def __init__(self, directory, collector_url: str, spool_dir, workers: int, options: tuple = ()) -> None:
        (directory / "spoolsite.py").write_text(textwrap.dedent(SITE))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.log_path = directory / "gunicorn.log"
        self.log = open(self.log_path, "wb")
        fd = self.listener.fileno()
        os.set_inheritable(fd, True)
        env = dict(os.environ, COLLECTOR_URL=collector_url, SPOOL_DIR=str(spool_dir))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(workers),
                "--bind",
                f"fd://{fd}",
                "--no-control-socket",
                "--graceful-timeout",
                "60",
                "--chdir",
                str(directory),
                *options,
                "spoolsite:application",
            ],
            env=env,
            pass_fds=[fd],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

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

    def start(collector_url: str, spool_dir, workers: int = 4, options: tuple = ()) -> Site:
        site = Site(tmp_path, collector_url, spool_dir, workers, options)
        sites.append(site)
        return site

    yield start
    for site in sites:
        site.close()


def events_by_number(collector) -> Counter:
    return Counter(message["properties"]["data"]["n"] for message in collector.messages(event="site.event"))


# --preload: the master builds the backend (a part of its own, empty), each forked worker gets
# its own. --max-requests: workers recycled during the outage leave their parts (the exit flush
# cannot deliver), which live workers adopt.
MODES = {"workers": ((), 4), "preload": (("--preload",), 5), "max-requests": (("--max-requests", "120"), 4)}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_worker_killed_in_an_outage_loses_nothing_with_one_shared_spool_dir(
    collector, tmp_path, site_factory, mode
):
    options, booted_parts = MODES[mode]
    spool_dir = tmp_path / "spool"
    site = site_factory(collector.url, spool_dir, workers=4, options=options)
    wait_until(lambda: len(parts(spool_dir)) >= booted_parts or site.process.poll() is not None)
    assert site.process.poll() is None, site.output()  # the site boots: a part per process
    collector.faults.add(status=503, times=None)  # the collector is down
    served = site.load(range(0, 400))
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
    assert site.stop() == 0, site.output()
    assert list(spool_dir.iterdir()) == [], site.output()  # no directory left behind
    assert sum(events_by_number(collector).values()) == 600


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
