"""The replay's parts on their own: flow control rules (:mod:`eventtracking.replay.flow`), reading
numbered events (:mod:`eventtracking.replay.reading`), the summary's outcome, and the typed
:class:`~eventtracking.queue.stats.Progress` a real backend reports."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from types import SimpleNamespace
from typing import List

import orjson
import pytest

from eventtracking.backends.segment import SegmentBackend
from eventtracking.queue.stats import Counters, Progress
from eventtracking.replay import flow
from eventtracking.replay.checkpoint import Checkpoint
from eventtracking.replay.flow import (
    BACKLOG_BYTES,
    DRAIN_POLL,
    Checkpoints,
    Pace,
    RetryNotice,
    StopReplay,
    drain,
    retrying_notice,
    stop_reason,
    unsettled,
    wait_for_room,
)
from eventtracking.replay.lines import Source
from eventtracking.replay.loop import DryRun
from eventtracking.replay.reading import Selection, SourceEvents
from eventtracking.replay.refusals import SAME_REFUSAL_MESSAGES, Refusals
from eventtracking.replay.summary import Summary
from eventtracking.segment.mapping import MappingOptions
from eventtracking.segment.sender import Reason

UTC = datetime.timezone.utc


def refused_configuration() -> Refusals:
    failures = Refusals()
    failures(Reason("refused", "HTTP 401: wrong write key"), [])
    return failures


# -- stop ------------------------------------------------------------------------------------------


def test_nothing_stops_a_run_whose_deliveries_go_through_or_are_refused_one_by_one():
    assert stop_reason(Progress(), None) is None
    assert stop_reason(Progress(delivered=5, dropped={"refused": 2}), Refusals()) is None
    assert stop_reason(Progress(dropped={"gave_up": 0}), None) is None  # a zero count is none


@pytest.mark.parametrize(
    ("progress", "said"),
    [
        (Progress(dropped={"gave_up": 3}, reasons={"gave_up": "network error: refused"}), "gave_up: network"),
        (Progress(dropped={"buffer_full": 1}), "(buffer_full)"),
        (Progress(deferred=2), "(deferred to the spool)"),
        (Progress(dropped={"gave_up": 1}, deferred=1), "(gave_up; deferred to the spool)"),
    ],
)
def test_a_destination_that_takes_nothing_stops_the_run_without_freezing(progress, said):
    stop = stop_reason(progress, None)
    assert stop is not None and not stop.freeze
    assert said in stop.message and "the destination is not taking events" in stop.message


def test_a_refusal_of_the_configuration_stops_and_freezes_with_the_fix():
    stop = stop_reason(Progress(delivered=3), refused_configuration())
    assert stop is not None and stop.freeze
    assert "HTTP 401: wrong write key" in stop.message and "--write-key" in stop.message


def test_a_redirect_seen_in_last_error_is_a_refusal_of_the_configuration():
    stop = stop_reason(Progress(last_error="HTTP 301: moved", retries=1), Refusals())
    assert stop is not None and stop.freeze and "HTTP 301: moved" in stop.message


def test_the_same_refusal_of_every_message_is_one_of_the_configuration_until_one_is_delivered():
    failures = Refusals()
    failures(Reason("refused", "HTTP 400: bad"), [{}] * SAME_REFUSAL_MESSAGES)
    refused = Progress(dropped={"refused": SAME_REFUSAL_MESSAGES}, reasons={"refused": "HTTP 400: bad"})
    stop = stop_reason(refused, failures)
    assert stop is not None and stop.freeze and f"each of {SAME_REFUSAL_MESSAGES:,} messages" in stop.message
    assert stop_reason(Progress(delivered=1, dropped={"refused": SAME_REFUSAL_MESSAGES}), failures) is None


# -- checkpoint rules -----------------------------------------------------------------------------


def test_only_refusals_of_one_message_kept_as_dead_letters_are_settled(tmp_path):
    assert unsettled(Progress(delivered=4, dropped={"refused": 1}), Refusals()) == []
    assert unsettled(Progress(dropped={"gave_up": 2, "refused": 1, "buffer_full": 0}), None) == ["gave_up"]
    assert unsettled(Progress(deferred=1), None) == ["deferred"]
    assert unsettled(Progress(delivered=1), refused_configuration()) == ["refused"]
    not_kept = Refusals(str(tmp_path))
    not_kept.not_kept = "deadletters.jsonl is full"
    assert unsettled(Progress(dropped={"refused": 1}), not_kept) == ["refused"]


def test_checkpoints_record_what_was_read_once_settled_and_freeze_after_a_failure(tmp_path):
    path = tmp_path / "cp.json"
    checkpoints = Checkpoints(Checkpoint(str(path)), every=10)
    checkpoints.read("a.log", 6, "head-a", 6)
    assert not checkpoints.due()
    checkpoints.read("a.log", 12, "head-a", 6)
    assert checkpoints.due()
    checkpoints.save(Progress(delivered=12), None)
    assert not checkpoints.due() and not checkpoints.frozen
    assert Checkpoint(str(path)).acknowledged("a.log", "head-a") == 12

    checkpoints.read("a.log", 20, "head-a", 8)
    checkpoints.save(Progress(delivered=18, dropped={"gave_up": 2}), None)
    assert checkpoints.frozen
    checkpoints.read("a.log", 30, "head-a", 10)
    checkpoints.save(Progress(delivered=28), None)  # settled now, but a rerun must retry the failure
    assert Checkpoint(str(path)).acknowledged("a.log", "head-a") == 12


def test_without_a_checkpoint_nothing_is_due_or_written(tmp_path):
    checkpoints = Checkpoints(None, every=1)
    checkpoints.read("a.log", 5, "h", 5)
    assert not checkpoints.due()
    checkpoints.save(Progress(dropped={"gave_up": 1}), None)
    assert not checkpoints.frozen and list(tmp_path.iterdir()) == []


# -- back-pressure and drain ----------------------------------------------------------------------


class Looks:
    """A sink's successive progress values; the sleeps asked for between them."""

    def __init__(self, *values: Progress) -> None:
        self.values = list(values)
        self.looked = 0
        self.slept: List[float] = []

    def look(self) -> Progress:
        value = self.values[min(self.looked, len(self.values) - 1)]
        self.looked += 1
        return value

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_the_reader_waits_while_the_backlog_is_over_its_bound_and_watches_each_look():
    over, under = (
        Progress(buffered_bytes=BACKLOG_BYTES + 1),
        Progress(buffered_bytes=BACKLOG_BYTES, delivered=7),
    )
    looks, watched = Looks(over, over, under), []
    assert wait_for_room(looks.look, watched.append, looks.sleep) is under
    assert watched == [over, over, under] and len(looks.slept) == 2


