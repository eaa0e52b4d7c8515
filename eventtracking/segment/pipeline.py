"""The delivery pipeline of a process: one bounded buffer (memory or spool) and one sender thread
per destination and delivery options, shared by every owned-mode ``SegmentBackend`` and every
:class:`eventtracking.segment.client.Client` that asks for the same.

Callers (backends, clients) map and encode on their own thread, then hand the bytes to their
:class:`~eventtracking.queue.worker.Handle`, which :func:`acquire` returns: the pipeline for a
:class:`Delivery`, the one already running in this process when the options are the same (or
the spool directory is: a spool directory is opened once per process), else a new one.
Everything after the handle is here: the pipeline's
:class:`~eventtracking.queue.worker.BatchWorker` (the thread, the buffer, flush and close), its
:class:`~eventtracking.segment.sender.Sender` (HTTP), the spool, and fork and exit handling (the
pipeline is the :mod:`eventtracking.background` owner).

Counting is split at the buffer: a caller counts what it refused (``skipped``, ``buffer_full``,
``trimmed``) in a :class:`~eventtracking.queue.stats.Counters` of its own; the pipeline counts
what happened after (``accepted``, ``delivered``, retries, ``gave_up``, ``refused``...), for all
its callers together. :meth:`Pipeline.stats` merges the two.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional

from eventtracking import background
from eventtracking.queue.base import Buffer
from eventtracking.queue.factory import open_buffer
from eventtracking.queue.stats import Counters, DropWarning
from eventtracking.queue.worker import Handle
from eventtracking.segment.sender import ErrorHook, Sender, sender_worker
from eventtracking.segment.transport import HttpTransport

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.segment.io"
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Delivery:
    """Where and how a pipeline delivers: equal Deliveries share one pipeline per process.

    The write key never appears in a repr.
    """

    write_key: str = field(repr=False)
    host: str = DEFAULT_HOST
    max_buffer_bytes: int = DEFAULT_BUFFER_BYTES
    batch_count: int = 500
    linger: float = 0.5
    retry_budget: Optional[float] = None  # None: retried while the process lives
    max_retries: Optional[int] = None
    gzip_level: int = 0
    timeout: float = 15.0
    on_error: Optional[ErrorHook] = None
    spool_dir: Optional[str] = None
    spool_max_bytes: int = 1024**3
    fsync: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.write_key, str) or not self.write_key:
            raise ValueError("write_key must be a non-empty string")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("host must be a non-empty string (a URL)")
        if self.spool_dir is not None:
            object.__setattr__(self, "spool_dir", os.path.realpath(self.spool_dir))


class MessageIds:
    """Message ids unique across processes and cheap to make: a random prefix and a counter.

    A background owner (:mod:`eventtracking.background`) with nothing to close: a forked child
    gets a new prefix, so parent and child never share an id, in both modes of the backend.
    """

    exit_timeout = 0.0

    def __init__(self) -> None:
        self.reset()
        background.register(self)

    def reset(self) -> None:
        self._prefix = secrets.token_hex(8) + "-"
        self._counter = itertools.count(1)

    after_fork_in_child = reset

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def close(self, timeout: Optional[float] = None) -> bool:
        return True


class Pipeline:
    """One buffer and one sender thread for one :class:`Delivery` (see the module docstring):
    the :class:`~eventtracking.queue.base.Shared` owner of its callers' handles.

    ``worker`` is its :class:`~eventtracking.queue.worker.BatchWorker`, ``sender`` the worker's
    HTTP handler, ``buffer`` the worker's buffer.
    """

    def __init__(self, delivery: Delivery, owner: str) -> None:
        self.delivery = delivery
        self.owner = owner  # the first caller's kind ("SegmentBackend", "Client"): the metrics' label
        self.exit_timeout = 0.0  # the largest of its callers' (see acquire)
        self.counters = Counters()
        self.full_warning = DropWarning()
        self._callers: weakref.WeakSet[Counters] = weakref.WeakSet()  # reset after fork
        self._users = 0
        transport = HttpTransport(
            delivery.host, delivery.write_key, gzip_level=delivery.gzip_level, timeout=delivery.timeout
        )
        buffer = open_buffer(
            owner, delivery.max_buffer_bytes, delivery.spool_dir, delivery.spool_max_bytes, delivery.fsync
        )
        self.worker = sender_worker(
            buffer,
            transport,
            self.counters,
            batch_count=delivery.batch_count,
            linger=delivery.linger,
            retry_budget=delivery.retry_budget,
            max_retries=delivery.max_retries,
            on_error=delivery.on_error,
        )

    def __repr__(self) -> str:
        return f"<Pipeline {self.sender.transport!r}>"

    @property
    def sender(self) -> Sender:
        """The worker's HTTP handler."""
        return self.worker.handler

    @property
    def buffer(self) -> Buffer:
        """The worker's buffer (a forked child's own after fork)."""
        return self.worker.buffer

    def buffer_full(self, counters: Counters, who: str) -> None:
        """Count a message the full buffer refused (in the caller's ``counters``); warn at most
        once per interval."""
        detail = f"buffer full ({self.buffer.max_bytes} bytes)"
        counters.add_reason("dropped", "buffer_full", 1, detail)
        self.full_warning.dropped(
            log,
            "%s buffer full (%d bytes): dropped %d messages since the last warning",
            who,
            self.buffer.max_bytes,
        )

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything accepted (by every caller) was answered; False on timeout."""
        return self.worker.flush(timeout)

    def release(self, timeout: Optional[float] = None) -> bool:
        """A caller is done: flush within ``timeout``; the last caller also stops the thread.
        True when nothing was left pending."""
        with _lock:
            self._users -= 1
            last = self._users <= 0
        if not last:
            return self.worker.flush(timeout)
        return self.close(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Deliver within ``timeout`` and stop (the owner's ``close``: also at exit)."""
        _forget(self)
        background.unregister(self)
        return self.worker.close(timeout)

    def after_fork_in_child(self) -> None:
        """Called by :mod:`eventtracking.background`: the child starts empty, and so do the
        counters of its callers (a parent thread may have held their locks)."""
        _reset_lock()
        self.worker.after_fork_in_child()
        for counters in list(self._callers):
            counters.reset_after_fork()

    def stats(self, own: Optional[Counters] = None) -> dict[str, Any]:
        """A caller's stats: its ``own`` refusals merged with what the pipeline did (for all
        of its callers together): see ``SegmentBackend.stats``. Without ``own``, every caller's
        refusals summed: the whole pipeline (what :mod:`eventtracking.metrics` reports)."""
        result = self.worker.snapshot(("in_flight", "buffered_bytes"))
        for counters in [own] if own is not None else list(self._callers):
            mine = counters.snapshot()
            result["trimmed"] += mine["trimmed"]
            for kind in ("skipped", "dropped"):
                for reason, count in mine[kind].items():
                    result[kind][reason] = result[kind].get(reason, 0) + count
            result["reasons"].update(mine["reasons"])
        return result

    def metric_attributes(self) -> dict[str, str]:
        """What names this pipeline in :mod:`eventtracking.metrics`: who opened it and its
        Segment host, never its key."""
        return {"eventtracking.sender": self.owner, "eventtracking.host": self.sender.transport.base_url}


