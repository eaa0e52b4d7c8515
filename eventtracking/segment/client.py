"""segment-analytics-python's ``Client`` on this library's pipeline, and the one call that routes
every Segment call of a process through it (:func:`install_global_client`).

``Client`` has the official methods, signatures, options and return values (see
``docs/migrating.rst`` for the differences). A call builds the message of its type
(:mod:`eventtracking.segment.messages`, pure), encodes it once and hands the bytes to the
process's :class:`~eventtracking.segment.pipeline.Pipeline` for the same destination and
delivery options: the one an owned-mode ``SegmentBackend`` of the same options uses too (one
sender thread), with its spool, fork, exit and SIGTERM handling.

No call raises into the caller. What a client refuses (bad input, oversized, unserializable,
a full buffer, closed, no write key) is counted by reason in :meth:`Client.stats` and logged:
a warning the first time a reason occurs, debug lines after that.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Callable, Optional

from eventtracking.background import check_fork
from eventtracking.queue.stats import Counters
from eventtracking.queue.worker import Closed, Handle
from eventtracking.segment import messages
from eventtracking.segment.encoding import MAX_MESSAGE_BYTES, Unserializable, encode
from eventtracking.segment.mapping import SkipEvent
from eventtracking.segment.official import import_clients
from eventtracking.segment.pipeline import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_HOST,
    Delivery,
    MessageIds,
    Pipeline,
    acquire,
)
from eventtracking.segment.sender import ErrorHook

log = logging.getLogger(__name__)

Result = tuple[bool, Optional[dict]]
# Options of the official client that have no meaning here: accepted, warned about, ignored.
IGNORED_OPTIONS = frozenset(
    {
        "proxies",
        "thread",
        "oauth_client_id",
        "oauth_client_key",
        "oauth_key_id",
        "oauth_auth_server",
        "oauth_scope",
        "max_total_backoff_duration",
        "max_rate_limit_duration",
    }
)


class Client:
    """segment-analytics-python's ``Client`` API on this library's pipeline.

    Official options, with their meaning: ``write_key``, ``host`` (default
    ``https://api.segment.io``), ``on_error(reason, messages)`` (called on the sender thread
    with what was finally refused or given up; ``reason`` is a ``str`` with a ``detail``),
    ``debug`` (log each message queued, at DEBUG, on this module's logger), ``send`` (False:
    build and check, send nothing), ``sync_mode`` (each call returns once its message was
    answered, or ``timeout`` ran out), ``gzip``, ``timeout`` (seconds per request),
    ``max_retries`` (retries of a batch before it is given up; None, the default: retried
    while the process lives and the buffer has room), ``upload_size`` (messages per batch,
    default 500), ``upload_interval`` (seconds the sender waits to fill a batch),
    ``max_queue_size`` (messages: the buffer holds at least this many, i.e. a byte bound of
    ``max_queue_size`` × 32 KiB, the largest message), ``log_handler``.
    Our own: ``max_buffer_bytes`` (the byte bound itself, default 64 MiB; wins over
    ``max_queue_size``), ``spool_dir`` (keep accepted messages on disk until acknowledged),
    ``exit_timeout`` (seconds to deliver at exit, SIGTERM included; default 5).

    Configuration errors (a missing write key, an unknown option, a spool directory this
    process uses for another destination) raise ValueError or TypeError here, at construction;
    calls never raise.
    """

    def __init__(
        self,
        write_key: Optional[str] = None,
        host: Optional[str] = None,
        debug: bool = False,
        max_queue_size: Optional[int] = None,
        send: bool = True,
        on_error: Optional[ErrorHook] = None,
        gzip: int | bool = False,
        max_retries: Optional[int] = None,
        sync_mode: bool = False,
        timeout: float = 15.0,
        *,
        upload_size: int = 500,
        upload_interval: float = 0.5,
        log_handler: Optional[logging.Handler] = None,
        max_buffer_bytes: Optional[int] = None,
        spool_dir: Optional[str] = None,
        exit_timeout: float = 5.0,
        **ignored: Any,
    ) -> None:
        unknown = set(ignored) - IGNORED_OPTIONS
        if unknown:
            raise TypeError(f"Client got unexpected options: {', '.join(sorted(unknown))}")
        if ignored:
            log.warning("Client: options of the official client ignored here: %s", ", ".join(sorted(ignored)))
        if not isinstance(write_key, str) or not write_key:
            raise ValueError("Client needs a write_key (a non-empty string)")
        if max_buffer_bytes is None:
            max_buffer_bytes = (
                DEFAULT_BUFFER_BYTES if max_queue_size is None else max_queue_size * MAX_MESSAGE_BYTES
            )
        self.write_key = write_key
        self.host = host or DEFAULT_HOST
        self.send = send
        self.sync_mode = sync_mode
        self.timeout = timeout
        self.debug = debug
        self.exit_timeout = exit_timeout
        if log_handler is not None:
            log.addHandler(log_handler)
        if debug:
            log.setLevel(logging.DEBUG)
        delivery = Delivery(
            write_key,
            self.host,
            max_buffer_bytes=max_buffer_bytes,
            batch_count=upload_size,
            linger=upload_interval,
            max_retries=max_retries,
            gzip_level=6 if gzip is True else int(gzip),
            timeout=timeout,
            on_error=on_error,
            spool_dir=spool_dir,
        )
        self._counters = Counters()
        self._ids = MessageIds()
        self._warned: set[str] = set()
        self._handle: Handle[Pipeline] = acquire(delivery, self._counters, exit_timeout, "Client")

    @property
    def _pipeline(self) -> Pipeline:
        """The pipeline this client shares with every caller of the same delivery options."""
        return self._handle.owner

    def __repr__(self) -> str:
        return f"<eventtracking Client {self._pipeline.sender.transport!r}>"

    def __bool__(self) -> bool:
        return True  # the official module tests `if not default_client`

    # -- the calls: the official signatures, message_id last -----------------------------------

    def track(
        self,
        user_id: Any = None,
        event: Any = None,
        properties: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Result:
        """Queue a track message; ``(True, message)`` when accepted, else ``(False, message or
        None)`` with the reason counted and logged."""
        args = (user_id, event, properties, context, timestamp, anonymous_id, integrations, message_id)
        return self._enqueue(messages.track, args)

    def identify(
        self,
        user_id: Any = None,
        traits: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Result:
        """Queue an identify message (see :meth:`track`)."""
        return self._enqueue(
            messages.identify, (user_id, traits, context, timestamp, anonymous_id, integrations, message_id)
        )

    def group(
        self,
        user_id: Any = None,
        group_id: Any = None,
        traits: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Result:
        """Queue a group message (see :meth:`track`)."""
        args = (user_id, group_id, traits, context, timestamp, anonymous_id, integrations, message_id)
        return self._enqueue(messages.group, args)

    def alias(
        self,
        previous_id: Any = None,
        user_id: Any = None,
        context: Any = None,
        timestamp: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Result:
        """Queue an alias message (see :meth:`track`)."""
        return self._enqueue(
            messages.alias, (previous_id, user_id, context, timestamp, integrations, message_id)
        )

    def page(
        self,
        user_id: Any = None,
        category: Any = None,
        name: Any = None,
        properties: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Result:
        """Queue a page message (see :meth:`track`)."""
        args = (
            user_id,
            category,
            name,
            properties,
            context,
            timestamp,
            anonymous_id,
            integrations,
            message_id,
        )
        return self._enqueue(messages.page, args)

    def screen(
        self,
        user_id: Any = None,
        category: Any = None,
        name: Any = None,
        properties: Any = None,
        context: Any = None,
        timestamp: Any = None,
        anonymous_id: Any = None,
        integrations: Any = None,
        message_id: Any = None,
    ) -> Result:
        """Queue a screen message (see :meth:`track`)."""
        args = (
            user_id,
            category,
            name,
            properties,
            context,
            timestamp,
            anonymous_id,
            integrations,
            message_id,
        )
        return self._enqueue(messages.screen, args)

    def _enqueue(self, build: Callable[..., dict], args: tuple) -> Result:
        message: Optional[dict] = None
        try:
            check_fork()  # before a forked child (also one forked in C) touches any state
            message = build(*args)
            if "messageId" not in message:
                message["messageId"] = self._ids.next()
            data = encode(message)  # right-sized bytes: held in the buffer as they are
            if len(data) > MAX_MESSAGE_BYTES:
                raise SkipEvent("oversized")
            if not self.send:
                self._counters.add_reason("skipped", "send_disabled")
                return True, message
            if not self._handle.put(data):  # a full buffer: counted there
                return False, message
            if self.debug:
                log.debug("queued %s %s", message["type"], message["messageId"])
            if self.sync_mode:
                self._handle.flush(self.timeout)
            return True, message
        except (SkipEvent, Closed) as skip:
            self._refuse(skip.reason, build.__name__, message)
        except Unserializable as error:  # "unserializable", or "changed_during_send"
            self._refuse(error.reason, build.__name__, message, str(error))
        except Exception as error:  # the application must never pay for a bug here
            log.exception("Client.%s failed", build.__name__)
            self._counters.add_reason(
                "skipped", "internal_error", 1, f"internal error: {type(error).__name__}"
            )
        return False, message

    def _refuse(self, reason: str, call: str, message: Optional[dict], detail: str = "") -> None:
        if reason == "oversized" and message is not None:
            detail = f"over Segment's {MAX_MESSAGE_BYTES} byte limit"
        self._counters.add_reason("skipped", reason, 1, detail)
        # A warning the first time a reason occurs (it names a bug to fix), debug after that.
        level = logging.DEBUG if reason in self._warned else logging.WARNING
        self._warned.add(reason)
        log.log(level, "Client.%s refused a message: %s%s", call, reason, f" ({detail})" if detail else "")

    # -- lifecycle -------------------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every message accepted so far was answered (``timeout``: seconds, None =
        no limit; a warning says what is still pending when it runs out)."""
        check_fork()
        self._handle.flush(timeout)

    def join(self, timeout: Optional[float] = None) -> None:
        """Deliver what was accepted and stop: later calls are refused as ``closed``. The
        pipeline's thread stops when no backend or client uses it any more."""
        self.close(timeout)

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Flush, then join (as the official client)."""
        self.flush(timeout)
        self.join(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """:meth:`join` that says whether everything was delivered within ``timeout``."""
        check_fork()
        return self._handle.release(timeout)

    def stats(self) -> dict[str, Any]:
        """What the client refused (``skipped`` by reason, ``buffer_full`` in ``dropped``) and
        what its pipeline did (shared with the backends and clients of the same options): the
        keys of ``SegmentBackend.stats``."""
        check_fork()
        return self._handle.stats()


def global_modules() -> list[ModuleType]:
    """The official clients' global modules installed here (the ones drop-in ``SegmentBackend``
    delivers through): ``analytics`` (analytics-python 1.x, whose 1.4.post1 also installs the
    next) and ``segment.analytics`` (2.x)."""
    return [
        module for module in import_clients() if module is not None and hasattr(module, "default_client")
    ]


def install_global_client(**options: Any) -> Client:
    """Make a :class:`Client` with ``options`` and install it as ``default_client`` (with its
    ``write_key``) of each official global module installed: from then on
    ``analytics.track(...)`` and the other module-level calls, and drop-in ``SegmentBackend``,
    deliver through it. Returns the client. Raises ValueError without a ``write_key``."""
    client = Client(**options)
    for module in global_modules():
        module.default_client = client  # type: ignore[attr-defined]
        module.write_key = client.write_key  # type: ignore[attr-defined]
    return client
