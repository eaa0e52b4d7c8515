"""What the commands and logs say, word for word where it matters.

- At a flush timeout nothing is gone: the warning says "still pending", never "dropped"; a
  spool keeps what close() could not deliver (still pending, on disk, no "dropped" said), while
  a memory buffer's undelivered messages are gone at close() and are said "dropped", as many as
  counted.
- Counts get their plural right: ``1 part``, ``1 message``.
- ``deadletters list`` with none says so, without a ``0 dead letters ... (--json)`` line.
"""

from __future__ import annotations

import logging
import re

import pytest
from test_spool import KEY, SPOOLING_SCRIPT, closed_port_url, kill, start_script

from eventtracking import cli
from eventtracking.backends.segment import SegmentBackend

COUNT = 1200  # more than two batches


def send_into_an_outage(backend: SegmentBackend) -> None:
    for i in range(COUNT):
        backend.send({"name": "words.test", "data": {"i": i}, "context": {"user_id": i}})


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode", ["memory", "spool"])
def test_a_flush_timeout_says_still_pending_and_nothing_dropped(mode, tmp_path, caplog):
    options = {"spool_dir": str(tmp_path)} if mode == "spool" else {}
    backend = SegmentBackend(write_key=KEY, host=closed_port_url(), retry_timeout=60, **options)
    try:
        with caplog.at_level(logging.WARNING):
            send_into_an_outage(backend)
            assert backend.flush(timeout=0.5) is False
        said = warnings_of(caplog)
        timed_out = rf"flush timed out after 0\.5s: {COUNT} messages .* still pending"
        assert any(re.search(timed_out, message) for message in said), said
        assert not any("dropped" in message for message in said), said
        assert backend.stats()["dropped"] == {}
    finally:
        backend.close(timeout=0.5)


def test_close_with_a_spool_keeps_the_rest_and_does_not_say_dropped(tmp_path, caplog):
    backend = SegmentBackend(write_key=KEY, host=closed_port_url(), spool_dir=str(tmp_path))
    send_into_an_outage(backend)
    with caplog.at_level(logging.WARNING):
        assert backend.close(timeout=0.5) is False
    said = warnings_of(caplog)
    assert not any("dropped" in message for message in said), said
    stats = backend.stats()
    assert stats["dropped"] == {} and stats["spool"]["pending"] == COUNT  # on disk: sent by the next process


def test_close_with_a_memory_buffer_says_dropped_for_what_is_gone(caplog):
    backend = SegmentBackend(write_key=KEY, host=closed_port_url())
    send_into_an_outage(backend)
    with caplog.at_level(logging.WARNING):
        assert backend.close(timeout=0.5) is False
    said = warnings_of(caplog)
    dropped = sum(int(m.split()[1]) for m in said if re.match(r"dropped \d+ messages?: gave_up", m))
    assert dropped == backend.stats()["dropped"]["gave_up"] > 0


def test_spool_status_and_drain_say_1_part(collector, tmp_path, capsys):
    process = start_script(SPOOLING_SCRIPT, SPOOL=str(tmp_path), COUNT=1, PREFIX="one-")
    try:
        assert process.stdout.readline() == "spooled\n", process.stderr.read()
    finally:
        kill(process)
    assert cli.main(["spool", "status", "--spool", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"1 part in {tmp_path}; 1 message left by processes that are gone" in out
    drain = ["spool", "drain", "--spool", str(tmp_path), "--write-key", KEY, "--host", collector.url]
    status = cli.main(drain)
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"drained {tmp_path}: 1 message in 1 part left by processes that are gone: delivered 1," in out
    assert " parts" not in out and " 1 messages" not in out
    assert collector.message_ids() == ["one-0"]


@pytest.mark.parametrize("content", [None, b"", b"\n\n"])
def test_deadletters_list_with_none_says_so_and_nothing_else(content, tmp_path, capsys):
    if content is not None:
        (tmp_path / "deadletters.jsonl").write_bytes(content)
    assert cli.main(["deadletters", "list", "--spool", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no dead letters in {tmp_path}\n"
