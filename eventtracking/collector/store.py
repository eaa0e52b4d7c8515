"""SQLite storage for the messages a :class:`~eventtracking.collector.Collector` accepts.

One connection, guarded by one lock: the collector's request threads append whole
batches (one transaction each) and tests read from another thread.  Messages are kept
in arrival order (``seq``), duplicates included, exactly as the client sent them minus
any ``writeKey`` (a secret, never stored). A database file is created 0600.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from typing import Any, List, Optional, Sequence, Tuple

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at  TEXT NOT NULL,
    sent_at      TEXT,
    route        TEXT NOT NULL,
    message_id   TEXT,
    type         TEXT,
    event        TEXT,
    user_id      TEXT,
    anonymous_id TEXT,
    timestamp    TEXT,
    body         TEXT NOT NULL
)
"""

_INSERT = (
    "INSERT INTO messages (received_at, sent_at, route, message_id, type, event, user_id,"
    " anonymous_id, timestamp, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# A stored row before insertion: everything but seq.
Row = Tuple[str, Optional[str], str, Any, Any, Any, Any, Any, Any, str]


def as_text(value: Any) -> Optional[str]:
    """Return ``value`` as a column value: strings and None as they are, anything else as JSON.

    Clients may send numbers (or worse) as ``userId``; SQLite cannot bind a dict, and a
    JSON rendering keeps the value recognisable.
    """
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def make_row(message: dict, body: str, received_at: str, sent_at: Optional[str], route: str) -> Row:
    """Build the row for one message whose stored JSON text is ``body``."""
    get = message.get
    return (
        received_at,
        sent_at,
        route,
        as_text(get("messageId")),
        as_text(get("type")),
        as_text(get("event")),
        as_text(get("userId")),
        as_text(get("anonymousId")),
        as_text(get("timestamp")),
        body,
    )


class MessageStore:
    """Append-only message table in SQLite, safe to share between threads.

    ``path`` None or ``":memory:"`` keeps everything in memory (lost on :meth:`close`).
    ``readonly`` opens an existing file without creating or changing it (for
    ``eventtracking received``); it raises ``FileNotFoundError`` if there is none.
    """

    def __init__(self, path: Optional[str] = None, readonly: bool = False) -> None:
        self.path = path or ":memory:"
        self._lock = threading.Lock()
        self._count: Optional[int] = None  # unknown for a read-only store: another process may be writing
        # Notified after every append so waiters need not poll.
        self._appended = threading.Condition(self._lock)
        if readonly:
            if self.path == ":memory:":
                raise ValueError("a read-only store needs a database file")
            # Read-write but query-only where we may write: the last connection to a WAL database
            # to close removes its -wal and -shm files, which a mode=ro connection leaves behind.
            writable = os.access(self.path, os.W_OK) and os.access(os.path.dirname(self.path) or ".", os.W_OK)
            uri = f"file:{_uri_path(self.path)}?mode={'rw' if writable else 'ro'}"
            reader: Optional[sqlite3.Connection] = None
            try:
                reader = sqlite3.connect(uri, uri=True, check_same_thread=False)
                reader.execute("PRAGMA query_only = ON")
                reader.execute("SELECT 1 FROM messages LIMIT 1")
            except sqlite3.DatabaseError as exc:  # missing file, not SQLite, or no messages table
                if reader is not None:
                    reader.close()
                raise FileNotFoundError(f"no collector database at {self.path}: {exc}") from None
            self._db = reader
            return
        if self.path != ":memory:":
            _private_file(self.path)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        # A test peer trades durability on power loss for throughput.
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(_SCHEMA)
        # Kept in memory: COUNT(*) scans the table, and waiters re-check after every batch.
        self._count = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def append(self, rows: Sequence[Row]) -> None:
        """Store ``rows`` (from :func:`make_row`) atomically, in order."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_INSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if self._count is not None:  # always, for a writer (read-only stores never append)
                self._count += len(rows)
            self._appended.notify_all()

    def count(self) -> int:
        """Number of stored messages (duplicates included)."""
        with self._lock:
            return self._count_locked()

    def _count_locked(self) -> int:
        if self._count is not None:
            return self._count
        return self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def wait_for_count(self, count: int, timeout: float) -> int:
        """Block until at least ``count`` messages are stored or ``timeout`` seconds pass.

        Returns the number stored when it returns.
        """
        with self._lock:
            self._appended.wait_for(lambda: self._count_locked() >= count, timeout)
            return self._count_locked()

    def rows(
        self, after: int = 0, limit: Optional[int] = None, event: Optional[str] = None
    ) -> List[Tuple[int, str, str]]:
        """``(seq, received_at, body)`` of stored messages with ``seq > after``, arrival order.

        ``event`` keeps only messages whose ``event`` equals it; ``limit`` caps the count.
        """
        sql = "SELECT seq, received_at, body FROM messages WHERE seq > ?"
        params: List[Any] = [after]
        if event is not None:
            sql += " AND event = ?"
            params.append(event)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def messages(
        self, after: int = 0, limit: Optional[int] = None, event: Optional[str] = None
    ) -> List[dict]:
        """Decoded stored messages, arrival order (same filters as :meth:`rows`)."""
        return [orjson.loads(body) for _, _, body in self.rows(after, limit, event)]

    def unique_count(self) -> int:
        """Number of distinct ``messageId`` values stored (a message sent twice counts once)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(DISTINCT message_id) FROM messages").fetchone()[0]

    def message_ids(self) -> List[Optional[str]]:
        """``messageId`` of every stored message in arrival order, duplicates included."""
        with self._lock:
            return [mid for (mid,) in self._db.execute("SELECT message_id FROM messages ORDER BY seq")]

    def close(self) -> None:
        """Release the database (an in-memory store loses its messages)."""
        with self._lock:
            self._db.close()


def _private_file(path: str) -> None:
    """Create ``path`` 0600 before SQLite does (it would follow the umask, 0644 by default);
    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode. A file of ours that
    others may read is made 0600 too: it holds every message, PII included."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass  # SQLite reports what is wrong with the path when it opens it


def _uri_path(path: str) -> str:
    # '?' and '#' would end the path part of an SQLite URI.
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
