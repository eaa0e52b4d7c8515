"""Exit paths that skip ``atexit``: a plain script killed by SIGTERM delivers what it accepted and
still dies of SIGTERM; a handler that was there is left alone; the ASGI lifespan line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from eventtracking import background
from eventtracking.asgi import deliver_on_shutdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_script(code: str, **replace: object) -> subprocess.Popen:
    script = textwrap.dedent(code)
    for name, value in replace.items():
        script = script.replace(name, str(value))
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def wait_for_line(process: subprocess.Popen, prefix: str, timeout: float = 60, seen=None) -> str:
    """Read stdout up to a line starting with ``prefix`` (lines read are added to ``seen``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if seen is not None:
            seen.append(line)
        if line.startswith(prefix):
            return line
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no line {prefix!r}: {process.stderr.read()}")


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """Wait for the process to end by itself; if it does not, kill it and fail with its stderr."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"still running after {timeout} s: {err[-3000:]}") from None


def test_a_plain_script_killed_by_sigterm_delivers_everything_and_dies_of_sigterm(collector):
    # Batches of 100,000 lingering 60 s: without the handler nothing would have been sent yet.
    process = start_script(
        """
        import logging, time
        logging.basicConfig(level=logging.INFO)
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host="URL", max_batch_size=100000, flush_interval=60,
                                 exit_timeout=30)
        for i in range(3000):
            backend.send({"name": "plain", "context": {"user_id": i}})
        print("sent", flush=True)
        time.sleep(120)
        """,
        URL=collector.url,
    )
    try:
        wait_for_line(process, "sent")
        assert collector.count() == 0  # all still buffered
        process.send_signal(signal.SIGTERM)
        _, err = finish(process)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM, err  # died of the signal, as without the library
    assert len(set(collector.message_ids())) == 3000


def test_sigterm_during_load_on_the_main_thread_and_others_loses_nothing_accepted(collector):
    # The main thread and three others send without pause; SIGTERM lands anywhere, also inside
    # send() holding the buffer's lock. Every event the script saw accepted arrives, once.
    process = start_script(
        """
        import os, threading
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host="URL", max_batch_size=2000, flush_interval=5)
        def work(tag):
            i = 0
            while True:
                backend.send({"name": tag, "context": {"user_id": i}})
                os.write(1, f"{tag} {i}\\n".encode())  # one write per line: never interleaved
                i += 1
        for t in range(3):
            threading.Thread(target=work, args=(f"thread{t}",), daemon=True).start()
        work("main")
        """,
        URL=collector.url,
    )
    try:
        lines: list[str] = []
        wait_for_line(process, "main 3000", seen=lines)
        process.send_signal(signal.SIGTERM)
        out, err = finish(process)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM, err
    before_the_signal = {tuple(line.split()) for line in lines}
    arrived = [(m["event"], m["userId"]) for m in collector.messages()]
    assert len(arrived) == len(set(arrived))  # none twice
    missing = before_the_signal - set(arrived)
    assert not missing, sorted(missing)[:10]
    assert len(before_the_signal) > 3000


def test_a_handler_that_was_there_is_left_alone(collector):
    # The application's own SIGTERM handler runs (the library installs none over it); its
    # normal exit runs atexit, which delivers, and the exit status is the application's.
    process = start_script(
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(7))
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host="URL", max_batch_size=100000, flush_interval=60,
                                 exit_timeout=30)
        for i in range(500):
            backend.send({"name": "own.handler", "context": {"user_id": i}})
        print("sent", flush=True)
        time.sleep(120)
        """,
        URL=collector.url,
    )
    try:
        wait_for_line(process, "sent")
        process.send_signal(signal.SIGTERM)
        _, err = finish(process)
    finally:
        process.kill()
    assert process.returncode == 7, err
    assert len(set(collector.message_ids())) == 500


def test_a_second_sigterm_kills_at_once_while_the_first_waits(tmp_path):
    # A host that refuses every connection and a long exit_timeout: the first SIGTERM waits for
    # delivery, the second ends it now (well before that 120 s exit_timeout).
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    process = start_script(
        """
        import logging, time
        logging.basicConfig(level=logging.INFO)
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host="URL", exit_timeout=120, retry_timeout=600)
        backend.send({"name": "stuck", "context": {"user_id": 1}})
        print("sent", flush=True)
        time.sleep(120)
        """,
        URL=url,
    )
    try:
        wait_for_line(process, "sent")
        process.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # let the first one start waiting (the second must interrupt a wait)
        assert process.poll() is None  # still delivering
        process.send_signal(signal.SIGTERM)
        finish(process, timeout=60)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM


def test_sigterm_of_a_process_without_background_senders_is_untouched():
    process = start_script(
        """
        import signal, time
        import eventtracking.background, eventtracking.backends.segment
        print("handler", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
        time.sleep(120)
        """
    )
    try:
        assert wait_for_line(process, "handler").split() == ["handler", "True"]
        process.send_signal(signal.SIGTERM)
        finish(process)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM


# -- the ASGI lifespan line (unit level; the real uvicorn runs in tests/servers) ---------------


class Owner:
    exit_timeout = 1.0

    def __init__(self) -> None:
        self.closed = 0

    def after_fork_in_child(self) -> None:
        pass

    def close(self, timeout=None) -> bool:
        self.closed += 1
        background.unregister(self)
        return True


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """An empty registry per test: the lifespan's close_all() must not close other tests' backends."""
    monkeypatch.setattr(background, "_owners", {})


def run_lifespan(app) -> list:
    async def main():
        inbox = asyncio.Queue()
        for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
            inbox.put_nowait(message)
        outbox = []

        async def send(message):
            outbox.append((message["type"], owner.closed))

        await deliver_on_shutdown(app)({"type": "lifespan"}, inbox.get, send)
        return outbox

    owner = Owner()
    background.register(owner)
    return asyncio.run(main())


def test_lifespan_is_spoken_for_an_application_that_refuses_it():
    async def django_like(scope, receive, send):
        raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")

    assert run_lifespan(django_like) == [("lifespan.startup.complete", 0), ("lifespan.shutdown.complete", 1)]


def test_lifespan_of_an_application_that_speaks_it_is_passed_through_and_delivery_comes_last():
    seen = []

    async def starlette_like(scope, receive, send):
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    expected = [("lifespan.startup.complete", 0), ("lifespan.shutdown.complete", 1)]
    assert run_lifespan(starlette_like) == expected
    assert seen == ["lifespan.startup", "lifespan.shutdown"]


def test_other_scopes_go_to_the_application_untouched():
    calls = []

    async def app(scope, receive, send):
        calls.append((scope["type"], receive, send))

    async def receive():
        return {}

    async def send(message):
        pass

    asyncio.run(deliver_on_shutdown(app)({"type": "http"}, receive, send))
    assert calls == [("http", receive, send)]


def test_pid_1_gets_no_handler():
    # A container's init ignores a SIGTERM it does not handle: the library keeps it that way.
    # (Seen as PID 1 through the module's getpid; a PID namespace would need privileges.)
    process = start_script(
        """
        import signal
        from eventtracking import background
        background.getpid = lambda: 1
        from eventtracking.backends.segment import SegmentBackend
        backend = SegmentBackend(write_key="k", host="http://127.0.0.1:9")
        print("handler", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
        """
    )
    out, err = finish(process)
    assert process.returncode == 0, err
    assert out.split() == ["handler", "True"]
