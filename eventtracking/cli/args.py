"""Argument helpers shared by the ``eventtracking`` commands: value types and signal handling."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any, Callable, Sequence


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


def on_signals(signums: Sequence[int], handler: Callable[[int, Any], None]) -> Callable[[], None]:
    """Install ``handler`` for ``signums`` (main thread only); return a function undoing it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.signal(signum, handler) for signum in signums}

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore
