"""Fork and exit handling for every background sender of the library: one mechanism, not one per sender.

A *background owner* is an object that owns state a forked child must not trust (a thread, a
connection, locks, messages of the parent) and work to finish at exit. It offers:

- ``after_fork_in_child() -> None``: forget the parent's thread, connection, locks and messages.
  It runs in the child before any event of the child is accepted; it must not acquire a lock it
  inherited (replace it) and must not raise (an error is logged, and the other owners still run).
- ``close(timeout: float | None) -> bool``: deliver what was accepted within ``timeout`` seconds
  and stop; True when nothing was left behind.
- ``exit_timeout: float``: how long it may take at exit.

The API (all thread-safe):

- :func:`register` / :func:`unregister`: the process-wide registry holds owners weakly, in
  registration order.
- :func:`check_fork`: call it first in every entry point of an owner (``send()``, ``flush()``,
  ``close()``, ``stats()``). When the process is a fork that has not been handled yet, it runs
  every owner's ``after_fork_in_child()`` exactly once for the process, under a lock made for the
  new pid (created with ``dict.setdefault``, which is atomic, so it cannot have been inherited
  held), and publishes the new pid last: every other thread of the child waits on that lock
  until the reset is complete. This covers forks made in C without Python's at-fork hooks
  (uWSGI workers by default), with many threads calling in at once; ``os.register_at_fork``
  runs the same reset for ``os.fork()``. Its cost when nothing forked is one ``os.getpid()``.
- :class:`BackgroundThread`: the one daemon thread per process of an owner (start once, stop,
  join with a timeout); its ``after_fork_in_child()`` forgets the parent's thread.
- :func:`close_all`: close every owner within ONE deadline, the owners' largest
  ``exit_timeout``: each owner gets its own ``exit_timeout`` counted from the same start (owners
  are closed in turn, but each one's thread keeps delivering while an earlier one is waited for,
  so the time is shared, not added up). What an owner could not finish is logged with the reason.
  It runs by itself at interpreter exit (``atexit``).

"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Callable, Optional, Protocol

log = logging.getLogger(__name__)

getpid = os.getpid  # a module global: one lookup fewer on the hot path


class Owner(Protocol):
    """What :func:`register` accepts (see the module docstring)."""

    exit_timeout: float

    def after_fork_in_child(self) -> None: ...

    def close(self, timeout: Optional[float] = None) -> bool: ...


_pid = getpid()  # the process whose owners' state is current; published last by a reset
_owners: dict[int, weakref.ref] = {}  # id(owner) -> weak reference, in registration order
_reset_locks: dict[int, threading.Lock] = {}  # pid -> the lock of that process's reset


def register(owner: Owner) -> None:
    """Add ``owner`` to the registry (held weakly: an owner nobody references is dropped)."""
    key = id(owner)

    def forget(ref: weakref.ref, key: int = key) -> None:
        if _owners.get(key) is ref:
            _owners.pop(key, None)

    _owners[key] = weakref.ref(owner, forget)


def unregister(owner: Owner) -> None:
    """Remove ``owner`` (after its own close: it is not reset after fork nor closed at exit)."""
    ref = _owners.get(id(owner))
    if ref is not None and ref() is owner:
        _owners.pop(id(owner), None)


def owners() -> list[Owner]:
    """The registered owners still alive, in registration order."""
    while True:
        try:
            refs = list(_owners.values())
        except RuntimeError:  # a weak reference died (and left the dict) while copying: again
            continue
        return [owner for owner in (ref() for ref in refs) if owner is not None]


def check_fork() -> None:
    """Reset every owner if this process is a fork whose reset has not run yet (see module doc)."""
    if getpid() != _pid:
        _reset_in_child()


def _reset_in_child() -> None:
    global _pid
    pid = getpid()
    # A lock per pid: one inherited from the parent (held by a thread that does not exist here)
    # is never used. setdefault is atomic, so every thread of this process gets the same lock.
    with _reset_locks.setdefault(pid, threading.Lock()):
        if _pid == pid:  # another thread of this process did it while this one waited
            return
        for stale in [other for other in _reset_locks if other != pid]:
            _reset_locks.pop(stale, None)
        for owner in owners():
            try:
                owner.after_fork_in_child()
            except Exception:
                log.exception("after fork: %r could not reset itself", owner)
        _pid = pid  # last: until now every caller of check_fork() waits above


def close_all(timeout: Optional[float] = None, reason: str = "exit") -> bool:
    """Close every registered owner within one deadline; True when none left anything behind.

    ``timeout`` (seconds) overrides the owners' ``exit_timeout``. Every owner's budget starts
    now: the whole takes about the largest budget, not their sum. ``reason`` names the
    occasion in the log ("exit", "SIGTERM").
    """
    check_fork()  # a fork's owners still hold the parent's state: never deliver that twice
    start = time.monotonic()
    all_done = True
    current = owners()
    for owner in current:
        budget = owner.exit_timeout if timeout is None else timeout
        remaining = max(0.0, start + budget - time.monotonic())
        try:
            done = owner.close(remaining)
        except Exception:
            log.exception("%s: closing %r failed", reason, owner)
            done = False
        if not done:
            all_done = False
            log.warning(
                "%s: %r left messages undelivered: its %.1f s exit deadline ran out "
                "(shared by all %d background senders)",
                reason,
                owner,
                budget,
                len(current),
            )
    return all_done


class BackgroundThread:
    """The one daemon thread per process of an owner, running ``target()`` until it returns.

    ``ensure_started()`` starts it once per process (False once ``stop()`` was called or when
    threads cannot be started, e.g. at interpreter shutdown); ``stopping`` is the event the
    target watches; ``join(timeout)`` waits for it. ``thread`` is None until started: checking
    it is the cheap way for a hot path to skip ``ensure_started()``.
    """

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._target = target
        self.name = name
        self._reset()

    def _reset(self) -> None:
        self.thread: Optional[threading.Thread] = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def ensure_started(self) -> bool:
        """Start the thread unless it already runs in this process; False once stopped."""
        if self.thread is not None:
            return True
        with self._lock:
            if self.thread is None and not self.stopping.is_set():
                thread = threading.Thread(target=self._target, name=self.name, daemon=True)
                try:
                    thread.start()
                except RuntimeError as error:  # "can't create new thread at interpreter shutdown"
                    log.warning("%s: cannot start its thread: %s", self.name, error)
                    return False
                self.thread = thread
            return self.thread is not None

    def stop(self) -> None:
        """Ask the target to return (it watches ``stopping``); the thread is never started again."""
        self.stopping.set()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` for the thread to end; True when it has (or never ran).

        After ``stop()`` the thread is forgotten even when it is still alive, so that
        ``ensure_started()`` answers False from then on.
        """
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self.stopping.is_set():
            self.thread = None
        return thread is None or not thread.is_alive()

    def after_fork_in_child(self) -> None:
        """Forget the parent's thread and replace the lock (a parent thread may have held it)."""
        self._reset()


@atexit.register
def _close_at_exit() -> None:
    close_all(reason="exit")


os.register_at_fork(after_in_child=_reset_in_child)
