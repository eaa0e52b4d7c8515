"""The collector is safe to leave running: loopback by default, the key before any body, bounded
connections and memory, linear decoding, a total deadline per request, 0600 files, 4xx for bad
input. Each limit is measured here (memory, time) and printed with its figure; the bounds
asserted are generous, for a loaded two-core machine.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import orjson
import pytest
from test_cli import REPO_ROOT, TIMEOUT, read_line, start_collect, stop

from eventtracking.cli import main
from eventtracking.collector import Collector
from eventtracking.collector.server import MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_RECEIVED_LIMIT

KEY = "limits-Secret-key-9"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
MiB = 2**20


def track(i: int, pad: int = 0) -> dict:
    message = {"type": "track", "event": "e", "userId": str(i), "messageId": f"m-{i}"}
    return {**message, "properties": {"p": "x" * pad}}


def batch_body(count: int, pad: int) -> bytes:
    return orjson.dumps({"batch": [track(i, pad) for i in range(count)]})


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def proc_status(pid: int) -> dict:
    """VmHWM (peak RSS), VmRSS (KiB) and Threads of a live process, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "Threads"):
                fields[name] = int(value.split()[0])
    return fields


# -- loopback by default (item 9) ------------------------------------------------------------------


def test_another_address_needs_an_explicit_flag_and_is_warned_about(capsys):
    with pytest.raises(ValueError, match="allow_remote=True"):
        Collector(host="0.0.0.0")
    assert main(["collect", "--host", "0.0.0.0"]) == 2
    assert "add --allow-remote" in capsys.readouterr().err
    # start_collect expects a loopback line: this one is read here.
    process = subprocess.Popen(
        [sys.executable, "-m", "eventtracking", "collect", "--host", "0.0.0.0", "--allow-remote"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(REPO_ROOT),
    )
    try:
        first_line = read_line(process, TIMEOUT)
        assert first_line.startswith("listening on http://0.0.0.0:")
        port = int(first_line.rsplit(":", 1)[1])
        assert request(port, "GET", "/health")[0] == 200  # reached over loopback only
    finally:
        returncode, _, err = stop(process)
    assert returncode == 0
    assert "WARNING: the collector listens on http://0.0.0.0:" in err and "NO write key" in err


# -- the key on every route, before any body (item 9) --------------------------------------------------


@pytest.fixture
def keyed():
    with Collector(write_key=KEY) as running:
        yield running
    running.close()


def test_every_route_needs_the_key_once_set(keyed):
    assert request(keyed.port, "POST", "/v1/batch", batch_body(2, 0), BASIC)[0] == 200
    for path in ("/health", "/v1/received", "/v1/received?after=0&limit=10", "/nowhere"):
        status, body = request(keyed.port, "GET", path)
        assert status == 401, path
        assert json.loads(body)["code"] == "unauthorized"
    assert json.loads(request(keyed.port, "GET", "/health", headers=BASIC)[1])["messages"] == 2
    assert len(json.loads(request(keyed.port, "GET", "/v1/received", headers=BASIC)[1])["messages"]) == 2


def test_the_key_is_checked_before_the_body_is_read(keyed):
    # Headers announce 16 MiB that never come: the answer arrives at once, nothing is read.
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=TIMEOUT) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\n")
        answer = sock.recv(65536)
        elapsed = time.monotonic() - started
    print(f"401 without reading the body, after {elapsed * 1000:.0f} ms")
    assert answer.startswith(b"HTTP/1.1 401")
    assert elapsed < TIMEOUT


# -- 4xx for every bad input (item 10) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, headers",
    [
        (b'{"batch": [' + b"[" * 300 + b"]" * 300 + b"]}", {}),  # valid JSON, 300 levels deep
        (b'{"batch": [{"properties": ' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}]}", {}),
        (b"\x1f\x8b" + b"\x00" * 30, {"Content-Encoding": "gzip"}),
        (b'{"batch": [1]}', {}),
        (b"[]", {}),
        (b'{"batch": []}', {}),
        (b'{"batch": [{"a": NaN}]}', {}),
        (b"x" * 10, {"Content-Encoding": "br"}),
    ],
)
def test_bad_input_gets_a_4xx_never_a_500(collector, body, headers):
    status, answer = request(collector.port, "POST", "/v1/batch", body, headers)
    assert 400 <= status < 500, answer
    assert collector.requests["failed"] == 0 and collector.count() == 0


