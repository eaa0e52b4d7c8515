"""How LoggerBackend hands its line to ``logging`` (eventtracking.backends.logging_call): the bytes
a handler writes are the same in every way, the record holds what the handler reads, and anything
the site configured that would read more (a filter, a formatter, a handler of its own, a record
factory, a patched logger) gets a record made by ``Logger.makeRecord`` as before."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os

import pytest

from eventtracking.backends import logger as logger_module
from eventtracking.backends.logger import LoggerBackend
from eventtracking.backends.logging_call import writes_message_only

NAME = "tests.logging_call.tracking"
EVENT = {"name": "edx.course.enrollment.activated", "data": {"course_id": "course-v1:X+Y+Z", "n": 1}}
LINE = '{"name":"edx.course.enrollment.activated","data":{"course_id":"course-v1:X+Y+Z","n":1}}'


@pytest.fixture
def tracking():
    """The site's tracking logger (a test gives it its handlers with :func:`handled_by`)."""
    log = logging.getLogger(NAME)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    log.filters.clear()
    log.disabled = False
    log.propagate = True


@pytest.fixture
def records_made(monkeypatch):
    """How many records ``LogRecord.__init__`` made (the way through ``makeRecord`` makes one)."""
    made = []
    original = logging.LogRecord.__init__

    def counted(self, *args, **kwargs):
        made.append(args[4] if len(args) > 4 else kwargs.get("msg"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(logging.LogRecord, "__init__", counted)
    return made


def handled_by(log: logging.Logger, *handlers: logging.Handler) -> None:
    """`log`'s handlers are `handlers` alone: pytest's log capture, which it attaches to every
    logger that does not propagate when a test starts, is taken off for the test."""
    log.handlers[:] = handlers


def file_handler(tmp_path, fmt: str | None = "%(message)s", kind=logging.FileHandler) -> logging.Handler:
    handler = kind(str(tmp_path / "tracking.log"))
    if fmt is not None:
        handler.setFormatter(logging.Formatter(fmt))
    return handler


def lines(tmp_path, name: str = "tracking.log") -> list[str]:
    with open(tmp_path / name, encoding="utf-8") as log_file:
        return log_file.read().splitlines()


def test_a_message_only_file_gets_the_same_bytes_without_a_record_made(tmp_path, tracking, records_made):
    handler = file_handler(tmp_path)
    handled_by(tracking, handler)
    LoggerBackend(name=NAME).send(EVENT)
    assert records_made == []  # the record was not made by LogRecord.__init__
    tracking.info(LINE)  # logging's own call, to the same file
    assert records_made == [LINE]
    assert lines(tmp_path) == [LINE, LINE]
    with open(tmp_path / "tracking.log", "rb") as log_file:
        first, second = log_file.read().splitlines(keepends=True)
    assert first == second  # byte for byte, newline included


def test_the_record_holds_what_the_handler_and_its_error_report_read(tracking, capsys):
    class Broken(io.StringIO):
        def write(self, text):
            raise OSError("disk full")

    handler = logging.StreamHandler(Broken())
    handled_by(tracking, handler)
    assert writes_message_only(handler)
    LoggerBackend(name=NAME).send(EVENT)  # never raises: logging reports the write error itself
    report = capsys.readouterr().err
    assert "OSError: disk full" in report
    assert os.path.basename(logger_module.__file__) in report  # the call stack, or the record's file
    assert f"Message: {LINE!r}" in report and "Arguments: ()" in report


def test_the_record_names_the_logger_level_and_caller(tracking, monkeypatch):
    seen = []
    handler = logging.StreamHandler(io.StringIO())
    monkeypatch.setattr(logging.StreamHandler, "emit", lambda self, record: seen.append(record))
    handled_by(tracking, handler)
    LoggerBackend(name=NAME, level="warning").send(EVENT)
    [record] = seen
    assert isinstance(record, logging.LogRecord) and record.getMessage() == LINE
    assert (record.name, record.levelno, record.levelname) == (NAME, logging.WARNING, "WARNING")
    assert (record.pathname, record.funcName) == (logger_module.__file__, "send") and record.lineno > 0
    assert (record.args, record.exc_info, record.exc_text, record.stack_info) == ((), None, None, None)


@pytest.mark.parametrize(
    "configure",
    [
        pytest.param(lambda log, handler: handler.addFilter(lambda record: True), id="handler-filter"),
        pytest.param(lambda log, handler: log.addFilter(lambda record: True), id="logger-filter"),
        pytest.param(
            lambda log, handler: handler.setFormatter(logging.Formatter("%(asctime)s %(message)s")),
            id="formatter-reads-time",
        ),
        pytest.param(
            lambda log, handler: handler.setFormatter(logging.Formatter("{message}", style="{")),
            id="brace-style",
        ),
        pytest.param(
            lambda log, handler: handler.setFormatter(type("Own", (logging.Formatter,), {})("%(message)s")),
            id="formatter-subclass",
        ),
        pytest.param(
            lambda log, handler: log.addHandler(logging.handlers.MemoryHandler(10)), id="another-handler"
        ),
    ],
)
def test_a_configuration_that_reads_more_gets_a_whole_record(tmp_path, tracking, records_made, configure):
    handler = file_handler(tmp_path)
    handled_by(tracking, handler)
    configure(tracking, handler)
    LoggerBackend(name=NAME).send(EVENT)
    assert records_made == [LINE]


def test_a_handler_subclass_gets_a_whole_record(tmp_path, tracking, records_made):
    class Own(logging.FileHandler):
        pass

    handled_by(tracking, file_handler(tmp_path, kind=Own))
    LoggerBackend(name=NAME).send(EVENT)
    assert records_made == [LINE] and lines(tmp_path) == [LINE]


def test_a_record_factory_or_a_patched_logger_gets_a_whole_record(
    tmp_path, tracking, records_made, monkeypatch
):
    handled_by(tracking, file_handler(tmp_path))
    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(lambda *args, **kwargs: factory(*args, **kwargs))
    try:
        LoggerBackend(name=NAME).send(EVENT)
    finally:
        logging.setLogRecordFactory(factory)
    assert records_made == [LINE]

    made_by_class = []
    make_record = logging.Logger.makeRecord
    monkeypatch.setattr(
        logging.Logger,
        "makeRecord",
        lambda self, *a, **k: made_by_class.append(1) or make_record(self, *a, **k),
    )
    LoggerBackend(name=NAME).send(EVENT)
    assert made_by_class == [1]
    monkeypatch.undo()

    handled = []
    monkeypatch.setattr(tracking, "handle", handled.append)
    LoggerBackend(name=NAME).send(EVENT)
    assert [record.getMessage() for record in handled] == [LINE]
    assert lines(tmp_path) == [LINE, LINE]  # the patched handle wrote nothing


def test_handler_levels_propagation_and_a_disabled_logger(tmp_path, tracking, records_made):
    parent = logging.getLogger(NAME)
    child = logging.getLogger(NAME + ".child")  # no handler: its records go up to the parent's
    loud = file_handler(tmp_path)
    quiet = logging.FileHandler(str(tmp_path / "warnings.log"))
    quiet.setLevel(logging.WARNING)
    handled_by(parent, loud, quiet)
    LoggerBackend(name=child.name).send(EVENT)
    LoggerBackend(name=child.name, level="warning").send(EVENT)
    assert records_made == []
    assert lines(tmp_path) == [LINE, LINE] and lines(tmp_path, "warnings.log") == [LINE]

    child.disabled = True
    try:
        LoggerBackend(name=child.name).send(EVENT)
    finally:
        child.disabled = False
    assert lines(tmp_path) == [LINE, LINE]


def test_no_handler_anywhere_goes_to_loggings_last_resort(tracking, records_made, capsys):
    handled_by(tracking)
    LoggerBackend(name=NAME, level="warning").send(EVENT)
    assert records_made == [LINE] and capsys.readouterr().err == LINE + "\n"


def test_a_watched_file_is_reopened_after_rotation(tmp_path, tracking, records_made):
    handled_by(tracking, file_handler(tmp_path, kind=logging.handlers.WatchedFileHandler))
    backend = LoggerBackend(name=NAME)
    backend.send(EVENT)
    os.rename(tmp_path / "tracking.log", tmp_path / "tracking.log.1")  # logrotate moved it
    backend.send(EVENT)
    assert records_made == []
    assert lines(tmp_path, "tracking.log.1") == [LINE] and lines(tmp_path) == [LINE]


def test_which_handlers_write_the_message_only(tmp_path):
    plain = logging.StreamHandler(io.StringIO())
    assert writes_message_only(plain)  # no formatter: logging's default writes the message alone
    assert writes_message_only(file_handler(tmp_path))
    assert not writes_message_only(file_handler(tmp_path, "%(levelname)s %(message)s"))
    assert not writes_message_only(logging.handlers.RotatingFileHandler(str(tmp_path / "r.log")))
    assert not writes_message_only(logging.NullHandler())
