"""Hand one line of text to a ``logging`` logger, paying only for what the site's handlers read.

:func:`log_line` is ``logger.log(level, text)`` for a logger enabled for ``level``, as
``LoggerBackend`` calls it once per event. It takes one of three ways, from the most general:

1. **The logger's own ``log``**, for a logger of another class or whose ``log`` or ``_log`` was
   replaced (on its class or on the instance): whatever the site or a test put there is honoured.
2. **A record made as ``Logger._log`` makes it, without ``findCaller``.** ``Logger.log`` walks
   the stack to find its caller; :func:`log_line` is given it. The record goes through the
   logger's ``makeRecord`` and ``handle``, with the file, line and function ``findCaller``
   would have found (the unknown ones when the site set ``logging._srcfile = None``).
3. **A record holding what the handlers read**, when every handler the record reaches writes
   the message alone (:func:`writes_message_only`: a ``StreamHandler``, ``FileHandler`` or
   ``WatchedFileHandler`` of logging's own, without filters, formatting ``%(message)s`` or with
   no formatter, which is the same), the logger has no filter, its ``makeRecord``, ``handle``
   and ``callHandlers`` are logging's own and the site kept logging's own record factory.
   That is the tracking log of an Open edX site. The record is a ``LogRecord``
   with the logger's name, the level, the message, no arguments, no exception or stack, and the
   caller's file, line and function (what ``Handler.handleError`` reports); the time, thread,
   process and asyncio task, which a ``LogRecord`` computes for every record and which cost
   more than the rest of the line's way to the file, are left out: nothing those handlers do
   reads them. Each handler is called through its ``handle`` (its lock, its ``emit``, the file
   reopened or opened when it must be), at its level, along the loggers the record propagates
   to, as ``Logger.callHandlers`` does; with no handler at all, way 2 runs (logging's
   ``lastResort``).

The conditions are checked on every call, so a handler, formatter or filter the site adds or
changes at run time is honoured from the next line on. The bytes written are the same in every
way: the handlers format the message as they would.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from types import FrameType
from typing import Optional

_LOGGER_CLASSES = (logging.Logger, logging.RootLogger)
_LOG, _UNDERSCORE_LOG, _MAKE_RECORD, _HANDLE, _CALL_HANDLERS = (
    logging.Logger.log,
    logging.Logger._log,
    logging.Logger.makeRecord,
    logging.Logger.handle,
    logging.Logger.callHandlers,
)
_MESSAGE_ONLY_HANDLERS = (logging.StreamHandler, logging.FileHandler, logging.handlers.WatchedFileHandler)
_MESSAGE_ONLY = "%(message)s"
_new_record = object.__new__
_LogRecord = logging.LogRecord


def log_line(logger: logging.Logger, level: int, text: str, caller: FrameType) -> None:
    """Log `text` at `level` on `logger` (enabled for `level`), as called from `caller`'s frame.

    Raises what the logger or a handler raises (handlers report their own write errors)."""
    kind = type(logger)
    replaced = logger.__dict__  # a method set on the instance (a test's patch) is honoured
    if (
        kind not in _LOGGER_CLASSES
        or kind.log is not _LOG
        or kind._log is not _UNDERSCORE_LOG
        or "log" in replaced
        or "_log" in replaced
    ):
        logger.log(level, text)
        return
    code = caller.f_code
    if logging._srcfile:
        site = code.co_filename, caller.f_lineno, code.co_name
    else:
        site = "(unknown file)", 0, "(unknown function)"
    handlers = _message_only_handlers(logger, kind, replaced)
    if handlers is None:
        pathname, lineno, function = site
        logger.handle(logger.makeRecord(logger.name, level, pathname, lineno, text, (), None, function))
        return
    record = _new_record(_LogRecord)
    fields = record.__dict__
    fields.update(_fixed_fields(logger.name, level, site))
    fields["msg"] = text
    for handler in handlers:
        if level >= handler.level:
            handler.handle(record)


def _message_only_handlers(
    logger: logging.Logger, kind: type[logging.Logger], replaced: dict
) -> Optional[list[logging.Handler]]:
    """The handlers a record of `logger` reaches, in ``callHandlers``' order, when way 3 may be
    taken for them (see the module docstring); else None."""
    if (
        logger.filters  # (a disabled logger is not enabled for any level: never called for it)
        or kind.makeRecord is not _MAKE_RECORD
        or kind.handle is not _HANDLE
        or kind.callHandlers is not _CALL_HANDLERS
        or "makeRecord" in replaced
        or "handle" in replaced
        or "callHandlers" in replaced
        or logging.getLogRecordFactory() is not _LogRecord
    ):
        return None
    reached: list[logging.Handler] = []
    node: Optional[logging.Logger] = logger
    while node is not None:
        for handler in node.handlers:
            if not writes_message_only(handler):
                return None
            reached.append(handler)
        node = node.parent if node.propagate else None
    return reached or None


def writes_message_only(handler: logging.Handler) -> bool:
    """Whether `handler` reads nothing of a record but its message (and its arguments, exception
    and stack, which are empty): one of logging's stream and file handlers, without filters,
    whose formatter (logging's default one when it has none) is logging's own, ``%``-style,
    writing ``%(message)s``."""
    if type(handler) not in _MESSAGE_ONLY_HANDLERS or handler.filters:
        return False
    # As Handler.format chooses (not in typeshed: logging's own default, read only).
    formatter = handler.formatter or logging._defaultFormatter  # type: ignore[attr-defined]
    if type(formatter) is not logging.Formatter:
        return False
    style = formatter._style
    return type(style) is logging.PercentStyle and style._fmt == _MESSAGE_ONLY


def _fixed_fields(name: str, level: int, site: tuple[str, int, str]) -> dict:
    """A record's fields but the message, for a logger, a level and a caller's site, as
    ``LogRecord`` sets them (remembered: a line is always logged from the same place)."""
    key = name, level, site
    fields = _FIXED_FIELDS.get(key)
    if fields is None:
        pathname, lineno, function = site
        filename = os.path.basename(pathname)
        fields = {
            "name": name,
            "args": (),
            "levelname": logging.getLevelName(level),
            "levelno": level,
            "pathname": pathname,
            "filename": filename,
            "module": os.path.splitext(filename)[0],
            "exc_info": None,
            "exc_text": None,
            "stack_info": None,
            "lineno": lineno,
            "funcName": function,
        }
        if len(_FIXED_FIELDS) < 256:  # bounded: logger names made at run time must not pile up
            _FIXED_FIELDS[key] = fields
    return fields


_FIXED_FIELDS: dict[tuple[str, int, tuple[str, int, str]], dict] = {}
