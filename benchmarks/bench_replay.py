"""Benchmark of ``eventtracking replay`` against a naive replay, both into the project's collector.

Run with ``python benchmarks/bench_replay.py [--lines N]`` (default 1,000,000). It writes an
Open edX-shaped gzip tracking log (legacy server and browser lines, native lines, ~0.8 KB each)
into a temporary directory, then, each against a fresh collector running in another process:

- ours: ``python -m eventtracking replay LOG --host URL`` (the command as users run it);
- naive: ``json.loads`` per line, the same legacy conversion and messageIds, and the original
  mapping on the official client (SegmentBackend in drop-in mode, ``segment.analytics`` with a
  large ``max_queue_size``, then ``segment.analytics.flush()``), in a child process.

It prints lines/s for both (from process start until everything was acknowledged), the ratio
(target: at least 5x), how many messages each collector stored, the peak RSS of our replay for
two log sizes (flat memory: about the same for both), and the collector's ceiling (ready-made
batches posted back to back), which bounds any replay: on a 2-core machine the collector and the
replay share the cores. Figures vary with the machine's load: compare ratios from one run.

Then the sources and the engines of a backfill, in the same run:

- the same gzip log served by an S3-compatible server (moto's, on loopback: ``s3://...``) against
  the same log on local disk, rounds interleaved, both against the collector's ceiling;
- the log cut into 8 gzip files replayed over Celery (``--celery``, a real Redis broker and a
  ``celery worker`` of the test site) with 1 and with 2 worker processes, and the peak RSS of
  each worker process for two archive sizes (flat: each process holds a part at a time, streamed).
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import orjson
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the real engines

from bench import collector_process, spread  # noqa: E402
from bench import received as stored  # noqa: E402

from eventtracking.wording import plural  # noqa: E402

WRITE_KEY = "bench-write-key"
TARGET_RATIO = 5.0


# -- the log ---------------------------------------------------------------------------------


def log_line(i: int, rng: random.Random) -> bytes:
    """One tracking-log line of about 0.8 KB: legacy server (1/2), legacy browser (1/4), native (1/4)."""
    user = 1000 + rng.randrange(50_000)
    course = f"course-v1:edX+DemoX+{2020 + i % 5}"
    second = f"2025-01-{1 + i // 86_400 % 28:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
    when = f"{second}.{rng.randrange(1_000_000):06d}+00:00"
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537"
    block = f"block-v1:edX+DemoX+{2020 + i % 5}+type@problem+block@{rng.getrandbits(64):016x}"
    kind = i % 4
    if kind == 3:
        return b"2025-01-01 00:00:00,000 INFO 12 [tracking] logger.py:41 - " + orjson.dumps(
            {
                "name": "edx.grades.problem.submitted",
                "timestamp": when,
                "context": {
                    "user_id": user,
                    "username": f"learner{user}",
                    "course_id": course,
                    "org_id": "edX",
                    "ip": "203.0.113.42",
                    "agent": agent,
                    "host": "courses.example.org",
                    "path": f"/courses/{course}/xblock/{block}/handler/xmodule_handler/problem_check",
                    "session": f"{rng.getrandbits(128):032x}",
                },
                "data": {"problem_id": block, "weighted_earned": 1, "weighted_possible": 2},
            }
        )
    common = {
        "username": f"learner{user}",
        "ip": "203.0.113.42",
        "agent": agent,
        "host": "courses.example.org",
        "referer": f"https://courses.example.org/courses/{course}/courseware/",
        "accept_language": "en-US",
        "session": f"{rng.getrandbits(128):032x}",
        "time": when,
    }
    if kind == 1:
        payload = {"id": block.replace("problem", "video"), "code": "html5", "currentTime": rng.random()}
        return orjson.dumps(
            {
                **common,
                "event_source": "browser",
                "name": "play_video",
                "event_type": "play_video",
                "event": orjson.dumps(payload).decode(),
                "page": f"https://courses.example.org/courses/{course}/courseware/week1/",
                "context": {"user_id": user, "org_id": "edX", "course_id": course, "path": "/event"},
            }
        )
    return orjson.dumps(
        {
            **common,
            "event_source": "server",
            "name": "problem_check",
            "event_type": "problem_check",
            "event": {
                "problem_id": block,
                "answers": {f"{block}_2_1": "choice_2"},
                "grade": 1,
                "max_grade": 2,
                "success": "incorrect",
                "attempts": 1 + i % 3,
            },
            "page": None,
            "context": {
                "user_id": user,
                "org_id": "edX",
                "course_id": course,
                "path": f"/courses/{course}/xblock/{block}/handler/xmodule_handler/problem_check",
            },
        }
    )


def write_log(path: str, lines: int, seed: int | None = None) -> float:
    """Write ``lines`` lines gzip-compressed to ``path``; return the mean line size in bytes."""
    rng = random.Random(lines if seed is None else seed)
    size = 0
    with gzip.open(path, "wb", compresslevel=6) as out:
        chunk: List[bytes] = []
        for i in range(lines):
            line = log_line(i, rng)
            size += len(line) + 1
            chunk.append(line)
            if len(chunk) == 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    return size / max(lines, 1)


# -- the runs --------------------------------------------------------------------------------


def run_measured(
    command: List[str], env: Dict[str, str] | None = None, cwd: str | None = None
) -> Tuple[float, float, str]:
    """Run ``command`` to completion; (seconds, peak RSS in MiB of that process, its stdout).

    The peak is the child's own VmHWM, sampled while it runs: ``ru_maxrss`` of a forked child
    would include the RSS this (larger) parent had when it forked.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        peak_kb = 0
        while process.poll() is None:
            peak_kb = max(peak_kb, vm_hwm_kb(process.pid))
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:  # the log has no unreadable line: anything else is a failed run
            raise RuntimeError(
                f"{command[1:4]} exited {process.returncode}:\n{out.read().decode()[-2000:]}"
                f"{err.read().decode()[-2000:]}"
            )
        return elapsed, peak_kb / 1024, out.read().decode()


