"""One ``spool_dir`` shared by a whole real server (issue 11): the test site under gunicorn (4 sync
workers: plain, --preload, --max-requests) and uWSGI (a master and 4 processes, forked in C or
with --lazy-apps), one worker SIGKILLed during a collector outage; once the collector is back
every event arrives exactly once, the killed worker's part is delivered and removed by a live
worker without a restart, and no part of the spool is left behind when the site stops."""

from __future__ import annotations

import os
import signal

import pytest
from harness import arrived, assert_each_arrived_once, gunicorn, uwsgi, wait_until

pytestmark = pytest.mark.servers

# Plain gunicorn workers build the backend after the fork; with --preload (gunicorn) or by default
# (uWSGI, whose workers are forked in C, without Python's at-fork hooks) the master builds it and
# each worker takes a part of its own at its first event, while the master, which never emits,
# has none. --max-requests: workers recycled during the outage leave their parts (the exit flush
# cannot deliver), which live workers adopt. --lazy-apps: each uWSGI worker loads the site itself.
UWSGI = ("--processes", "4", "--enable-threads", "--die-on-term")  # TERM stops (uWSGI 2.0 reloads)
MODES = {
    "gunicorn": gunicorn("--workers", "4"),
    "gunicorn-preload": gunicorn("--workers", "4", "--preload"),
    "gunicorn-max-requests": gunicorn("--workers", "4", "--max-requests", "120"),
    "uwsgi": uwsgi(*UWSGI),
    "uwsgi-lazy-apps": uwsgi(*UWSGI, "--lazy-apps"),
}


def parts(spool_dir) -> list:
    return sorted(spool_dir.glob("part-*"))


def owner(part) -> int:
    return int(part.name.split("-")[1])


def workers(master: int) -> set[int]:
    """The live children of ``master`` (the server's workers)."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if int(parent) == master and state != "Z":
                found.add(int(name))
    return found


def has_site_loaded(pid: int, tracking_log) -> bool:
    """The test site opens its tracking log when it is imported (a forked worker inherits it)."""
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}") == str(tracking_log) for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


@pytest.mark.parametrize("mode", list(MODES))
def test_a_worker_killed_in_an_outage_loses_nothing_with_one_shared_spool_dir(
    start_site, collector, tmp_path, mode
):
    spool_dir = tmp_path / "spool"
    site = start_site(MODES[mode], env={"SPOOL_DIR": str(spool_dir)})  # the site boots
    collector.faults.add(status=503, times=None)  # the collector is down
    site.load(range(400))
    served = {int(pid) for pid in site.pids()}
    if mode != "gunicorn-max-requests":  # (there, recycled workers' parts are adopted meanwhile)
        assert {owner(part) for part in parts(spool_dir)} == served, site.output()  # one each, no other
    victim = int(site.pids().most_common(1)[0][0])
    os.kill(victim, signal.SIGKILL)  # with its events spooled, none of them delivered
    wait_until(lambda: victim not in workers(site.process.pid), what="the killed worker reaped")
    site.load(range(400, 600))  # the site goes on: the master started a new worker
    assert collector.count() == 0
    collector.faults.clear()  # the collector is back
    logged = site.logged()
    wait_until(lambda: set(arrived(collector)) >= set(logged), what=f"arrivals\n{site.output()}")
    # The killed worker's part was found by a live worker, delivered and removed: no restart.
    wait_until(lambda: victim not in {owner(part) for part in parts(spool_dir)}, what="the part removed")
    # Stopped once every worker has the site loaded (a worker still loading it when the stop
    # comes may be killed outright by the server, which leaves its part for the next start).
    wait_until(
        lambda: all(has_site_loaded(pid, site.tracking_log) for pid in workers(site.process.pid)),
        what="the workers loaded",
    )
    if site.is_uwsgi:  # its master replaces the killed worker in its own time: its stop must not race that
        wait_until(lambda: site.uwsgi_loaded(gone=victim), what="the killed worker replaced and loaded")
    site.wait_until_idle()  # uWSGI's quick stop skips Python's exit in a worker inside a request
    assert site.stop(signal.SIGTERM) == 0, site.output()
    assert_each_arrived_once(collector, site.logged(), site)
    assert list(spool_dir.iterdir()) == [], site.output()  # no directory left behind
