"""POST ready-made batches to a Segment-compatible ``/v1/batch`` over one keep-alive connection.

The transport knows HTTP and nothing of retries: it returns what happened (a status, the
server's ``Retry-After``, a short reason) and the sender decides. The write key goes into the
``Authorization`` header only; it is never part of a repr, a log line or an exception here.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import gzip
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

import urllib3

from eventtracking import __version__

NETWORK_ERROR = 0  # the status reported when no HTTP answer arrived


@dataclass(frozen=True)
class Answer:
    """What one POST came to: ``status`` 0 means no HTTP answer (network error)."""

    status: int
    retry_after: Optional[float] = None
    reason: str = ""


def batch_body(messages: list[bytes]) -> bytes:
    """Join encoded messages into a batch body with ``sentAt``; the messages are not re-encoded."""
    sent_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    return b'{"batch":[' + b",".join(messages) + b'],"sentAt":"' + sent_at.encode() + b'"}'


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
        self._gzip_level = gzip_level
        self._timeout = urllib3.Timeout(connect=min(timeout, 5.0), read=timeout)
        token = base64.b64encode(write_key.encode() + b":").decode()
        self._headers = {
            "Authorization": "Basic " + token,
            "Content-Type": "application/json",
            "User-Agent": f"eventtracking-segment/{__version__}",
        }
        if gzip_level:
            self._headers["Content-Encoding"] = "gzip"
        self._pool: Optional[urllib3.HTTPConnectionPool] = None

    def __repr__(self) -> str:
        return f"HttpTransport({self._scheme}://{self._hostname}:{self._port or ''}{self._path})"

    def post(self, body: bytes) -> Answer:
        """POST one batch body; never raises for network or HTTP errors."""
        if self._gzip_level:
            body = gzip.compress(body, compresslevel=self._gzip_level)
        try:
            if self._pool is None:
                self._pool = urllib3.connection_from_url(
                    f"{self._scheme}://{self._hostname}" + (f":{self._port}" if self._port else ""),
                    maxsize=1,
                    block=False,
                )
            response = self._pool.urlopen(
                "POST",
                self._path,
                body=body,
                headers=self._headers,
                retries=False,
                timeout=self._timeout,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as error:
            return Answer(NETWORK_ERROR, reason=type(error).__name__)
        reason = "" if response.status < 300 else response.data[:200].decode("utf-8", "replace")
        return Answer(response.status, _retry_after(response.headers.get("Retry-After")), reason)

    def reset(self) -> None:
        """Forget the connection (after ``fork()``: the socket belongs to the parent)."""
        self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
