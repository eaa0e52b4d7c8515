"""A real S3-compatible server for the tests (moto's standalone server, a process on loopback),
and a TCP proxy in front of it that cuts connections, to inject a fault mid-object."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from typing import Dict, List, Optional

import pytest
from engines import free_port, stop_process, wait_until

# The fixed test credentials moto takes; real stores get theirs from the SDK's chain.
ACCESS_KEY = "AKIAREPLAYTESTKEY123"
SECRET_KEY = "replay-test-secret-key-never-shown"


def s3_env(endpoint: str, **extra: str) -> Dict[str, str]:
    """The environment variables an S3 client reads: these credentials, this endpoint."""
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    env.update(extra)
    return env


class MotoServer:
    """``moto.server`` (moto[server], from the test extra) on 127.0.0.1 and a free port.

    ``authenticate``: check every request's credentials (moto's IAM mode: only keys it issued
    pass), for the bad-credentials test."""

    def __init__(self, workdir: str, authenticate: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.authenticate = authenticate
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        env = dict(os.environ)
        if self.authenticate:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        log = open(os.path.join(self.workdir, f"moto-{self.port}.log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        wait_until(self._listening, 60, f"moto server on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"moto server exited with {self.process.returncode}: see {self.workdir}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def client(self):  # noqa: ANN201 (boto3's client type)
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class CuttingProxy:
    """A TCP proxy on loopback to ``port`` that cuts connections (both ways, mid-answer) once they
    have carried ``after`` bytes back to the client, ``cuts`` times in all: a connection lost
    mid-object. ``for_good``: once ``after`` bytes went back over all connections, every answer
    is cut (a store that stays unreachable)."""

    def __init__(self, port: int, after: int, cuts: int, for_good: bool = False) -> None:
        self.upstream = port
        self.after = after
        self.for_good = for_good  # count the bytes of all connections: once past, cut every answer
        self._carried_in_all = 0
        self.cuts_left = cuts
        self.cuts_done = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: List[threading.Thread] = []
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _cut_now(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cuts_done += 1
            return True

    def _pump(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        carried = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if answers and self.for_good:
                    with self._lock:
                        self._carried_in_all += len(data)
                        carried = self._carried_in_all - len(data)
                if answers and carried + len(data) > self.after and self._cut_now():
                    target.sendall(data[: max(self.after - carried, 0)])
                    break
                target.sendall(data)
                carried += len(data)
        except OSError:
            pass
        for end in (source, target):
            try:  # shutdown first: it wakes the other direction's thread, blocked in recv
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self._closing = True
        self._listener.close()
