"""eventtracking.background: the registry, the reset after fork (also a fork made in C, without
Python's at-fork hooks, under many threads), one exit deadline for all owners."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter, defaultdict

import pytest

from eventtracking import background

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(code: str, timeout: float = 120, **replace: object) -> subprocess.CompletedProcess:
    script = textwrap.dedent(code)
    for name, value in replace.items():
        script = script.replace(name, str(value))
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


class Owner:
    def __init__(self, exit_timeout: float = 1.0, done: bool = True) -> None:
        self.exit_timeout = exit_timeout
        self.resets = 0
        self.closed_with: list = []
        self.done = done

    def after_fork_in_child(self) -> None:
        self.resets += 1

    def close(self, timeout=None) -> bool:
        self.closed_with.append(timeout)
        background.unregister(self)
        return self.done


def test_the_registry_holds_owners_weakly_in_order():
    first, second = Owner(), Owner()
    background.register(first)
    background.register(second)
    try:
        assert [owner for owner in background.owners() if isinstance(owner, Owner)] == [first, second]
        del first
        gc.collect()
        assert [owner for owner in background.owners() if isinstance(owner, Owner)] == [second]
    finally:
        background.unregister(second)
    assert second not in background.owners()


@pytest.fixture
def own_registry(monkeypatch):
    """An empty registry for the test: close_all() must not close other tests' backends."""
    monkeypatch.setattr(background, "_owners", {})


def test_close_all_shares_one_deadline_and_logs_what_was_left(caplog, own_registry):
    slow, quick = Owner(exit_timeout=5.0, done=False), Owner(exit_timeout=2.0)
    background.register(slow)
    background.register(quick)
    original = slow.close

    def close_slowly(timeout=None):
        threading.Event().wait(0.3)  # the first owner's wait is the others' time too
        return original(timeout)

    slow.close = close_slowly
    assert background.close_all(reason="test") is False
    [slow_budget], [quick_budget] = slow.closed_with, quick.closed_with
    assert 4.0 < slow_budget <= 5.0
    assert quick_budget <= 2.0 - 0.3  # counted from the same start, not from its own turn
    assert "test: " in caplog.text and "exit deadline ran out" in caplog.text
    assert slow not in background.owners() and quick not in background.owners()


