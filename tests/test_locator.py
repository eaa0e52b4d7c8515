"""Tests for eventtracking.locator: context stacks per thread and per asyncio task."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import OrderedDict

import pytest

from eventtracking.locator import DefaultContextLocator, ThreadLocalContextLocator
from eventtracking.tracker import Tracker


class RecordingBackend:
    def __init__(self):
        self.events = []

    def send(self, event):
        self.events.append(event)


def run_in_thread(target):
    """Run `target` in a new thread, re-raising anything it raised."""
    errors = []

    def wrapper():
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            errors.append(error)

    thread = threading.Thread(target=wrapper)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_default_locator_returns_one_shared_ordered_dict():
    locator = DefaultContextLocator()
    stack = locator.get()
    assert isinstance(stack, OrderedDict)
    assert locator.get() is stack
    stack["a"] = {"x": 1}
    seen = []
    run_in_thread(lambda: seen.append(dict(locator.get())))
    assert seen == [{"a": {"x": 1}}]


def test_thread_local_stack_behaves_like_ordered_dict():
    stack = ThreadLocalContextLocator().get()
    assert len(stack) == 0
    stack["first"] = {"a": 1}
    stack["second"] = {"b": 2}
    stack["third"] = {"c": 3}
    assert list(stack) == ["first", "second", "third"]
    assert list(stack.keys()) == ["first", "second", "third"]
    assert list(stack.values()) == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert stack["second"] == {"b": 2}
    assert "second" in stack and "fourth" not in stack
    assert stack.get("fourth", "dflt") == "dflt"

    # Re-assigning keeps the position, like OrderedDict.
    stack["first"] = {"a": 100}
    assert list(stack.items()) == [("first", {"a": 100}), ("second", {"b": 2}), ("third", {"c": 3})]

    del stack["second"]
    assert list(stack) == ["first", "third"]
    assert stack == OrderedDict([("first", {"a": 100}), ("third", {"c": 3})])
    assert stack != OrderedDict([("third", {"c": 3}), ("first", {"a": 100})])
    with pytest.raises(KeyError):
        del stack["second"]
    with pytest.raises(KeyError):
        stack["second"]
    assert stack.copy() == OrderedDict([("first", {"a": 100}), ("third", {"c": 3})])
    stack.clear()
    assert len(stack) == 0


def test_two_locators_do_not_share_stacks():
    one, two = ThreadLocalContextLocator(), ThreadLocalContextLocator()
    one.get()["a"] = {"x": 1}
    assert "a" not in two.get()


def test_context_entered_in_one_thread_is_invisible_in_others():
    trk = Tracker(context_locator=ThreadLocalContextLocator())
    a_entered = threading.Event()
    b_checked = threading.Event()
    results = {}

    def thread_a():
        trk.enter_context("req", {"user": "A"})
        a_entered.set()
        assert b_checked.wait(10)
        results["a"] = trk.resolve_context()

    def thread_b():
        assert a_entered.wait(10)
        results["b_before"] = trk.resolve_context()
        trk.enter_context("req", {"user": "B"})
        results["b_after"] = trk.resolve_context()
        b_checked.set()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results["b_before"] == {}
    assert results["b_after"] == {"user": "B"}
    assert results["a"] == {"user": "A"}, "B's context must not replace A's"
    assert trk.resolve_context() == {}, "neither thread's context leaks into the main thread"


def test_main_thread_context_not_seen_by_new_thread():
    trk = Tracker(context_locator=ThreadLocalContextLocator())
    seen = []
    with trk.context("main", {"m": 1}):
        run_in_thread(lambda: seen.append(trk.resolve_context()))
        assert trk.resolve_context() == {"m": 1}
    assert seen == [{}]


def test_events_from_threads_carry_their_own_context():
    recorder = RecordingBackend()
    trk = Tracker(backends={"rec": recorder}, context_locator=ThreadLocalContextLocator())
    barrier = threading.Barrier(2)

    def worker(user):
        with trk.context("req", {"user": user}):
            barrier.wait(10)  # both threads are inside their context now
            trk.emit("evt", {"from": user})
            barrier.wait(10)

    threads = [threading.Thread(target=worker, args=(u,)) for u in ("u1", "u2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pairs = sorted((e["data"]["from"], e["context"]["user"]) for e in recorder.events)
    assert pairs == [("u1", "u1"), ("u2", "u2")]


def test_asyncio_task_inherits_copy_and_does_not_leak_back():
    trk = Tracker(context_locator=ThreadLocalContextLocator())
    results = {}

    async def child(parent_changed: asyncio.Event, child_done: asyncio.Event):
        results["child_start"] = trk.resolve_context()
        trk.enter_context("child", {"who": "child"})
        child_done.set()
        await parent_changed.wait()
        results["child_end"] = trk.resolve_context()

    async def main():
        parent_changed, child_done = asyncio.Event(), asyncio.Event()
        with trk.context("parent", {"who": "parent", "p": 1}):
            task = asyncio.create_task(child(parent_changed, child_done))
            await child_done.wait()
            results["parent_after_child_entered"] = trk.resolve_context()
            trk.enter_context("late", {"late": True})
            parent_changed.set()
            await task
            trk.exit_context("late")
        results["parent_end"] = trk.resolve_context()

    asyncio.run(main())
    assert results["child_start"] == {"who": "parent", "p": 1}
    assert results["parent_after_child_entered"] == {"who": "parent", "p": 1}
    assert results["child_end"] == {"who": "child", "p": 1}, "parent's later context must not reach the task"
    assert results["parent_end"] == {}


def test_concurrent_tasks_emit_with_their_own_context():
    recorder = RecordingBackend()
    trk = Tracker(backends={"rec": recorder}, context_locator=ThreadLocalContextLocator())

    async def handle(user, entered, go):
        with trk.context("req", {"user": user}):
            entered.set()
            await go.wait()  # the other task enters its context meanwhile
            trk.emit("evt", {"from": user})

    async def main():
        go = asyncio.Event()
        entered = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(handle(u, e, go)) for u, e in zip(("t1", "t2"), entered)]
        for event in entered:
            await event.wait()
        go.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    pairs = sorted((e["data"]["from"], e["context"]["user"]) for e in recorder.events)
    assert pairs == [("t1", "t1"), ("t2", "t2")]


def test_copied_contextvars_context_is_isolated():
    locator = ThreadLocalContextLocator()
    locator.get()["outer"] = {"o": 1}
    snapshot = contextvars.copy_context()

    def inside():
        stack = locator.get()
        assert list(stack) == ["outer"]
        stack["inner"] = {"i": 1}
        del stack["outer"]
        return list(stack)

    assert snapshot.run(inside) == ["inner"]
    assert list(locator.get()) == ["outer"]