def test_a_stop_seen_while_waiting_for_room_ends_the_wait():
    looks = Looks(Progress(buffered_bytes=BACKLOG_BYTES + 1, dropped={"gave_up": 1}))

    def watch(progress: Progress) -> None:
        stop = stop_reason(progress, None)
        if stop:
            raise StopReplay(stop.message)

    with pytest.raises(StopReplay, match="gave_up"):
        wait_for_room(looks.look, watch, looks.sleep)
    assert looks.slept == []


def test_drain_looks_at_growing_intervals_until_nothing_is_in_flight():
    busy = Progress(in_flight=3)
    looks = Looks(*[busy] * 10, Progress())
    drain(looks.look, lambda progress: None, looks.sleep)
    assert looks.looked == 11
    assert looks.slept[:3] == [0.001, 0.002, 0.004]
    assert max(looks.slept) == DRAIN_POLL and looks.slept == sorted(looks.slept)


# -- saying it retries, and the rate --------------------------------------------------------------


def test_retrying_is_said_once_while_nothing_was_delivered(capsys):
    assert retrying_notice(Progress(retries=2)) is None  # no error to name yet
    assert retrying_notice(Progress(retries=2, delivered=1, last_error="HTTP 503: busy")) is None
    notice = RetryNotice()
    notice.look(Progress(retries=1, last_error="network error: connection refused"))
    notice.look(Progress(retries=2, last_error="network error: connection refused"))
    err = capsys.readouterr().err
    assert err.count("retrying: network error: connection refused") == 1 and "--retry-timeout" in err


