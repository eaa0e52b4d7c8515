"""The ``eventtracking`` command line: ``collect`` in a real subprocess, ``received``, plug-ins."""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import orjson
import pytest

from eventtracking import cli
from eventtracking.cli import args, received
from eventtracking.collector import Collector

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20  # seconds, on every socket and subprocess wait
WRITE_KEY_VARIABLES = (args.WRITE_KEY_ENV, *args.WRITE_KEY_ENV_ALIASES)
LISTENING = re.compile(r"^listening on http://127\.0\.0\.1:(\d+)$")


def start_collect(*args: str, env: Optional[Dict[str, str]] = None) -> Tuple[subprocess.Popen, int, str]:
    """Run ``python -m eventtracking collect ARGS``; return the process, its port and first line."""
    process_env = {name: value for name, value in os.environ.items() if name not in WRITE_KEY_VARIABLES}
    process_env.update(env or {})
    process_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), process_env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "eventtracking", "collect", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(REPO_ROOT),
        env=process_env,
    )
    try:
        line = read_line(process, TIMEOUT)
    except BaseException:
        process.kill()
        process.communicate(timeout=TIMEOUT)
        raise
    match = LISTENING.match(line)
    assert match, f"unexpected first line {line!r}"
    return process, int(match.group(1)), line


