"""Route events through a chain of processors and then to a set of backends."""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Protocol
from uuid import UUID

from eventtracking.backends import event_name
from eventtracking.processors.exceptions import EventEmissionExit, NoBackendEnabled, NoTransformerImplemented

LOG = logging.getLogger(__name__)

Processor = Callable[[Any], Any]


class ReadsOnly(Protocol):
    """A backend or processor that never changes the event it is called with, nor anything in
    it, and keeps no reference into it once its call returns (it encodes what it needs before).

    The router then hands it the event without copying it. Only a class that sets
    ``reads_only`` in its own body is taken at its word (a subclass that does not restate it
    gets copies), and not when ``send`` was replaced on the instance (a test's recorder keeps
    the events it is given).
    """

    @property
    def reads_only(self) -> bool: ...


def reads_only(component: Any) -> bool:
    """Whether `component` (a backend or processor) only reads its event: see :class:`ReadsOnly`."""
    declared = _DECLARED.get(type(component))
    if declared is None:
        declared = "reads_only" in type(component).__dict__
        if len(_DECLARED) < 256:  # bounded: classes made at run time (mocks) must not pile up
            _DECLARED[type(component)] = declared
    if not declared or "send" in getattr(component, "__dict__", ()):
        return False
    return _answers_reads_only(component)


_DECLARED: dict[type, bool] = {}  # class -> whether its own body sets reads_only


