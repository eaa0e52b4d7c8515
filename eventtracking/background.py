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
  It runs by itself at interpreter exit (``atexit``), and on Celery's shutdown signals.

Celery: a recycled prefork child (``--max-tasks-per-child``, ``--max-memory-per-child``), one
autoscale shrinks, and every child at a warm or cold shutdown ends with ``os._exit()`` right
after Celery's ``worker_process_shutdown`` signal, so ``atexit`` never runs there. When Celery is
in the process, :func:`close_all` is connected to that signal and to ``worker_shutdown`` (the
main process of every pool: solo, threads, prefork's parent, gevent, eventlet). Importing this
module never imports Celery: the connection is made when an owner registers or a
:class:`BackgroundThread` starts in a process that has imported Celery, which a Celery worker has
always done before a task runs (so it also holds for Celery imported after this package, and for
owners made lazily in a forked child). See docs/celery.rst.

SIGTERM: when an owner with an ``exit_timeout`` registers from the main thread and SIGTERM still
has its default action (it would kill the process without ``atexit``: a plain ``python app.py``
stopped by systemd, Docker or Kubernetes), a handler is installed that runs :func:`close_all`
and then restores the default action and raises SIGTERM again, so the process still dies of
SIGTERM, as it would have (a second SIGTERM during that wait kills at once; a SIGTERM that stops
the main thread inside the library's code, perhaps holding one of its locks, is acted on at the
main thread's next call from outside the library; PID 1, which ignores it, gets no handler).
A handler a server installed (gunicorn, uWSGI, Celery, uvicorn...) is left alone: the server owns
the signal. Servers
that end with a normal exit run ``atexit``; uvicorn does not (after its graceful shutdown it
restores SIGTERM's default action and raises it again): its ASGI applications need the one
line of :mod:`eventtracking.asgi`.

An owner, in short (the Segment backend and its sender are the full example)::

    class Publisher:
        exit_timeout = 5.0

        def __init__(self):
            self.worker = BackgroundThread(self._run, "my-publisher")
            background.register(self)

        def publish(self, item):
            check_fork()  # first: a forked child resets before it touches any state
            if self.worker.thread is None and not self.worker.ensure_started():
                return  # closed
            ...  # hand the item to the thread

        def after_fork_in_child(self):
            self.worker.after_fork_in_child()
            ...  # new queue and locks, none of the parent's items

        def close(self, timeout=None):
            background.unregister(self)
            ...  # deliver within timeout, then self.worker.stop() and self.worker.join(...)
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
import weakref
from types import FrameType
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
    if owner.exit_timeout > 0:
        _install_sigterm_handler()
    hook_celery()


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
                hook_celery()  # a sender with work: Celery's shutdown must close it
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


# -- Celery's shutdown signals ---------------------------------------------------------------

_CELERY_UID = "eventtracking.background.close_all"
_celery_hooked = False  # inherited by a forked child, as the connected receivers are


def hook_celery() -> bool:
    """Connect :func:`close_all` to Celery's ``worker_process_shutdown`` and ``worker_shutdown``
    signals, once per process, if Celery has been imported; True once connected.

    Imports nothing of Celery's unless Celery was imported already (then ``celery.signals``);
    costs a dict lookup when Celery is absent or already hooked.
    """
    global _celery_hooked
    if _celery_hooked or "celery" not in sys.modules:
        return _celery_hooked
    try:
        from celery import signals

        signals.worker_process_shutdown.connect(_on_celery_child_exit, weak=False, dispatch_uid=_CELERY_UID)
        signals.worker_shutdown.connect(_on_celery_worker_shutdown, weak=False, dispatch_uid=_CELERY_UID)
    except Exception as error:  # a Celery too old or half imported: atexit still holds where it runs
        log.debug("cannot connect to Celery's shutdown signals: %r", error)
        return False
    _celery_hooked = True
    return True


def _on_celery_child_exit(**_: object) -> None:
    # The child's last Python code: billiard calls os._exit() right after this signal.
    close_all(reason="Celery worker process exit")


def _on_celery_worker_shutdown(**_: object) -> None:
    # After the pool stopped: the tasks of solo and threads pools ran in this process.
    close_all(reason="Celery worker shutdown")


# -- SIGTERM with its default action ---------------------------------------------------------

_sigterm_decided = False  # looked at once: installed, or left to whoever handles it
_sigterm_closing = False
DEFER_LIMIT = 0.5  # seconds the handler waits for the main thread to leave the library's code
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_WAITS = {"wait", "wait_for", "join", "_wait_for_tstate_lock"}  # threading's, with locks released


def _install_sigterm_handler() -> None:
    global _sigterm_decided
    if _sigterm_decided or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_decided = True
    if getpid() == 1:  # a container's init: SIGTERM's default action is to be ignored; keep that
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main interpreter; no SIGTERM here
        pass


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    if _sigterm_closing:  # a second SIGTERM while delivering: die now
        _die(signum)
    if _inside_the_library(frame):
        _defer(signum)
    else:
        _close_and_die(signum)


def _defer(signum: int) -> None:
    """The main thread was stopped in the library's code, perhaps holding one of its locks, which
    closing needs: close at its next call made from outside the library (a point where it holds
    none), or after DEFER_LIMIT on another thread (the library's own commands run in it)."""
    previous = sys.gettrace()
    since = time.monotonic()

    def at_next_call(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            inside = _inside_the_library(frame.f_back)
            if not inside or time.monotonic() - since >= DEFER_LIMIT:
                sys.settrace(previous)
                _close_and_die(signum, elsewhere=inside)

    sys.settrace(at_next_call)  # this thread only, and only until then


def _close_and_die(signum: int, elsewhere: bool = False) -> None:
    global _sigterm_closing
    _sigterm_closing = True
    try:
        if not elsewhere:
            close_all(reason="SIGTERM")
        else:
            closer = threading.Thread(target=close_all, kwargs={"reason": "SIGTERM"}, daemon=True)
            closer.start()
            closer.join(max((owner.exit_timeout for owner in owners()), default=0.0) + 1.0)
    finally:
        _die(signum)


def _die(signum: int) -> None:
    """Die of ``signum`` as the process would have without this handler."""
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _inside_the_library(frame: Optional[FrameType]) -> bool:
    """Whether the interrupted code is the library's own (perhaps holding a lock), not waiting."""
    code = getattr(frame, "f_code", None)
    if code is not None and code.co_filename == threading.__file__ and code.co_name in _WAITS:
        return False  # blocked in a wait: the library's locks are released meanwhile
    while frame is not None and code is not None and code.co_filename == threading.__file__:
        frame = frame.f_back  # out of notify(), start()...: to the code that called them
        code = getattr(frame, "f_code", None)
    return code is not None and code.co_filename.startswith(_PACKAGE_DIR)