_lock = threading.Lock()
_pipelines: weakref.WeakValueDictionary[Delivery, Pipeline] = weakref.WeakValueDictionary()
_spools: weakref.WeakValueDictionary[str, Pipeline] = weakref.WeakValueDictionary()


def acquire(delivery: Delivery, counters: Counters, exit_timeout: float, owner: str) -> Handle[Pipeline]:
    """A caller's handle on the pipeline of this process for ``delivery`` (``handle.owner``),
    shared or new; ``counters`` (the caller's own) are reset with it after fork, ``exit_timeout``
    raises its exit budget, ``owner`` names the caller's kind in its warnings.

    The same ``spool_dir`` with other options joins the running pipeline (one process opens a
    spool once), with a warning; with another host or write key it is a configuration error
    (ValueError): a spool holds messages for one destination.
    """
    background.check_fork()
    with _lock:
        pipeline = _pipelines.get(delivery)
        if pipeline is None and delivery.spool_dir is not None:
            pipeline = _spools.get(delivery.spool_dir)
            if pipeline is not None:
                running = pipeline.delivery
                if (running.host, running.write_key) != (delivery.host, delivery.write_key):
                    raise ValueError(
                        f"spool_dir {delivery.spool_dir} is already used in this process for another "
                        "host or write key"
                    )
                log.warning(
                    "%s: spool_dir %s is already open in this process with other options: it is "
                    "shared, with the options it was opened with (%r)",
                    owner,
                    delivery.spool_dir,
                    running,
                )
        if pipeline is None:
            pipeline = Pipeline(delivery, owner)
            _pipelines[delivery] = pipeline
            if delivery.spool_dir is not None:
                _spools[delivery.spool_dir] = pipeline
        pipeline._users += 1
        pipeline._callers.add(counters)
        pipeline.exit_timeout = max(pipeline.exit_timeout, exit_timeout)
    background.register(pipeline)  # again for a larger exit_timeout: the SIGTERM handler
    if delivery.spool_dir is not None and pipeline.buffer.pending()[0]:
        pipeline.worker.ensure_started()  # send what an earlier process left without waiting for a send
    return Handle(pipeline, pipeline.worker, counters, owner)


def _reset_lock() -> None:
    """In a forked child: a parent thread may have held the registry's lock."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock)


def _forget(pipeline: Pipeline) -> None:
    """A closed pipeline is never handed out again."""
    delivery = pipeline.delivery
    with _lock:
        if _pipelines.get(delivery) is pipeline:
            del _pipelines[delivery]
        if delivery.spool_dir is not None and _spools.get(delivery.spool_dir) is pipeline:
            del _spools[delivery.spool_dir]
