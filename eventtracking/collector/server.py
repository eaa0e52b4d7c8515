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
and one is configured (401); the body is not strict JSON, nests deeper than 254 levels, has
no non-empty batch, holds a message that is not an object or is over 32 KB as compact JSON,
or is over 500 KB raw or once decompressed (413, the Content-Length checked before any of the
body is read); or it holds an event rejected by
``faults.reject_event`` (400). Every bad input gets a 4xx, never a 500 (clients retry 5xx).
Success is ``200 {"success": true}``.  The write key is never logged or stored.

Safe to leave running (the limits, each tested with its measured figure):

* It listens on loopback unless told otherwise: another address needs ``allow_remote=True``
  (``eventtracking collect --allow-remote``) and is warned about loudly.
* Once a write key is set, every route needs it (``GET /v1/received`` and ``/health`` too), as
  the HTTP Basic username, checked from the headers before any body is read or decoded; a
  ``writeKey`` in the body then counts for nothing (without a key it is accepted and dropped).
* At most :data:`MAX_CONNECTIONS` connections at once (more are answered 503 and closed at
  once, without a thread); per request at most :data:`MAX_HEAD_BYTES` of request line and
  headers and :data:`MAX_BODY_BYTES` of body are read (a longer body is refused unread and
  the connection closed with a lingering close: the answer is sent, the sending side shut, and
  what the client still sends is read and discarded for at most :data:`LINGER_SECONDS` and
  :data:`LINGER_BYTES`, so that the client can read the answer instead of a connection reset),
  a gzip body of at most :data:`MAX_GZIP_MEMBERS` members inflates to
  at most 500 KB, and ``/v1/received`` answers at most :data:`MAX_RECEIVED_LIMIT` messages.
* A connection must deliver each complete request within ``idle_timeout`` seconds of opening
  or of the previous answer (a total deadline, not a per-read timeout): a trickling client
  is cut off then.
* Database files are created 0600 (SQLite gives its ``-wal``/``-shm`` files the same mode).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import http.client
import ipaddress
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
from eventtracking.deadline import DEADLINES, shut_down

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BODY_BYTES = 500 * 1024  # raw, and once decompressed
MAX_HEAD_BYTES = 128 * 1024  # request line and headers of one request (the line alone: 64 KiB)
MAX_CONNECTIONS = 32
# A connection refused mid-request is drained this long, and of at most this much, before it
# is closed: closing with unread bytes would reset it and lose the answer for the client.
LINGER_SECONDS = 5.0
LINGER_BYTES = 8 * 1024 * 1024
MAX_GZIP_MEMBERS = 16  # a client sends one; many tiny members would make inflating quadratic
MAX_JSON_DEPTH = 254  # what orjson can encode back; deeper valid JSON is refused with a 400
DEFAULT_RECEIVED_LIMIT = 1000
MAX_RECEIVED_LIMIT = 1000  # a larger limit is clamped: page on with ``after``

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
_TOO_LARGE = "request body is over 500 KB (512000 bytes)"


