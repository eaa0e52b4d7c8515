"""install_global_client on the official clients' own global modules, in real processes: a plain
program (tests/global_client_script.py) makes every module-level call, then ends without
``flush()`` or is stopped by SIGTERM. Each message arrives once, in Segment's shape for its type,
with the caller's timestamp, context and messageId. The official client's count in the same
scenario is stated beside ours (the figures at the end of the run)."""

from __future__ import annotations

import datetime
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "global_client_script.py"
ANALYTICS14_PYTHON = ROOT / ".envs" / "analytics14" / "bin" / "python"
ENVIRONMENTS = {
    "2.x": (Path(sys.executable), ["segment.analytics"]),
    "1.4.post1": (ANALYTICS14_PYTHON, ["analytics", "segment.analytics"]),
}
N = 300
OTHERS = ("identify", "group", "alias", "page", "screen")
WHEN = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)


def run(python: Path, url: str, client: str, module: str, end: str) -> None:
    command = [str(python), str(SCRIPT), url, client, module, str(N), end]
    if end == "exit":
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 or client == "official", done.stderr
        return
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "sent", process.stderr.read()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGTERM  # it still dies of SIGTERM
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def arrived(collector, tag: str) -> list:
    return [m for m in collector.messages() if str(m.get("messageId", "")).startswith(tag + "-")]


def check_shapes(messages: list, tag: str) -> None:
    """Each type in Segment's spec shape, with the caller's timestamp, context and messageId."""
    by_id = {message["messageId"].replace(tag, "ours"): message for message in messages}
    for kind in OTHERS:
        message = by_id[f"ours-{kind}-0"]
        assert message["type"] == kind
        assert message["context"]["ip"] == "203.0.113.9" and message["context"]["app"]["build"] == "0"
        assert datetime.datetime.fromisoformat(message["timestamp"]) == WHEN
    assert by_id["ours-identify-0"]["userId"] == "u-1"
    assert by_id["ours-identify-0"]["traits"] == {"email": "a@example.org"}
    assert by_id["ours-group-0"]["groupId"] == "g-1" and by_id["ours-group-0"]["traits"] == {"name": "Org"}
    assert (by_id["ours-alias-0"]["previousId"], by_id["ours-alias-0"]["userId"]) == ("anon-1", "u-1")
    page = by_id["ours-page-0"]
    assert (page["category"], page["name"], page["properties"]) == ("Docs", "Install", {"path": "/install"})
    screen = by_id["ours-screen-0"]
    assert (screen["category"], screen["name"], screen["properties"]) == ("App", "Home", {"tab": 1})
    for i in (0, N // 2, N - 1):
        track = by_id[f"ours-track-{i}"]
        assert (track["type"], track["event"], track["userId"]) == ("track", "script.event", f"u-{i}")
        assert track["properties"] == {"n": i}
        assert track["context"]["app"] == {"name": "script", "build": str(i)}
        assert track["context"]["library"]["name"] == "eventtracking-segment"
        assert datetime.datetime.fromisoformat(track["timestamp"]) == WHEN + datetime.timedelta(
            milliseconds=i
        )


@pytest.mark.parametrize("end", ["exit", "sigterm"])
@pytest.mark.parametrize("environment", list(ENVIRONMENTS))
def test_every_module_level_call_arrives_once(collector, figures, environment, end):
    python, modules = ENVIRONMENTS[environment]
    assert python.exists(), f"{python} is missing: make .envs/analytics14/.installed builds it"
    expected = N + len(OTHERS)
    for module in modules:
        run(python, collector.url, "ours", module, end)
        tag = f"ours@{module}"
        mine = arrived(collector, tag)
        ids = [message["messageId"] for message in mine]
        assert len(ids) == len(set(ids)) == expected, f"{len(ids)} arrived, {len(set(ids))} unique"
        check_shapes(mine, tag)

        run(python, collector.url, "official", module, end)
        official = len({m["messageId"] for m in arrived(collector, f"official@{module}")})
        how = "exit without flush()" if end == "exit" else "SIGTERM"
        figures.append(
            f"global client, {environment} {module}, {how}: "
            f"ours {expected} of {expected} arrived once; the official client {official} of {expected}"
        )
