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

Three modules: :mod:`~eventtracking.collector.wire` (the limits, reading and decoding a body,
the write key), :mod:`~eventtracking.collector.handler` (the connection handler and the HTTP
server, which use the collector's public API only) and this one (:class:`Collector`: its
thread, start and stop, the counters). The names they define are importable from here.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Any, Dict, List, Optional

from eventtracking.collector.faults import FaultPlan
from eventtracking.collector.handler import (
    MESSAGE_ROUTES,
    OUTCOMES,
    CollectorHandler,
    CollectorHTTPServer,
    Outcome,
)
from eventtracking.collector.store import MessageStore
from eventtracking.collector.wire import (
    DEFAULT_RECEIVED_LIMIT,
    LINGER_BYTES,
    LINGER_SECONDS,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_GZIP_MEMBERS,
    MAX_HEAD_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_RECEIVED_LIMIT,
    Refusal,
    decode_body,
    encode_messages,
    key_from_basic_auth,
    parse_request_body,
    same_key,
)

__all__ = [
    "DEFAULT_RECEIVED_LIMIT",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_GZIP_MEMBERS",
    "MAX_HEAD_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_RECEIVED_LIMIT",
    "MESSAGE_ROUTES",
    "Collector",
    "CollectorHTTPServer",
    "CollectorHandler",
    "Outcome",
    "Refusal",
    "decode_body",
    "encode_messages",
    "is_loopback",
    "key_from_basic_auth",
    "parse_request_body",
    "remote_warning",
]

logger = logging.getLogger(__name__)


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
        self._counters: Dict[str, int] = dict.fromkeys(OUTCOMES, 0)
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

    def accepts_key(self, presented: Optional[str]) -> bool:
        """Whether ``presented`` is the write key (compared in constant time); True when no
        key is configured."""
        return self._write_key is None or same_key(presented, self._write_key)

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

    def count_request(self, outcome: Outcome) -> None:
        """Count one request's outcome in :attr:`requests` (the handler's call)."""
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