def check_stored(what: str, got: int, lines: int) -> None:
    """A timing means nothing unless every line arrived: fail loudly otherwise."""
    if got != lines:
        raise RuntimeError(f"{what}: the collector stored {got:,} messages for {lines:,} lines")


def vm_hwm_kb(pid: int) -> int:
    """The peak resident set of a running process (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def collector_ceiling(log: str, url: str) -> float:
    """Messages/s the collector takes when handed ready-made 500-message batches on one connection:
    what any replay can reach at best on this machine (the messages are encoded beforehand)."""
    from eventtracking.replay.events import message_id, to_live_event
    from eventtracking.segment.encoding import encode
    from eventtracking.segment.mapping import to_track_message

    messages: List[bytes] = []
    with gzip.open(log, "rb") as lines:
        for number, line in enumerate(lines, 1):
            text = line[line.find(b"{") :].rstrip()
            message = to_track_message(to_live_event(orjson.loads(text)))
            message["messageId"] = message_id(text, number)
            messages.append(encode(message))
    pool = urllib3.connection_from_url(url, maxsize=1)
    headers = {"Content-Type": "application/json", **urllib3.make_headers(basic_auth=WRITE_KEY + ":")}
    started = time.perf_counter()
    start = 0
    while start < len(messages):
        end, size = start, 0
        while end < len(messages) and end - start < 500 and size + len(messages[end]) + 1 < 500 * 1024 - 128:
            size += len(messages[end]) + 1  # and its comma
            end += 1
        body = b'{"batch":[' + b",".join(messages[start:end]) + b'],"sentAt":"2025-01-01T00:00:00Z"}'
        answer = pool.urlopen("POST", "/v1/batch", body=body, headers=headers, retries=False)
        if answer.status != 200:
            raise RuntimeError(f"collector refused a batch: {answer.status} {answer.data[:200]!r}")
        start = end
    return len(messages) / (time.perf_counter() - started)


def run_ours(log: str, url: str) -> Tuple[float, float, str]:
    return run_measured(
        [sys.executable, "-m", "eventtracking", "replay", log, "--host", url, "--write-key", WRITE_KEY]
    )


def run_ours_s3(log_url: str, url: str, endpoint: str) -> Tuple[float, float, str]:
    from object_store import s3_env

    env = {**os.environ, **s3_env(endpoint)}
    return run_measured(
        [sys.executable, "-m", "eventtracking", "replay", log_url, "--host", url, "--write-key", WRITE_KEY],
        env,
    )


S3_OBJECT = "tracking/2025/01/tracking.log.gz"


@contextmanager
def moto_with(directory: str, log: str) -> Iterator[Tuple[str, str]]:
    """moto's S3 server holding ``log`` as an object; yield (the object's URL, the endpoint)."""
    from object_store import MotoServer

    server = MotoServer(directory).start()
    try:
        client = server.client()
        client.create_bucket(Bucket="archive")
        client.upload_file(log, "archive", S3_OBJECT)
        yield f"s3://archive/{S3_OBJECT}", server.url
    finally:
        server.stop()


def write_archive(directory: str, lines: int, files: int = 8) -> str:
    """``lines`` lines in ``files`` gzip files of a nested archive; returns its directory."""
    root = os.path.join(directory, f"archive-{lines}")
    for index in range(files):
        path = os.path.join(root, f"2025/{index % 2 + 1:02d}/tracking.log-{index:02d}.gz")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_log(path, lines // files + (index < lines % files), seed=lines * 100 + index)
    return root


def run_celery(
    archive: str, url: str, redis_url: str, processes: int, directory: str
) -> Tuple[float, List[float]]:
    """The archive over Celery with ``processes`` worker processes (a fresh worker): the
    coordinator's seconds and the peak RSS (MiB) of each worker process."""
    from engines import TESTS, CeleryWorker, site_env

    from eventtracking.replay.parts import HOST_ENV

    env = site_env(
        SITE_REDIS_URL=redis_url, SITE_COLLECTOR_URL=url, SEGMENT_WRITE_KEY=WRITE_KEY, **{HOST_ENV: url}
    )
    pool = ("--pool", "prefork", "--concurrency", str(processes))
    name = f"bench-{processes}-{time.monotonic_ns()}"
    worker = CeleryWorker(sys.executable, directory, env, name, pool=pool)
    worker.start()
    try:
        coordinator_env = {
            key: value for key, value in env.items() if key not in ("SEGMENT_WRITE_KEY", HOST_ENV)
        }
        checkpoint = os.path.join(directory, f"celery-{time.monotonic_ns()}.ckpt")
        command = [
            sys.executable,
            "-m",
            "eventtracking",
            "replay",
            archive,
            "--celery",
            "async_site",
            "--checkpoint",
            checkpoint,
            "--requests-per-second",
            "100000",
        ]
        seconds, _, _ = run_measured(command, coordinator_env, TESTS)
        peaks = [vm_hwm_kb(pid) / 1024 for pid in worker.pool_pids()]
    finally:
        worker.stop()
    return seconds, peaks


