"""POST ready-made batches to a Segment-compatible ``/v1/batch`` over one keep-alive connection.

The transport knows HTTP and nothing of retries: it returns what happened (a status, the
server's ``Retry-After``, a short reason) and the sender decides. The write key goes into the
``Authorization`` header only; it is never part of a repr, a log line, an exception or a
reason here (a server echoing it back gets it replaced by ``<write key>``).

Contract of :meth:`HttpTransport.post`:

* Never raises for network or HTTP errors; a network error is ``Answer(NETWORK_ERROR, ...)``
  whose reason names the error and the host: ``network error: connection refused
  (http://127.0.0.1:9)``.
* One total deadline per request, ``timeout`` seconds from the first byte sent to the last
  byte of the answer read (a server trickling its answer, or reading the body slowly, is cut
  off then: :mod:`eventtracking.deadline` shuts the socket down): ``network error: no
  complete answer within 15 s (...)``. The connection is then closed, not reused.
* Reads at most :data:`MAX_ANSWER_BYTES` of an answer's body, undecoded (no gzip bomb can
  inflate here); a longer body closes the connection instead of being read on.
* Redirects are never followed (the write key must not travel to another address): a 3xx
  is returned with a reason naming where it points.
* A cleartext ``http://`` host that is not loopback is warned about once per process and
  host: the write key travels in Basic auth, readable by anyone on the path.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import functools
import gzip
import ipaddress
import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

import orjson
import urllib3

from eventtracking import __version__
from eventtracking.deadline import DEADLINES, shut_down

log = logging.getLogger(__name__)

NETWORK_ERROR = 0  # the status reported when no HTTP answer arrived
MAX_ANSWER_BYTES = 64 * 1024  # an error answer is a short JSON object; more is not read
_REASON_CHARS = 200
_READ_CHUNK = 16 * 1024
_cleartext_warned: set[str] = set()
_cleartext_lock = threading.Lock()


@dataclass(frozen=True)
class Answer:
    """What one POST came to: ``status`` 0 means no HTTP answer (network error)."""

    status: int
    retry_after: Optional[float] = None
    reason: str = ""

    @property
    def detail(self) -> str:
        """One line saying what happened: ``HTTP 401: wrong write key``, or for a network
        error its reason as it is (``network error: connection refused (http://host:9)``)."""
        if self.status == NETWORK_ERROR:
            return self.reason or "network error"
        return f"HTTP {self.status}: {self.reason}" if self.reason else f"HTTP {self.status}"


def batch_body(messages: list[bytes]) -> bytes:
    """Join encoded messages into a batch body with ``sentAt``; the messages are not re-encoded.

    The body (up to 500 KB) is made in one join: adding the envelope to a joined body copies it
    again for each piece, and each copy is a fresh large allocation, which cost 1.1 ms per full
    batch on the sender thread, holding the GIL, against 0.02 ms for one join."""
    sent_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    tail = b'],"sentAt":"' + sent_at.encode() + b'"}'
    if len(messages) < 2:
        return b'{"batch":[' + b"".join(messages) + tail
    return b",".join([b'{"batch":[' + messages[0], *messages[1:-1], messages[-1] + tail])


class _TrackingPool:
    """Remembers the connection it last handed out, so that a deadline can shut it down."""

    current: Any = None

    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        self.current = conn
        return conn


class _HTTPPool(_TrackingPool, urllib3.HTTPConnectionPool):
    pass


class _HTTPSPool(_TrackingPool, urllib3.HTTPSConnectionPool):
    pass


class HttpTransport:
    """One connection pool of size one to ``{host}/v1/batch``. Used by one sender thread."""

    def __init__(self, host: str, write_key: str, *, gzip_level: int = 0, timeout: float = 15.0) -> None:
        parts = urlsplit(host if "://" in host else "https://" + host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"host must be an http(s) URL, got {host!r}")
        self._scheme = parts.scheme
        self._hostname = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/v1/batch"
        netloc = f"[{self._hostname}]" if ":" in self._hostname else self._hostname
        self.base_url = f"{self._scheme}://{netloc}" + (f":{self._port}" if self._port else "")
        self._gzip_level = gzip_level
        self.deadline = timeout
        self._timeout = urllib3.Timeout(connect=min(timeout, 5.0), read=timeout)
        self._write_key = write_key
        token = base64.b64encode(write_key.encode() + b":").decode()
        self._headers = {
            "Authorization": "Basic " + token,
            "Content-Type": "application/json",
            "User-Agent": f"eventtracking-segment/{__version__}",
        }
        if gzip_level:
            self._headers["Content-Encoding"] = "gzip"
        self._pool: Optional[urllib3.HTTPConnectionPool] = None
        if self._scheme == "http" and not _is_loopback(self._hostname):
            _warn_cleartext(self.base_url)

    def __repr__(self) -> str:
        return f"HttpTransport({self.base_url}{self._path})"

    def post(self, body: bytes) -> Answer:
        """POST one batch body within the total deadline; never raises (see the module docstring)."""
        if self._gzip_level:
            body = gzip.compress(body, compresslevel=self._gzip_level)
        if self._pool is None:
            pool_class = _HTTPSPool if self._scheme == "https" else _HTTPPool
            self._pool = pool_class(self._hostname, self._port, maxsize=1, block=False)
        pool = self._pool
        expired = threading.Event()
        token = DEADLINES.arm(self.deadline, functools.partial(_cut_off, pool, expired))
        complete = False
        try:
            response = pool.urlopen(
                "POST",
                self._path,
                body=body,
                headers=self._headers,
                retries=False,
                timeout=self._timeout,
                redirect=False,
                preload_content=False,
                decode_content=False,
            )
            try:
                text, complete = _read_answer(response)
            finally:
                if not complete or expired.is_set():
                    response.close()  # unread bytes would be taken for the next answer
                response.release_conn()
        except Exception as error:  # urllib3's, or whatever a socket shut by the deadline raises
            what = self._too_late() if expired.is_set() else describe_network_error(error)
            return Answer(NETWORK_ERROR, reason=self._network(what))
        finally:
            DEADLINES.disarm(token)
        if expired.is_set():  # the answer came, but only after the deadline cut the connection
            return Answer(NETWORK_ERROR, reason=self._network(self._too_late()))
        status = response.status
        if status < 300:
            return Answer(status)
        if status < 400:
            reason = self._redirect_reason(response.headers.get("Location"))
        else:
            reason = self._scrub(_answer_reason(text))
        return Answer(status, _retry_after(response.headers.get("Retry-After")), reason)

    def _too_late(self) -> str:
        return f"no complete answer within {self.deadline:g} s"

    def _network(self, what: str) -> str:
        return f"network error: {what} ({self.base_url})"

    def _redirect_reason(self, location: Optional[str]) -> str:
        target = "elsewhere"
        if location:
            parts = urlsplit(location.strip())
            where = f"{parts.scheme}://{parts.hostname or ''}{parts.path}" if parts.hostname else parts.path
            target = self._scrub(" ".join(where.split())[:_REASON_CHARS]) or "elsewhere"
        return (
            f"{self.base_url} redirects to {target}; redirects are not followed (the write key "
            "must not travel to another address): set host to the final address"
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._write_key, "<write key>") if self._write_key in text else text

    def reset(self) -> None:
        """Forget the connection (after ``fork()``: the socket belongs to the parent)."""
        self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def describe_network_error(error: BaseException) -> str:
    """A short, lower-case description of why no answer came: ``connection refused``,
    ``name or service not known``, ``timed out``, ``TLS: certificate verify failed: ...``."""
    chain: list[BaseException] = []
    cause: Optional[BaseException] = error
    while cause is not None and all(cause is not seen for seen in chain):
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in chain:  # the most specific first: urllib3's NewConnectionError is a "timeout" too
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: {cause.verify_message or cause.reason or 'certificate verify failed'}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or type(cause).__name__}".lower()
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
    if any(isinstance(c, (socket.timeout, TimeoutError, urllib3.exceptions.TimeoutError)) for c in chain):
        return "timed out"
    for cause in chain:
        if isinstance(cause, OSError) and str(cause):
            return " ".join(str(cause).split())[:_REASON_CHARS].lower()
    return type(error).__name__


def _cut_off(pool: Any, expired: threading.Event) -> None:
    """The deadline passed: shut the request's socket down, which ends any read or write on it."""
    expired.set()
    shut_down(getattr(pool.current, "sock", None))


def _read_answer(response: Any) -> tuple[bytes, bool]:
    """At most MAX_ANSWER_BYTES of the body, raw; and whether that was all of it."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER_BYTES:
        chunk = response.read(_READ_CHUNK, decode_content=False)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_ANSWER_BYTES], False


def _answer_reason(body: bytes) -> str:
    """The server's reason: the ``message`` of a JSON error body (Segment's and the collector's
    shape), else the body's text; one line, at most 200 characters."""
    text = ""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        for field in ("message", "reason", "error"):
            if isinstance(document.get(field), str) and document[field]:
                text = document[field]
                break
    if not text:
        text = body[: _REASON_CHARS * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _warn_cleartext(base_url: str) -> None:
    with _cleartext_lock:
        if base_url in _cleartext_warned:
            return
        _cleartext_warned.add(base_url)
    log.warning(
        "SegmentBackend: %s is cleartext http:// to a host that is not loopback: the write key "
        "travels in the Authorization header, readable on the way; use https://",
        base_url,
    )


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None when absent/bad.

    Not capped here (``inf`` stays ``inf``): the sender caps the wait."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if seconds != seconds else max(0.0, seconds)  # NaN: no usable advice
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
