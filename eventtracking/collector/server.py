"""A local HTTP server that speaks Segment's HTTP Tracking API and stores what it accepts.

Routes (all JSON):

* ``POST /v1/batch`` with ``{"batch": [messages], "sentAt": ..., "context": ..., "writeKey": ...}``;
  a batch-level ``context`` is merged under each message's own ``context``.
* ``POST /v1/track|identify|page|screen|group|alias`` with one message as the body; its
  ``type`` is taken from the route when missing.
* ``GET /v1/received?after=SEQ&limit=N[&event=NAME]`` -> ``{"messages": [...], "last": SEQ}``.
* ``GET /health`` -> ``{"status": "ok", "messages": N}``.

A message request is refused whole (nothing stored) with a JSON body
``{"success": false, "code": ..., "message": reason, "reason": reason}`` (``code`` and
``message`` are what Segment's own clients read) when: the write key is wrong or missing
and one is configured (401); the body is not strict JSON, has no non-empty batch, holds a
message that is not an object or is over 32 KB as compact JSON, or is over 500 KB once
decompressed (400); or it holds an event rejected by ``faults.reject_event`` (400).
Success is ``200 {"success": true}``.  The write key is never logged or stored.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import socket
import socketserver
import sys
import threading
import time
import zlib
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import orjson

from eventtracking.collector.faults import FaultPlan
from eventtracking.collector.store import MessageStore, as_text, make_row

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BODY_BYTES = 500 * 1024
# Bodies up to this size are read (then refused if too large) so the connection stays
# usable; beyond it the collector answers and closes instead of reading.
MAX_READ_BYTES = 16 * 1024 * 1024
DEFAULT_RECEIVED_LIMIT = 1000

# Route -> the message type it implies (None: a batch of typed messages).
MESSAGE_ROUTES: Dict[str, Optional[str]] = {
    "/v1/batch": None,
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/alias": "alias",
}

_SUCCESS = b'{"success":true}'


class Refusal(Exception):
    """A request the collector answers with a client error; nothing is stored."""

    def __init__(self, status: int, code: str, reason: str, close: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        # True when the request body was not (fully) read: the connection cannot be reused.
        self.close = close


def decode_body(raw: bytes, content_encoding: str) -> bytes:
    """Undo ``Content-Encoding`` (identity or gzip), refusing bodies over 500 KB decompressed."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        body = raw
    elif encoding in ("gzip", "x-gzip"):
        body = _gunzip(raw, MAX_BODY_BYTES + 1)
    else:
        raise Refusal(415, "unsupported_encoding", f"unsupported Content-Encoding {encoding[:40]!r}")
    if len(body) > MAX_BODY_BYTES:
        raise Refusal(
            400,
            "body_too_large",
            f"request body is over {MAX_BODY_BYTES} bytes (500 KB) once decompressed",
        )
    return body


def _gunzip(raw: bytes, max_length: int) -> bytes:
    # Decompress at most max_length bytes so a small gzip bomb costs nothing; members
    # may be concatenated (that is still one gzip stream).
    parts: List[bytes] = []
    produced = 0
    remaining = raw
    while remaining and produced < max_length:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(remaining, max_length - produced)
        except zlib.error as exc:
            raise Refusal(400, "invalid_gzip", f"body is not valid gzip: {exc}") from None
        parts.append(part)
        produced += len(part)
        if produced >= max_length:
            break
        if not inflater.eof:
            raise Refusal(400, "invalid_gzip", "gzip body is truncated")
        remaining = inflater.unused_data
    return b"".join(parts)


