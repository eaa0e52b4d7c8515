"""The collector answers what it refuses, and ``eventtracking collect`` refuses bad addresses as
usage errors.

An oversized request (over 500 KB) gets ``413`` with its reason, and then a lingering close: the
collector shuts its sending side and reads and discards what the client still sends, for a
bounded time and a bounded number of bytes, so the client reads the answer instead of a
connection reset (which a retrying client would take as a reason to send it all again).
"""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import subprocess
import sys
import threading
import time

import orjson
import pytest
from test_cli import REPO_ROOT, TIMEOUT

from eventtracking.collector.server import LINGER_BYTES, LINGER_SECONDS, MAX_BODY_BYTES

MiB = 2**20


def test_a_4_mib_body_of_empty_gzip_members_gets_413_and_its_reason(collector):
    empty_member = gzip.compress(b"")
    body = empty_member * (4 * MiB // len(empty_member))
    assert len(body) > 4 * MiB - len(empty_member)
    # http.client sends the whole body before reading: without the lingering close it got a
    # connection reset (EPIPE or ECONNRESET) in the middle of sending.
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/v1/batch", body=body, headers={"Content-Encoding": "gzip"})
        response = conn.getresponse()
        status, reply = response.status, orjson.loads(response.read())
        assert response.getheader("Connection") == "close"
    finally:
        conn.close()
    assert status == 413
    assert reply["code"] == "body_too_large"
    assert reply["reason"] == reply["message"] == "request body is over 500 KB (512000 bytes)"
    assert collector.count() == 0
    assert collector.requests["refused"] == 1


def test_a_client_that_keeps_sending_reads_the_413_then_is_cut_off_within_the_bounds(collector):
    sent = {"bytes": 0, "error": None, "stopped_at": None}
    sock = socket.create_connection(("127.0.0.1", collector.port), timeout=TIMEOUT)
    head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1024 * MiB)
    sock.sendall(head)
    started = time.monotonic()

    def keep_sending():
        chunk = b"x" * (64 * 1024)
        try:
            while time.monotonic() - started < 60:
                sent["bytes"] += sock.send(chunk)
        except OSError as error:  # the collector closed after lingering
            sent["error"] = error
        sent["stopped_at"] = time.monotonic()

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        sender.join(60)
    finally:
        sock.close()
    assert not sender.is_alive()
    head_part, _, body = answer.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 413"), answer[:200]
    assert orjson.loads(body)["reason"] == "request body is over 500 KB (512000 bytes)"
    # The collector read at most LINGER_BYTES after its answer and then closed: the sender was
    # stopped by the connection's end, after less than the body it announced.
    assert isinstance(sent["error"], OSError), sent
    assert sent["bytes"] < LINGER_BYTES + 64 * MiB  # what it drained, plus the sockets' buffers
    assert sent["stopped_at"] - started < LINGER_SECONDS + 30  # bounded in time too (loaded machine)
    print(f"a client that kept sending: {sent['bytes'] / MiB:.1f} MiB sent before the collector closed "
          f"after {sent['stopped_at'] - started:.2f} s ({sent['error']!r})")


def test_after_a_413_the_collector_serves_the_next_connection(collector):
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/v1/batch", body=b"x" * (MAX_BODY_BYTES + 1))
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    body = orjson.dumps({"batch": [{"type": "track", "event": "e", "userId": "1", "messageId": "m"}]})
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/v1/batch", body=body)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert collector.count() == 1


def collect(*arguments: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "eventtracking", "collect", *arguments],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=str(REPO_ROOT),
    )


@pytest.mark.parametrize(
    "arguments, says",
    [
        (["--port", "99999"], "argument --port: a port is 0 to 65535, not 99999"),
        (["--port", "-1"], "argument --port: a port is 0 to 65535, not -1"),
        (["--port", "eighty"], "argument --port: not a port number: 'eighty'"),
        (["--host", "256.0.0.1"], "argument --host: cannot listen on '256.0.0.1'"),
        (["--host", ""], "argument --host: cannot listen on ''"),
        # a well-formed address this machine does not have (TEST-NET-1)
        (["--host", "192.0.2.1", "--allow-remote"], "argument --host: cannot listen on '192.0.2.1'"),
    ],
)
def test_collect_with_a_bad_port_or_host_is_a_usage_error(arguments, says):
    result = collect(*arguments)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: eventtracking collect ")
    assert f"eventtracking collect: error: {says}" in result.stderr
    assert "Traceback" not in result.stderr
