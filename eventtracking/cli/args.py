"""What the ``eventtracking`` commands share: value types, the options they have in common (the
same name, metavar and help wherever they appear), the write key's environment variable, and
signal handling.

The write key is read from :data:`WRITE_KEY_ENV` (``SEGMENT_WRITE_KEY``) by every command that
takes one, so that it stays out of the process list (``ps``); :data:`WRITE_KEY_ENV_ALIASES` are
accepted too, for older setups.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from typing import Any, Callable, Optional, Sequence

from eventtracking.backends.segment import DEFAULT_HOST

WRITE_KEY_ENV = "SEGMENT_WRITE_KEY"
WRITE_KEY_ENV_ALIASES = ("EVENTTRACKING_WRITE_KEY", "EVENTTRACKING_COLLECTOR_WRITE_KEY")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number greater than 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0: any free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {value}")
    return value


def listen_address(text: str) -> str:
    """An argparse type: an address to listen on, an IP address or a name this machine resolves."""
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise argparse.ArgumentTypeError(f"cannot listen on {text!r}: {reason}") from None
    return text


def add_write_key(parser: argparse.ArgumentParser, purpose: str = "the Segment write key") -> None:
    """``--write-key KEY``, defaulting to ``$SEGMENT_WRITE_KEY`` (read by :func:`write_key`)."""
    parser.add_argument(
        "--write-key", default=None, metavar="KEY", help=f"{purpose} (default: ${WRITE_KEY_ENV})"
    )


def write_key(given: Optional[str]) -> Optional[str]:
    """The write key: ``given``, else ``$SEGMENT_WRITE_KEY``, else an alias; None when none is set."""
    if given:
        return given
    for name in (WRITE_KEY_ENV, *WRITE_KEY_ENV_ALIASES):
        if os.environ.get(name):
            return os.environ[name]
    return None


def add_destination_host(parser: argparse.ArgumentParser) -> None:
    """``--host URL``: where Segment's API is (default: Segment's own)."""
    parser.add_argument(
        "--host",
        default=None,
        metavar="URL",
        help=f"the Segment API's base URL (default: {DEFAULT_HOST}; a collector's URL to try it out)",
    )


def add_db(parser: argparse.ArgumentParser, help: str, required: bool = False, default: Any = None) -> None:
    """``--db FILE``: a collector's SQLite file."""
    parser.add_argument("--db", default=default, required=required, metavar="FILE", help=help)


def add_spool(parser: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    """``--spool DIR``: a backend's spool directory (its ``spool_dir``)."""
    parser.add_argument("--spool", default=None, required=required, metavar="DIR", help=help)


def add_json(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json``: print JSON lines instead of a table."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON lines instead of a table")


def on_signals(signums: Sequence[int], handler: Callable[[int, Any], None]) -> Callable[[], None]:
    """Install ``handler`` for ``signums`` (main thread only); return a function undoing it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.signal(signum, handler) for signum in signums}

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore
