"""The collector's HTTP side: one handler per connection, and the server that bounds them.

:class:`CollectorHandler` routes a request, checks the write key, reads and decodes the body
(:mod:`eventtracking.collector.wire`), applies an injected fault, stores what it accepts and
answers. :class:`CollectorHTTPServer` turns away connections over the limit and ends the open
ones on stop. Both reach the collector only through :class:`CollectorState`, the public API of
:class:`~eventtracking.collector.Collector`.
"""

from __future__ import annotations

import functools
import logging
import math
import socket
import socketserver
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterable, List, Literal, Optional, Protocol, Tuple
from urllib.parse import urlsplit

import orjson

from eventtracking.collector.faults import FaultPlan
from eventtracking.collector.store import MessageStore, as_text, make_row
from eventtracking.collector.wire import (
    LINGER_BYTES,
    LINGER_SECONDS,
    HeadBudget,
    Refusal,
    busy_answer,
    decode_body,
    encode_messages,
    error_body,
    key_from_basic_auth,
    parse_request_body,
    read_body,
    received_query,
)
from eventtracking.deadline import DEADLINES, shut_down

# The collector logs under one name, whichever of its modules writes the line.
logger = logging.getLogger("eventtracking.collector.server")

# What became of a request, as counted in ``Collector.requests``.
Outcome = Literal["accepted", "refused", "faulted", "delayed", "failed", "busy"]
OUTCOMES: Tuple[Outcome, ...] = ("accepted", "refused", "faulted", "delayed", "failed", "busy")

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


class CollectorState(Protocol):
    """What the handler and the HTTP server use of the collector (its public API)."""

    @property
    def idle_timeout(self) -> float: ...

    @property
    def max_connections(self) -> int: ...

    @property
    def faults(self) -> FaultPlan: ...

    @property
    def store(self) -> MessageStore: ...

    @property
    def has_write_key(self) -> bool: ...

    def accepts_key(self, presented: Optional[str]) -> bool:
        """Whether ``presented`` is the configured write key (True when none is configured)."""
        ...

    def count_request(self, outcome: Outcome) -> None:
        """Count one request's outcome."""
        ...


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
        self.reader = HeadBudget(self.rfile)
        self.rfile = self.reader  # type: ignore[assignment]  # the stdlib reads the head through it

    def handle_one_request(self) -> None:
        # One total deadline for the whole request (idle wait, head, body, answer): the
        # per-read timeout alone lets a client trickling a byte at a time stay forever.
        cut_off = functools.partial(shut_down, self.connection)
        token = DEADLINES.arm(self.server.collector.idle_timeout, cut_off)
        self.reader.renew()
        try:
            super().handle_one_request()
        finally:
            DEADLINES.disarm(token)

    def _check_key(self) -> None:
        """Refuse (401) unless no key is configured or the Basic username is the key; checked
        from the headers alone, before any body is read."""
        collector = self.server.collector
        if not collector.has_write_key:
            return
        authorization = self.headers.get("Authorization")
        if authorization is None:
            raise Refusal(401, "unauthorized", "missing write key (send it as the HTTP Basic username)", True)
        if not collector.accepts_key(key_from_basic_auth(authorization)):
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
            raw = read_body(self.headers, self.reader)
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
            collector.count_request("failed")
            self.close_connection = True
            self._send_json(500, error_body("internal", "collector error"))

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
                after, limit, event = received_query(parts.query)
            except ValueError as exc:
                self._send_json(400, error_body("invalid_request", str(exc)))
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
            self._send_json(404, error_body("not_found", f"no route GET {path[:200]}"))

    # -- request handling ---------------------------------------------------------------

    def _discard_body(self) -> None:
        # Read an unwanted body so the connection can carry the next request, if possible.
        try:
            if read_body(self.headers, self.reader) is None:
                self.close_connection = True
        except Refusal:
            self.close_connection = True

    def _inject_fault(self) -> bool:
        """Apply the next queued fault; True if it answered (or dropped) the request."""
        collector = self.server.collector
        fault = collector.faults.take()
        if fault is None:
            return False
        if fault.delay:
            collector.count_request("delayed")
            time.sleep(fault.delay)
        if fault.drop:
            collector.count_request("faulted")
            logger.info("fault: dropping a request without a response")
            self.close_connection = True
            return True
        if fault.status is not None:
            collector.count_request("faulted")
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
                payload = error_body("injected_fault", f"injected fault: HTTP {fault.status}")
            self._send_json(fault.status, payload, headers)
            return True
        return False

    def _ingest(self, implied_type: Optional[str], route: str, raw: bytes) -> None:
        collector = self.server.collector
        # The key was checked from the headers before the body was read (see _check_key); a
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
        collector.count_request("accepted")
        self._send_json(200, _SUCCESS)

    # -- responses ------------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> None:
        self.server.collector.count_request("refused")
        logger.info("refused %s %s: %d %s", self.command, self.path[:200], refusal.status, refusal.reason)
        if refusal.close:
            self.close_connection = True
        headers = [("WWW-Authenticate", 'Basic realm="segment"')] if refusal.status == 401 else []
        self._send_json(refusal.status, error_body(refusal.code, refusal.reason), headers)
        if refusal.close:
            linger(self.connection)

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


def linger(sock: socket.socket) -> None:
    """A lingering close: the answer is out; shut the sending side and read and discard what
    the client still sends (a body refused unread) until it stops, for at most
    LINGER_SECONDS and LINGER_BYTES. Closing at once, with unread bytes, would reset the
    connection, and a client still sending would never read the answer (and retry)."""
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


class CollectorHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server that remembers its open connections so stop() can end them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], collector: CollectorState) -> None:
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
            self.collector.count_request("busy")
            try:
                request.settimeout(0)
                request.sendall(busy_answer())
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