def test_a_failing_reset_is_logged_and_the_others_still_run():
    result = run_script(
        """
        import os
        from eventtracking import background

        class Owner:
            exit_timeout = 0
            def __init__(self, fail): self.fail, self.resets = fail, 0
            def after_fork_in_child(self):
                self.resets += 1
                if self.fail: raise ValueError("boom")
            def close(self, timeout=None): return True

        owners = [Owner(True), Owner(False)]
        for owner in owners: background.register(owner)
        pid = os.fork()
        if pid == 0:
            background.check_fork()
            os._exit(0 if [o.resets for o in owners] == [1, 1] else 1)
        assert os.waitpid(pid, 0)[1] == 0
        assert [o.resets for o in owners] == [0, 0]
        print("ok")
        """
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    assert "could not reset itself" in result.stderr and "ValueError: boom" in result.stderr


# A fork made in C, as uWSGI makes its workers: libc's fork() through ctypes runs none of the
# os.register_at_fork hooks (PyDLL keeps the GIL held across the call, as uWSGI's master does).
# The parent's sender thread runs and the parent holds the backend's locks while it forks (as a
# thread of it could): the child must neither wait for them nor use the parent's thread. Each
# child starts many threads that send at once, through a barrier, so that its first send() races
# on every thread. (No other thread of the parent may want the GIL while it forks: CPython's own
# state, which PyOS_AfterFork_Child would reinitialise, is beyond any library's reach; a thread
# waiting for the GIL at that moment hangs the child whatever the library does.)
C_FORK_SCRIPT = """
import ctypes, os, signal, sys, threading, time
from eventtracking.backends.segment import SegmentBackend

CHILDREN, THREADS, PER_THREAD = 3, 16, 200
libc = ctypes.PyDLL(None)
backend = SegmentBackend(write_key="k", host="URL", flush_interval=0.01)
inherited_held = [backend._pipeline.buffer._lock, backend._counters._lock, backend._pipeline.counters._lock,
                  backend._pipeline.worker.background._lock]

def send(tag, n):
    for i in range(n):
        backend.send({"name": tag, "context": {"user_id": i}, "data": {"pid": os.getpid(), "i": i}})

send("parent.before", 300)
children = []
for c in range(CHILDREN):
    send("parent.between", 100)
    assert backend.flush(30)
    time.sleep(0.05)  # lets the sender thread settle into its wait: it must not want the GIL
    for lock in inherited_held:
        lock.acquire()
    pid = libc.fork()
    if pid == 0:
        signal.alarm(90)  # a child that hangs dies (SIGALRM's default) instead of outliving the test
        barrier = threading.Barrier(THREADS)
        def work(t):
            barrier.wait()
            send(f"child.{t}", PER_THREAD)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for thread in threads: thread.start()
        for thread in threads: thread.join()
        ok = backend.flush(60)
        senders = [t for t in threading.enumerate() if t.name == "eventtracking-segment-sender"
                   and t.is_alive() and t.ident == backend._pipeline.worker.thread.ident]
        os._exit(0 if ok and len(senders) == 1 else 3)
    for lock in inherited_held:
        lock.release()
    children.append(pid)
codes = [os.waitpid(pid, 0)[1] for pid in children]
send("parent.after", 300)
assert backend.flush(60)
print("codes", codes, "pids", children)
sys.exit(1 if any(codes) else 0)
"""


def test_a_fork_in_c_with_many_threads_sending_at_once_loses_nothing_and_duplicates_nothing(collector):
    result = run_script(C_FORK_SCRIPT, timeout=100, URL=collector.url)
    assert result.returncode == 0, result.stdout + result.stderr
    messages = collector.messages()
    expected = {"parent.before": 300, "parent.between": 300, "parent.after": 300}
    expected.update({f"child.{t}": 3 * 200 for t in range(16)})
    assert Counter(m["event"] for m in messages) == expected
    ids = [m["messageId"] for m in messages]
    assert len(set(ids)) == len(ids) == sum(expected.values())
    prefixes = defaultdict(set)
    for message in messages:
        prefixes[message["properties"]["data"]["pid"]].add(message["messageId"].rsplit("-", 1)[0])
    assert len(prefixes) == 4  # the parent and its three children
    assert all(len(each) == 1 for each in prefixes.values()), prefixes  # one reset per process
    assert len(set().union(*prefixes.values())) == 4  # no two processes share a prefix
    assert "Traceback" not in result.stderr, result.stderr


def test_the_reset_runs_once_per_process_before_any_thread_goes_on():
    # Many threads of a C-forked child call check_fork() at once: one reset, and none of them
    # returns before it is complete.
    result = run_script(
        """
        import ctypes, os, signal, threading, time
        from eventtracking import background

        class Owner:
            exit_timeout = 0
            resets = 0
            complete = False
            def after_fork_in_child(self):
                self.resets += 1
                time.sleep(0.2)  # a slow reset: the others must wait for it
                self.complete = True
            def close(self, timeout=None): return True

        owner = Owner()
        background.register(owner)
        pid = ctypes.PyDLL(None).fork()
        if pid == 0:
            signal.alarm(60)
            seen = []
            barrier = threading.Barrier(16)
            def work():
                barrier.wait()
                background.check_fork()
                seen.append(owner.complete)
            threads = [threading.Thread(target=work) for _ in range(16)]
            for t in threads: t.start()
            for t in threads: t.join()
            os._exit(0 if owner.resets == 1 and seen == [True] * 16 else 1)
        status = os.waitpid(pid, 0)[1]
        print("child", status, "parent resets", owner.resets)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "child 0 parent resets 0" in result.stdout, result.stdout + result.stderr


def unreachable_url() -> str:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_exit_waits_one_deadline_for_all_backends():
    # Three backends (three keys: three pipelines) whose host refuses every connection: each
    # would wait its exit_timeout.
    # One shared deadline takes about one exit_timeout (4 s), one after another would be 12 s;
    # the bound (8 s) tells the two apart on a loaded machine.
    result = run_script(
        """
        import atexit, logging, sys, time
        logging.basicConfig(level=logging.WARNING)
        atexit.register(lambda: print("exit took", round(time.monotonic() - started[0], 2), file=sys.stderr))
        from eventtracking.backends.segment import SegmentBackend
        started = []
        backends = [SegmentBackend(write_key=f"k{n}", host="URL", exit_timeout=4.0) for n in range(3)]
        for backend in backends:
            for i in range(10):
                backend.send({"name": "unsent", "context": {"user_id": i}})
        atexit.register(lambda: started.append(time.monotonic()))  # runs first: atexit is LIFO
        """,
        URL=unreachable_url(),
    )
    assert result.returncode == 0, result.stderr
    took = float(result.stderr.split("exit took ")[1].split()[0])
    assert 4.0 <= took < 8.0, result.stderr
    assert result.stderr.count("exit deadline ran out") == 3, result.stderr  # the reason, for each