def fake_clock(monkeypatch) -> dict:
    clock = {"now": 50.0, "slept": []}

    def sleep(seconds: float) -> None:
        clock["slept"].append(seconds)
        clock["now"] += seconds

    monkeypatch.setattr(flow, "time", SimpleNamespace(monotonic=lambda: clock["now"], sleep=sleep))
    return clock


def test_pace_spaces_events_on_the_clock_in_steps_a_stop_can_cut(monkeypatch):
    clock = fake_clock(monkeypatch)
    pace = Pace(4.0)
    for _ in range(5):
        pace.wait()
    assert sum(clock["slept"]) == pytest.approx(1.0)  # event n at n / 4 s: the fifth at 1 s
    assert max(clock["slept"]) <= 0.1

    clock["slept"].clear()
    stopped = Pace(0.5, lambda: True)
    stopped.wait()
    stopped.wait()  # due 2 s later, but the run is stopping
    assert clock["slept"] == []


# -- reading numbered events ----------------------------------------------------------------------


def event_line(i: int, name: str = "play_video") -> bytes:
    return orjson.dumps({"name": name, "timestamp": f"2025-03-03T09:00:{i:02d}+00:00", "data": {"i": i}})


def read_all(events: SourceEvents) -> list:
    return [(chunk.start, chunk.end, chunk.partial, list(chunk.events)) for chunk in events]


def test_events_are_numbered_by_line_with_unreadable_lines_counted_and_named(tmp_path):
    path = tmp_path / "t.log"
    path.write_bytes(
        b"\n".join([event_line(1), b"", b"no json", b"prefix " + event_line(4), b"{broken"]) + b"\n"
    )
    summary = Summary()
    [(start, end, partial, events)] = read_all(SourceEvents(Source(str(path), str(path)), summary))
    assert (start, end, partial) == (0, 5, False)
    assert [(number, event["data"]["i"]) for number, _, event in events] == [(1, 1), (4, 4)]
    assert events[1][1] == event_line(4)  # the text after the prefix: the messageId's input
    assert summary.events == 2 and summary.unreadable == 2
    assert [shown.split(": ")[0] for shown in summary.unreadable_shown] == [f"{path}:3", f"{path}:5"]


