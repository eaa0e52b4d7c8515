"""The local Segment-compatible collector, exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import socket
import sqlite3
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

import orjson
import pytest

from eventtracking.collector import MAX_BODY_BYTES, MAX_MESSAGE_BYTES, Collector

TIMEOUT = 10  # seconds, on every socket: a broken server fails a test instead of hanging it
WRITE_KEY = "wk-test-Secret-7f3a9c"

Response = Tuple[int, http.client.HTTPMessage, Any]


def track(event: str = "page_view", **fields: Any) -> Dict[str, Any]:
    message = {
        "type": "track",
        "event": event,
        "messageId": str(uuid.uuid4()),
        "userId": "user-1",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"course": "demo"},
    }
    message.update(fields)
    return message


def connect(collector: Collector) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", collector.port, timeout=TIMEOUT)


def send(
    conn: http.client.HTTPConnection,
    path: str,
    body: bytes,
    headers: Optional[Dict[str, str]] = None,
    method: str = "POST",
) -> Response:
    """One request on ``conn``; the response body decoded from JSON (None if empty)."""
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    raw = response.read()
    return response.status, response.headers, orjson.loads(raw) if raw else None


def post(
    collector: Collector,
    path: str,
    payload: Any = None,
    *,
    body: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
) -> Response:
    """POST on a fresh connection: ``payload`` as JSON, or ``body`` bytes as they are."""
    conn = connect(collector)
    try:
        return send(conn, path, orjson.dumps(payload) if body is None else body, headers)
    finally:
        conn.close()


def get(collector: Collector, path: str) -> Response:
    conn = connect(collector)
    try:
        return send(conn, path, b"", method="GET")
    finally:
        conn.close()


def basic_auth(key: str) -> Dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def message_of_size(size: int) -> Dict[str, Any]:
    """A track message whose compact JSON encoding is exactly ``size`` bytes."""
    message = track(properties={"pad": ""})
    message["properties"]["pad"] = "x" * (size - len(orjson.dumps(message)))
    assert len(orjson.dumps(message)) == size
    return message


@pytest.fixture
def keyed_collector():
    with Collector(write_key=WRITE_KEY) as running:
        yield running


# -- accepting and storing ------------------------------------------------------------------


def test_batch_is_accepted_and_stored_in_arrival_order(collector):
    batch = [track("first"), track("second"), track("third")]
    status, _, reply = post(collector, "/v1/batch", {"batch": batch, "sentAt": "2024-05-01T12:00:01Z"})
    assert (status, reply) == (200, {"success": True})
    assert collector.messages() == batch
    assert collector.message_ids() == [m["messageId"] for m in batch]
    assert collector.count() == 3
    assert collector.messages(event="second") == [batch[1]]
    assert collector.messages(limit=2) == batch[:2]
    assert collector.requests["accepted"] == 1
    assert collector.requests["refused"] == 0


def test_duplicates_are_stored_as_sent(collector):
    message = track()
    for _ in range(2):
        assert post(collector, "/v1/batch", {"batch": [message]})[0] == 200
    assert collector.message_ids() == [message["messageId"]] * 2


def test_rows_carry_the_indexed_columns(tmp_path):
    db_path = str(tmp_path / "collector.sqlite3")
    message = track("enrolled", anonymousId="anon-9", userId=42)
    with Collector(db_path=db_path) as collector:
        assert post(collector, "/v1/batch", {"batch": [message], "sentAt": "2024-05-01T12:00:01Z"})[0] == 200
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM messages ORDER BY seq").fetchall()
    assert len(rows) == 1
    row = rows[0]
    assert row["seq"] == 1
    assert row["received_at"].endswith("Z")
    assert row["sent_at"] == "2024-05-01T12:00:01Z"
    assert row["message_id"] == message["messageId"]
    assert (row["type"], row["event"]) == ("track", "enrolled")
    assert (row["user_id"], row["anonymous_id"]) == ("42", "anon-9")  # a numeric userId kept as JSON text
    assert row["timestamp"] == message["timestamp"]
    assert orjson.loads(row["body"]) == message


def test_messages_survive_restart_on_the_same_port(tmp_path):
    db_path = str(tmp_path / "collector.sqlite3")
    collector = Collector(db_path=db_path).start()
    try:
        url = collector.url
        assert post(collector, "/v1/batch", {"batch": [track("before")]})[0] == 200
        collector.stop()
        assert collector.messages()[0]["event"] == "before"  # readable while stopped
        collector.start()
        assert collector.url == url
        assert post(collector, "/v1/batch", {"batch": [track("after")]})[0] == 200
        assert [m["event"] for m in collector.messages()] == ["before", "after"]
    finally:
        collector.close()
    with Collector(db_path=db_path) as reopened:
        assert reopened.count() == 2


@pytest.mark.parametrize("route", ["track", "identify", "page", "screen", "group", "alias"])
def test_single_message_route_sets_type_from_route(collector, route):
    message = {"messageId": str(uuid.uuid4()), "userId": "u1", "event": f"via-{route}"}
    status, _, reply = post(collector, f"/v1/{route}", message)
    assert (status, reply) == (200, {"success": True})
    assert collector.messages() == [{**message, "type": route}]


def test_single_message_route_keeps_an_explicit_type(collector):
    assert post(collector, "/v1/track", {"type": "page", "userId": "u1", "name": "Home"})[0] == 200
    assert collector.messages()[0]["type"] == "page"


def test_batch_context_is_merged_under_each_message_context(collector):
    batch = [track("a", context={"ip": "10.0.0.2"}), track("b")]
    payload = {"batch": batch, "context": {"ip": "10.0.0.1", "library": {"name": "x"}}}
    assert post(collector, "/v1/batch", payload)[0] == 200
    first, second = collector.messages()
    assert first["context"] == {"ip": "10.0.0.2", "library": {"name": "x"}}
    assert second["context"] == {"ip": "10.0.0.1", "library": {"name": "x"}}


def test_chunked_request_body_is_accepted(collector):
    body = orjson.dumps({"batch": [track("chunked")]})
    conn = connect(collector)
    try:
        conn.request(
            "POST", "/v1/batch", body=iter([body[:10], body[10:]]), encode_chunked=True,
            headers={"Transfer-Encoding": "chunked"},
        )
        response = conn.getresponse()
        assert (response.status, orjson.loads(response.read())) == (200, {"success": True})
    finally:
        conn.close()
    assert collector.messages()[0]["event"] == "chunked"


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, body_key, expected",
    [
        (basic_auth(WRITE_KEY), None, 200),
        ({}, WRITE_KEY, 401),  # the key is checked before the body is read: a body key is none
        (basic_auth(WRITE_KEY), "ignored-when-basic-is-present", 200),
        (basic_auth("wrong"), None, 401),
        (basic_auth("wrong"), WRITE_KEY, 401),  # Basic wins over the body
        ({}, "wrong", 401),
        ({}, None, 401),
        ({"Authorization": "Basic !!not-base64"}, None, 401),
    ],
)
def test_write_key_is_required_when_configured(keyed_collector, headers, body_key, expected):
    payload: Dict[str, Any] = {"batch": [track()]}
    if body_key is not None:
        payload["writeKey"] = body_key
    status, response_headers, reply = post(keyed_collector, "/v1/batch", payload, headers=headers)
    assert status == expected
    assert keyed_collector.count() == (1 if expected == 200 else 0)
    if expected == 401:
        assert reply["success"] is False and reply["code"] == "unauthorized"
        assert response_headers["WWW-Authenticate"].startswith("Basic")
        assert keyed_collector.requests["refused"] == 1


def test_single_message_routes_need_the_key_in_basic_auth(keyed_collector):
    assert post(keyed_collector, "/v1/identify", {"userId": "u1", "writeKey": "wrong"})[0] == 401
    assert post(keyed_collector, "/v1/identify", {"userId": "u1", "writeKey": WRITE_KEY})[0] == 401
    good = basic_auth(WRITE_KEY)
    assert post(keyed_collector, "/v1/identify", {"userId": "u1", "writeKey": "x"}, headers=good)[0] == 200
    assert keyed_collector.messages() == [{"userId": "u1", "type": "identify"}]  # writeKey not stored


@pytest.mark.parametrize("headers", [{}, basic_auth("any-key-at-all")])
def test_any_key_or_none_is_accepted_without_a_configured_key(collector, headers):
    payload = {"batch": [track()], "writeKey": "whatever"}
    assert post(collector, "/v1/batch", payload, headers=headers)[0] == 200
    assert collector.count() == 1


def test_write_key_is_never_logged_or_stored(tmp_path, caplog, capfd):
    db_path = str(tmp_path / "collector.sqlite3")
    caplog.set_level(logging.DEBUG)
    with Collector(db_path=db_path, write_key=WRITE_KEY) as collector:
        good, wrong = basic_auth(WRITE_KEY), basic_auth(WRITE_KEY + "x")
        assert post(collector, "/v1/batch", {"batch": [track(writeKey=WRITE_KEY)]}, headers=good)[0] == 200
        keyed_body = {"batch": [track()], "writeKey": WRITE_KEY}
        assert post(collector, "/v1/batch", keyed_body, headers=good)[0] == 200
        assert post(collector, "/v1/track", {"event": "x", "writeKey": WRITE_KEY}, headers=good)[0] == 200
        assert post(collector, "/v1/batch", {"batch": [track()]}, headers=wrong)[0] == 401
        assert post(collector, "/v1/batch", {"batch": [track()], "writeKey": "x" + WRITE_KEY})[0] == 401
        not_json = b'{"writeKey": "' + WRITE_KEY.encode() + b'", NaN}'
        assert post(collector, "/v1/batch", body=not_json, headers=good)[0] == 400
        assert collector.count() == 3
        bodies = [orjson.dumps(m) for m in collector.messages()]
    assert caplog.records, "the collector should log at DEBUG (this test checks those lines)"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    captured = capfd.readouterr()
    # The key as sent in a Basic header is base64: look for that form too.
    forms = [WRITE_KEY] + [basic_auth(k)["Authorization"].split()[1] for k in (WRITE_KEY, WRITE_KEY + "x")]
    for text in (logged, captured.out, captured.err, *[b.decode() for b in bodies]):
        for form in forms:
            assert form not in text
    for path in tmp_path.iterdir():  # the database and its WAL
        assert WRITE_KEY.encode() not in path.read_bytes(), path.name
    assert WRITE_KEY not in repr(collector)


def test_real_segment_client_is_understood(collector, monkeypatch):
    import segment.analytics.client as analytics_client  # the test extra installs it: a failure if not
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = analytics_client.Client(
        "segment-key", host=collector.url, sync_mode=True, gzip=True, timeout=TIMEOUT, max_retries=0
    )
    client.track(user_id="u7", event="from-segment", properties={"n": 1})
    client.identify(user_id="u7", traits={"name": "Ada"})
    stored = collector.messages()
    assert [(m["type"], m.get("event"), m["userId"]) for m in stored] == [
        ("track", "from-segment", "u7"),
        ("identify", None, "u7"),
    ]
    collector.faults.reject_event("from-segment")
    with pytest.raises(Exception) as refused:
        client.track(user_id="u7", event="from-segment")
    assert getattr(refused.value, "status", None) == 400
    assert "from-segment" in str(refused.value)  # Segment's client reads our code/message fields


# -- limits and strict JSON -----------------------------------------------------------------


def test_gzip_body_is_accepted(collector):
    batch = [track("zipped-1"), track("zipped-2")]
    body = gzip.compress(orjson.dumps({"batch": batch}))
    status, _, reply = post(collector, "/v1/batch", body=body, headers={"Content-Encoding": "gzip"})
    assert (status, reply) == (200, {"success": True})
    assert collector.messages() == batch


def test_gzip_body_over_the_limit_once_decompressed_is_refused(collector):
    padding = "x" * (MAX_BODY_BYTES + 1)  # compresses to a few hundred bytes
    body = gzip.compress(orjson.dumps({"batch": [track()], "sentAt": padding}))
    assert len(body) < MAX_BODY_BYTES // 100
    status, _, reply = post(collector, "/v1/batch", body=body, headers={"Content-Encoding": "gzip"})
    assert status == 413
    assert reply["code"] == "body_too_large"
    assert collector.count() == 0


@pytest.mark.parametrize(
    "body, encoding",
    [(b"\x1f\x8b not gzip", "gzip"), (gzip.compress(b'{"batch": []}')[:-6], "gzip"), (b"{}", "br")],
)
def test_undecodable_bodies_are_refused(collector, body, encoding):
    status, _, reply = post(collector, "/v1/batch", body=body, headers={"Content-Encoding": encoding})
    assert 400 <= status < 500
    assert reply["success"] is False and reply["reason"]
    assert collector.count() == 0


def test_message_of_exactly_32kb_is_accepted(collector):
    message = message_of_size(MAX_MESSAGE_BYTES)
    assert post(collector, "/v1/batch", {"batch": [message]})[0] == 200
    assert collector.messages() == [message]


def test_message_over_32kb_refuses_the_whole_batch(collector):
    batch = [track("fine"), message_of_size(MAX_MESSAGE_BYTES + 1)]
    status, _, reply = post(collector, "/v1/batch", {"batch": batch})
    assert status == 400
    assert reply["code"] == "message_too_large"
    assert "batch[1]" in reply["reason"]
    assert collector.count() == 0
    assert collector.requests["refused"] == 1


def batch_body_of_size(size: int) -> bytes:
    """A valid /v1/batch body of exactly ``size`` bytes, every message under 32 KB."""
    batch = [message_of_size(30_000) for _ in range(size // 30_000)]
    document = {"batch": batch, "sentAt": ""}
    document["sentAt"] = "x" * (size - len(orjson.dumps(document)))
    body = orjson.dumps(document)
    assert len(body) == size
    return body


def test_body_of_exactly_500kb_is_accepted(collector):
    body = batch_body_of_size(MAX_BODY_BYTES)
    assert post(collector, "/v1/batch", body=body)[0] == 200
    assert collector.count() == MAX_BODY_BYTES // 30_000


def test_body_over_500kb_is_refused_and_the_connection_stays_usable(collector):
    conn = connect(collector)
    try:
        status, _, reply = send(conn, "/v1/batch", batch_body_of_size(MAX_BODY_BYTES + 1))
        assert status == 413
        assert reply["code"] == "body_too_large"
        assert collector.count() == 0
        assert send(conn, "/v1/batch", orjson.dumps({"batch": [track()]}))[0] == 200
    finally:
        conn.close()
    assert collector.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"batch": [{"type": "track", "event": "a", "properties": {"x": NaN}}]}',
        b'{"batch": [{"type": "track", "event": "a", "properties": {"x": Infinity}}]}',
        b'{"batch": [{"type": "track", "event": "a", "properties": {"x": -Infinity}}]}',
        b'{"batch": [{"type": "track", "event": "a", "properties": {"x": 1e999}}]}',
        b'{"batch": [{"type": "track", "event": "\xff\xfe"}]}',
        b'{"batch": [{"type": "track", "event": "a"}]} trailing',
        b'{"batch": [{"type": "track", "event": "a"},]}',
        b"",
    ],
    ids=["nan", "inf", "-inf", "overflow", "invalid-utf8", "trailing-garbage", "trailing-comma", "empty"],
)
def test_body_that_is_not_strict_json_is_refused_whole(collector, body):
    # Also with a fine message first: nothing of the batch may be stored.
    prefix = b'{"batch": ['
    good_first = prefix + b'{"type": "track", "event": "good"}, ' + body[len(prefix) :] if body else body
    for candidate in (body, good_first):
        status, _, reply = post(collector, "/v1/batch", body=candidate)
        assert status == 400
        assert reply["code"] == "invalid_json"
    assert collector.count() == 0


@pytest.mark.parametrize(
    "payload, reason_part",
    [
        ({}, "batch"),
        ({"batch": []}, "batch"),
        ({"batch": {"type": "track"}}, "batch"),
        ({"batch": [track(), "not an object"]}, "batch[1]"),
        ([track()], "object"),
    ],
)
def test_malformed_batches_are_refused(collector, payload, reason_part):
    status, _, reply = post(collector, "/v1/batch", payload)
    assert status == 400
    assert reason_part in reply["reason"]
    assert collector.count() == 0


def test_missing_content_length_is_refused(collector):
    with socket.create_connection(("127.0.0.1", collector.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 411 ")
    assert collector.count() == 0


def test_unknown_routes_answer_404(collector):
    status, _, reply = post(collector, "/v1/nothing-here", {"batch": [track()]})
    assert status == 404 and reply["code"] == "not_found"
    assert get(collector, "/v2/batch")[0] == 404
    assert collector.count() == 0


# -- connections ----------------------------------------------------------------------------


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (socket timeout: the test fails)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_keep_alive_carries_several_batches_on_one_connection(collector):
    conn = connect(collector)
    try:
        assert send(conn, "/v1/batch", orjson.dumps({"batch": [track("one")]}))[0] == 200
        first_socket = conn.sock
        assert first_socket is not None  # the server did not close it
        assert send(conn, "/v1/batch", orjson.dumps({"batch": [track("two")]}))[0] == 200
        assert conn.sock is first_socket
    finally:
        conn.close()
    assert [m["event"] for m in collector.messages()] == ["one", "two"]


def test_connection_close_is_honoured(collector):
    body = orjson.dumps({"batch": [track()]})
    request = (
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", collector.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        reply = read_until_closed(sock)  # returns only because the server closed
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in reply
    assert collector.count() == 1


def test_stop_ends_open_keep_alive_connections():
    collector = Collector().start()
    conn = connect(collector)
    try:
        assert send(conn, "/v1/batch", orjson.dumps({"batch": [track()]}))[0] == 200
        collector.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            send(conn, "/v1/batch", orjson.dumps({"batch": [track()]}))
    finally:
        conn.close()
        collector.close()


def test_idle_keep_alive_connections_are_closed_by_the_server():
    with Collector(idle_timeout=0.2) as collector:
        with socket.create_connection(("127.0.0.1", collector.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = read_until_closed(sock)  # returns only because the server closed the idle connection
    assert reply.startswith(b"HTTP/1.1 200 ")


def test_client_hanging_up_mid_body_stores_nothing_and_logs_no_error(collector, caplog):
    with socket.create_connection(("127.0.0.1", collector.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b'{"batch": [')
    assert post(collector, "/v1/batch", {"batch": [track("next")]})[0] == 200
    assert [m["event"] for m in collector.messages()] == ["next"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_concurrent_clients_are_all_stored(collector):
    threads_n, batches_n, batch_size = 8, 20, 10
    errors: List[BaseException] = []

    def client(worker: int) -> None:
        conn = connect(collector)
        try:
            for b in range(batches_n):
                batch = [track(f"w{worker}", messageId=f"{worker}-{b}-{i}") for i in range(batch_size)]
                status, _, _ = send(conn, "/v1/batch", orjson.dumps({"batch": batch}))
                assert status == 200
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            conn.close()

    workers = [threading.Thread(target=client, args=(w,)) for w in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT * 3)
    assert not any(worker.is_alive() for worker in workers)
    assert errors == []
    ids = collector.message_ids()
    assert len(ids) == threads_n * batches_n * batch_size
    expected = {f"{w}-{b}-{i}" for w in range(threads_n) for b in range(batches_n) for i in range(batch_size)}
    assert set(ids) == expected
    for w in range(threads_n):  # each connection's messages keep their order
        own = [i for i in ids if i.startswith(f"{w}-")]
        assert own == [f"{w}-{b}-{i}" for b in range(batches_n) for i in range(batch_size)]
    assert collector.requests["accepted"] == threads_n * batches_n


def test_wait_for_returns_once_enough_messages_arrived(collector):
    sender = threading.Thread(target=post, args=(collector, "/v1/batch", {"batch": [track(), track()]}))
    sender.start()
    assert collector.wait_for(2, timeout=TIMEOUT) == 2
    sender.join(TIMEOUT)
    assert collector.wait_for(3, timeout=0.01) == 2  # not reached: returns the count after the timeout


# -- reading back over HTTP -----------------------------------------------------------------


def test_received_route_pages_through_stored_messages(collector):
    batch = [track(f"e{i}") for i in range(5)]
    assert post(collector, "/v1/batch", {"batch": batch})[0] == 200
    status, _, page = get(collector, "/v1/received?after=0&limit=2")
    assert status == 200
    assert page == {"messages": batch[:2], "last": 2}
    _, _, rest = get(collector, f"/v1/received?after={page['last']}")
    assert rest == {"messages": batch[2:], "last": 5}
    _, _, empty = get(collector, "/v1/received?after=5")
    assert empty == {"messages": [], "last": 5}
    _, _, filtered = get(collector, "/v1/received?event=e3")
    assert filtered == {"messages": [batch[3]], "last": 4}
    assert get(collector, "/v1/received?after=-1")[0] == 400
    assert get(collector, "/v1/received?limit=lots")[0] == 400


def test_health(collector):
    assert post(collector, "/v1/batch", {"batch": [track()]})[0] == 200
    status, _, reply = get(collector, "/health")
    assert (status, reply) == (200, {"status": "ok", "messages": 1})


# -- fault injection ------------------------------------------------------------------------


def test_fault_status_answers_the_next_requests_then_stops(collector):
    collector.faults.add(status=503, times=3)
    conn = connect(collector)
    try:
        statuses = [send(conn, "/v1/batch", orjson.dumps({"batch": [track()]}))[0] for _ in range(4)]
    finally:
        conn.close()
    assert statuses == [503, 503, 503, 200]
    assert collector.count() == 1
    expected = {"accepted": 1, "refused": 0, "faulted": 3, "delayed": 0, "failed": 0, "busy": 0}
    assert collector.requests == expected
    assert collector.faults.pending == 0


def test_fault_429_carries_retry_after(collector):
    collector.faults.add(status=429, times=1, retry_after=1)
    status, headers, reply = post(collector, "/v1/batch", {"batch": [track()]})
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert reply["success"] is False
    assert collector.count() == 0
    assert post(collector, "/v1/batch", {"batch": [track()]})[0] == 200


def test_faults_are_used_in_the_order_added_and_apply_to_single_routes(collector):
    collector.faults.add(status=500).add(status=429, retry_after=0.25)
    first = post(collector, "/v1/track", {"event": "a"})
    second = post(collector, "/v1/batch", {"batch": [track()]})
    assert (first[0], second[0], second[1]["Retry-After"]) == (500, 429, "0.25")
    assert collector.count() == 0


def test_fault_drop_closes_the_connection_without_a_response(collector):
    collector.faults.add(drop=True, times=2)
    for _ in range(2):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            post(collector, "/v1/batch", {"batch": [track()]})
    assert collector.count() == 0
    assert collector.requests["faulted"] == 2
    assert post(collector, "/v1/batch", {"batch": [track()]})[0] == 200


def test_fault_delay_then_stores_normally(collector):
    collector.faults.add(delay=0.2, times=1)
    message = track("late")
    started = time.monotonic()
    status, _, _ = post(collector, "/v1/batch", {"batch": [message]})
    # A lower bound only: sleep() never returns early, so this cannot flake.
    assert time.monotonic() - started >= 0.2
    assert status == 200
    assert collector.messages() == [message]
    assert collector.requests["delayed"] == 1


def test_reject_event_refuses_whole_batches_until_cleared(collector):
    collector.faults.reject_event("poison")
    batch = [track("fine"), track("poison")]
    for _ in range(2):  # persists across requests
        status, _, reply = post(collector, "/v1/batch", {"batch": batch})
        assert status == 400
        assert "poison" in reply["reason"]
    assert post(collector, "/v1/track", {"event": "poison"})[0] == 400
    assert post(collector, "/v1/batch", {"batch": [track("fine")]})[0] == 200
    assert collector.count() == 1
    collector.faults.clear()
    assert post(collector, "/v1/batch", {"batch": batch})[0] == 200
    assert collector.count() == 3


def test_clear_forgets_queued_faults(collector):
    collector.faults.add(status=503, times=None)
    assert collector.faults.pending is None
    assert post(collector, "/v1/batch", {"batch": [track()]})[0] == 503
    assert post(collector, "/v1/batch", {"batch": [track()]})[0] == 503
    collector.faults.clear()
    assert post(collector, "/v1/batch", {"batch": [track()]})[0] == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"status": 503, "drop": True},
        {"status": 99},
        {"retry_after": 1},
        {"delay": -1},
        {"status": 503, "times": 0},
    ],
)
def test_nonsensical_faults_are_rejected(collector, kwargs):
    with pytest.raises(ValueError):
        collector.faults.add(**kwargs)
    assert collector.faults.pending == 0
