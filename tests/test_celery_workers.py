"""Nothing lost in Celery workers: real ``celery worker`` processes on a real Redis broker, the
project's collector as the Segment API, and tasks (``celery_site.worker``) that emit one message
per emit mode: through the tracker into an owned-mode SegmentBackend (``tracker``), through
AsyncRoutingBackend and its follow-up task (``async``), and through the official client
(analytics-python 1.4.post1 configured as edx-platform does it: ``official``), in the same tasks
of the same run.

Each test queues its tasks, waits until the worker is idle, then shuts the worker down as Docker
and Kubernetes do (SIGTERM to its main process: Celery's warm shutdown; SIGQUIT: its cold one),
and counts at the collector what arrived of each mode, unique by messageId. Ours must be every
message made; the official client's count is reported through the ``figures`` fixture, beside.

The worker runs in ``.envs/analytics14`` (this package, editable, beside analytics-python
1.4.post1, Celery and redis-py), which ``make test`` builds.
"""

from __future__ import annotations

import collections
import os
import signal
import time

import pytest
from engines import PREFORK_2, ROOT, CeleryWorker, wait_until

pytestmark = pytest.mark.timeout(420)

ANALYTICS14_PYTHON = os.path.join(ROOT, ".envs", "analytics14", "bin", "python")
OURS = ("tracker", "async")
TASK = "celery_site.emit"


