"""
Strategies for locating the context stack of a tracker.

A context locator has a ``get()`` method returning an ``OrderedDict``-like mutable
mapping of context name -> context dict, in the order the contexts were entered.
The tracker mutates that mapping in place to enter and exit contexts, and merges its
values (later entries win) into every event.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any, Iterator, Tuple

# One entered context: (name, context dict). A stack is an immutable tuple of these.
_Frame = Tuple[Any, Any]


class DefaultContextLocator:
    """
    One context stack per locator, shared by every thread and task that uses it.

    Suitable for single-threaded programs and tests; use
    ``ThreadLocalContextLocator`` when requests run concurrently.
    """

    def __init__(self) -> None:
        self.context: OrderedDict = OrderedDict()

    def get(self) -> OrderedDict:
        """Return the single shared context stack."""
        return self.context


class ContextStack(MutableMapping):
    """
    ``OrderedDict``-like view of the context stack held in a ``ContextVar``.

    Every read looks up the variable in the caller's current ``contextvars`` context
    and every write stores a new immutable tuple with ``ContextVar.set``. Because the
    stored value is never mutated, a copy of the context (a new thread's, or a new
    asyncio task's) can never leak changes back into the context it was copied from.

    Re-assigning an existing name keeps its position, as ``OrderedDict`` does.
    """

    __slots__ = ("_var",)

    def __init__(self, var: contextvars.ContextVar) -> None:
        self._var = var

    def _frames(self) -> tuple[_Frame, ...]:
        return self._var.get()

    def __getitem__(self, name: Any) -> Any:
        for frame_name, ctx in self._frames():
            if frame_name == name:
                return ctx
        raise KeyError(name)

    def __setitem__(self, name: Any, ctx: Any) -> None:
        frames = self._frames()
        for index, (frame_name, _) in enumerate(frames):
            if frame_name == name:
                self._var.set(frames[:index] + ((name, ctx),) + frames[index + 1 :])
                return
        self._var.set(frames + ((name, ctx),))

    def __delitem__(self, name: Any) -> None:
        frames = self._frames()
        for index, (frame_name, _) in enumerate(frames):
            if frame_name == name:
                self._var.set(frames[:index] + frames[index + 1 :])
                return
        raise KeyError(name)

    def __iter__(self) -> Iterator[Any]:
        return iter([name for name, _ in self._frames()])

    def __len__(self) -> int:
        return len(self._frames())

    def __contains__(self, name: object) -> bool:
        return any(frame_name == name for frame_name, _ in self._frames())

    # The tracker calls values() on every emit; avoid the Mapping mixin's
    # one-lookup-per-key implementation.
    def values(self) -> list[Any]:  # type: ignore[override]
        return [ctx for _, ctx in self._frames()]

    def items(self) -> list[_Frame]:  # type: ignore[override]
        return list(self._frames())

    def keys(self) -> list[Any]:  # type: ignore[override]
        return [name for name, _ in self._frames()]

    def clear(self) -> None:
        self._var.set(())

    def copy(self) -> OrderedDict:
        """Return a snapshot as a plain ``OrderedDict``."""
        return OrderedDict(self._frames())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ContextStack):
            return self._frames() == other._frames()
        if isinstance(other, OrderedDict):
            # Order-sensitive, like OrderedDict == OrderedDict.
            return list(self._frames()) == list(other.items())
        if isinstance(other, dict):
            return dict(self._frames()) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable mapping

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._frames())!r})"


class ThreadLocalContextLocator:
    """
    A separate context stack for each thread and each asyncio task.

    Backed by ``contextvars`` rather than ``threading.local`` so that it is correct
    under asyncio as well as threads (and under gevent, whose greenlets each get their
    own ``contextvars`` context):

    * a context entered in one thread is never visible in another thread;
    * an asyncio task (or ``contextvars.copy_context().run``) started while a context
      is active inherits a copy of the stack; contexts it enters or exits afterwards
      are not seen by its parent, and vice versa.

    ``get()`` returns a live view (``ContextStack``): operations on it always act on
    the stack of whichever thread/task performs them, so do not hand the object to
    another thread expecting it to carry this thread's stack.
    """

    def __init__(self) -> None:
        # One variable per locator so that two trackers never share a stack. Locators
        # live as long as their tracker, so the variable's lifetime is not a concern.
        self._var: contextvars.ContextVar[tuple[_Frame, ...]] = contextvars.ContextVar(
            f"eventtracking_context_{id(self):x}", default=()
        )
        self._stack = ContextStack(self._var)

    def get(self) -> ContextStack:
        """Return the context stack of the current thread or asyncio task."""
        return self._stack