class _HeadBudget:
    """The connection's reader, with a byte budget for ``readline`` (request line, headers,
    trailers): past it, ``LineTooLong`` (the stdlib answers 431). The stdlib alone would read
    100 header lines of 64 KiB each. ``raw`` reads without the budget (chunk sizes)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.budget = MAX_HEAD_BYTES

    def readline(self, limit: int = -1) -> bytes:
        allowed = self.budget + 1 if limit is None or limit < 0 else min(limit, self.budget + 1)
        line = self.raw.readline(allowed)
        self.budget -= len(line)
        if self.budget < 0:
            raise http.client.LineTooLong(f"request head over {MAX_HEAD_BYTES} bytes")
        return line

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return self.raw.closed


def _busy_answer() -> bytes:
    body = _error_body("busy", f"too many connections (at most {MAX_CONNECTIONS})")
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


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
            413,
            "body_too_large",
            f"request body is over {MAX_BODY_BYTES} bytes (500 KB) once decompressed",
        )
    return body


def _gunzip(raw: bytes, max_length: int) -> bytes:
    # Decompress at most max_length bytes so a small gzip bomb costs nothing; members
    # may be concatenated (that is still one gzip stream), up to MAX_GZIP_MEMBERS of them:
    # each member copies what follows it, so unbounded members would cost quadratic time.
    parts: List[bytes] = []
    produced = 0
    remaining = raw
    members = 0
    while remaining and produced < max_length:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise Refusal(400, "invalid_gzip", f"gzip body has more than {MAX_GZIP_MEMBERS} members")
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


def encode_messages(messages: List[Any], batch_context: Optional[dict]) -> List[Tuple[dict, bytes]]:
    """Check each message and return it with the compact JSON to store, in order.

    Removes any ``writeKey`` (a secret) from the messages.  Raises :class:`Refusal` for a
    message that is not an object or is over 32 KB.
    """
    encoded: List[Tuple[dict, bytes]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Refusal(400, "invalid_request", f"batch[{index}] is not a JSON object")
        message.pop("writeKey", None)
        text = _dumps(message, index)
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
            text = _dumps(message, index)
        encoded.append((message, text))
    return encoded


def _dumps(message: dict, index: int) -> bytes:
    try:
        return orjson.dumps(message)
    except orjson.JSONEncodeError:  # parsed, but nested deeper than orjson writes back
        raise Refusal(
            400, "invalid_request", f"batch[{index}] nests deeper than {MAX_JSON_DEPTH} levels"
        ) from None


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
        self.rfile = _HeadBudget(self.rfile)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        # One total deadline for the whole request (idle wait, head, body, answer): the
        # per-read timeout alone lets a client trickling a byte at a time stay forever.
        cut_off = functools.partial(shut_down, self.connection)
        token = DEADLINES.arm(self.server.collector.idle_timeout, cut_off)
        self.rfile.budget = MAX_HEAD_BYTES  # type: ignore[attr-defined]
        try:
            super().handle_one_request()
        finally:
            DEADLINES.disarm(token)

    def _check_key(self) -> None:
        """Refuse (401) unless no key is configured or the Basic username is the key; checked
        from the headers alone, before any body is read."""
        expected = self.server.collector._write_key
        if expected is None:
            return
        authorization = self.headers.get("Authorization")
        if authorization is None:
            raise Refusal(401, "unauthorized", "missing write key (send it as the HTTP Basic username)", True)
        if not _same_key(key_from_basic_auth(authorization), expected):
            raise Refusal(401, "unauthorized", "wrong write key", close=True)

    # -- routes -----------------------------------------------------------------------

    def do_POST(self) -> None:
        collector = self.server.collector
        path = urlsplit(self.path).path
        if path not in MESSAGE_ROUTES and path.rstrip("/") in MESSAGE_ROUTES:
            path = path.rstrip("/")
        try:
            self._check_key()
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
        try:
            self._check_key()
        except Refusal as refusal:
            refusal.close = False  # a GET has no body: the connection stays usable
            self._refuse(refusal)
            return
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
        if length > MAX_BODY_BYTES:
            raise Refusal(413, "body_too_large", _TOO_LARGE, close=True)
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
        body = bytearray()  # one buffer: a list of 1-byte chunks would cost 40 bytes each
        while True:
            size_line = self.rfile.raw.readline(1024)  # type: ignore[attr-defined]
            if not size_line:
                return None
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise Refusal(400, "invalid_request", "bad chunk size", close=True) from None
            if size == 0:
                # Skip any trailer fields up to the blank line that ends the message.
                self.rfile.budget = MAX_HEAD_BYTES  # type: ignore[attr-defined]
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(body)
            if size < 0 or len(body) + size > MAX_BODY_BYTES:
                raise Refusal(413, "body_too_large", _TOO_LARGE, close=True)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                return None
            body += chunk
            self.rfile.raw.readline(3)  # type: ignore[attr-defined]  # the CRLF after each chunk

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
        # The key was checked from the headers before the body was read (see _authorized); a
        # writeKey in the body is a secret to drop, not a credential.
        body = decode_body(raw, self.headers.get("Content-Encoding", ""))
        messages, document = parse_request_body(body, implied_type)
        document.pop("writeKey", None)
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
        if refusal.close:
            self._linger()

    def _linger(self) -> None:
        """A lingering close: the answer is out; shut the sending side and read and discard what
        the client still sends (a body refused unread) until it stops, for at most
        LINGER_SECONDS and LINGER_BYTES. Closing at once, with unread bytes, would reset the
        connection, and a client still sending would never read the answer (and retry)."""
        sock = self.connection
        try:
            socket.socket.shutdown(sock, socket.SHUT_WR)  # the plain socket's (see shut_down)
            deadline = time.monotonic() + LINGER_SECONDS
            left = LINGER_BYTES
            while left > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                data = sock.recv(min(left, 256 * 1024))
                if not data:
                    break  # the client closed its side: it has read the answer
                left -= len(data)
        except OSError:  # reset, timed out or cut off by the request's deadline: done either way
            pass

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


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def remote_warning(url: str, has_key: bool) -> str:
    """The loud line for a collector listening beyond loopback."""
    exposure = (
        "anyone who can reach it and knows the write key can post to it and read what it stored"
        if has_key
        else "there is NO write key: anyone who can reach it can post to it and read everything it stored"
    )
    return (
        f"WARNING: the collector listens on {url}, beyond loopback: {exposure}; its traffic is "
        "cleartext HTTP. It is a test peer, not a production server."
    )


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
    return after, min(limit, MAX_RECEIVED_LIMIT), single("event")


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
            full = len(self._connections) >= self.collector.max_connections
            if not full:
                self._connections.add(request)
        if full:
            # No thread for it: a short answer fits the socket's buffer, then it is closed.
            self.collector._count("busy")
            try:
                request.settimeout(0)
                request.sendall(_busy_answer())
                # Take what already arrived (bounded), so that closing sends no reset that
                # could discard the answer before the client reads it.
                for _ in range(16):
                    if not request.recv(65536):
                        break
            except OSError:
                pass
            socketserver.TCPServer.shutdown_request(self, request)
            return
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
    ``url``); ``write_key`` None accepts any key or none, otherwise every request must
    present it as the HTTP Basic username (a ``writeKey`` in the body does not count).
    Stored messages stay readable after :meth:`stop`; :meth:`close` also releases them.

    ``host`` must be a loopback address unless ``allow_remote=True``, which logs a warning
    when the collector starts (anyone who can reach the address can then post, and, without
    a write key, read everything stored). ``idle_timeout`` is the total time a connection has
    to deliver each complete request; ``max_connections`` bounds open connections. See the
    module docstring for every limit.
    """

    def __init__(
        self,
        db_path: Optional[str] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        write_key: Optional[str] = None,
        idle_timeout: float = 60.0,
        *,
        allow_remote: bool = False,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"the collector listens on loopback only: {host!r} is not a loopback address "
                "(pass allow_remote=True, or --allow-remote on the command line, to listen there)"
            )
        self.db_path = db_path
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.allow_remote = allow_remote
        self.max_connections = max_connections
        self._write_key = write_key
        self.faults = FaultPlan()
        self.store = MessageStore(db_path)
        self._counters = {"accepted": 0, "refused": 0, "faulted": 0, "delayed": 0, "failed": 0, "busy": 0}
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
        if not is_loopback(self.host):
            logger.warning(remote_warning(self.url, self.has_write_key))
        return self

    @property
    def has_write_key(self) -> bool:
        """Whether requests must present a write key (the key itself is never exposed)."""
        return self._write_key is not None

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
        ``failed``: collector errors (500).  ``busy``: connections turned away with a 503
        because ``max_connections`` were open.
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