def test_too_many_headers_get_a_4xx(collector):
    headers = {f"X-Pad-{i}": "y" * 2000 for i in range(90)}  # 180 KB of head
    assert request(collector.port, "GET", "/health", headers=headers)[0] == 431


def test_received_answers_at_most_its_cap(collector):
    assert request(collector.port, "POST", "/v1/batch", batch_body(MAX_RECEIVED_LIMIT + 5, 0))[0] == 200
    status, body = request(collector.port, "GET", "/v1/received?limit=999999")
    assert status == 200 and len(json.loads(body)["messages"]) == MAX_RECEIVED_LIMIT


# -- bounded connections and memory per request (item 10) -----------------------------------------------


def test_connections_and_memory_are_bounded(tmp_path):
    """64 clients with 500 KB bodies (and one with 1-byte chunks): threads and peak RSS stay bounded."""
    process, port, _ = start_collect("--db", str(tmp_path / "c.sqlite3"))
    try:
        before = proc_status(process.pid)
        body = batch_body(16, 30 * 1024)  # 16 messages of 31 KB: just under 500 KB
        assert len(body) <= MAX_BODY_BYTES
        sockets = []
        for _ in range(2 * MAX_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            # Headers and half a body: every accepted connection holds a handler thread.
            try:
                sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
                sock.sendall(body[: len(body) // 2])
            except OSError:  # turned away (503 and closed) before the half body went out
                pass
            sockets.append(sock)
        time.sleep(0.5)  # let the server accept them all (a figure, not a condition)
        during = proc_status(process.pid)
        statuses = []
        for sock in sockets:
            sock.setblocking(False)
            try:
                early = sock.recv(12)  # turned away: the 503 is already there
            except BlockingIOError:
                early = b""
            except OSError:
                statuses.append(b"closed")
                continue
            sock.settimeout(TIMEOUT)
            try:
                if not early:
                    sock.sendall(body[len(body) // 2 :])
                statuses.append((early or sock.recv(12))[9:12])
            except OSError:
                statuses.append(b"closed")
            sock.close()
        chunked = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        small = batch_body(8, 2000)
        chunked.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        one_byte_chunks = b"".join(b"1\r\n" + small[i : i + 1] + b"\r\n" for i in range(len(small)))
        chunked.sendall(one_byte_chunks + b"0\r\n\r\n")
        chunked_status = chunked.recv(12)[9:12]
        chunked.close()
        after = proc_status(process.pid)
    finally:
        stop(process)
    grown = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(
        f"{len(sockets)} connections with 500 KB bodies: {statuses.count(b'200')} stored, "
        f"{statuses.count(b'503')} turned away (busy); handler threads at most {during['Threads']}; "
        f"peak RSS grew {grown:.0f} MiB (from {before['VmRSS'] / 1024:.0f} MiB); "
        f"1-byte chunks: {chunked_status.decode()}"
    )
    turned_away = statuses.count(b"503") + statuses.count(b"closed")
    assert statuses.count(b"200") <= MAX_CONNECTIONS and statuses.count(b"503") >= 1
    assert turned_away >= MAX_CONNECTIONS - 4  # the rest were answered 503, not given a thread
    assert during["Threads"] <= MAX_CONNECTIONS + 8
    assert chunked_status == b"200"
    assert grown < 300  # was 1,055 MiB for 64 clients with 16 MiB bodies


def test_a_body_over_the_limit_is_refused_unread(collector):
    with socket.create_connection(("127.0.0.1", collector.port), timeout=TIMEOUT) as sock:
        head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        sock.sendall(head % (MAX_BODY_BYTES + 1))
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", collector.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"%x\r\n" % (MAX_BODY_BYTES + 1))  # a chunk size over the limit: not read
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")


# -- linear-time decoding (item 10) ----------------------------------------------------------------------


def test_many_empty_gzip_members_are_refused_in_linear_time(collector):
    empty_member = gzip.compress(b"")
    body = empty_member * (MAX_BODY_BYTES // len(empty_member))  # 25,600 members, 500 KB
    answers = {}

    def health_during_attack():
        time.sleep(0.05)
        started = time.monotonic()
        answers["health"] = request(collector.port, "GET", "/health")[0]
        answers["health_seconds"] = time.monotonic() - started

    helper = threading.Thread(target=health_during_attack)
    helper.start()
    started = time.process_time(), time.monotonic()
    status, answer = request(collector.port, "POST", "/v1/batch", body, {"Content-Encoding": "gzip"})
    cpu, elapsed = time.process_time() - started[0], time.monotonic() - started[1]
    helper.join(TIMEOUT)
    print(
        f"{len(body) // len(empty_member)} empty gzip members: {status} in {elapsed * 1000:.0f} ms "
        f"({cpu * 1000:.0f} ms CPU, test and collector); /health meanwhile in "
        f"{answers['health_seconds'] * 1000:.0f} ms"
    )
    assert status == 400 and b"members" in answer
    assert answers["health"] == 200
    assert cpu < 10 and answers["health_seconds"] < 10  # quadratic inflating took seconds per MB


# -- a total deadline per request (item 10) -----------------------------------------------------------


def test_a_trickling_client_is_cut_off_at_the_idle_timeout():
    with Collector(idle_timeout=1.5) as collector:
        head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200
        with socket.create_connection(("127.0.0.1", collector.port), timeout=TIMEOUT) as sock:
            started = time.monotonic()
            cut_after = None
            for byte in head:  # one byte every 0.5 s: 110 s for the whole head
                try:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.5)
                    sock.setblocking(False)
                    try:
                        if sock.recv(1) == b"":
                            cut_after = time.monotonic() - started
                            break
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
                except OSError:
                    cut_after = time.monotonic() - started
                    break
    collector.close()
    print(f"trickling client cut off after {cut_after} s (idle_timeout 1.5 s, per-read timeout alone: never)")
    assert cut_after is not None and cut_after < 30


# -- 0600 database files (items 9 and 13) ---------------------------------------------------------------


def modes(directory) -> dict:
    names = os.listdir(directory)
    return {name: stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) for name in names}


def test_database_files_are_0600(tmp_path):
    old_umask = os.umask(0o022)
    try:
        with Collector(db_path=str(tmp_path / "c.sqlite3")) as collector:
            assert request(collector.port, "POST", "/v1/batch", batch_body(2, 0))[0] == 200
            found = modes(tmp_path)
        collector.close()
    finally:
        os.umask(old_umask)
    print(found)
    assert {"c.sqlite3", "c.sqlite3-wal", "c.sqlite3-shm"} <= set(found)
    assert set(found.values()) == {0o600}


def test_an_existing_database_of_ours_is_made_0600(tmp_path):
    path = tmp_path / "old.sqlite3"
    with Collector(db_path=str(path)):
        pass
    os.chmod(path, 0o644)
    with Collector(db_path=str(path)) as again:
        again.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_replay_local_database_is_0600(tmp_path, capsys):
    log = tmp_path / "tracking.log"
    line = {"event_type": "e", "time": "2026-01-01T00:00:00Z", "context": {"user_id": 1}}
    log.write_text(json.dumps(line) + "\n")
    database = tmp_path / "local.sqlite3"
    old_umask = os.umask(0o022)
    try:
        main(["replay", str(log), "--local", "--db", str(database)])
    finally:
        os.umask(old_umask)
    capsys.readouterr()
    found = {name: mode for name, mode in modes(tmp_path).items() if name.startswith("local.sqlite3")}
    print(found)
    assert found and set(found.values()) == {0o600}
