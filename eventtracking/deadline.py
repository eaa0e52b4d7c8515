"""Total deadlines for blocking socket work: one watchdog thread per process.

A socket timeout bounds each read or write, not the whole: a peer sending one byte per
timeout keeps a request going for as long as it likes. :data:`DEADLINES` fixes that: code
about to block ``arm``\\ s a deadline with an action (shut the socket down, which ends any
read or write on it at once, in any thread) and ``disarm``\\ s it when done. Used by the
sender's HTTP transport (one deadline per request) and by the collector (one per request
received).

Contract:

* ``arm(seconds, action) -> token``; ``disarm(token)``. The action runs at most once, on the
  watchdog thread, when the deadline passes before ``disarm``; it must be quick and not raise
  (an exception is swallowed). A deadline passing just as the work ends may still run it.
* The thread starts on the first ``arm`` of each process (a forked child starts its own). At
  interpreter shutdown no thread can be started: ``arm`` then returns 0 and nothing is armed
  (the per-operation timeouts still hold).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from typing import Any, Callable, Optional


class Deadlines:
    """See the module docstring."""

    def __init__(self) -> None:
        self._setup(None)

    def _setup(self, pid: Optional[int]) -> None:
        self._pid = pid
        self._condition = threading.Condition(threading.Lock())
        self._armed: dict[int, tuple[float, Callable[[], None]]] = {}
        self._tokens = itertools.count(1)
        self._thread: Optional[threading.Thread] = None

    def arm(self, seconds: float, action: Callable[[], None]) -> int:
        """Run ``action`` in ``seconds`` unless disarmed first; returns the token (0: not armed)."""
        if self._pid != os.getpid():
            self._setup(os.getpid())  # first use, or a fresh child: the parent's thread is not here
        with self._condition:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="eventtracking-deadlines", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # interpreter shutdown
                    return 0
                self._thread = thread
            token = next(self._tokens)
            self._armed[token] = (time.monotonic() + seconds, action)
            self._condition.notify()
            return token

    def disarm(self, token: int) -> None:
        """Forget the deadline ``token`` (a no-op when it already ran, or for 0)."""
        if token:
            with self._condition:
                self._armed.pop(token, None)

    def _run(self) -> None:
        condition = self._condition
        with condition:
            while True:
                if not self._armed:
                    condition.wait()
                    continue
                token, (when, action) = min(self._armed.items(), key=lambda item: item[1][0])
                remaining = when - time.monotonic()
                if remaining > 0:
                    condition.wait(remaining)
                    continue
                del self._armed[token]
                try:
                    action()
                except Exception:
                    pass  # an action is a shutdown(); nothing is left to tell


def shut_down(sock: Any) -> None:
    """End every read and write on ``sock`` now (also a TLS socket: the plain socket's own
    shutdown, since SSLSocket's would drop its SSL object under a reading thread's feet)."""
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


DEADLINES = Deadlines()
