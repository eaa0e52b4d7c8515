"""The sender: delivery over HTTP of the batches the pipeline's worker takes from the buffer.

:class:`Sender` is the :class:`~eventtracking.queue.base.BatchHandler` of the Segment pipeline's
:class:`~eventtracking.queue.worker.BatchWorker` (:func:`sender_worker` makes the two), which
owns the one thread per pipeline and process, the buffer, flush, close and fork. The sender
posts each batch through the transport, retries what may be retried (network errors, redirects,
408, 429, 5xx) with exponential backoff and jitter, and splits a batch the server refuses as
malformed (400, 413) until the bad message stands alone, so one bad event never costs another.
By default (``retry_budget=None``) a batch is retried for as long as the process lives: an
outage costs buffer space, and once the buffer is full the backend drops and counts new events,
not the old ones; with ``retry_budget`` a batch is given up after that many seconds. Whatever
is finally refused or given up on is counted with its reason and detail and handed to
``on_error(reason, messages)``.

Waits the server asks for (``Retry-After``, on any retryable answer) are honoured, even past
a ``retry_budget``: each wait is capped at :data:`MAX_RETRY_AFTER` (300 s: a longer, infinite or
absurd value waits that long, then asks again); with a ``retry_budget``, a batch is held that
way for at most :data:`MAX_RATE_LIMIT_HOLD` (1 h) in all, and only then given up (memory) or
kept on disk for later (spool). A redirect (3xx) is a configuration error, not a refusal: it is retried like a
network error, keeps its events, and is logged as an error saying where the host points.
After a batch is kept for later, the worker pauses before it takes the next one (the server's
Retry-After if it gave one, else the backoff, growing with each part kept in a row up to its
maximum: what :meth:`Sender.handle` returns), so a failing server is never hammered. When
``close()`` runs out of time, every wait ends at once and what is not delivered is kept for
later (spool) or given up.

``flush`` is a timed wait that reports what it left pending (the worker's). The pipeline
registers with :mod:`eventtracking.background`, which calls ``after_fork_in_child`` in a forked
child: a fresh thread, connection and locks, and none of the parent's messages.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from typing import Callable, Optional

import orjson

from eventtracking.queue.base import Buffer
from eventtracking.queue.stats import Counters
from eventtracking.queue.worker import BatchWorker
from eventtracking.segment.encoding import MAX_BATCH_BYTES
from eventtracking.segment.transport import NETWORK_ERROR, Answer, HttpTransport, batch_body

log = logging.getLogger(__name__)

BATCH_OVERHEAD = 128  # '{"batch":[', the commas, '],"sentAt":"…"}'
MAX_RETRY_AFTER = 300.0  # seconds: the longest single wait a Retry-After gets
MAX_RATE_LIMIT_HOLD = 3600.0  # seconds a batch is held across the server's Retry-After waits
REDIRECT_LOG_INTERVAL = 60.0  # seconds between two "redirected" error lines
ErrorHook = Callable[[str, list], None]


class Reason(str):
    """The reason word handed to ``on_error`` (``"refused"``, ``"gave_up"``...), a plain ``str``
    for every use, with the failure's one-line ``detail`` as an attribute: ``"HTTP 401: wrong
    write key"``, ``"network error: connection refused (http://127.0.0.1:9)"``."""

    detail: str

    def __new__(cls, reason: str, detail: str = "") -> Reason:
        value = super().__new__(cls, reason)
        value.detail = detail
        return value


def is_retryable(status: int) -> bool:
    """Network errors, redirects (a fixable configuration error), 408, 429 and 5xx may succeed
    later; every other answer is final."""
    return status == NETWORK_ERROR or 300 <= status < 400 or status in (408, 429) or status >= 500


def take_bytes(batch_count: int, batch_bytes: int = MAX_BATCH_BYTES) -> int:
    """The most message bytes a batch of up to ``batch_count`` may hold: the body adds a comma
    per message and the envelope to the messages' own bytes, within Segment's 500 KB."""
    return min(batch_bytes, MAX_BATCH_BYTES) - BATCH_OVERHEAD - batch_count


class Sender:
    """Delivers batches to one transport: the :class:`~eventtracking.queue.base.BatchHandler`
    of a Segment worker (see the module docstring)."""

    def __init__(
        self,
        transport: HttpTransport,
        counters: Counters,
        *,
        retry_budget: Optional[float] = None,
        backoff: tuple[float, float] = (0.1, 10.0),
        on_error: Optional[ErrorHook] = None,
        max_retries: Optional[int] = None,
    ) -> None:
        self.transport = transport
        self.counters = counters
        self.retry_budget = retry_budget
        self.backoff_base, self.backoff_max = backoff
        self.on_error = on_error
        self.max_retries = max_retries  # None: the retry budget alone bounds a batch's retries
        self._pause = 0.0  # set when a part was kept for later: the wait before the next take
        self._last_delay = 0.0  # the latest wait between two posts of one part
        self._kept_in_a_row = 0  # parts kept for later since the last delivery
        self._redirect_logged = -REDIRECT_LOG_INTERVAL

    # -- the worker's handler ------------------------------------------------------------------

    def handle(self, batch: list[bytes], buffer: Buffer, give_up: threading.Event) -> float:
        """Deliver ``batch`` (split, retried, kept for later or dropped, each part counted);
        returns the pause before the next take: non-zero when a part was kept for later."""
        self._pause = 0.0
        self._deliver(batch, buffer, give_up)
        return self._pause

    def failed(self, batch: list[bytes], error: Exception) -> None:
        """``handle`` raised (a bug): ``batch`` is dropped as ``internal_error``."""
        self._drop("internal_error", batch, f"internal error: {type(error).__name__}")

    def after_fork_in_child(self) -> None:
        """Forget the parent's connection (its socket) and backoff."""
        self._pause, self._kept_in_a_row = 0.0, 0
        self.transport.reset()

    def close(self) -> None:
        self.transport.close()

    # -- delivery --------------------------------------------------------------------------------

    def _deliver(self, batch: list[bytes], buffer: Buffer, give_up: threading.Event) -> None:
        deadline = math.inf if self.retry_budget is None else time.monotonic() + self.retry_budget
        parts = [batch]
        while parts:
            part = parts.pop()
            answer = self._post(part, deadline, give_up)
            if 200 <= answer.status < 300:
                self.counters.add("delivered", len(part))
                self._kept_in_a_row = 0
            elif answer.status in (400, 413) and len(part) > 1:
                middle = len(part) // 2
                parts.append(part[middle:])
                parts.append(part[:middle])  # popped first: order is kept
            elif is_retryable(answer.status):
                if buffer.keep_for_later(part):
                    self.counters.add("deferred", len(part))
                    # The backoff goes on across parts kept for later: the next attempt is this
                    # part again, which must not be posted at once (nor the server's wait ignored).
                    self._kept_in_a_row += 1
                    growing = min(self.backoff_max, self.backoff_base * 2**self._kept_in_a_row)
                    self._pause = max(self._last_delay, growing)
                else:
                    self._drop("gave_up", part, answer.detail)
            else:
                buffer.dead_letter(answer.detail, part)
                self._drop("refused", part, answer.detail)

    def _post(self, part: list[bytes], deadline: float, give_up: threading.Event) -> Answer:
        attempt = 0
        hold_until = time.monotonic() + MAX_RATE_LIMIT_HOLD
        self._last_delay = 0.0
        while True:
            answer = self.transport.post(batch_body(part))
            self.counters.add("batches")
            if not is_retryable(answer.status):
                return answer
            self._note_failure(answer)
            if give_up.is_set():
                return answer
            attempt += 1
            delay = min(self.backoff_max, self.backoff_base * 2**attempt) * random.uniform(0.5, 1.0)
            now = time.monotonic()
            if answer.retry_after is not None:
                # The server said when: wait that long (capped), even past the retry budget.
                delay = max(delay, min(answer.retry_after, MAX_RETRY_AFTER))
                if now + delay <= hold_until:
                    deadline = max(deadline, now + delay)
            self._last_delay = delay
            if now + delay > deadline or (self.max_retries is not None and attempt > self.max_retries):
                return answer
            self.counters.add("retries")
            if give_up.wait(delay):
                return answer

    def _note_failure(self, answer: Answer) -> None:
        """Remember a retryable failure; say a redirect loudly: it is a configuration error."""
        self.counters.note_error(answer.detail)
        if 300 <= answer.status < 400:
            now = time.monotonic()
            if now - self._redirect_logged >= REDIRECT_LOG_INTERVAL:
                self._redirect_logged = now
                log.error(
                    "SegmentBackend is misconfigured: %s; events are kept and retried until it is fixed",
                    answer.detail,
                )

    def _drop(self, reason: str, part: list[bytes], detail: str = "") -> None:
        self.counters.add_reason("dropped", reason, len(part), detail)
        if detail:
            self.counters.note_error(detail)
        noun = "message" if len(part) == 1 else "messages"
        log.warning("dropped %d %s: %s%s", len(part), noun, reason, f" ({detail})" if detail else "")
        if self.on_error is not None:
            try:
                self.on_error(Reason(reason, detail), [orjson.loads(item) for item in part])
            except Exception:
                log.exception("on_error hook failed")


def sender_worker(
    buffer: Buffer,
    transport: HttpTransport,
    counters: Counters,
    *,
    batch_count: int = 500,
    batch_bytes: int = MAX_BATCH_BYTES,
    linger: float = 0.5,
    retry_budget: Optional[float] = None,
    backoff: tuple[float, float] = (0.1, 10.0),
    on_error: Optional[ErrorHook] = None,
    max_retries: Optional[int] = None,
) -> BatchWorker[Sender]:
    """The worker that sends ``buffer`` through ``transport``: batches of up to ``batch_count``
    messages and ``batch_bytes`` bytes, filled for up to ``linger`` seconds (the options of
    :class:`Sender` for the rest). Not started: its first put, flush or ``ensure_started``
    starts it."""
    sender = Sender(
        transport,
        counters,
        retry_budget=retry_budget,
        backoff=backoff,
        on_error=on_error,
        max_retries=max_retries,
    )
    return BatchWorker(
        buffer,
        sender,
        counters,
        name="eventtracking-segment-sender",
        log=log,
        batch_count=batch_count,
        batch_bytes=take_bytes(batch_count, batch_bytes),
        linger=linger,
    )
