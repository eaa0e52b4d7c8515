"""A plain Python program that makes Segment's module-level calls, as an application does, through
one official global module: run by tests/test_global_client.py under .venv (segment-analytics-python
2.x) and .envs/analytics14 (analytics-python 1.4.post1, which installs ``analytics`` and
``segment.analytics``).

    python global_client_script.py URL CLIENT MODULE N END

- CLIENT: ``ours`` (``install_global_client(write_key=..., host=URL)``) or ``official`` (the
  module's ``write_key`` and ``host`` set, as edx-platform does);
- MODULE: ``analytics`` or ``segment.analytics``, the module whose calls are made;
- N: track calls, after one identify, group, alias, page and screen;
- END: ``exit`` (return from the program without ``flush()``) or ``sigterm`` (print ``sent``,
  then wait to be stopped by SIGTERM).

Every call carries its own timestamp, context and message id (``CLIENT@MODULE-KIND-i``).
"""

import datetime
import importlib
import sys
import time

URL, CLIENT, MODULE, N, END = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
WHEN = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)
KEY = "wk-global"
TAG = f"{CLIENT}@{MODULE}"  # message ids: TAG-KIND-i

module = importlib.import_module(MODULE)
if CLIENT == "ours":
    from eventtracking.segment import install_global_client

    # A long upload interval and big batches: a tail is still buffered when the program ends.
    install_global_client(write_key=KEY, host=URL, upload_interval=5, upload_size=5000)
    assert module.write_key == KEY and module.default_client  # edx-platform's guards pass
else:
    module.write_key, module.host = KEY, URL


def context(i):
    return {"ip": "203.0.113.9", "app": {"name": "script", "build": str(i)}}


def at(i):
    return WHEN + datetime.timedelta(milliseconds=i)


module.identify("u-1", {"email": "a@example.org"}, context(0), at(0), message_id=f"{TAG}-identify-0")
module.group("u-1", "g-1", {"name": "Org"}, context(0), at(0), message_id=f"{TAG}-group-0")
module.alias("anon-1", "u-1", context(0), at(0), message_id=f"{TAG}-alias-0")
module.page("u-1", "Docs", "Install", {"path": "/install"}, context(0), at(0), message_id=f"{TAG}-page-0")
module.screen("u-1", "App", "Home", {"tab": 1}, context(0), at(0), message_id=f"{TAG}-screen-0")
for i in range(N):
    module.track(
        user_id=f"u-{i}",
        event="script.event",
        properties={"n": i},
        context=context(i),
        timestamp=at(i),
        message_id=f"{TAG}-track-{i}",
    )
if END == "sigterm":
    print("sent", flush=True)
    time.sleep(120)
