"""The collector's wire: its limits, reading and decoding a request body, and the write key.

Pure functions of bytes and headers, no collector state: reading a body (``Content-Length`` or
chunked, bounded before any of it is read), undoing gzip (bounded once inflated), strict JSON,
the per-message checks, the Basic ``Authorization`` header, the ``/v1/received`` query, and the
JSON error answer. A request that breaks a rule raises :class:`Refusal`, which the handler
answers with its status.

The message and batch limits are Segment's, defined once in :mod:`eventtracking.segment` (the
client's side enforces the same figures); the others are the collector's own.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http.client
import zlib
from email.message import Message
from typing import Any, List, Optional, Tuple
from urllib.parse import parse_qs

import orjson

from eventtracking.segment.encoding import MAX_BATCH_BYTES as MAX_BODY_BYTES  # raw, and once decompressed
from eventtracking.segment.encoding import MAX_DEPTH, MAX_MESSAGE_BYTES

MAX_HEAD_BYTES = 128 * 1024  # request line and headers of one request (the line alone: 64 KiB)
MAX_CONNECTIONS = 32
# A connection refused mid-request is drained this long, and of at most this much, before it
# is closed: closing with unread bytes would reset it and lose the answer for the client.
LINGER_SECONDS = 5.0
LINGER_BYTES = 8 * 1024 * 1024
MAX_GZIP_MEMBERS = 16  # a client sends one; many tiny members would make inflating quadratic
DEFAULT_RECEIVED_LIMIT = 1000
MAX_RECEIVED_LIMIT = 1000  # a larger limit is clamped: page on with ``after``

_TOO_LARGE = f"request body is over {MAX_BODY_BYTES // 1024} KB ({MAX_BODY_BYTES} bytes)"


class Refusal(Exception):
    """A request the collector answers with a client error; nothing is stored."""

    def __init__(self, status: int, code: str, reason: str, close: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        # True when the request body was not (fully) read: the connection cannot be reused.
        self.close = close


class HeadBudget:
    """The connection's reader, with a byte budget for ``readline`` (request line, headers,
    trailers): past it, ``LineTooLong`` (the stdlib answers 431). The stdlib alone would read
    100 header lines of 64 KiB each. ``raw`` reads without the budget (chunk sizes); ``renew``
    gives a fresh budget (each request, and a chunked body's trailers)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.budget = MAX_HEAD_BYTES

    def renew(self) -> None:
        self.budget = MAX_HEAD_BYTES

    def readline(self, limit: int = -1) -> bytes:
        allowed = self.budget + 1 if limit is None or limit < 0 else min(limit, self.budget + 1)
        line: bytes = self.raw.readline(allowed)
        self.budget -= len(line)
        if self.budget < 0:
            raise http.client.LineTooLong(f"request head over {MAX_HEAD_BYTES} bytes")
        return line

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        return data

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)


def read_body(headers: Message, reader: HeadBudget) -> Optional[bytes]:
    """The raw request body, or None if the connection ended before all of it came.

    Raises :class:`Refusal` (with ``close``: the rest of the body stays unread) for a transfer
    coding other than chunked, a missing or bad ``Content-Length``, or a body over
    :data:`MAX_BODY_BYTES`, before reading what is over the limit.
    """
    transfer_encoding = headers.get("Transfer-Encoding", "").strip().lower()
    if transfer_encoding:
        if transfer_encoding != "chunked":
            raise Refusal(501, "unsupported_transfer_encoding", "only chunked is supported", close=True)
        return _read_chunked(reader)
    length_header = headers.get("Content-Length")
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
    raw = reader.read(length)
    return raw if len(raw) == length else None


def _read_chunked(reader: HeadBudget) -> Optional[bytes]:
    body = bytearray()  # one buffer: a list of 1-byte chunks would cost 40 bytes each
    while True:
        size_line = reader.raw.readline(1024)
        if not size_line:
            return None
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise Refusal(400, "invalid_request", "bad chunk size", close=True) from None
        if size == 0:
            # Skip any trailer fields up to the blank line that ends the message.
            reader.renew()
            while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        if size < 0 or len(body) + size > MAX_BODY_BYTES:
            raise Refusal(413, "body_too_large", _TOO_LARGE, close=True)
        chunk = reader.read(size)
        if len(chunk) < size:
            return None
        body += chunk
        reader.raw.readline(3)  # the CRLF after each chunk


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
        reason = f"batch[{index}] nests deeper than {MAX_DEPTH} levels"
        raise Refusal(400, "invalid_request", reason) from None


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


def same_key(presented: Optional[str], expected: str) -> bool:
    """Whether ``presented`` is ``expected``, compared in constant time."""
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def received_query(query: str) -> Tuple[int, int, Optional[str]]:
    """``(after, limit, event)`` of a ``/v1/received`` query string, the limit clamped to
    :data:`MAX_RECEIVED_LIMIT`; ``ValueError`` with the reason for a bad one."""
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


def error_body(code: str, reason: str) -> bytes:
    """The JSON of a refusal: ``code`` and ``message`` are what Segment's own clients read."""
    return orjson.dumps({"success": False, "code": code, "message": reason, "reason": reason})


def busy_answer() -> bytes:
    """The whole HTTP answer (head and body) to a connection over :data:`MAX_CONNECTIONS`."""
    body = error_body("busy", f"too many connections (at most {MAX_CONNECTIONS})")
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
