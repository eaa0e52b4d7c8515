"""Event tracking backend that sends events to Segment (or any API that speaks its HTTP Tracking API).

Each event becomes one Segment track message (the mapping is in
:mod:`eventtracking.segment.mapping`). Two ways to deliver, chosen by the options:

- **Drop-in** (no ``write_key``): the original backend's contract. The application configures
  the official client's global module elsewhere (``segment.analytics`` from
  segment-analytics-python 2.x, else ``analytics`` from 1.x) and this backend hands each
  message to its ``track``.
- **Owned** (``write_key=...``, optionally ``host=...``): the backend delivers by itself: on the
  caller's thread map → encode once → the bounded buffer of a
  :class:`~eventtracking.segment.pipeline.Pipeline`, whose one sender thread per process
  batches, posts, retries and splits (:mod:`eventtracking.segment.sender`). Backends and
  :class:`~eventtracking.segment.client.Client` objects with the same host, key and delivery
  options (or the same ``spool_dir``) share one pipeline. Fork and exit are handled by
  :mod:`eventtracking.background`: a forked child (also one forked in C, without Python's
  at-fork hooks) starts empty with a thread of its own, and at interpreter exit the pipeline
  delivers by itself for up to ``exit_timeout`` seconds.

In both modes ``send()`` never raises into the application. What it does not send is counted
by reason in ``stats()`` and logged (debug for skips, rate-limited warnings for drops).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from eventtracking.backends import event_name
from eventtracking.background import check_fork
from eventtracking.queue.stats import Counters, Progress
from eventtracking.queue.worker import Closed, Handle
from eventtracking.segment.encoding import MAX_MESSAGE_BYTES, Unserializable, encode, trim_to_fit
from eventtracking.segment.mapping import MappingOptions, SkipEvent, to_track_message
from eventtracking.segment.official import import_clients as _import_clients
from eventtracking.segment.pipeline import (
    DEFAULT_HOST,
    Delivery,
    MessageIds,
    Pipeline,
    acquire,
)
from eventtracking.segment.sender import ErrorHook

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_HOST", "MessageIds", "SegmentBackend", "analytics"]


_ANALYTICS, _SEGMENT_ANALYTICS = _import_clients()

# The original backend's module-level name for the global client, which the drop-in mode
# delivers through: code across the ecosystem patches eventtracking.backends.segment.analytics
# in its tests, and then the backend uses what was patched in. ``analytics`` as the original
# when it is installed, else ``segment.analytics``.
analytics: Any = _ANALYTICS if _ANALYTICS is not None else _SEGMENT_ANALYTICS


def _has_write_key(client: Any) -> bool:
    """Whether a global client module is configured: a write key, or a client of its own made."""
    return bool(getattr(client, "write_key", None)) or getattr(client, "default_client", None) is not None


def _global_client() -> Any:
    """The global client to deliver through, chosen at send time (applications set the key after
    their settings load): ``analytics``; but when both modules are installed and only
    ``segment.analytics`` has a write key, that one. None when neither can be imported."""
    client = analytics
    if (
        client is _ANALYTICS  # not patched
        and _SEGMENT_ANALYTICS is not None
        and client is not None
        and not _has_write_key(client)
        and _has_write_key(_SEGMENT_ANALYTICS)
    ):
        return _SEGMENT_ANALYTICS
    return client


class SegmentBackend:
    """Send each event to Segment as a track message. See the module docstring for the modes.

    Options of the owned mode (all optional): ``host`` (default ``https://api.segment.io``),
    ``max_buffer_bytes`` (64 MiB), ``max_batch_size`` (500 messages), ``flush_interval``
    (0.5 s: how long the sender waits to fill a batch), ``retry_timeout`` (None: a batch the
    server answers with a retryable error is retried, honouring Retry-After, for as long as the
    process lives, while new events fill the buffer up to ``max_buffer_bytes`` and past it are
    dropped and counted as ``buffer_full``; seconds: a batch is given up after that long),
    ``gzip`` (False, or a compression level), ``timeout`` (15 s per request),
    ``exit_timeout`` (5 s to deliver at interpreter exit), ``on_error(reason, messages)``
    (called on the sender thread with the decoded messages finally refused or given up on),
    ``spool_dir`` (keep accepted events on disk until acknowledged; see
    :mod:`eventtracking.queue.spool`), ``spool_max_bytes`` (1 GiB), ``fsync`` (False).
    Mapping options, both modes: ``exclude_fields``, ``anonymize_ip``, ``anonymous_id_field``
    (see :class:`~eventtracking.segment.mapping.MappingOptions`), ``trim_oversized``.
    """

    def __init__(
        self,
        write_key: Optional[str] = None,
        host: Optional[str] = None,
        *,
        exclude_fields: tuple[str, ...] = (),
        anonymize_ip: bool = False,
        anonymous_id_field: Optional[str] = None,
        trim_oversized: bool = False,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        max_batch_size: int = 500,
        flush_interval: float = 0.5,
        retry_timeout: Optional[float] = None,
        gzip: int | bool = False,
        timeout: float = 15.0,
        exit_timeout: float = 5.0,
        on_error: Optional[ErrorHook] = None,
        spool_dir: Optional[str] = None,
        spool_max_bytes: int = 1024**3,
        fsync: bool = False,
    ) -> None:
        # A lone string is passed on as it is, for MappingOptions to refuse (not split into letters).
        excluded = exclude_fields if isinstance(exclude_fields, str) else tuple(exclude_fields)
        self._mapping = MappingOptions(excluded, anonymize_ip, anonymous_id_field)
        self.trim_oversized = trim_oversized
        self.exit_timeout = exit_timeout
        self._counters = Counters()
        self._ids = MessageIds()
        self._handle: Optional[Handle[Pipeline]] = None  # owned mode: its way into the pipeline
        self._clients_used: list[Any] = []  # the global clients handed messages: flush() flushes them
        self._client_error_warned = False
        self._no_write_key_warned = False
        if write_key is None:
            if host is not None:
                raise ValueError("host is only used with write_key (owned mode)")
            if _global_client() is None:
                log.warning(
                    "SegmentBackend: neither segment.analytics (segment-analytics-python 2.x) nor "
                    "analytics (1.x) can be imported, and no write_key was given: events will be "
                    "counted as skipped ('no_client'), not sent"
                )
        else:
            delivery = Delivery(
                write_key,
                host or DEFAULT_HOST,
                max_buffer_bytes=max_buffer_bytes,
                batch_count=max_batch_size,
                linger=flush_interval,
                retry_budget=retry_timeout,
                gzip_level=6 if gzip is True else int(gzip),
                timeout=timeout,
                on_error=on_error,
                spool_dir=spool_dir,
                spool_max_bytes=spool_max_bytes,
                fsync=fsync,
            )
            self._handle = acquire(delivery, self._counters, exit_timeout, "SegmentBackend")

    @property
    def _pipeline(self) -> Optional[Pipeline]:
        """Owned mode's pipeline (shared with other callers); None in drop-in mode."""
        return None if self._handle is None else self._handle.owner

    def __repr__(self) -> str:
        mode = f"owned, {self._pipeline.sender.transport!r}" if self._pipeline else "drop-in"
        return f"<SegmentBackend {mode}>"

    @property
    def reads_only(self) -> bool:
        """Owned mode only reads its event (:class:`~eventtracking.backends.routing.ReadsOnly`):
        ``send`` encodes it before returning. The drop-in mode hands it to the global client,
        which keeps it until its thread encodes it, so a router gives that mode a copy."""
        return self._handle is not None

    # -- the caller's thread -----------------------------------------------------------------

    def send(self, event: Any, message_id: Optional[str] = None) -> None:
        """Map, encode and buffer one event (owned mode) or hand it to the global client.

        Never raises. ``message_id`` (optional) fixes the Segment messageId, for callers that
        need it deterministic (replays); otherwise a unique one is assigned.
        """
        try:
            check_fork()  # before a forked child (also one forked in C) touches any state
            message = to_track_message(event, self._mapping)
            message["messageId"] = message_id or self._ids.next()
            if self._handle is None:
                self._send_to_client(message)
                return
            data = encode(message)  # right-sized bytes: held in the buffer as they are
            if len(data) > MAX_MESSAGE_BYTES:
                data = self._fit(message, len(data))
            self._handle.put(data)  # a full buffer is counted there
        except (SkipEvent, Closed) as skip:
            self._skip(skip.reason, event)
        except Unserializable as error:  # "unserializable", or "changed_during_send"
            self._skip(error.reason, event, str(error))
        except Exception as error:  # the application must never pay for a bug here
            log.exception("SegmentBackend.send failed on event %r", event_name(event))
            detail = f"internal error: {type(error).__name__}"
            self._counters.add_reason("skipped", "internal_error", 1, detail)

    def _fit(self, message: dict, size: int) -> bytes:
        if self.trim_oversized:
            data, trimmed = trim_to_fit(message, MAX_MESSAGE_BYTES)
            log.warning("event %r was %d bytes: trimmed %s", message["event"], size, ", ".join(trimmed))
            self._counters.add("trimmed")
            return data
        log.warning(
            "event %r skipped: %d bytes encoded, over Segment's %d byte limit",
            message["event"],
            size,
            MAX_MESSAGE_BYTES,
        )
        raise SkipEvent("oversized")

    def _skip(self, reason: str, event: Any, detail: str = "") -> None:
        self._counters.add_reason("skipped", reason, 1, detail)
        log.debug("skipped event %r: %s%s", event_name(event), reason, f" ({detail})" if detail else "")

    def _send_to_client(self, message: dict) -> None:
        client = _global_client()
        if client is None:
            raise SkipEvent("no_client")
        if not _has_write_key(client) and hasattr(client, "write_key"):
            self._warn_no_write_key(client)
            raise SkipEvent("no_write_key")
        if not self._clients_used or client is not self._clients_used[-1]:
            if all(used is not client for used in self._clients_used):
                self._clients_used.append(client)
        try:
            client.track(
                user_id=message.get("userId"),
                anonymous_id=message.get("anonymousId"),
                event=message["event"],
                properties=message["properties"],
                context=message["context"],
                timestamp=message.get("timestamp"),
                message_id=message["messageId"],
            )
        except Exception as error:
            # The official client raises on bad input: say it once loudly, then count; its
            # message never holds the key itself.
            if not self._client_error_warned:
                self._client_error_warned = True
                log.warning("the global Segment client refused an event: %s: %s", type(error).__name__, error)
            raise SkipEvent("client_error") from None
        self._counters.add("accepted")

    def _warn_no_write_key(self, client: Any) -> None:
        if self._no_write_key_warned:
            return
        self._no_write_key_warned = True
        name = getattr(client, "__name__", type(client).__name__)
        log.warning(
            "SegmentBackend (drop-in mode): the global Segment client %s has no write_key, so events "
            "are not sent but counted as skipped ('no_write_key') until the application sets "
            "%s.write_key (Open edX sets it from LMS_SEGMENT_KEY at startup)",
            name,
            name,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until everything accepted so far was delivered or finally refused.

        Returns False when ``timeout`` (seconds; None = no limit) ran out first; a warning then
        says how much is still pending. Drop-in mode: flushes the global clients this backend
        handed messages to, and returns False (with a warning, never a traceback) when their
        flush failed.
        """
        check_fork()
        if self._handle is not None:
            return self._handle.flush(timeout)
        return _flush_clients(self._clients_used, timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush within ``timeout`` and stop the sender thread; True when nothing was left."""
        check_fork()
        if self._handle is None:
            return self.flush(timeout)
        return self._handle.release(timeout)  # this backend's sends are "closed" from now on

    def stats(self) -> dict[str, Any]:
        """What the backend did, as plain data (a copy; never the write key):

        - ``accepted``, ``delivered``, ``retries``, ``batches`` (requests made), ``trimmed``,
          ``deferred`` (parts a spool kept for later): counts;
        - ``skipped`` and ``dropped``: ``{reason: count}`` (``{"gave_up": 3}``);
        - ``reasons``: ``{reason: detail}``, the latest detail of each reason counted in
          ``dropped`` (and of a ``skipped`` reason that has one): ``{"gave_up": "network error:
          connection refused (http://127.0.0.1:9)"}``, ``{"refused": "HTTP 401: wrong write
          key"}``, ``{"unserializable": "cycle at properties.data.x"}`` (a network error names
          its error and host; an HTTP answer its status and the server's reason, at most 200
          characters);
        - ``last_error``: the detail of the latest unsuccessful answer, also one still being
          retried (None before any): what a timed-out ``flush`` is waiting out;
        - owned mode: ``in_flight`` / ``buffered_bytes`` (accepted, not yet answered), and with a
          spool ``spool`` (spooled, acknowledged, pending, disk bytes...).

        Owned mode: ``skipped``, ``trimmed`` and the ``buffer_full`` drops are this backend's;
        the rest (``accepted``, ``delivered``, ``gave_up``...) are its pipeline's, which every
        backend and client of the same delivery options in the process shares.

        ``on_error(reason, messages)`` gets the same detail: ``reason`` is a ``str`` with a
        ``detail`` attribute (``reason == "refused"``, ``reason.detail == "HTTP 401: ..."``).
        """
        check_fork()
        if self._handle is not None:
            return self._handle.stats()
        return self._counters.snapshot()

    def progress(self) -> Progress:
        """:meth:`stats`, typed (:class:`~eventtracking.queue.stats.Progress`): what a caller
        that watches this backend's deliveries reads (the replay). Drop-in mode: nothing is
        buffered here, so ``in_flight`` and ``buffered_bytes`` are 0."""
        return Progress.from_stats(self.stats())


def _flush_clients(clients: list[Any], timeout: Optional[float]) -> bool:
    """Flush the global clients a drop-in backend handed messages to; False, with a warning and
    no traceback, when one failed or ``timeout`` ran out."""
    if not clients:
        return True
    # The official client's flush() has no timeout and hangs when its thread is gone (after
    # fork): wait for it on a helper thread instead, which never lets an exception escape.
    done = threading.Event()
    errors: list[BaseException] = []

    def flush() -> None:
        try:
            for client in clients:
                client.flush()
        except Exception as error:
            errors.append(error)
        finally:
            done.set()

    threading.Thread(target=flush, name="segment-client-flush", daemon=True).start()
    if not done.wait(timeout):
        log.warning("flush of the global Segment client timed out after %ss", timeout)
        return False
    if errors:
        log.warning("flush of the global Segment client failed: %s: %s", type(errors[0]).__name__, errors[0])
        return False
    return True
