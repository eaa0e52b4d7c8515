"""The harness of the real-server tests: the test site (``testsite.py``) under a real gunicorn,
uWSGI or uvicorn, a bounded load over loopback, and a stop by signal.

How to use it (from any test module under ``tests/servers/``; the ``start_site`` fixture is
provided by ``tests/servers/conftest.py``)::

    from harness import assert_each_arrived_once, gunicorn

    def test_something(collector, start_site):
        site = start_site(gunicorn("--workers", "4"), backend_options={"flush_interval": 10})
        answered = site.load(range(400))          # one event per number, 8 client threads
        assert site.stop(signal.SIGTERM) == 0     # the way the server's docs say to stop it
        assert_each_arrived_once(collector, site.logged())

- ``start_site(command, backend_options=None, env=None)`` (fixture) starts the site with
  ``command`` (from :func:`gunicorn`, :func:`uwsgi`, :func:`uvicorn`; each takes the server's own
  options and binds a free loopback port), waits until it answers, and returns a :class:`Site`.
  ``backend_options`` are more SegmentBackend options (JSON-able); ``env`` more environment
  (e.g. ``{"SPOOL_DIR": ...}``, which the site passes as ``spool_dir``). Every site is killed, with
  its whole process group, when the test ends.
- :class:`Site`: ``load(numbers, threads=8)`` (returns the numbers answered 200; failures are
  allowed once ``stop`` was called, e.g. from another thread), ``get(path)``, ``stop(signum)``
  (the exit status), for uWSGI ``wait_until_idle()``, ``uwsgi_workers()`` (its stats socket) and
  ``stop_uwsgi_gracefully()`` (its master FIFO), ``logged()`` (a Counter of the numbers the view
  emitted, from its tracking log), ``output()`` (the server's log), ``pids()`` (the pids that answered).
- :func:`assert_each_arrived_once` compares the collector with what the view emitted.

The collector is the ``collector`` fixture of ``tests/conftest.py`` (in this process, on loopback).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import pytest

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


Command = Callable[[int], list]  # port -> argv


def gunicorn(*options: str, app: str = "testsite:application") -> Command:
    return lambda port: [
        str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--chdir", str(HERE),
        "--graceful-timeout", "60", "--no-control-socket", *options, app,
    ]  # fmt: skip


def uwsgi(*options: str) -> Command:
    return lambda port: [
        str(BIN / "uwsgi"), "--http-socket", f"127.0.0.1:{port}", "--chdir", str(HERE),
        "--module", "testsite:application", "--master", "--need-app", "--disable-logging",
        "--worker-reload-mercy", "60", "--stats", uwsgi_control(port, "stats"),
        "--master-fifo", uwsgi_control(port, "fifo"), *options,
    ]  # fmt: skip


def uwsgi_control(port: int, kind: str) -> str:
    """The path of a uWSGI site's stats socket or master FIFO (``kind``), found by its port."""
    return os.path.join(tempfile.gettempdir(), f"eventtracking-uwsgi-{port}.{kind}")


def uvicorn(*options: str, app: str = "testsite:asgi_application") -> Command:
    return lambda port: [
        str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--app-dir", str(HERE),
        "--no-access-log", *options, app,
    ]  # fmt: skip


