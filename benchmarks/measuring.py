"""What every benchmark measures with, importable on any environment the benchmarks run in
(the standard library and urllib3 only: Open edX's original package runs them too, in
.envs/original): the Open edX-shaped event, the collector in another process, the timed send
loop and the medians of rounds.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

import urllib3


def openedx_event(i: int) -> dict:
    """An Open edX-shaped server event of about 0.8 KB once encoded as a track message."""
    course = f"course-v1:edX+DemoX+{2020 + i % 5}"
    return {
        "name": "edx.course.enrollment.activated",
        "timestamp": datetime.datetime(
            2026, 11, 26, 12, 0, i % 60, i % 1000000, tzinfo=datetime.timezone.utc
        ),
        "data": {"course_id": course, "user_id": 1000 + i, "mode": "audit", "enrollment_source": "lms"},
        "event_source": "server",
        "context": {
            "user_id": 1000 + i,
            "username": f"learner{i}",
            "course_id": course,
            "org_id": "edX",
            "ip": "203.0.113.42",
            "agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
            "host": "courses.example.org",
            "path": f"/courses/{course}/courseware/",
            "referer": "https://courses.example.org/dashboard",
            "accept_language": "en-US,en;q=0.9",
            "session": "0123456789abcdef0123456789abcdef",
            "client_id": "123456789.987654321",
            "page": None,
            "module": {
                "display_name": "Introduction",
                "usage_key": f"block-v1:edX+DemoX+type@vertical+block@{i}",
            },
        },
    }


@contextmanager
def collector_process(directory: str | None = None) -> Iterator[str]:
    """Start ``eventtracking collect`` in another process, its database in a fresh temporary
    folder (inside ``directory`` if given); yield its URL."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "eventtracking",
                "collect",
                "--port",
                "0",
                "--db",
                os.path.join(tmp, "c.db"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = process.stdout.readline().strip()
            if not line.startswith("listening on "):
                raise RuntimeError(f"collector did not start: {line!r}")
            yield line.split()[-1]
        finally:
            process.terminate()
            process.wait(timeout=30)
            process.stdout.close()


def received(url: str) -> int:
    """How many messages the collector has stored so far."""
    answer = urllib3.request("GET", f"{url}/health", timeout=30)
    return int(json.loads(answer.data)["messages"])


def measure(label: str, url: str, events: list[dict], send, flush) -> dict:
    """Time the send loop (caller cost: wall clock, and the calling thread's own CPU time) and
    send + flush until all arrived (end to end)."""
    before = received(url)
    gc.collect()
    start = time.perf_counter()
    cpu_start = time.thread_time()
    for event in events:
        send(event)
    cpu = time.thread_time() - cpu_start
    sent = time.perf_counter()
    flush()
    done = time.perf_counter()
    arrived = received(url) - before
    return {
        "label": label,
        "caller_us": (sent - start) / len(events) * 1e6,
        "caller_cpu_us": cpu / len(events) * 1e6,
        "eps": len(events) / (done - start),
        "arrived": arrived,
        "events": len(events),
    }


def post_ready_batches(url: str, write_key: str, encoded: list[bytes]) -> None:
    """Post encoded track messages to the collector as Segment batches of at most 500 messages and
    500 KB, as they are (the limits' delivery: no buffer, no retry)."""
    pool = urllib3.connection_from_url(url, maxsize=1)
    headers = urllib3.make_headers(basic_auth=write_key + ":")
    headers["Content-Type"] = "application/json"

    def post(batch: list[bytes]) -> None:
        body = b'{"batch":[' + b",".join(batch) + b'],"sentAt":"2026-11-26T12:00:00Z"}'
        answer = pool.urlopen("POST", "/v1/batch", body=body, headers=headers, retries=False)
        if answer.status != 200:
            raise RuntimeError(f"limit batch refused: {answer.status} {answer.data[:200]!r}")

    batch: list[bytes] = []
    size = 0
    for item in encoded:
        if len(batch) == 500 or size + len(item) > 500 * 1024 - 128:
            post(batch)
            batch, size = [], 0
        batch.append(item)
        size += len(item) + 1
    post(batch)


def median_row(rows: list[dict]) -> dict:
    """The median of each figure over rounds; arrived is the smallest (any loss shows)."""
    return {
        "label": rows[0]["label"],
        "caller_us": statistics.median(r["caller_us"] for r in rows),
        "caller_cpu_us": statistics.median(r["caller_cpu_us"] for r in rows),
        "eps": statistics.median(r["eps"] for r in rows),
        "arrived": min(r["arrived"] for r in rows),
        "events": rows[0]["events"],
    }


def spread(values: list[float], digits: int = 2, unit: str = "x") -> str:
    """``(rounds 1.21-1.55x)``: the smallest and the largest of a figure over the rounds, so that a
    median quoted in docs/benchmarks.rst comes with how much it moved in that run."""
    return f"(rounds {min(values):.{digits}f}-{max(values):.{digits}f}{unit})"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"
