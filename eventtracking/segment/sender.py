"""The sender: the one thread (per backend, per process) that turns the buffer into HTTP batches.

It is the only threaded, stateful part of the pipeline. It takes batches from the buffer,
posts them through the transport, retries what may be retried (network errors, 408, 429, 5xx)
with exponential backoff and jitter, honouring ``Retry-After``, for at most ``retry_budget``
seconds per batch, and splits a batch the server refuses as malformed (400, 413) until the
bad message stands alone, so one bad event never costs another. Whatever is finally refused
or given up on is counted and handed to ``on_error(reason, messages)``.

``flush`` is a timed wait that reports what it left pending. The thread is a
:class:`~eventtracking.background.BackgroundThread`; the sender's owner (the backend) registers
with :mod:`eventtracking.background`, which calls ``after_fork_in_child`` in a forked child: a
fresh thread, connection and locks, and none of the parent's messages.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Optional

import orjson

from eventtracking.background import BackgroundThread
from eventtracking.segment.buffer import MemoryBuffer
from eventtracking.segment.stats import Counters
from eventtracking.segment.transport import NETWORK_ERROR, Answer, HttpTransport, batch_body

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 500 * 1024
BATCH_OVERHEAD = 128  # '{"batch":[', the commas, '],"sentAt":"…"}'
ErrorHook = Callable[[str, list], None]


def is_retryable(status: int) -> bool:
    """Network errors, 408, 429 and 5xx may succeed later; every other answer is final."""
    return status == NETWORK_ERROR or status in (408, 429) or status >= 500


class Sender:
    """Owns the sender thread for one buffer and one transport."""

    def __init__(
        self,
        buffer: MemoryBuffer,
        transport: HttpTransport,
        counters: Counters,
        *,
        batch_count: int = 500,
        batch_bytes: int = MAX_BATCH_BYTES,
        linger: float = 0.5,
        retry_budget: float = 60.0,
        backoff: tuple[float, float] = (0.1, 10.0),
        on_error: Optional[ErrorHook] = None,
    ) -> None:
        if not 1 <= batch_count:
            raise ValueError("batch_count must be at least 1")
        self.buffer = buffer
        self.transport = transport
        self.counters = counters
        self.batch_count = batch_count
        # The body adds a comma per message and the envelope to the messages' own bytes.
        self.batch_bytes = min(batch_bytes, MAX_BATCH_BYTES) - BATCH_OVERHEAD - batch_count
        self.linger = linger
        self.retry_budget = retry_budget
        self.backoff_base, self.backoff_max = backoff
        self.on_error = on_error
        self.worker = BackgroundThread(self._run, "eventtracking-segment-sender")
        self._give_up = threading.Event()  # cuts retry waits short when close() runs out of time

    # -- lifecycle ---------------------------------------------------------------------------

    def ensure_started(self) -> bool:
        """Start the thread unless it runs in this process; False once closed."""
        return self.worker.ensure_started()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything put so far has had the server's final answer.

        True when nothing is pending; False when ``timeout`` ran out first, with a warning
        that says how many messages are still pending.
        """
        pending, _ = self.buffer.pending()
        if not pending:
            return True
        self.ensure_started()
        if self.buffer.wait_idle(timeout):
            return True
        pending, size = self.buffer.pending()
        log.warning(
            "flush timed out after %.1fs: %d messages (%d bytes) still pending", timeout, pending, size
        )
        return False

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush within ``timeout``, then stop the thread; True when nothing was left behind."""
        started = time.monotonic()
        delivered_all = self.flush(timeout)
        self.worker.stop()
        if not delivered_all:
            self._give_up.set()
        self.buffer.wake()
        remaining = None if timeout is None else max(0.1, timeout - (time.monotonic() - started))
        self.worker.join(remaining)
        self.transport.close()
        self.buffer.close()
        return delivered_all

    def after_fork_in_child(self) -> None:
        """Forget the parent's thread, connection, locks and messages (the parent sends those)."""
        self.worker.after_fork_in_child()
        self._give_up = threading.Event()
        self.buffer = self.buffer.discard_inherited()
        self.transport.reset()
        self.counters.reset_after_fork()

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        # Nothing may end this loop but stop: a dead sender would strand the buffer for good.
        stopping = self.worker.stopping
        while True:
            try:
                batch = self.buffer.take(self.batch_count, self.batch_bytes, self.linger, stopping)
            except Exception:  # e.g. a spool's disk error: wait, then try again
                log.exception("sender could not take a batch; trying again in 1 s")
                if stopping.wait(1.0):
                    return
                continue
            if not batch:
                return
            try:
                self._deliver(batch)
            except Exception:
                log.exception("sender failed on a batch of %d messages", len(batch))
                self._drop("internal_error", batch)
            try:
                self.buffer.done(batch)
            except Exception:
                log.exception("sender could not settle a batch of %d messages", len(batch))

    def _deliver(self, batch: list[bytes]) -> None:
        deadline = time.monotonic() + self.retry_budget
        parts = [batch]
        while parts:
            part = parts.pop()
            answer = self._post(part, deadline)
            if 200 <= answer.status < 300:
                self.counters.add("delivered", len(part))
            elif answer.status in (400, 413) and len(part) > 1:
                middle = len(part) // 2
                parts.append(part[middle:])
                parts.append(part[:middle])  # popped first: order is kept
            elif is_retryable(answer.status):
                if self.buffer.keep_for_later(part):
                    self.counters.add("deferred", len(part))
                else:
                    self._drop("gave_up", part, answer)
            else:
                self.buffer.dead_letter(f"HTTP {answer.status}: {answer.reason}", part)
                self._drop("refused", part, answer)

    def _post(self, part: list[bytes], deadline: float) -> Answer:
        attempt = 0
        while True:
            answer = self.transport.post(batch_body(part))
            self.counters.add("batches")
            if not is_retryable(answer.status) or self._give_up.is_set():
                return answer
            attempt += 1
            delay = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            if answer.retry_after is not None:
                delay = max(delay, answer.retry_after)
            if time.monotonic() + delay > deadline:
                return answer
            self.counters.add("retries")
            if self._give_up.wait(delay):
                return answer

    def _drop(self, reason: str, part: list[bytes], answer: Optional[Answer] = None) -> None:
        self.counters.add_reason("dropped", reason, len(part))
        detail = f" (HTTP {answer.status}: {answer.reason})" if answer and answer.status else ""
        log.warning("dropped %d messages: %s%s", len(part), reason, detail)
        if self.on_error is not None:
            try:
                self.on_error(reason, [orjson.loads(item) for item in part])
            except Exception:
                log.exception("on_error hook failed")