def parse_request_body(body: bytes, implied_type: Optional[str]) -> Tuple[List[Any], dict]:
    """Parse a message request: return ``(messages, document)``.

    ``implied_type`` None means a ``/v1/batch`` document; otherwise the body is one
    message and gets that ``type`` if it has none.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refusal(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Refusal(400, "invalid_request", "body must be a JSON object")
    if implied_type is None:
        batch = document.get("batch")
        if not isinstance(batch, list) or not batch:
            raise Refusal(400, "invalid_request", "body has no non-empty 'batch' list")
        return batch, document
    document.setdefault("type", implied_type)
    return [document], document


def encode_messages(
    messages: List[Any], batch_context: Optional[dict]
) -> List[Tuple[dict, bytes]]:
    """Check each message and return it with the compact JSON to store, in order.

    Removes any ``writeKey`` (a secret) from the messages.  Raises :class:`Refusal` for a
    message that is not an object or is over 32 KB.
    """
    dumps = orjson.dumps
    encoded: List[Tuple[dict, bytes]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Refusal(400, "invalid_request", f"batch[{index}] is not a JSON object")
        message.pop("writeKey", None)
        text = dumps(message)
        if len(text) > MAX_MESSAGE_BYTES:
            raise Refusal(
                400,
                "message_too_large",
                f"batch[{index}] is {len(text)} bytes, over the {MAX_MESSAGE_BYTES} byte (32 KB) limit",
            )
        if batch_context:
            own_context = message.get("context")
            # The message's own context wins over the batch's.
            message["context"] = (
                {**batch_context, **own_context} if isinstance(own_context, dict) else batch_context
            )
            text = dumps(message)
        encoded.append((message, text))
    return encoded


def key_from_basic_auth(header: str) -> Optional[str]:
    """The username (Segment's write key) of an HTTP Basic ``Authorization`` header, or None."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


def _same_key(presented: Optional[str], expected: str) -> bool:
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def _error_body(code: str, reason: str) -> bytes:
    return orjson.dumps({"success": False, "code": code, "message": reason, "reason": reason})


class CollectorHandler(BaseHTTPRequestHandler):
    """One connection to the collector: HTTP/1.1 keep-alive, one request at a time."""

    protocol_version = "HTTP/1.1"
    server_version = "eventtracking-collector/0.1"
    # Headers and body go out in two writes; without TCP_NODELAY a keep-alive client
    # could wait on a delayed ACK for every response.
    disable_nagle_algorithm = True
    server: CollectorHTTPServer

    def setup(self) -> None:
        # Idle keep-alive connections (and stalled uploads) give up after this long.
        self.timeout = self.server.collector.idle_timeout  # type: ignore[misc]  # per connection
        super().setup()

    # -- routes -----------------------------------------------------------------------

    def do_POST(self) -> None:
        collector = self.server.collector
        path = urlsplit(self.path).path
        if path not in MESSAGE_ROUTES and path.rstrip("/") in MESSAGE_ROUTES:
            path = path.rstrip("/")
        try:
            if path not in MESSAGE_ROUTES:
                self._discard_body()
                raise Refusal(404, "not_found", f"no route POST {path[:200]}")
            raw = self._read_body()
            if raw is None:  # the client went away mid-body
                self.close_connection = True
                return
            if self._inject_fault():
                return
            self._ingest(MESSAGE_ROUTES[path], path, raw)
        except Refusal as refusal:
            self._refuse(refusal)
        except (ConnectionError, TimeoutError):
            # The client went away or stalled mid-request: nobody is left to answer.
            self.close_connection = True
        except Exception:
            logger.exception("collector failed on POST %s", path[:200])
            collector._count("failed")
            self.close_connection = True
            self._send_json(500, _error_body("internal", "collector error"))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        store = self.server.collector.store
        if path == "/health":
            self._send_json(200, orjson.dumps({"status": "ok", "messages": store.count()}))
        elif path == "/v1/received":
            try:
                after, limit, event = _received_query(parts.query)
            except ValueError as exc:
                self._send_json(400, _error_body("invalid_request", str(exc)))
                return
            rows = store.rows(after=after, limit=limit, event=event)
            last = rows[-1][0] if rows else after
            # Stored bodies are JSON already: splice them instead of decoding and re-encoding.
            payload = b"".join(
                (
                    b'{"messages":[',
                    ",".join(body for _, _, body in rows).encode("utf-8"),
                    b'],"last":',
                    str(last).encode(),
                    b"}",
                )
            )
            self._send_json(200, payload)
        else:
            self._send_json(404, _error_body("not_found", f"no route GET {path[:200]}"))

    # -- request handling ---------------------------------------------------------------

    def _read_body(self) -> Optional[bytes]:
        """The raw request body, or None if the connection ended before all of it came."""
        transfer_encoding = self.headers.get("Transfer-Encoding", "").strip().lower()
        if transfer_encoding:
            if transfer_encoding != "chunked":
                raise Refusal(501, "unsupported_transfer_encoding", "only chunked is supported", close=True)
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise Refusal(411, "length_required", "Content-Length is required", close=True)
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            raise Refusal(400, "invalid_request", "bad Content-Length", close=True)
        if length > MAX_READ_BYTES:
            raise Refusal(400, "body_too_large", "request body is far over 500 KB", close=True)
        raw = self.rfile.read(length)
        return raw if len(raw) == length else None

    def _discard_body(self) -> None:
        # Read an unwanted body so the connection can carry the next request, if possible.
        try:
            if self._read_body() is None:
                self.close_connection = True
        except Refusal:
            self.close_connection = True

    def _read_chunked(self) -> Optional[bytes]:
        chunks: List[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            if not size_line:
                return None
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise Refusal(400, "invalid_request", "bad chunk size", close=True) from None
            if size == 0:
                # Skip any trailer fields up to the blank line that ends the message.
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_READ_BYTES:
                raise Refusal(400, "body_too_large", "request body is far over 500 KB", close=True)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                return None
            chunks.append(chunk)
            self.rfile.readline(3)  # the CRLF after each chunk

    def _inject_fault(self) -> bool:
        """Apply the next queued fault; True if it answered (or dropped) the request."""
        collector = self.server.collector
        fault = collector.faults.take()
        if fault is None:
            return False
        if fault.delay:
            collector._count("delayed")
            time.sleep(fault.delay)
        if fault.drop:
            collector._count("faulted")
            logger.info("fault: dropping a request without a response")
            self.close_connection = True
            return True
        if fault.status is not None:
            collector._count("faulted")
            logger.info("fault: answering %d", fault.status)
            headers: List[Tuple[str, str]] = []
            if fault.retry_after is not None:
                # Whole seconds as HTTP says; a fraction is passed through so tests can stay fast.
                seconds = fault.retry_after
                whole = math.isfinite(seconds) and seconds == int(seconds)
                value = str(int(seconds)) if whole else str(seconds)
                headers.append(("Retry-After", value))
            if 200 <= fault.status < 300:
                payload = _SUCCESS
            else:
                payload = _error_body("injected_fault", f"injected fault: HTTP {fault.status}")
            self._send_json(fault.status, payload, headers)
            return True
        return False

    def _ingest(self, implied_type: Optional[str], route: str, raw: bytes) -> None:
        collector = self.server.collector
        expected_key = collector._write_key
        authorization = self.headers.get("Authorization")
        # HTTP Basic wins over a writeKey in the body; the body is only consulted without it.
        if expected_key is not None and authorization is not None:
            if not _same_key(key_from_basic_auth(authorization), expected_key):
                raise Refusal(401, "unauthorized", "wrong write key")
        body = decode_body(raw, self.headers.get("Content-Encoding", ""))
        messages, document = parse_request_body(body, implied_type)
        body_key = document.pop("writeKey", None)
        if expected_key is not None and authorization is None and not _same_key(body_key, expected_key):
            raise Refusal(401, "unauthorized", "missing or wrong write key")
        batch_context = document.get("context") if implied_type is None else None
        encoded = encode_messages(messages, batch_context if isinstance(batch_context, dict) else None)
        rejected = collector.faults.rejected_event_in(message for message, _ in encoded)
        if rejected is not None:
            reason = f"batch refused: it holds a message with rejected event {rejected!r}"
            raise Refusal(400, "rejected_event", reason)
        received_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        sent_at = as_text(document.get("sentAt"))
        collector.store.append(
            [make_row(message, text.decode(), received_at, sent_at, route) for message, text in encoded]
        )
        collector._count("accepted")
        self._send_json(200, _SUCCESS)

    # -- responses ------------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> None:
        self.server.collector._count("refused")
        logger.info("refused %s %s: %d %s", self.command, self.path[:200], refusal.status, refusal.reason)
        if refusal.close:
            self.close_connection = True
        headers = [("WWW-Authenticate", 'Basic realm="segment"')] if refusal.status == 401 else []
        self._send_json(refusal.status, _error_body(refusal.code, refusal.reason), headers)

    def _send_json(self, status: int, payload: bytes, headers: Iterable[Tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines and statuses only; the write key travels in a header and the body,
        # neither of which is logged.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", self.address_string(), format % args)


def _received_query(query: str) -> Tuple[int, int, Optional[str]]:
    params = parse_qs(query)

    def single(name: str) -> Optional[str]:
        values = params.get(name)
        return values[-1] if values else None

    try:
        after = int(single("after") or 0)
        limit = int(single("limit") or DEFAULT_RECEIVED_LIMIT)
    except ValueError:
        raise ValueError("after and limit must be integers") from None
    if not 0 <= after < 2**63 or not 1 <= limit < 2**63:  # SQLite integers are 64-bit
        raise ValueError("after must be >= 0 and limit >= 1 (64-bit integers)")
    return after, limit, single("event")


class CollectorHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server that remembers its open connections so stop() can end them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], collector: Collector) -> None:
        self.collector = collector
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, CollectorHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host name (getfqdn): slow and useless here.
        socketserver.TCPServer.server_bind(self)
        host, self.server_port = self.server_address[:2]
        self.server_name = str(host)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End every open keep-alive connection (their handler threads then exit)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            # A client hanging up while being answered is routine, not a collector fault.
            logger.debug("connection from %s ended: %r", client_address, error)
        else:
            logger.exception("collector connection from %s failed", client_address)


class Collector:
    """A Segment-compatible collector on loopback, storing what it accepts in SQLite.

    ``db_path`` None or ``":memory:"`` keeps messages in memory; ``port`` 0 picks a free
    port (kept across stop()/start(), so a restarted collector comes back at the same
    ``url``); ``write_key`` None accepts any key or none, otherwise requests must present
    it (HTTP Basic username, or ``writeKey`` in the body when there is no Basic header).
    Stored messages stay readable after :meth:`stop`; :meth:`close` also releases them.
    """

    def __init__(
        self,
        db_path: Optional[str] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        write_key: Optional[str] = None,
        idle_timeout: float = 60.0,
    ) -> None:
        self.db_path = db_path
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self._write_key = write_key
        self.faults = FaultPlan()
        self.store = MessageStore(db_path)
        self._counters = {"accepted": 0, "refused": 0, "faulted": 0, "delayed": 0, "failed": 0}
        self._counters_lock = threading.Lock()
        self._server: Optional[CollectorHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return "<Collector {} db={!r}>".format(state, self.db_path or ":memory:")

    def start(self) -> Collector:
        """Bind and serve in a background thread; returns self.  No-op if already running."""
        if self._server is not None:
            return self
        server = CollectorHTTPServer((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how quickly stop() is noticed
            name=f"collector-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("collector listening on %s", self.url)
        return self

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (the port is known once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def messages(self, event: Optional[str] = None, limit: Optional[int] = None) -> List[dict]:
        """Decoded stored messages in arrival order, optionally only those named ``event``."""
        return self.store.messages(limit=limit, event=event)

    def message_ids(self) -> List[Optional[str]]:
        """``messageId`` of every stored message in arrival order, duplicates included."""
        return self.store.message_ids()

    def count(self) -> int:
        """Number of stored messages, duplicates included."""
        return self.store.count()

    def wait_for(self, count: int, timeout: float = 10.0) -> int:
        """Wait until at least ``count`` messages are stored (or ``timeout``); return the count."""
        return self.store.wait_for_count(count, timeout)

    @property
    def requests(self) -> Dict[str, int]:
        """Counters of POST requests (a copy).

        ``accepted``: stored, answered 200.  ``refused``: answered 4xx by validation or
        ``reject_event`` (401, 400, 404, ...).  ``faulted``: answered by an injected status
        or dropped.  ``delayed``: held by an injected delay (also counted by outcome).
        ``failed``: collector errors (500).
        """
        with self._counters_lock:
            return dict(self._counters)

    def _count(self, outcome: str) -> None:
        with self._counters_lock:
            self._counters[outcome] += 1

    def stop(self) -> None:
        """Stop serving and end open connections; stored messages stay readable."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        logger.info("collector on port %d stopped", self.port)

    def close(self) -> None:
        """Stop, then release the database (an in-memory store loses its messages)."""
        self.stop()
        self.store.close()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