class RoutingBackend:
    """
    Route events to processors, then to backends.

    1) Processors run in registration order, each on the output of the previous one:
       with processors ``[a, b, c]`` the result is ``c(b(a(event)))``. A processor may
       mutate the event in place and return ``None`` (the event is kept), or return a
       new event. Raising ``EventEmissionExit`` drops the event silently: no later
       processor and no backend sees it. Any other exception is logged and that
       processor is skipped: the event goes on as it left it, as in the original package
       (a site's authoritative tracking log must not lose events to a processor's bug).
       Except for filters (processors with a true ``fails_closed`` attribute, such as the
       whitelist and the regex filter): an exception from one drops the event, logged,
       because a filter's failure must never let an event through.

    2) Backends are called one after the other in ascending order of their names. Each
       backend that may change its event receives its own deep copy of the processed event,
       so one backend mutating its event cannot affect another. A backend or processor that
       declares it only reads (:class:`ReadsOnly`: our ``LoggerBackend``, ``SegmentBackend``
       in owned mode, the whitelist and regex filters) is given the event without a copy,
       which it never changes nor keeps. An exception raised by a backend is logged and
       swallowed, and the remaining backends still run.

    ``send`` never raises. It also never mutates the event it is given: processors that may
    change it work on a private copy.

    These decisions (copy before the processors or not, how each backend is called) are made
    once, in a plan the router keeps until its ``backends`` or ``processors`` change (through
    ``register_*``, in place, or replaced whole); see ``_Plan``.

    `backends` maps sortable names to objects with a callable ``send(event)``;
    `processors` is an iterable of callables. A ``RoutingBackend`` is itself a
    backend, so routing trees can be nested.

    Raises ``ValueError`` if a backend has no callable ``send`` or a processor is not
    callable.
    """

    _plan: _Plan | None = None  # made on first send: subclasses need not call an __init__ of ours

    def __init__(
        self, backends: Mapping[Any, Any] | None = None, processors: Iterable[Processor] | None = None
    ) -> None:
        self.backends: OrderedDict = OrderedDict()
        self.processors: list[Processor] = []

        if backends is not None:
            for name in sorted(backends.keys()):
                self.register_backend(name, backends[name])

        if processors is not None:
            for processor in processors:
                self.register_processor(processor)

    def register_backend(self, name: Any, backend: Any) -> None:
        """
        Register `backend` under `name`; it will be called for every processed event.

        Backends are called in the order they were registered, as in the original
        package: the constructor registers its backends sorted by name, later ones follow.
        """
        if not callable(getattr(backend, "send", None)):
            # The original's message (the class name) first: callers match it; detail follows.
            raise ValueError(
                f'Backend {type(backend).__name__} does not have a callable "send" method.'
                f" (registered as {name!r})"
            )
        self.backends[name] = backend

    def register_processor(self, processor: Processor) -> None:
        """Append `processor` to the chain; processors run in registration order."""
        if not callable(processor):
            raise ValueError(f"Processor {type(processor).__name__} is not callable. ({processor!r})")
        self.processors.append(processor)

    def send(self, event: Any) -> None:
        """
        Process `event` with all processors and send the result to all backends.

        Never raises: see the class docstring for what happens to failures.
        """
        if type(self) is RoutingBackend:
            self._dispatch(event, False, True)
        else:  # a subclass may process or route in ways of its own: it gets its copy
            self._route(isolated_copy(event))

    def _route(self, event: Any) -> None:
        """``send`` for an event this router owns: no one else holds it, so no copy is
        needed (a parent router hands its children events they own this way)."""
        try:
            processed = self.process_event(event)
        except EventEmissionExit:
            return
        self.send_to_backends(processed)

    def process_event(self, event: Any) -> Any:
        """
        Run every processor on `event` in order and return the result.

        `event` may be mutated in place. Raises ``EventEmissionExit`` if a processor asked
        for the event to be dropped, or if a filter (``fails_closed``) failed. Any other
        processor that fails is logged here and skipped: the chain goes on with the event
        as that processor left it.
        """
        for processor in self.processors:
            try:
                modified = processor(event)
            except EventEmissionExit:
                raise
            except Exception:
                if getattr(processor, "fails_closed", False) is True:  # not a Mock's attribute
                    # A filter that failed must not let the event through: drop it.
                    LOG.exception(
                        "Filter %r failed on event %r: the event is dropped", processor, event_name(event)
                    )
                    raise EventEmissionExit() from None
                # The original's call (message and argument): tests across Open edX mock the logger.
                LOG.exception("Failed to execute processor: %s", str(processor))
                continue
            if modified is not None:
                event = modified
        return event

    def send_to_backends(self, event: Any) -> None:
        """
        Send `event` to every backend in registration order; each that may change it gets its
        own copy.

        The last backend receives `event` itself, which is safe because every earlier
        backend was given a copy taken before it ran; so `event` must be owned by this
        router (``send`` guarantees that). A backend that only reads (:class:`ReadsOnly`)
        is given `event` itself. A nested plain ``RoutingBackend`` is handed its copy as its
        own, so it does not copy again; a subclass that overrides ``send()``
        (``AsyncRoutingBackend``, ``EventBusRoutingBackend``...) is called through its
        ``send()``. Logs and swallows backend exceptions: ``NoTransformerImplemented`` and
        ``NoBackendEnabled`` (a backend saying the event is not for it) at info level, with
        the original's messages, anything else as an error.
        """
        self._dispatch(event, True, False)

    def _dispatch(self, event: Any, owned: bool, process: bool) -> None:
        """Process (when `process`) and deliver `event` along this router's plan. `owned` False:
        others hold `event` (the caller, other branches), so it is copied before a processor
        that may change it runs, and every backend but those that only read gets a copy, the
        last one too; `owned` True: the last backend may be given the event itself."""
        plan = self._plan
        backends = self.backends
        if (
            plan is None
            or plan.backends != backends  # an OrderedDict's == compares the order too
            or plan.processors != self.processors
            or type(backends) is not OrderedDict  # a plain dict reordered would compare equal
        ):
            plan = self._plan = _Plan(self)  # made again: the backends or processors changed
        if process and plan.processors:
            if plan.copies and not owned:
                event = isolated_copy(event)
                owned = True
            try:
                event = self.process_event(event)
            except EventEmissionExit:
                return
        # `owns`: the step's backend may be given the event itself (the last one of an owned event).
        for name, backend, method, kind, owns in plan.owned_steps if owned else plan.shared_steps:
            try:
                send = backend.send
                if getattr(send, "__func__", None) is not method:  # replaced since the plan was made
                    kind = _kind_of(backend, send)
                if kind is _ROUTER:
                    # A plain router (its send() neither overridden by a subclass nor patched on
                    # the instance) takes the copy as its own instead of copying it again, or
                    # takes a shared event and copies only if it must.
                    backend._dispatch(event, owns, True)
                elif kind is _READS:
                    send(event)
                elif kind is _SUBCLASS_ROUTER:
                    backend._route(event if owns else isolated_copy(event))
                elif owns or (kind is _ANSWERS and _answers_reads_only(backend)):
                    send(event)
                else:
                    send(isolated_copy(event))
            except NoTransformerImplemented as error:
                LOG.info(
                    '[send_to_backends] No transformer has been implemented for edx event "%s", [%s]',
                    event_name(event),
                    repr(error),
                )
            except NoBackendEnabled as error:
                LOG.info(
                    '[send_to_backends] Failed to send edx event "%s" to "%s" backend. "%s" backend has'
                    " not been enabled, [%s]",
                    event_name(event),
                    name,
                    name,
                    repr(error),
                )
            except Exception:
                LOG.exception('Unable to send edx event "%s" to backend: %s', event_name(event), name)

_PLAIN_SEND = RoutingBackend.send