@pytest.fixture
def site(redis_server, collector, tmp_path):
    """Start ``celery -A celery_site worker`` with ``site(pool, **env)``; stopped in teardown."""
    assert os.path.exists(ANALYTICS14_PYTHON), "make test builds .envs/analytics14"
    started = []

    def start(pool: tuple, name: str = "worker", **env: str) -> CeleryWorker:
        environment = dict(os.environ)
        path = [os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH")]
        environment.update(
            PYTHONPATH=os.pathsep.join(filter(None, path)),
            PYTHONUNBUFFERED="1",
            SITE_REDIS_URL=redis_server.url,
            SITE_COLLECTOR_URL=collector.url,
            **env,
        )
        worker = CeleryWorker(ANALYTICS14_PYTHON, str(tmp_path), environment, name, "celery_site", pool)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


def queue_tasks(redis_server, count: int, sleep: float = 0.0) -> None:
    """Queue ``count`` emit tasks (seq 0..count-1) on the broker, as a web process would."""
    from celery import Celery

    producer = Celery("producer", broker=redis_server.url)
    try:
        with producer.producer_or_acquire() as publisher:
            for seq in range(count):
                producer.send_task(TASK, (seq, sleep), producer=publisher)
    finally:
        producer.close()


def by_mode(collector) -> dict:
    """{mode: [(seq, messageId), ...]} of what the collector received."""
    received = collections.defaultdict(list)
    for message in collector.messages():
        if message["type"] == "identify":  # the global client's mode: analytics.identify
            mode, seq = message["traits"]["emitted_by"].removeprefix("celery."), message["traits"]["seq"]
            received[mode].append((seq, message["messageId"]))
            continue
        mode = message["event"].removeprefix("celery.")
        properties = message["properties"]
        seq = properties["data"]["seq"] if "data" in properties else properties["seq"]
        received[mode].append((seq, message["messageId"]))
    return received


def wait_idle(redis_server, collector, worker: CeleryWorker, timeout: float = 300, quiet: float = 2) -> None:
    """Wait until the broker holds no task (queued or unacknowledged) and the collector received
    nothing new for ``quiet`` seconds: the worker has run every task, follow-ups included."""
    client = redis_server.client()
    state = {"count": -1, "since": time.monotonic()}

    def idle() -> bool:
        drained = client.llen("celery") == 0 and client.hlen("unacked") == 0
        count = collector.count()
        if not drained or count != state["count"]:
            state.update(count=count, since=time.monotonic())
            return False
        return time.monotonic() - state["since"] >= quiet

    try:
        wait_until(idle, timeout, f"the worker to be idle (log: {worker.log_path})", interval=0.1)
    finally:
        client.close()


def left_in_broker(redis_server) -> int:
    client = redis_server.client()
    try:
        return client.llen("celery") + client.hlen("unacked")
    finally:
        client.close()


def count_and_report(collector, redis_server, figures, label: str, made: int, modes=OURS) -> dict:
    """Count each mode at the collector; report ours beside the official client's; return them."""
    received = by_mode(collector)
    arrived = {mode: len({seq for seq, _ in received[mode]}) for mode in (*modes, "official")}
    parts = [f"{mode} {arrived[mode]}/{made}" for mode in modes]
    parts.append(f"official client (analytics-python 1.4.post1) {arrived['official']}/{made}")
    figures.append(f"{label}: {', '.join(parts)}; left in the broker: {left_in_broker(redis_server)}")
    for mode in modes:
        ids = [message_id for _, message_id in received[mode]]
        assert len(ids) == len(set(ids)), f"{mode}: a messageId arrived twice"
        assert sorted(seq for seq, _ in received[mode]) == list(range(made)), f"{label}: {mode} lost messages"
    return arrived


def session(site, redis_server, collector, pool: tuple, made: int, sig=signal.SIGTERM, **env: str) -> float:
    """One worker's life: start it, queue ``made`` tasks, wait until it is idle, shut it down
    with ``sig``; return the seconds the shutdown took. (A test may run several, e.g. the
    official client and a mode that replaces it, one after the other on one collector.)"""
    worker = site(pool, **env)
    queue_tasks(redis_server, made)
    wait_idle(redis_server, collector, worker)
    return worker.shut_down(sig)


SHUTDOWNS = {"warm": signal.SIGTERM, "cold": signal.SIGQUIT}
POOLS = {
    "prefork": PREFORK_2,
    "threads": ("--pool", "threads", "--concurrency", "4"),
    "solo": ("--pool", "solo"),
}


def prefork(max_tasks_per_child: int) -> tuple:
    return (*PREFORK_2, "--max-tasks-per-child", str(max_tasks_per_child))


@pytest.mark.parametrize(
    "pool, made, env",
    [
        pytest.param(prefork(100), 1000, {}, id="prefork-mtpc100"),
        pytest.param(prefork(10), 300, {"SITE_BUILD": "child"}, id="prefork-mtpc10-built-in-child"),
        pytest.param(POOLS["threads"], 200, {}, id="threads"),
        pytest.param(POOLS["solo"], 200, {}, id="solo"),
    ],
)
def test_after_a_warm_shutdown_every_message_made_has_arrived(
    pool, made, env, site, redis_server, collector, figures, request
):
    seconds = session(site, redis_server, collector, pool, made, **env)
    label = f"celery {request.node.callspec.id}, warm shutdown in {seconds:.1f} s"
    count_and_report(collector, redis_server, figures, label, made)
    assert left_in_broker(redis_server) == 0


def test_with_a_spool_every_message_made_has_arrived_by_the_end_of_the_warm_shutdown(
    site, redis_server, collector, figures, tmp_path
):
    spool = tmp_path / "spool"
    seconds = session(site, redis_server, collector, prefork(10), 300, SITE_SPOOL_DIR=str(spool))
    label = f"celery prefork-mtpc10 with spool_dir, warm shutdown in {seconds:.1f} s"
    count_and_report(collector, redis_server, figures, label, 300)
    assert left_in_broker(redis_server) == 0


@pytest.mark.parametrize(
    "pool, how", [("prefork", "warm"), ("prefork", "cold"), ("threads", "cold"), ("solo", "cold")]
)
def test_a_shutdown_delivers_what_the_sender_still_lingers_on_without_waiting_it_out(
    pool, how, site, redis_server, collector, figures
):
    """flush_interval=60: the senders hold every message for a full batch, so only the shutdown
    path can deliver them, and it must not wait the minute out."""
    worker = site(POOLS[pool], SITE_EMIT_MODES="tracker,official", SITE_FLUSH_INTERVAL="60")
    queue_tasks(redis_server, 40)
    wait_idle(redis_server, collector, worker)
    assert by_mode(collector)["tracker"] == []  # still lingering in the children's senders
    seconds = worker.shut_down(SHUTDOWNS[how])
    label = f"celery {pool}, {how} shutdown in {seconds:.1f} s with flush_interval=60"
    count_and_report(collector, redis_server, figures, label, 40, modes=("tracker",))
    assert seconds < 30  # generous on a loaded machine; waiting the linger out takes 60 s


def test_recycling_by_max_memory_per_child_loses_nothing(site, redis_server, collector, figures):
    # 1 KiB: every child is over it after its first task, so each task ends its child.
    seconds = session(site, redis_server, collector, (*PREFORK_2, "--max-memory-per-child", "1"), 30)
    label = f"celery prefork --max-memory-per-child 1 (a child per task), warm shutdown in {seconds:.1f} s"
    count_and_report(collector, redis_server, figures, label, 30)


def test_autoscale_shrinking_loses_nothing(site, redis_server, collector, figures, monkeypatch):
    """Three children grow for a burst of slow tasks, two are shrunk once idle (keepalive 1 s):
    with flush_interval=60 only their exit can have delivered their messages."""
    worker = site(
        ("--pool", "prefork", "--autoscale", "3,1"),
        SITE_EMIT_MODES="tracker,official",
        SITE_FLUSH_INTERVAL="60",
        AUTOSCALE_KEEPALIVE="1",
    )
    queue_tasks(redis_server, 30, sleep=0.3)
    wait_until(lambda: "Scaling down" in worker.log(), 120, f"autoscale to shrink (log: {worker.log_path})")
    wait_idle(redis_server, collector, worker)
    before_shutdown = len(by_mode(collector)["tracker"])
    seconds = worker.shut_down(signal.SIGTERM)
    label = (
        f"celery prefork --autoscale 3,1 with flush_interval=60: {before_shutdown} arrived from "
        f"shrunk children before the warm shutdown ({seconds:.1f} s)"
    )
    count_and_report(collector, redis_server, figures, label, 30, modes=("tracker",))
    assert before_shutdown > 0  # the shrunk children delivered at their own exit


GLOBAL = ("global", "global_identify")


@pytest.mark.parametrize(
    "pool, made, env",
    [
        pytest.param(prefork(100), 1000, {}, id="prefork-mtpc100"),
        pytest.param(prefork(10), 300, {}, id="prefork-mtpc10"),
        pytest.param(POOLS["threads"], 200, {}, id="threads"),
        pytest.param(POOLS["solo"], 200, {}, id="solo"),
        pytest.param(prefork(10), 300, {"spool": "yes"}, id="prefork-mtpc10-spool"),
    ],
)
def test_the_global_client_loses_no_call_of_a_task(
    pool, made, env, site, redis_server, collector, figures, request, tmp_path
):
    """Tasks call analytics.track and analytics.identify after install_global_client (the global
    client replaces the official one in ``analytics``, so the official client's count comes from
    a second worker's life on the same collector, the same tasks)."""
    options = {"SITE_SPOOL_DIR": str(tmp_path / "spool")} if env else {}
    seconds = session(site, redis_server, collector, pool, made, SITE_EMIT_MODES="global", **options)
    session(site, redis_server, collector, pool, made, SITE_EMIT_MODES="official", **options)
    label = f"celery {request.node.callspec.id}, global client, warm shutdown in {seconds:.1f} s"
    count_and_report(collector, redis_server, figures, label, made, modes=GLOBAL)
    assert left_in_broker(redis_server) == 0
