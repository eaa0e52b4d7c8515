"""Tests for eventtracking.backends.logger.LoggerBackend."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from eventtracking.backends.logger import LoggerBackend, encode_event
from eventtracking.processors.exceptions import ImproperlyConfigured
from eventtracking.tracker import Tracker

LOGGER_NAME = "tests.eventtracking.logger_backend"


def logged(caplog, name=LOGGER_NAME):
    return [r for r in caplog.records if r.name == name]


@pytest.fixture
def capture(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    caplog.set_level(logging.DEBUG, logger="eventtracking.backends.logger")
    return caplog


def test_one_json_line_per_event(capture):
    backend = LoggerBackend(name=LOGGER_NAME)
    backend.send({"name": "one", "data": {"text": "line1\nline2", "n": 1}})
    backend.send({"name": "two", "data": {}})
    records = logged(capture)
    assert len(records) == 2
    assert all(r.levelno == logging.INFO for r in records)
    messages = [r.getMessage() for r in records]
    assert all("\n" not in m for m in messages)
    assert json.loads(messages[0]) == {"name": "one", "data": {"text": "line1\nline2", "n": 1}}
    assert json.loads(messages[1])["name"] == "two"


def test_datetimes_are_iso_utc(capture):
    plus_two = timezone(timedelta(hours=2))
    LoggerBackend(name=LOGGER_NAME).send(
        {
            "aware": datetime(2024, 3, 1, 14, 30, 5, 123456, tzinfo=plus_two),
            "naive": datetime(2024, 3, 1, 12, 0),
            "utc": datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc),
            "day": date(2024, 3, 1),
            "nested": [{"when": datetime(2024, 1, 1, 1, 0, tzinfo=plus_two)}],
        }
    )
    decoded = json.loads(logged(capture)[0].getMessage())
    assert decoded == {
        "aware": "2024-03-01T12:30:05.123456+00:00",
        "naive": "2024-03-01T12:00:00+00:00",
        "utc": "2024-03-01T12:00:00+00:00",
        "day": "2024-03-01",
        "nested": [{"when": "2023-12-31T23:00:00+00:00"}],
    }


def test_unknown_objects_fall_back_to_str():
    class Custom:
        def __str__(self):
            return "custom-object"

    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    decoded = json.loads(encode_event({"obj": Custom(), "id": ident, "tags": {"only"}}))
    assert decoded == {"obj": "custom-object", "id": str(ident), "tags": ["only"]}


def test_inputs_orjson_rejects_use_fallback():
    decoded = json.loads(encode_event({"big": 2**70, 1: "int key", ("a", "b"): "tuple key"}))
    assert decoded["big"] == 2**70
    assert decoded["1"] == "int key"
    assert decoded["('a', 'b')"] == "tuple key"


def test_oversized_event_skipped_counted_and_debug_logged(capture):
    backend = LoggerBackend(name=LOGGER_NAME, max_event_size=100)
    event = {"name": "too.big", "data": {"blob": "x" * 200}}
    size = len(encode_event(event))
    backend.send(event)
    backend.send({"name": "small", "data": {}})
    assert [json.loads(r.getMessage())["name"] for r in logged(capture)] == ["small"]
    assert backend.skipped_oversized == 1
    debug = [r for r in logged(capture, "eventtracking.backends.logger") if r.levelno == logging.DEBUG]
    assert len(debug) == 1
    assert "too.big" in debug[0].getMessage()
    assert str(size) in debug[0].getMessage()


def test_size_limit_is_inclusive_and_none_means_unlimited(capture):
    event = {"name": "edge", "data": {"blob": "y" * 50}}
    size = len(encode_event(event))
    exact = LoggerBackend(name=LOGGER_NAME, max_event_size=size)
    exact.send(event)
    unlimited = LoggerBackend(name=LOGGER_NAME, max_event_size=None)
    unlimited.send({"name": "huge", "data": {"blob": "z" * 200_000}})
    assert [json.loads(r.getMessage())["name"] for r in logged(capture)] == ["edge", "huge"]
    assert exact.skipped_oversized == 0 and unlimited.skipped_oversized == 0


def test_default_max_event_size_is_the_original_s():
    assert LoggerBackend().max_event_size == 1024


def test_level_option(capture):
    LoggerBackend(name=LOGGER_NAME, level="warning").send({"name": "w"})
    LoggerBackend(name=LOGGER_NAME, level="DEBUG").send({"name": "d"})
    assert [r.levelno for r in logged(capture)] == [logging.WARNING, logging.DEBUG]


def test_unknown_level_is_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="loud"):
        LoggerBackend(level="loud")


def test_default_logger_is_the_root_logger(caplog):
    caplog.set_level(logging.INFO)
    LoggerBackend().send({"name": "rooted"})
    records = logged(caplog, "root")
    assert [json.loads(r.getMessage())["name"] for r in records] == ["rooted"]


def test_send_never_raises(capture):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot str me")

    backend = LoggerBackend(name=LOGGER_NAME)
    backend.send({"name": "bad", "data": {"x": Unprintable()}})  # must not raise
    assert backend.errors == 1
    assert logged(capture) == []
    errors = [r for r in logged(capture, "eventtracking.backends.logger") if r.levelno == logging.ERROR]
    assert errors and "bad" in errors[0].getMessage()


def test_disabled_level_skips_encoding(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)

    class Exploding:
        def __str__(self):
            raise AssertionError("must not be encoded")

    backend = LoggerBackend(name=LOGGER_NAME, level="info")
    backend.send({"name": "quiet", "data": {"x": Exploding()}})
    assert backend.errors == 0
    assert logged(caplog) == []


def test_tracker_events_through_logger_backend(capture):
    trk = Tracker(backends={"log": LoggerBackend(name=LOGGER_NAME)})
    with trk.context("req", {"user_id": 3}):
        trk.emit("edx.test", {"k": "v"})
    decoded = json.loads(logged(capture)[0].getMessage())
    assert decoded["name"] == "edx.test"
    assert decoded["data"] == {"k": "v"}
    assert decoded["context"] == {"user_id": 3}
    stamp = datetime.fromisoformat(decoded["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert decoded["timestamp"].endswith("+00:00")


ENCODER_SAMPLE = """
import datetime, json
from zoneinfo import ZoneInfo
from eventtracking.backends.logger import DateTimeJSONEncoder
values = {
    "naive": datetime.datetime(2026, 1, 2, 3, 4, 5, 6),
    "utc": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "paris": datetime.datetime(2026, 7, 2, 3, 4, 5, 600000, tzinfo=ZoneInfo("Europe/Paris")),
    "minus": datetime.datetime(2026, 1, 2, 23, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
    "date": datetime.date(2026, 2, 28),
    "nested": [{"t": datetime.datetime(2000, 1, 1)}, "é", 1.5, None],
}
out = [json.dumps(values, cls=DateTimeJSONEncoder), json.dumps(values, cls=DateTimeJSONEncoder, indent=1)]
for value in (datetime.time(1, 2), {1, 2}, object()):
    try:
        json.dumps(value, cls=DateTimeJSONEncoder)
    except TypeError as error:
        out.append(type(error).__name__)
print(json.dumps(out))
"""


def test_datetime_json_encoder_writes_what_the_original_writes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    original = Path(__file__).resolve().parent.parent / ".envs" / "original" / "bin" / "python"
    assert original.exists(), f"{original} is missing: `make test` builds it"
    outputs = [
        subprocess.run(
            [str(python), "-c", ENCODER_SAMPLE],
            cwd=tmp_path,  # not the repository, whose eventtracking would shadow the original's
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for python in (sys.executable, original)
    ]
    assert outputs[0] == outputs[1]
    compact, _indented, *errors = json.loads(outputs[0])
    assert json.loads(compact)["paris"] == "2026-07-02T01:04:05.600000+00:00"
    assert errors == ["TypeError"] * 3
