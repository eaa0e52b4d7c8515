"""How the sender reads the server's answers: reasons with their detail, Retry-After past the
retry budget, redirects, a total deadline per request, bounded answer bodies, cleartext warnings.

The peer is the project's collector; a hostile server (trickling or endless answers) is a raw
socket here, since being one is the point of those tests.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from eventtracking.backends.segment import SegmentBackend
from eventtracking.collector import Collector
from eventtracking.segment import sender as sender_module
from eventtracking.segment import transport as transport_module
from eventtracking.segment.transport import HttpTransport, describe_network_error

KEY = "answers-secret-write-key"


def event(i: int) -> dict:
    return {"name": "edx.test", "data": {"i": i}, "context": {"user_id": i}}


def backend_for(url: str, **options) -> SegmentBackend:
    options.setdefault("flush_interval", 0.02)
    return SegmentBackend(write_key=KEY, host=url, **options)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def collector_with_key():
    with Collector(write_key=KEY) as running:
        yield running, running.url
    running.close()


# -- reasons ---------------------------------------------------------------------------------


def test_a_network_error_carries_its_error_and_host_everywhere(caplog):
    url = f"http://127.0.0.1:{closed_port()}"
    errors = []
    backend = backend_for(url, retry_timeout=0.3, on_error=lambda reason, messages: errors.append(reason))
    with caplog.at_level(logging.WARNING, logger="eventtracking.segment.sender"):
        backend.send(event(1))
        assert backend.flush(30)
    detail = f"network error: connection refused ({url})"
    stats = backend.stats()
    assert stats["dropped"] == {"gave_up": 1}
    assert stats["reasons"] == {"gave_up": detail}
    assert stats["last_error"] == detail
    assert f"dropped 1 message: gave_up ({detail})" in caplog.text
    assert errors == ["gave_up"] and errors[0].detail == detail  # still a str: (reason, messages)
    backend.close(5)


def test_a_refusal_carries_the_servers_reason_and_never_the_key(collector_with_key, caplog):
    collector, url = collector_with_key
    errors = []
    backend = SegmentBackend(
        write_key="not-" + KEY, host=url, flush_interval=0.02, on_error=lambda r, m: errors.append((r, m))
    )
    with caplog.at_level(logging.WARNING):
        backend.send(event(1))
        assert backend.flush(30)
    stats = backend.stats()
    assert stats["dropped"] == {"refused": 1}
    assert stats["reasons"] == {"refused": "HTTP 401: wrong write key"}
    assert errors[0][0] == "refused" and errors[0][0].detail == "HTTP 401: wrong write key"
    assert errors[0][1][0]["userId"] == "1"
    assert "dropped 1 message: refused (HTTP 401: wrong write key)" in caplog.text
    assert KEY not in repr(stats) and KEY not in caplog.text
    backend.close(5)


def test_describe_network_error_names_the_cause():
    refused = ConnectionRefusedError(111, "Connection refused")
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = refused
    assert describe_network_error(wrapped) == "connection refused"
    assert describe_network_error(TimeoutError("timed out")) == "timed out"
    unknown = socket.gaierror(-2, "Name or service not known")
    assert describe_network_error(unknown) == "name or service not known"


# -- Retry-After past the retry budget (item 4) ---------------------------------------------------


def test_retry_after_longer_than_the_budget_is_waited_for_in_memory(collector):
    # Two 429s asking for 2 s each, with a retry budget of 0.3 s: the batch waits and arrives.
    collector.faults.add(status=429, times=2, retry_after=2)
    backend = backend_for(collector.url, retry_timeout=0.3)
    started = time.monotonic()
    backend.send(event(1))
    assert backend.flush(60)
    waited = time.monotonic() - started
    print(f"delivered after {waited:.1f} s, two Retry-After waits of 2 s")
    assert collector.count() == 1
    assert backend.stats()["dropped"] == {}
    assert collector.requests["faulted"] == 2 and collector.requests["accepted"] == 1
    assert waited >= 3.5  # both waits were honoured (a lower bound: load only adds to it)
    backend.close(5)


def test_an_infinite_retry_after_waits_the_cap(collector, monkeypatch):
    monkeypatch.setattr(sender_module, "MAX_RETRY_AFTER", 1.0)
    collector.faults.add(status=429, times=1, retry_after=float("inf"))
    backend = backend_for(collector.url, retry_timeout=0.1)
    backend.send(event(1))
    assert backend.flush(60)
    assert collector.count() == 1 and backend.stats()["dropped"] == {}
    backend.close(5)


def test_retry_after_is_honoured_with_a_spool_instead_of_hammering(collector, tmp_path, monkeypatch):
    # Past the hold cap the spool keeps the batch; the sender still waits before posting again.
    monkeypatch.setattr(sender_module, "MAX_RATE_LIMIT_HOLD", 0.0)
    collector.faults.add(status=429, times=None, retry_after=1.5)
    backend = backend_for(collector.url, retry_timeout=0.2, spool_dir=str(tmp_path / "spool"))
    try:
        started = time.monotonic()
        backend.send(event(1))
        assert wait_until(lambda: collector.requests["faulted"] >= 3)
        elapsed = time.monotonic() - started
        print(f"3 requests in {elapsed:.1f} s (Retry-After 1.5 s)")
        assert elapsed >= 2.5  # hammering re-posted every 0.5 s or faster
        collector.faults.clear()
        assert backend.flush(60)
        assert collector.count() == 1 and backend.stats()["dropped"] == {}
    finally:
        backend.close(5)


# -- redirects (item 5) --------------------------------------------------------------------------


def test_a_redirect_keeps_the_events_and_says_what_is_wrong(collector, caplog):
    collector.faults.add(status=301, times=3)
    backend = backend_for(collector.url, retry_timeout=60)
    with caplog.at_level(logging.ERROR, logger="eventtracking.segment.sender"):
        for i in range(5):
            backend.send(event(i))
        assert backend.flush(60)
    assert collector.count() == 5
    assert backend.stats()["dropped"] == {}
    assert "misconfigured" in caplog.text and "redirects are not followed" in caplog.text
    assert "set host to the final address" in caplog.text
    backend.close(5)


def test_a_redirect_with_a_spool_stays_on_disk_not_in_dead_letters(collector, tmp_path):
    spool = tmp_path / "spool"
    collector.faults.add(status=308, times=None)
    backend = backend_for(collector.url, retry_timeout=0.2, spool_dir=str(spool))
    try:
        backend.send(event(1))
        assert wait_until(lambda: backend.stats()["deferred"] >= 1)
        assert backend.stats()["dropped"] == {}
        assert not (spool / "deadletters.jsonl").exists()
        collector.faults.clear()
        assert backend.flush(60)
        assert collector.count() == 1
    finally:
        backend.close(5)


# -- a total deadline and a bounded read per request (item 6) --------------------------------------


class HostileServer:
    """Answers the first request with ``first_answer(connection)``, later ones with a plain 200."""

    def __init__(self, first_answer) -> None:
        self.first_answer = first_answer
        self.sent_bytes = 0
        self.first_closed_after: float | None = None
        self.requests = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _read_request(self, connection: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
        length = int({name.lower(): value for name, value in fields.items()}[b"content-length"])
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            try:
                while self._read_request(connection):
                    self.requests += 1
                    if self.requests == 1:
                        started = time.monotonic()
                        try:
                            self.first_answer(self, connection)
                        except OSError:
                            pass
                        self.first_closed_after = time.monotonic() - started
                        return
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"success\":true}")
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def trickle(server: HostileServer, connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):  # 1 byte every 0.2 s: 200 s for the whole answer
        connection.sendall(b" ")
        time.sleep(0.2)


def endless(server: HostileServer, connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % (300 * 2**20))
    block = b"x" * 65536
    for _ in range(300 * 16):  # 300 MiB
        connection.sendall(block)
        server.sent_bytes += len(block)


@pytest.fixture
def hostile(request):
    server = HostileServer(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("hostile", [trickle], indirect=True)
def test_a_trickling_answer_is_cut_off_at_the_deadline(hostile):
    backend = backend_for(hostile.url, timeout=1.0, retry_timeout=60)
    try:
        backend.send(event(1))
        assert backend.flush(60)  # a trickle without a deadline holds the sender for 200 s
        assert wait_until(lambda: hostile.first_closed_after is not None)
        print(f"trickling answer cut off after {hostile.first_closed_after:.1f} s (deadline 1 s)")
        assert hostile.first_closed_after is not None and hostile.first_closed_after < 30
        assert hostile.requests == 2 and backend.stats()["delivered"] == 1
        assert "no complete answer within 1 s" in backend.stats()["last_error"]
    finally:
        backend.close(5)


@pytest.mark.parametrize("hostile", [endless], indirect=True)
def test_a_huge_answer_body_is_not_read_whole(hostile):
    backend = backend_for(hostile.url, timeout=30, retry_timeout=60)
    try:
        backend.send(event(1))
        assert backend.flush(60)
        assert wait_until(lambda: hostile.first_closed_after is not None)
        read = hostile.sent_bytes
        print(f"the sender took {read / 2**20:.1f} MiB of a 300 MiB answer before closing")
        # What the sockets' buffers took before the sender closed, plus the 64 KiB it read.
        assert read < 32 * 2**20
        assert hostile.requests == 2 and backend.stats()["delivered"] == 1
        assert backend.stats()["last_error"].startswith("HTTP 503: xxx")
    finally:
        backend.close(5)


# -- cleartext to a host that is not loopback (item 11) ---------------------------------------------


def test_cleartext_to_a_remote_host_is_warned_about_once(caplog, monkeypatch):
    monkeypatch.setattr(transport_module, "_cleartext_warned", set())
    with caplog.at_level(logging.WARNING, logger="eventtracking.segment.transport"):
        HttpTransport("http://collector.example.com:8080", KEY)
        HttpTransport("http://collector.example.com:8080", KEY)
        HttpTransport("http://127.0.0.1:9", KEY)
        HttpTransport("http://localhost:9", KEY)
        HttpTransport("http://[::1]:9", KEY)
        HttpTransport("https://collector.example.com", KEY)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "http://collector.example.com:8080 is cleartext" in warnings[0] and KEY not in warnings[0]


def test_skips_and_a_full_buffer_carry_their_detail_too(collector):
    backend = backend_for(collector.url, max_buffer_bytes=10)
    cycle: dict = {}
    cycle["self"] = cycle
    backend.send({"name": "x", "context": {"user_id": 1}, "data": cycle})
    backend.send(event(1))  # over the 10-byte buffer
    reasons = backend.stats()["reasons"]
    assert reasons["unserializable"] == "cycle at properties.data.self"
    assert reasons["buffer_full"] == "buffer full (10 bytes)"
    backend.close(5)