def test_lines_a_checkpoint_acknowledged_are_skipped_and_the_selection_filters(tmp_path):
    path = tmp_path / "t.log"
    lines = [event_line(i, "play_video" if i % 2 else "enrollment") for i in range(1, 9)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = Source(str(path), str(path))
    checkpoint = Checkpoint(str(tmp_path / "cp.json"))
    first = SourceEvents(source, Summary())
    read_all(first)
    checkpoint.record({source.key: (3, first.head)})

    summary = Summary()
    since = datetime.datetime(2025, 3, 3, 9, 0, 5, tzinfo=UTC)
    selection = Selection([re.compile("^play_")], since=since)
    reading = SourceEvents(source, summary, selection, checkpoint)
    [(_, _, _, events)] = read_all(reading)
    assert [number for number, _, _ in events] == [5, 7]
    assert reading.skip_through == 3 and reading.line_number == 8
    assert summary.events == 5 and summary.filtered == 3


def test_a_partial_last_line_comes_last_apart_and_only_when_complete_json(tmp_path):
    path = tmp_path / "tracking.log"
    path.write_bytes(event_line(1) + b"\n" + event_line(2))  # the second's newline not written yet
    summary = Summary()
    chunks = read_all(SourceEvents(Source(str(path), str(path)), summary))
    assert [(start, end, partial) for start, end, partial, _ in chunks] == [(0, 1, False), (1, 2, True)]
    assert [number for number, _, _ in chunks[1][3]] == [2]
    assert summary.partial == [f"{path}:2: complete JSON, sent (the next run reads it again)"]

    path.write_bytes(event_line(1) + b"\n" + event_line(2)[:-3])
    summary = Summary()
    chunks = read_all(SourceEvents(Source(str(path), str(path)), summary))
    assert [partial for _, _, partial, _ in chunks] == [False]
    assert summary.partial == [f"{path}:2: left for the next run"] and summary.unreadable == 0


# -- the typed progress and the summary's outcome --------------------------------------------------


def test_a_backend_reports_its_deliveries_as_a_typed_progress(collector):
    backend = SegmentBackend(write_key="k", host=collector.url, flush_interval=0.01)
    try:
        for i in range(3):
            backend.send({"name": "e", "timestamp": "2025-03-03T09:00:00+00:00", "context": {"user_id": i}})
        backend.send({"name": "e", "context": {}})  # anonymous: skipped
        assert backend.flush(30)
        progress = backend.progress()
        assert (progress.accepted, progress.delivered, progress.in_flight, progress.buffered_bytes) == (
            3,
            3,
            0,
            0,
        )
        assert progress.skipped == backend.stats()["skipped"] and sum(progress.skipped.values()) == 1
        with pytest.raises(AttributeError):
            progress.delivered = 0  # type: ignore[misc]  # a copy, never live state
    finally:
        backend.close(5)


def test_progress_from_counters_and_a_spools_dead_letters():
    counters = Counters()
    counters.add("accepted", 4)
    counters.add("delivered", 2)
    counters.add_reason("dropped", "refused", 1, "HTTP 400: bad")
    counters.note_error("HTTP 400: bad")
    stats = dict(counters.snapshot(), in_flight=1, buffered_bytes=120, spool={"dead_letters": 1})
    progress = Progress.from_stats(stats)
    assert progress == Progress(
        accepted=4,
        delivered=2,
        in_flight=1,
        buffered_bytes=120,
        last_error="HTTP 400: bad",
        dead_letters=1,
        dropped={"refused": 1},
        reasons={"refused": "HTTP 400: bad"},
    )


def test_the_outcome_fills_the_summary(tmp_path):
    summary = Summary()
    failures = Refusals(str(tmp_path))
    failures(Reason("refused", "HTTP 400: bad"), [{"event": "e", "messageId": "m"}])
    progress = Progress(
        delivered=5, in_flight=2, dropped={"refused": 1}, reasons={"refused": "HTTP 400: bad"}, dead_letters=0
    )
    summary.take_outcome(progress, failures)
    assert summary.sent == 5 and summary.failed == {"refused": 1, "not_answered": 2}
    assert summary.failed_details == {"refused": "HTTP 400: bad"}
    assert summary.dead_letters == 1 and summary.dead_letter_dir == str(tmp_path)
    assert len(summary.failed_shown) == 1 and summary.exit_status() == 1

    dry = Summary(dry_run=True)
    sink = DryRun(MappingOptions())
    sink.send({"name": "e", "timestamp": "2025-03-03T09:00:00+00:00", "context": {"user_id": 1}}, "m1")
    dry.take_outcome(sink.progress())
    assert dry.sent == 1 and dry.failed == {} and dry.exit_status() == 0


def test_flow_rules_read_progress_fields_only(tmp_path: Path):
    """The loop and its rules never read ``stats()`` keys: a sink without ``stats`` runs."""

    class TypedOnly:
        def __init__(self) -> None:
            self.sink = DryRun(MappingOptions())

        def send(self, event, message_id=None) -> None:
            self.sink.send(event, message_id)

        def progress(self) -> Progress:
            return self.sink.progress()

        def close(self, timeout=None) -> bool:
            return True

    from eventtracking.replay.loop import Replay

    path = tmp_path / "t.log"
    path.write_bytes(b"\n".join(event_line(i) for i in range(1, 4)) + b"\n")
    checkpoint = Checkpoint(str(tmp_path / "cp.json"))
    summary = Replay(TypedOnly(), checkpoint=checkpoint, checkpoint_every=1).run(
        [Source(str(path), str(path))]
    )
    assert (summary.lines, summary.events, summary.exit_status()) == (3, 3, 0)
    assert Checkpoint(str(tmp_path / "cp.json")).files[str(path)]["line"] == 3