def run_naive(log: str, url: str) -> Tuple[float, float, str]:
    return run_measured([sys.executable, __file__, "--naive-child", log, url])


def naive_child(log: str, url: str) -> int:
    """The naive replay: per line json.loads, then the drop-in backend on the official client."""
    import hashlib
    import json

    from segment import analytics

    from eventtracking.backends.segment import SegmentBackend
    from eventtracking.replay.events import to_live_event

    analytics.write_key = WRITE_KEY
    analytics.host = url
    analytics.max_queue_size = 10_000_000  # its default (10,000) would drop most of the log
    backend = SegmentBackend()
    with gzip.open(log, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            start = line.find("{")
            if start < 0:
                continue
            text = line[start:].rstrip()
            digest = hashlib.blake2b(text.encode(), digest_size=16)
            digest.update(b"#%d" % number)
            backend.send(to_live_event(json.loads(text)), message_id=digest.hexdigest())
    analytics.flush()
    print(orjson.dumps(backend.stats()).decode())
    return 0


# -- the report ------------------------------------------------------------------------------


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the log (default 1,000,000)")
    parser.add_argument(
        "--naive-lines",
        type=int,
        default=None,
        help="lines for the naive run (default: --lines); its rate is compared per line",
    )
    parser.add_argument(
        "--small-lines", type=int, default=None, help="second log size for peak RSS (default: --lines / 10)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of ours over the big log; the median is shown (default 3)"
    )
    parser.add_argument("--naive-child", nargs=2, metavar=("LOG", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_child:
        return naive_child(*args.naive_child)

    naive_lines = min(args.naive_lines or args.lines, args.lines)
    small_lines = args.small_lines or max(args.lines // 10, 1)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as directory:
        big = os.path.join(directory, "tracking.log.gz")
        started = time.perf_counter()
        mean = write_log(big, args.lines)
        print(
            f"log: {args.lines:,} lines, {mean:.0f} bytes each on average, "
            f"{os.path.getsize(big) / 2**20:.0f} MiB gzip, written in {time.perf_counter() - started:.0f} s; "
            f"{os.cpu_count()} cores"
        )
        small = os.path.join(directory, "small.log.gz")
        write_log(small, small_lines)
        naive_log = big
        if naive_lines != args.lines:
            naive_log = os.path.join(directory, "naive.log.gz")
            write_log(naive_log, naive_lines)

        ours_runs = []  # (seconds, peak RSS, stored): each into a fresh collector
        s3_runs = []  # the same, the log read from an S3-compatible server
        with moto_with(directory, big) as (object_url, endpoint):
            for _ in range(args.rounds):  # interleaved: both see the same machine
                with collector_process(directory) as url:
                    seconds, rss, _ = run_ours(big, url)
                    ours_runs.append((seconds, rss, stored(url)))
                check_stored("ours", ours_runs[-1][2], args.lines)
                with collector_process(directory) as url:
                    seconds, rss, _ = run_ours_s3(object_url, url, endpoint)
                    s3_runs.append((seconds, rss, stored(url)))
                check_stored("ours from S3", s3_runs[-1][2], args.lines)
        ours_seconds = statistics.median(seconds for seconds, _, _ in ours_runs)
        ours_rss = max(rss for _, rss, _ in ours_runs)
        ours_stored = min(count for _, _, count in ours_runs)
        with collector_process(directory) as url:
            _, small_rss, _ = run_ours(small, url)
            check_stored("ours (small log)", stored(url), small_lines)
        with collector_process(directory) as url:
            ceiling = collector_ceiling(small, url)
        with collector_process(directory) as url:
            naive_seconds, naive_rss, _ = run_naive(naive_log, url)
            naive_stored = stored(url)
        celery = bench_celery(directory, args.lines, small_lines, args.rounds)

    ours_rate = args.lines / ours_seconds
    naive_rate = naive_lines / naive_seconds
    ratio = ours_rate / naive_rate
    print()
    print(f"{'replay':8} {'lines':>11} {'seconds':>9} {'lines/s':>10} {'stored':>11} {'peak RSS':>10}")
    print(
        f"{'ours':8} {args.lines:>11,} {ours_seconds:>9.1f} {ours_rate:>10,.0f} {ours_stored:>11,} "
        f"{ours_rss:>7.0f} MiB"
    )
    print(
        f"{'naive':8} {naive_lines:>11,} {naive_seconds:>9.1f} {naive_rate:>10,.0f} {naive_stored:>11,} "
        f"{naive_rss:>7.0f} MiB"
    )
    print()
    verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
    print(
        f"ours, {plural(args.rounds, 'round')}: median {ours_seconds:.1f} s "
        f"{spread([seconds for seconds, _, _ in ours_runs], digits=1, unit=' s')}"
    )
    print(f"ours / naive: {ratio:.1f}x faster (target >= {TARGET_RATIO:.0f}x)  {verdict}")
    print(
        f"collector ceiling: {ceiling:,.0f} messages/s (ready-made batches into a fresh collector, "
        f"{small_lines:,} messages; it slows as its database grows); ours reached {ours_rate / ceiling:.0%}"
    )
    print(
        f"peak RSS of ours: {small_rss:.0f} MiB for {small_lines:,} lines, {ours_rss:.0f} MiB for "
        f"{args.lines:,} lines (flat: about the same whatever the size)"
    )
    print()
    report_sources(args.lines, ours_runs, s3_runs, ceiling)
    print()
    report_celery(args.lines, small_lines, celery, ceiling)
    return 0


def report_sources(lines: int, local: list, s3: list, ceiling: float) -> None:
    """Local disk against the S3-compatible server, each against the collector's ceiling."""
    print(f"{'source':14} {'lines':>11} {'seconds':>9} {'lines/s':>10} {'of ceiling':>11} {'peak RSS':>10}")
    for label, runs in (("local gzip", local), ("s3:// (moto)", s3)):
        seconds = statistics.median(run[0] for run in runs)
        print(
            f"{label:14} {lines:>11,} {seconds:>9.1f} {lines / seconds:>10,.0f} "
            f"{lines / seconds / ceiling:>10.0%} {max(run[1] for run in runs):>7.0f} MiB"
        )
    ratios = [a[0] / b[0] for a, b in zip(local, s3)]
    print(f"s3 / local, lines/s: {statistics.median(ratios):.2f}x {spread(ratios)} (rounds interleaved)")


def bench_celery(directory: str, lines: int, small_lines: int, rounds: int) -> Dict[str, list]:
    """1 against 2 worker processes over Celery (rounds interleaved), and the per-process peak RSS
    for a small archive; each run into a fresh collector, every message checked."""
    from engines import RedisServer

    big, small = write_archive(directory, lines), write_archive(directory, small_lines)
    results: Dict[str, list] = {"1": [], "2": [], "small": []}
    redis = RedisServer(directory).start()
    try:
        for _ in range(rounds):
            for processes in (1, 2):
                with collector_process(directory) as url:
                    results[str(processes)].append(run_celery(big, url, redis.url, processes, directory))
                    check_stored(f"celery, {processes} processes", stored(url), lines)
        with collector_process(directory) as url:
            results["small"].append(run_celery(small, url, redis.url, 2, directory))
            check_stored("celery, small archive", stored(url), small_lines)
    finally:
        redis.stop()
    return results


def report_celery(lines: int, small_lines: int, results: Dict[str, list], ceiling: float) -> None:
    print(
        f"{'over Celery':14} {'lines':>11} {'seconds':>9} {'lines/s':>10} {'of ceiling':>11} "
        f"{'peak RSS/process':>17}"
    )
    for processes in ("1", "2"):
        runs = results[processes]
        seconds = statistics.median(run[0] for run in runs)
        peak = max(max(run[1]) for run in runs)
        label = f"{processes} process" + ("es" if processes != "1" else "")
        print(
            f"{label:14} {lines:>11,} {seconds:>9.1f} {lines / seconds:>10,.0f} "
            f"{lines / seconds / ceiling:>10.0%} {peak:>14.0f} MiB"
        )
    ratios = [one[0] / two[0] for one, two in zip(results["1"], results["2"])]
    print(
        f"2 / 1 processes, lines/s: {statistics.median(ratios):.2f}x {spread(ratios)} "
        f"on {os.cpu_count()} cores shared by the 2 worker processes, the collector and the coordinator"
    )
    small_peak = max(results["small"][0][1])
    big_peak = max(max(run[1]) for run in results["2"])
    print(
        f"peak RSS per worker process: {small_peak:.0f} MiB for {small_lines:,} lines, {big_peak:.0f} MiB "
        f"for {lines:,} lines (flat: a process holds one part at a time, streamed)"
    )


if __name__ == "__main__":
    sys.exit(main())
