"""An Open edX LMS in miniature runs on this package: edx-platform's EVENT_TRACKING_BACKENDS, with
event-routing-backends (ERB) and with Aspects' event-bus additions, starts and delivers.

Each site is a real process (tests/openedx_site/run_site.py: django.setup() with the settings, the
plugins' apps, migrations) that emits events through the tracker. What it delivers is checked
where it arrives: the tracking log file (tracking_logs → LoggerBackend), the project's collector
(segmentio → whitelist → SegmentBackend, drop-in, on the global client configured the
edx-platform way) and a loopback xAPI endpoint (ERB's event_transformer → xAPI router → LRS).

Environments: .venv has ERB 10.1 and segment-analytics-python 2.x; .envs/analytics14 (made by
``make test``) has analytics-python 1.4.post1, edx-platform's pin, which installs both
``analytics`` 1.4 and ``segment.analytics`` 2.2.2, each with its own write key. Celery runs
tasks eagerly in these sites; the real worker is the async-engines tests' part.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from eventtracking.collector import Collector

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "tests" / "openedx_site"
VENV_PYTHON = Path(sys.executable)
ANALYTICS14_PYTHON = ROOT / ".envs" / "analytics14" / "bin" / "python"
SEGMENT_KEY = "lms-segment-key"
COURSE = "course-v1:edX+DemoX+2026"
XAPI_REGISTERED = "http://adlnet.gov/expapi/verbs/registered"


class LRS:
    """A loopback xAPI endpoint: stores what it is sent (PUT one statement, POST a list)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        lrs = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                self.store()
                self.answer(204, b"")

            def do_POST(self) -> None:
                body = self.store()
                ids = (
                    [statement.get("id") for statement in body]
                    if isinstance(body, list)
                    else [body.get("id")]
                )
                self.answer(200, json.dumps(ids).encode())

            def store(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                url = urlsplit(self.path)
                lrs.requests.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": parse_qs(url.query),
                        "authorization": self.headers.get("Authorization"),
                        "body": body,
                    }
                )
                return body

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/xapi/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def statements(self) -> list[dict]:
        found = []
        for request in self.requests:
            found.extend(request["body"] if isinstance(request["body"], list) else [request["body"]])
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lrs():
    server = LRS()
    yield server
    server.close()


@pytest.fixture
def segment_collector():
    """The project's collector, accepting only the site's Segment write key."""
    with Collector(write_key=SEGMENT_KEY) as running:
        yield running
    running.close()


def enrollment(name: str, user_id: int, mode: str = "audit") -> dict:
    """An enrollment event as the LMS emits it: data from the enrollment, context from the request."""
    return {
        "name": name,
        "data": {"course_id": COURSE, "user_id": user_id, "mode": mode},
        "context": {
            "user_id": user_id,
            "username": f"learner{user_id}",
            "course_id": COURSE,
            "org_id": "edX",
            "ip": "203.0.113.7",
            "agent": "Mozilla/5.0",
            "host": "lms.example.org",
            "path": "/api/enrollment/v1/enrollment",
            "session": "a1b2c3",
            "client_id": "GA1.1.1.1",
        },
    }


def run_site(python: Path, settings: str, tmp_path: Path, scenario: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        PYTHONPATH=os.pathsep.join([str(SITE), str(SITE / "platform")]),
        SITE_DB=str(tmp_path / "lms.sqlite3"),
        SITE_LOG=str(tmp_path / "tracking.log"),
        LMS_SEGMENT_KEY=SEGMENT_KEY,
    )
    assert python.exists(), f"{python} is missing: make test builds it"
    result = subprocess.run(
        [str(python), str(SITE / "run_site.py")],
        input=json.dumps(scenario),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    print(result.stderr[-8000:])  # the site's log, shown when a test fails
    return json.loads(result.stdout.strip().splitlines()[-1])


def tracking_log(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "tracking.log").read_text().splitlines()]


def assert_lms_delivered(report: dict, tmp_path: Path, collector: Collector, names: list[str]) -> None:
    """tracking_logs logged every event (legacy shape); segmentio sent the whitelisted ones."""
    assert report["engines"]["tracking_logs"] == "eventtracking.backends.routing.RoutingBackend"
    logged = tracking_log(tmp_path)
    assert [line["event_type"] for line in logged] == names
    assert logged[0]["username"] == "learner11" and logged[0]["event"]["course_id"] == COURSE
    assert report["flushed"] is True
    whitelisted = [
        n for n in names if n.startswith("edx.course.enrollment.") and not n.endswith("mode_changed")
    ]
    assert collector.wait_for(len(whitelisted), timeout=60) == len(whitelisted)
    messages = collector.messages()
    assert [m["event"] for m in messages] == whitelisted
    first = messages[0]
    assert first["userId"] == "11"
    assert first["properties"]["label"] == COURSE  # the platform's GoogleAnalyticsProcessor ran
    assert first["context"]["Google Analytics"] == {"clientId": "GA1.1.1.1"}
    assert report["segment"]["accepted"] == len(whitelisted)
    assert not report["segment"].get("skipped")


ACTIVATED = "edx.course.enrollment.activated"
DEACTIVATED = "edx.course.enrollment.deactivated"  # the site sends it to Caliper only (disabled)
MODE_CHANGED = "edx.course.enrollment.mode_changed"  # ERB transforms it; not on segmentio's whitelist