# How a backend is called (a plan's decision for it).
_COPY = "copy"  # anything else: its own copy, unless it is the last backend of an owned event
_READS = "reads"  # its class says it only reads, as a constant: the event itself
_ANSWERS = "answers"  # its class declares it, the instance answers (a property): read each call
_ROUTER = "router"  # a plain RoutingBackend: routed without its send(), copying only if it must
_SUBCLASS_ROUTER = "subclass"  # a subclass with the plain send(): its _route() on its own copy


def _kind_of(backend: Any, send: Any) -> str:
    if getattr(send, "__func__", None) is _PLAIN_SEND:
        return _ROUTER if type(backend) is RoutingBackend else _SUBCLASS_ROUTER
    if not reads_only(backend):
        return _COPY
    constant = type(type(backend).__dict__["reads_only"]) is bool and "reads_only" not in backend.__dict__
    return _READS if constant else _ANSWERS


def _answers_reads_only(component: Any) -> bool:
    """Whether a backend or processor whose class declares :class:`ReadsOnly` still says so (an
    instance may answer by its state: ``SegmentBackend`` in drop-in mode does not only read)."""
    try:
        return component.reads_only is True
    except Exception:  # a declaration that fails to answer is no promise
        return False


class _Plan:
    """What a plain router decided about its processors and backends, made once and again when
    either changes (``register_*``, or its ``backends``/``processors`` changed in place or
    replaced): whether a processor may change the event (then the router copies it first), and
    how each backend is called. A backend whose ``send`` was replaced since (a test's mock) is
    decided again on every call; a backend's ``reads_only`` answered by a property is read on
    every call; a class constant (``reads_only = True``) and a processor's declaration when the
    plan is made.
    """

    __slots__ = ("backends", "copies", "owned_steps", "processors", "shared_steps")

    def __init__(self, router: RoutingBackend) -> None:
        self.processors = list(router.processors)
        self.backends = OrderedDict(router.backends)
        self.copies = not all(reads_only(processor) for processor in self.processors)
        steps = []
        for name, backend in self.backends.items():
            send = getattr(backend, "send", None)
            steps.append((name, backend, getattr(send, "__func__", None), _kind_of(backend, send), False))
        # Each step: (name, backend, its send's function, kind, owns). For an event the router
        # owns, the last backend owns it; for a shared one, none does (decided here, not per send).
        self.shared_steps: tuple[tuple[Any, Any, Any, str, bool], ...] = tuple(steps)
        if steps:
            steps[-1] = steps[-1][:4] + (True,)
        self.owned_steps: tuple[tuple[Any, Any, Any, str, bool], ...] = tuple(steps)


def isolated_copy(event: Any) -> Any:
    """
    Return a copy of `event` that shares nothing mutable with it.

    Dicts and lists (the whole of a usual event) are rebuilt, values that cannot change in
    place (str, numbers, datetimes, UUIDs...) are shared, anything else is deep-copied. This
    is what ``copy.deepcopy`` gives, at about a sixth of its cost on a tracking event, which
    matters: every event is copied once per router and once per extra backend.

    Self-referencing or very deep structures are left to ``copy.deepcopy``; if some value
    cannot be deep-copied (a lock, an open file...), only the dict/list/tuple/set structure is
    copied and the leaves are shared, so the event is still delivered with its containers
    isolated.
    """
    try:
        return _tree_copy(event, 0)
    except Exception:  # too deep (maybe a cycle), or a leaf that refuses deepcopy
        pass
    try:
        return copy.deepcopy(event)
    except Exception:
        LOG.debug("Event %r cannot be deep-copied; copying its containers only", event_name(event))
        return _copy_containers(event)


# Types whose values cannot be changed in place: copies may share them.
_IMMUTABLE = frozenset(
    {str, int, float, bool, type(None), bytes, complex, Decimal, UUID, datetime, date, time, timedelta}
)
_TREE_DEPTH = 64  # deeper than any real event; cycles get there fast and go to deepcopy


class _TooDeep(Exception):
    pass


def _tree_copy(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if depth > _TREE_DEPTH:
        raise _TooDeep
    if kind is dict:
        return {
            key: item if type(item) in _IMMUTABLE else _tree_copy(item, depth + 1)
            for key, item in value.items()
        }
    if kind is list:
        return [item if type(item) in _IMMUTABLE else _tree_copy(item, depth + 1) for item in value]
    if kind is tuple:
        return tuple(_tree_copy(item, depth + 1) for item in value)
    return copy.deepcopy(value)


def _copy_containers(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_containers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_containers(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_copy_containers(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(value)
    return value
