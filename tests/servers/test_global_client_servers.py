"""Real servers running the test site whose view calls ``segment.analytics.track`` (as
edx-platform's views do), with our global client installed by the Django setting
EVENT_TRACKING_SEGMENT_CLIENT: every call arrives once after the server is stopped. The official
client's count in the same scenario is stated beside (the figures at the end of the run)."""

from __future__ import annotations

import signal

import pytest
from harness import arrived, assert_each_arrived_once, gunicorn, uwsgi

pytestmark = pytest.mark.servers

# A long upload interval with big batches keeps a tail buffered when the stop comes.
TAIL = {"upload_interval": 10, "upload_size": 5000}
SERVERS = {
    "gunicorn 4 sync workers --preload": (gunicorn("--workers", "4", "--preload"), signal.SIGTERM, 400, 8),
    "uWSGI --processes 2 --threads 8": (
        uwsgi("--processes", "2", "--threads", "8", "--die-on-term"),
        signal.SIGTERM,
        600,
        16,
    ),
}


@pytest.mark.parametrize("server", list(SERVERS))
def test_module_level_calls_arrive_once(start_site, collector, figures, server):
    command, signum, count, threads = SERVERS[server]
    site = start_site(command, backend_options=TAIL, env={"SEGMENT_CALLS": "global"})
    site.load(range(count), threads=threads)
    site.wait_until_idle()  # uWSGI's quick stop skips Python's exit in a worker inside a request
    site.stop(signum)
    assert_each_arrived_once(collector, site.logged(), site)

    # The official client, the same scenario on the same collector: numbers of its own.
    site = start_site(command, backend_options={}, env={"SEGMENT_CALLS": "official"})
    official_numbers = range(100_000, 100_000 + count)
    site.load(official_numbers, threads=threads)
    site.wait_until_idle()
    site.stop(signum)
    official = sum(1 for n in arrived(collector) if n in official_numbers)
    figures.append(
        f"global client under {server}, stopped by SIGTERM: ours {count} of {count} arrived once; "
        f"the official client {official} of {count} (ours held a 10 s tail at the stop, the official "
        "client's module has its 0.5 s upload interval)"
    )