def test_edx_platform_settings_on_analytics_python_1_4(tmp_path, segment_collector):
    """edx-platform's pin: analytics-python 1.4.post1, `analytics.write_key` set after the tracker
    is built, `segment.analytics` (its other module) left unconfigured. Events reach the collector."""
    events = [
        enrollment(ACTIVATED, 11),
        enrollment("edx.ui.lms.link_clicked", 11),
        enrollment(DEACTIVATED, 12),
    ]
    report = run_site(
        ANALYTICS14_PYTHON,
        "lms_settings",
        tmp_path,
        {"collector_url": segment_collector.url, "events": events},
    )
    assert report["client"] == "analytics"
    assert "event_routing_backends" not in report["apps"]  # ERB is not in that environment
    assert_lms_delivered(report, tmp_path, segment_collector, [e["name"] for e in events])


def test_edx_platform_settings_with_erb_deliver_xapi(tmp_path, segment_collector, lrs):
    """.venv: segment-analytics-python 2.x alone, and ERB installed as a plugin (its app, its
    settings, its event_transformer). The enrollment is transformed and reaches the LRS; the one
    the site keeps from xAPI does not (ERB's xAPI router filters the *list* it is handed); the
    one no whitelist lets through does not either (ERB has a transformer for both)."""
    events = [
        enrollment(ACTIVATED, 11),
        enrollment(DEACTIVATED, 12),
        enrollment(MODE_CHANGED, 13, "verified"),
    ]
    scenario = {
        "collector_url": segment_collector.url,
        "lrs_url": lrs.url,
        "users": [11, 12, 13],
        "events": events,
    }
    report = run_site(VENV_PYTHON, "lms_settings", tmp_path, scenario)
    assert report["client"] == "segment.analytics"
    assert "event_routing_backends" in report["apps"]
    assert (
        report["engines"]["event_transformer"] == "eventtracking.backends.async_routing.AsyncRoutingBackend"
    )
    assert_lms_delivered(report, tmp_path, segment_collector, [e["name"] for e in events])

    [request] = lrs.requests  # the activation only
    assert request["method"] == "PUT" and request["path"] == "/xapi/statements"
    assert request["authorization"] == "Basic " + base64.b64encode(b"lrs-user:lrs-password").decode()
    statement = request["body"]
    assert request["query"]["statementId"] == [statement["id"]]
    assert statement["verb"]["id"] == XAPI_REGISTERED
    assert statement["object"]["id"] == f"https://lms.example.org/course/{COURSE}"
    assert (
        statement["object"]["definition"]["extensions"]["https://w3id.org/xapi/acrossx/extensions/type"]
        == "audit"
    )
    assert statement["actor"]["account"]["homePage"] == "https://lms.example.org"


def test_erb_batches_are_filtered_by_the_whitelist(tmp_path, segment_collector, lrs):
    """ERB's batch path (bulk_send, as its batching and transform_tracking_logs use): a list of
    events through the xAPI router's whitelist; the one the site keeps from xAPI is filtered out
    of the batch, the others arrive in one request."""
    batch = [enrollment(ACTIVATED, 11), enrollment(DEACTIVATED, 12), enrollment(ACTIVATED, 13)]
    for number, event in enumerate(batch):
        event["timestamp"] = f"2026-12-01T10:00:0{number}.000000+00:00"
    scenario = {
        "collector_url": segment_collector.url,
        "lrs_url": lrs.url,
        "users": [11, 12, 13],
        "events": [],
        "bulk": batch,
    }
    run_site(VENV_PYTHON, "lms_settings", tmp_path, scenario)
    [request] = lrs.requests
    assert request["method"] == "POST" and request["path"] == "/xapi/statements"
    assert [s["verb"]["id"] for s in request["body"]] == [XAPI_REGISTERED, XAPI_REGISTERED]
    actors = {s["actor"]["account"]["name"] for s in request["body"]}
    assert len(actors) == 2  # learners 11 and 13, not 12


def test_aspects_settings_deliver_through_the_event_bus_path(tmp_path, segment_collector, lrs):
    """Aspects' additions: event_transformer is an EventBusRoutingBackend. The enrollment is
    published once on the bus; handed back as the bus consumer does, ERB's synchronous xAPI
    router sends it to the LRS. tracking_logs and segmentio deliver as before."""
    events = [enrollment(ACTIVATED, 11), enrollment(MODE_CHANGED, 11, "verified")]
    scenario = {
        "collector_url": segment_collector.url,
        "lrs_url": lrs.url,
        "users": [11],
        "events": events,
        "bus": True,
    }
    report = run_site(VENV_PYTHON, "aspects_settings", tmp_path, scenario)
    assert report["engines"]["event_transformer"] == "eventtracking.backends.event_bus.EventBusRoutingBackend"
    assert_lms_delivered(report, tmp_path, segment_collector, [e["name"] for e in events])
    # ERB puts both on the bus (its EVENT_BUS_TRACKING_LOGS); the site's whitelist stops the mode
    # change when the consumer side routes it.
    assert report["published"] == 2
    [statement] = lrs.statements()
    assert statement["verb"]["id"] == XAPI_REGISTERED
    assert statement["object"]["id"] == f"https://lms.example.org/course/{COURSE}"