class Site:
    """One server running the test site (see the module docstring)."""

    def __init__(self, directory: Path, command: Command, env: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tracking_log = directory / "tracking.log"
        self.log_path = directory / "server.log"
        self._log = open(self.log_path, "ab")
        self.stopping = threading.Event()
        self._answered_by: Counter = Counter()
        argv = command(self.port)
        self.is_uwsgi = Path(argv[0]).name == "uwsgi"
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, "TRACKING_LOG": str(self.tracking_log), "PYTHONPATH": str(HERE), **env},
            cwd=HERE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: close() kills every worker too
        )

    def get(self, path: str, timeout: float = 60) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            assert response.status == 200
            return response.read().decode()

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the site answers and, under uWSGI, until every worker has loaded it: with
        --lazy-apps a worker may still be loading it while another serves, and a stop that
        finds it loading does not stop it cleanly (SIGINT interrupts its import; the graceful
        ``q`` is missed, and the worker serves on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited:\n{self.output()}"
            try:
                self.get("/ready", timeout=5)
                if not self.is_uwsgi or self.uwsgi_loaded():
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"the site was not ready within {timeout} s:\n{self.output()}")

    def load(self, numbers, threads: int = 8) -> list[int]:
        """GET /emit?n=N for each number from ``threads`` clients; the numbers answered 200."""
        numbers = list(numbers)
        answered: list[int] = []
        lock = threading.Lock()

        def client(chunk: list[int]) -> None:
            for n in chunk:
                try:
                    pid = self.get(f"/emit?n={n}")
                except (OSError, urllib.error.URLError):
                    if self.stopping.is_set():
                        return  # stopped under load: the rest is refused
                    raise
                with lock:
                    answered.append(n)
                    self._answered_by[pid] += 1

        clients = [threading.Thread(target=client, args=(numbers[i::threads],)) for i in range(threads)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(300)
        assert not any(thread.is_alive() for thread in clients), "the load did not finish in 300 s"
        if not self.stopping.is_set():
            assert sorted(answered) == sorted(numbers), f"some requests failed:\n{self.output()}"
        return answered

    def pids(self) -> Counter:
        """How many requests each worker pid answered."""
        return Counter(self._answered_by)

    def stop(self, signum: int, timeout: float = 120) -> int:
        """Send ``signum`` to the server's main process; its exit status (negative: a signal)."""
        self.stopping.set()
        self.process.send_signal(signum)
        return self._wait_exit(timeout, f"signal {signum}")

    def stop_uwsgi_gracefully(self, timeout: float = 120) -> int:
        """uWSGI 2.0's graceful shutdown (``q`` on its master FIFO): each worker finishes the
        requests it has, then exits normally. The master's exit status."""
        self.stopping.set()
        self.uwsgi_command(b"q")
        return self._wait_exit(timeout, "a graceful shutdown")

    def _wait_exit(self, timeout: float, after: str) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout} s after {after}:\n{self.output()}") from None

    def uwsgi_workers(self) -> list[dict]:
        """A uWSGI site's workers as its stats socket reports them (``pid``, ``status``...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(uwsgi_control(self.port, "stats"))
            data = b"".join(iter(lambda: sock.recv(65536), b""))
        return json.loads(data)["workers"]

    def uwsgi_loaded(self, gone: int = 0) -> bool:
        """Whether every worker of a uWSGI site has loaded the site (none of them pid ``gone``,
        a worker killed that the master has not replaced yet)."""
        return all(worker["apps"] and worker["pid"] not in (0, gone) for worker in self.uwsgi_workers())

    def wait_until_idle(self, timeout: float = 60) -> None:
        """Wait until no worker of a uWSGI site is inside a request (other servers: at once): a
        client has its answer a moment before the worker has closed the request, and uWSGI skips
        Python's exit in a worker that a quick stop finds busy."""
        if self.is_uwsgi:
            wait_until(
                lambda: all(worker["status"] == "idle" for worker in self.uwsgi_workers()),
                timeout,
                "every worker idle (its stats socket)",
            )

    def uwsgi_command(self, command: bytes) -> None:
        """Write one command to a uWSGI site's master FIFO (``q``: graceful shutdown)."""
        with open(uwsgi_control(self.port, "fifo"), "wb") as fifo:
            fifo.write(command)

    def logged(self) -> Counter:
        """The numbers of the events the view emitted (its tracking log), with their counts."""
        if not self.tracking_log.exists():
            return Counter()
        return Counter(int(line) for line in self.tracking_log.read_text().split())

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-20000:]

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=60)
        finally:
            self._log.close()
            for kind in ("stats", "fifo"):  # a uWSGI site's controls (they are not in tmp_path)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(uwsgi_control(self.port, kind))


@pytest.fixture
def start_site(tmp_path, collector):
    """Start the test site under a server, sending to ``collector`` (the same instance a test
    asks for); every site started is killed when the test ends."""
    sites: list[Site] = []

    def start(command: Command, backend_options: Optional[dict] = None, env: Optional[dict] = None) -> Site:
        variables = {"COLLECTOR_URL": collector.url, "BACKEND_OPTIONS": json.dumps(backend_options or {})}
        variables.update(env or {})
        directory = tmp_path / f"site{len(sites)}"
        directory.mkdir()
        site = Site(directory, command, variables)
        sites.append(site)
        site.wait_ready()
        return site

    yield start
    for site in sites:
        site.close()


def wait_until(condition: Callable[[], bool], timeout: float = 120, what: str = "") -> None:
    """Poll ``condition`` every 20 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
        time.sleep(0.02)


def arrived(collector) -> Counter:
    """The numbers of the site's events at the collector, with how many times each arrived."""
    return Counter(message["properties"]["data"]["n"] for message in collector.messages(event="site.event"))


def wait_for_arrivals(collector, expected: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while collector.count() < expected and time.monotonic() < deadline:
        time.sleep(0.1)


def assert_each_arrived_once(collector, logged: Counter, site: Optional[Site] = None) -> None:
    """Every event the view emitted arrived, none twice, none that it did not emit."""
    assert logged and all(times == 1 for times in logged.values()), "the tracking log repeats a number"
    wait_for_arrivals(collector, len(logged), timeout=10)  # (the server has exited: no waiting really)
    received = arrived(collector)
    detail = f"\n{site.output()}" if site is not None else ""
    missing = sorted(set(logged) - set(received))
    assert not missing, f"{len(missing)} of {len(logged)} emitted never arrived: {missing[:20]}{detail}"
    extra = sorted(set(received) - set(logged))
    assert not extra, f"arrived but not emitted: {extra[:20]}"
    twice = sorted(n for n, times in received.items() if times > 1)
    assert not twice, f"arrived more than once: {twice[:20]}"
    ids = collector.message_ids()
    assert len(ids) == len(set(ids)), "a messageId arrived twice"