def read_line(process: subprocess.Popen, timeout: float) -> str:
    """The first line of the process's stdout, waiting at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"no line from the collector within {timeout}s (got {data!r})")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                process.wait(TIMEOUT)
                error = process.stderr.read().decode(errors="replace")
                raise EOFError(f"collector exited before printing a line: {data!r}\n{error}")
            data += chunk
    return data.split(b"\n", 1)[0].decode()


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> Tuple[int, str, str]:
    """Signal the process and return its exit status, remaining stdout and stderr."""
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=TIMEOUT)
        raise
    return process.returncode, out.decode(), err.decode()


def request(
    port: int, method: str, path: str, payload: Any = None, headers: Optional[Dict[str, str]] = None
) -> Tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        body = orjson.dumps(payload) if payload is not None else None
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        conn.close()


def sample_batch() -> List[Dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": "video_played",
            "messageId": "m-1",
            "userId": "user-7",
            "timestamp": "2024-05-01T12:00:00.000Z",
            "context": {"page": {"url": "https://lms.example.com/courses/demo/video"}},
        },
        {"type": "identify", "messageId": "m-2", "anonymousId": "anon-3", "traits": {"name": "Ada"}},
        {
            "type": "page",
            "messageId": "m-3",
            "userId": "user-7",
            "name": "Home",
            "properties": {"url": "https://lms.example.com/"},
        },
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_collect_prints_its_port_serves_and_stops_cleanly_on_a_signal(tmp_path, capsys, signum):
    db_path = str(tmp_path / "collected.sqlite3")
    process, port, _ = start_collect("--port", "0", "--db", db_path)
    try:
        assert port > 0
        assert request(port, "POST", "/v1/batch", {"batch": sample_batch()}) == (200, {"success": True})
        assert request(port, "GET", "/health") == (200, {"status": "ok", "messages": 3})
        status, received = request(port, "GET", "/v1/received?after=1")
        assert status == 200
        assert [m["messageId"] for m in received["messages"]] == ["m-2", "m-3"]
        # The database can be read by another process while the collector writes to it.
        assert cli.main(["received", "--db", db_path, "--json"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 3
    finally:
        returncode, out, err = stop(process, signum)
    assert returncode == 0, err
    assert out == ""  # nothing after the one line already read
    assert "3 messages stored" in err
    with Collector(db_path=db_path) as reopened:  # the database was closed cleanly and kept
        assert reopened.message_ids() == ["m-1", "m-2", "m-3"]


@pytest.mark.parametrize("variable", [args.WRITE_KEY_ENV, *args.WRITE_KEY_ENV_ALIASES])
def test_collect_with_a_write_key_refuses_others_and_never_prints_the_key(tmp_path, variable):
    key = "cli-Secret-write-key-42"
    process, port, first_line = start_collect("-vv", env={variable: key})
    try:
        assert request(port, "POST", "/v1/batch", {"batch": sample_batch()})[0] == 401
        basic = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        assert request(port, "POST", "/v1/batch", {"batch": sample_batch()}, basic)[0] == 200
        # Checked from the headers before the body is read: a key in the body does not count.
        assert request(port, "POST", "/v1/batch", {"batch": sample_batch(), "writeKey": key})[0] == 401
        assert request(port, "GET", "/health")[0] == 401
        assert request(port, "GET", "/health", None, basic)[0] == 200
    finally:
        returncode, out, err = stop(process)
    assert returncode == 0, err
    assert "GET" in err or "POST" in err  # -vv really logged requests, so the check below means something
    for text in (first_line, out, err):
        assert key not in text
        assert basic["Authorization"].split()[1] not in text


def test_collect_reports_an_address_it_cannot_bind(capsys):
    with Collector() as taken:
        assert cli.main(["collect", "--port", str(taken.port)]) == 1
    assert "cannot listen" in capsys.readouterr().err


@pytest.fixture
def collected_db(tmp_path) -> str:
    db_path = str(tmp_path / "collected.sqlite3")
    collector = Collector(db_path=db_path).start()
    try:
        assert request(collector.port, "POST", "/v1/batch", {"batch": sample_batch()})[0] == 200
    finally:
        collector.close()
    return db_path


def test_received_prints_a_table(collected_db, capsys):
    assert cli.main(["received", "--db", collected_db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SEQ", "EVENT", "USER", "PAGE", "URL", "TIMESTAMP"]
    assert lines[1].split() == [
        "1",
        "video_played",
        "user-7",
        "https://lms.example.com/courses/demo/video",
        "2024-05-01T12:00:00.000Z",
    ]
    assert lines[2].split() == ["2", "(identify)", "anon:anon-3", "-", "-"]
    assert lines[3].split() == ["3", "(page)", "user-7", "https://lms.example.com/", "-"]
    assert lines[4] == "3 messages"
    # Columns line up: every row's URL starts where the header's does.
    url_column = lines[0].index("PAGE URL")
    assert lines[1][url_column:].startswith("https://")


def test_received_filters_limits_and_prints_json_lines(collected_db, capsys):
    assert cli.main(["received", "--db", collected_db, "--json"]) == 0
    printed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == sample_batch()
    assert cli.main(["received", "--db", collected_db, "--json", "--event", "video_played"]) == 0
    assert [orjson.loads(line)["messageId"] for line in capsys.readouterr().out.splitlines()] == ["m-1"]
    assert cli.main(["received", "--db", collected_db, "--limit", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 messages"
    assert cli.main(["received", "--db", collected_db, "--event", "nothing"]) == 0
    assert capsys.readouterr().out == "no messages\n"


def test_received_without_a_database_fails_with_a_message(tmp_path, capsys):
    missing = str(tmp_path / "missing.sqlite3")
    assert cli.main(["received", "--db", missing]) == 1
    assert "missing.sqlite3" in capsys.readouterr().err
    assert not os.path.exists(missing)  # reading never creates a database
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("just text, not a database\n" * 100)
    assert cli.main(["received", "--db", str(not_sqlite)]) == 1
    assert "notes.txt" in capsys.readouterr().err


def test_table_shortens_long_cells_to_one_line():
    table = received.format_table([(1, {"type": "track", "event": "e" * 200 + "\nsecond line", "userId": 5})])
    row = table.splitlines()[1]
    assert len(row) < 120
    assert "..." in row
    assert row.split()[2] == "5"


def test_a_plugin_adds_its_subcommands_and_runs_them():
    calls: List[argparse.Namespace] = []
    plugin = types.SimpleNamespace(
        add_parser=lambda subparsers: subparsers.add_parser("speedy").add_argument("--speed", type=float),
        run=lambda args: calls.append(args) or 7,
    )
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    cli._add_plugin(subparsers, plugin)
    args = parser.parse_args(["speedy", "--speed", "2"])
    assert args.run(args) == 7 and calls[0].speed == 2.0


def test_replay_and_deadletters_are_subcommands():
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert {"collect", "received", "replay", "deadletters"} <= set(choices)


def test_python_dash_m_eventtracking_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "eventtracking", "--help"],
        capture_output=True,
        cwd=str(REPO_ROOT),
        timeout=TIMEOUT,
    )
    assert result.returncode == 0
    assert b"collect" in result.stdout and b"received" in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "eventtracking", "no-such-command"],
        capture_output=True,
        cwd=str(REPO_ROOT),
        timeout=TIMEOUT,
    )
    assert bad.returncode == 2


# -- one consistent command line (issue 13) --------------------------------------------------------


def run_command(
    *argv: str, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None
) -> subprocess.CompletedProcess:
    """``python -m eventtracking ARGV`` to completion, without any write key in its environment."""
    process_env = {name: value for name, value in os.environ.items() if name not in WRITE_KEY_VARIABLES}
    process_env["PYTHONPATH"] = str(REPO_ROOT)
    process_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "eventtracking", *argv],
        capture_output=True,
        text=True,
        cwd=cwd or str(REPO_ROOT),
        env=process_env,
        timeout=60,
    )


def test_version_is_the_distributions():
    from importlib.metadata import version

    result = run_command("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"eventtracking {version('event-tracking')}"


BARE = {
    "eventtracking": ([], ("collect", "received", "replay", "deadletters", "spool")),
    "deadletters": (["deadletters"], ("list", "resend")),
    "spool": (["spool"], ("status", "drain")),
}


@pytest.mark.parametrize("name", sorted(BARE))
def test_run_bare_a_command_prints_its_help(name):
    argv, commands = BARE[name]
    result = run_command(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: eventtracking") and not result.stderr
    for command in commands:
        assert command in result.stdout


def option_helps() -> Dict[str, Dict[str, Tuple[Optional[str], str]]]:
    """{option: {command: (metavar, help)}} for every option of every (sub)command."""
    found: Dict[str, Dict[str, Tuple[Optional[str], str]]] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}".strip())
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--version"):
                    found.setdefault(option, {})[name] = (action.metavar, action.help or "")

    walk(cli.build_parser(), "")
    return found


def test_the_same_option_has_the_same_name_metavar_and_wording_in_every_command():
    helps = option_helps()
    for command, (metavar, text) in helps["--write-key"].items():
        assert metavar == "KEY" and text.endswith(f"(default: ${args.WRITE_KEY_ENV})"), command
    assert {"collect", "replay", "deadletters resend"} <= set(helps["--write-key"])
    for command, (metavar, text) in helps["--db"].items():
        assert metavar == "FILE" and text.startswith("the collector's SQLite file"), command
    for command, (metavar, text) in helps["--spool"].items():
        assert metavar == "DIR" and text.startswith("the spool directory"), command
    destinations = {command: help for command, help in helps["--host"].items() if command != "collect"}
    assert len(destinations) >= 2 and len(set(destinations.values())) == 1, destinations
    for command, (_, text) in helps["--json"].items():
        assert text.endswith("as JSON lines instead of a table"), command


def test_no_option_takes_an_optional_value_that_could_swallow_a_path():
    parser = cli.build_parser()
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    pending = [sub for group in subparsers for sub in group.choices.values()]
    while pending:
        sub = pending.pop()
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            assert action.nargs != "?" or not action.option_strings, (sub.prog, action.option_strings)


def test_replay_local_before_the_path_replays_the_path(tmp_path):
    sample = REPO_ROOT / "examples" / "sample_tracking.log"
    result = run_command("replay", "--local", str(sample), cwd=str(tmp_path))
    assert result.returncode == 1, result.stderr  # the sample's two broken lines
    assert "events sent           24" in result.stdout
    assert (tmp_path / "eventtracking-local.sqlite3").exists()


@pytest.mark.parametrize("variable", [args.WRITE_KEY_ENV, *args.WRITE_KEY_ENV_ALIASES])
def test_every_command_reads_the_write_key_from_the_one_variable_or_its_aliases(tmp_path, variable):
    key = "env-Secret-key-9"
    sample = REPO_ROOT / "examples" / "sample_tracking.log"
    with Collector(write_key=key) as keyed:
        result = run_command("replay", str(sample), "--host", keyed.url, env={variable: key})
        assert "events sent           24" in result.stdout, result.stdout + result.stderr
        assert keyed.count() == 24
    spool = tmp_path / "spool"
    spool.mkdir()
    message = {"type": "track", "event": "e", "userId": "1", "messageId": "dl-1"}
    write_dead_letter(spool, "HTTP 400: x", message)
    with Collector(write_key=key) as keyed:
        resend = ("deadletters", "resend", "--spool", str(spool), "--host", keyed.url)
        result = run_command(*resend, env={variable: key})
        assert result.returncode == 0, result.stdout + result.stderr
        assert keyed.message_ids() == ["dl-1"]
    for text in (result.stdout, result.stderr):
        assert key not in text


def write_dead_letter(spool: Path, reason: str, message: dict) -> None:
    (spool / "deadletters.jsonl").write_bytes(orjson.dumps({"reason": reason, "message": message}) + b"\n")


def test_deadletters_resend_without_a_key_says_where_to_put_it(tmp_path):
    result = run_command("deadletters", "resend", "--spool", str(tmp_path))
    assert result.returncode == 2
    assert f"--write-key KEY or set ${args.WRITE_KEY_ENV}" in result.stderr


def test_deadletters_resend_usage_is_the_docs():
    usage = " ".join(run_command("deadletters", "resend", "--help").stdout.split())
    page = (REPO_ROOT / "docs" / "guarantees.rst").read_text()
    synopsis = re.search(r"eventtracking deadletters resend --spool DIR .*", page).group(0).strip()
    # docs: `... resend --spool DIR [--write-key KEY] [--host URL]`; the usage line has the same.
    assert synopsis.replace("eventtracking deadletters resend", "").strip() in usage
    assert "--spool DIR [--write-key KEY] [--host URL]" in usage


def test_deadletters_list_keeps_the_reason_column_short(tmp_path, capsys):
    long_reason = "HTTP 400: " + "the server explains at length why " * 8
    message = {"type": "track", "event": "e", "userId": "1", "messageId": "dl-2"}
    write_dead_letter(tmp_path, long_reason, message)
    assert cli.main(["deadletters", "list", "--spool", str(tmp_path)]) == 0
    header, row, total = capsys.readouterr().out.splitlines()
    assert len(row) < 120 and row.split()[1:3] == ["HTTP", "400:"] and "..." in row
    assert total.startswith("1 dead letter in ")
    assert cli.main(["deadletters", "list", "--spool", str(tmp_path), "--json"]) == 0
    assert long_reason in capsys.readouterr().out  # the whole reason is still there


def test_collect_verbose_says_where_it_listens_once(tmp_path):
    process, port, first_line = start_collect("-v")
    try:
        assert request(port, "GET", "/health")[0] == 200
    finally:
        returncode, out, err = stop(process)
    assert returncode == 0
    assert (first_line + "\n" + out + err).count("listening on") == 1
    assert "stopped" in err  # -v did turn logging on


def test_received_leaves_no_wal_or_shm_files(tmp_path):
    db_path = tmp_path / "c.sqlite3"
    collector = Collector(db_path=str(db_path)).start()
    try:
        assert request(collector.port, "POST", "/v1/batch", {"batch": sample_batch()[:1]})[0] == 200
    finally:
        collector.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite3"]
    result = run_command("received", "--db", str(db_path))
    assert result.returncode == 0 and result.stdout.rstrip().endswith("1 message")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite3"]


def test_counts_are_said_in_words():
    from eventtracking.wording import plural

    said = [plural(n, "message") for n in (0, 1, 2, 1000)]
    assert said == ["0 messages", "1 message", "2 messages", "1,000 messages"]
    assert [plural(n, "delivery", "deliveries") for n in (1, 3)] == ["1 delivery", "3 deliveries"]


def test_collect_says_one_message_stored(tmp_path):
    process, port, _ = start_collect()
    try:
        assert request(port, "POST", "/v1/batch", {"batch": sample_batch()[:1]})[0] == 200
    finally:
        returncode, out, err = stop(process)
    assert "stopped, 1 message stored" in err


def test_deadletters_resend_says_why_it_kept_or_refused_again(tmp_path, capsys):
    message = {"type": "track", "event": "e", "userId": "1", "messageId": "dl-3"}
    write_dead_letter(tmp_path, "HTTP 400: x", message)
    with Collector() as refusing:
        refusing.faults.reject_event("e")
        assert cli.main(["deadletters", "resend", "--spool", str(tmp_path), "--host", refusing.url,
                         "--write-key", "k"]) == 1
    out = capsys.readouterr().out
    assert "refused again 1 (HTTP 400" in out
    with socket_closed_port() as port:
        host = f"http://127.0.0.1:{port}"
        status = cli.main(["deadletters", "resend", "--spool", str(tmp_path), "--host", host,
                           "--write-key", "k", "--timeout", "1"])
    out = capsys.readouterr().out
    assert status == 1 and "kept 1 (unreadable or not sent in time; last error: network error" in out
    assert f"127.0.0.1:{port}" in out


@contextlib.contextmanager
def socket_closed_port():
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port
