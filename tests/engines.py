"""Real engines for the tests: a Redis server and Celery workers, each a real process on loopback.

``RedisServer`` runs Debian's ``redis-server`` (installed by ``make test``) on a free port, without
persistence; it can be stopped and started again on the same port, which is how the tests make a
broker outage. ``CeleryWorker`` runs ``celery worker`` on the test site (``async_site``), in our
environment or in ``.envs/original`` (Open edX's event-tracking 4.1.5). Every process is bounded:
waits have deadlines, and ``stop()`` kills what did not exit by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Optional

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
ORIGINAL_PYTHON = os.path.join(ROOT, ".envs", "original", "bin", "python")
OURS_PYTHON = sys.executable


def free_port() -> int:
    """A port nothing listens on now (bound to port 0, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def site_env(**extra: str) -> dict:
    """The environment of a process of the test site (Django settings, import path)."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "async_site.settings"
    env["PYTHONPATH"] = TESTS + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Ask ``process`` (and its children: it leads its own process group) to exit; kill it if it
    does not within ``timeout``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, no persistence: stop() loses what it held."""

    def __init__(self, workdir: str) -> None:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if binary is None:
            pytest.fail("redis-server is not installed: `make test` installs it (Debian's redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = open(os.path.join(self.workdir, f"redis-{self.port}.log"), "ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self.ping, 30, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None
        wait_until(lambda: not self.ping(), 10, "redis-server to stop")

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


PREFORK_2 = ("--pool", "prefork", "--concurrency", "2")


class CeleryWorker:
    """``celery -A async_site worker`` (prefork, 2 processes) on the test site, in ``python``'s
    environment; its log is kept in ``workdir`` and shown when the test fails. ``app`` and
    ``pool`` (the pool's command-line options) pick another site and pool."""

    def __init__(
        self,
        python: str,
        workdir: str,
        env: dict,
        name: str = "worker",
        app: str = "async_site",
        pool: tuple = PREFORK_2,
    ) -> None:
        self.python = python
        self.log_path = os.path.join(workdir, f"celery-{name}.log")
        self.env = env
        self.app = app
        self.pool = pool
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> CeleryWorker:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                self.python,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "--loglevel",
                "INFO",
                *self.pool,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"worker-{os.getpid()}-{id(self)}@%h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=TESTS,
            start_new_session=True,
        )
        log.close()
        wait_until(self._ready, 90, f"the celery worker to be ready (log: {self.log_path})", interval=0.2)
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"the celery worker exited with {self.process.returncode}:\n{self.log()}")
        return b"ready." in open(self.log_path, "rb").read()

    def log(self) -> str:
        with open(self.log_path, "rb") as log:
            return log.read().decode("utf-8", "replace")[-6000:]

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
            self.process = None

    def shut_down(self, sig: int = signal.SIGTERM, timeout: float = 60) -> float:
        """Send ``sig`` to the worker's main process only, as Docker and Kubernetes do (SIGTERM:
        Celery's warm shutdown; SIGQUIT: its cold shutdown); return the seconds until it exited.
        Fails the test when it did not exit within ``timeout`` (then its group is killed)."""
        assert self.process is not None, "the worker was not started"
        process, self.process = self.process, None
        started = time.monotonic()
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(process, timeout=10, sig=signal.SIGKILL)
            pytest.fail(f"the celery worker did not exit {timeout:.0f}s after signal {sig}:\n{self.log()}")
        return time.monotonic() - started
