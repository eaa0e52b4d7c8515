"""One tracking-log line's JSON object → the live event shape, and its deterministic messageId.

Two shapes are read:

* **native** eventtracking events (``name``, ``timestamp``, ``context``, ``data``), as the
  LoggerBackend writes them: returned as they are;
* **Open edX legacy** tracking-log lines (``event_type``, ``time``, ``event``, ``username``, ...),
  as the LMS's ``LegacyFieldMappingProcessor`` writes them: turned back into the live shape by
  the inverse of that processor, so SegmentBackend maps a replayed event exactly as it mapped
  the live one:

  - ``name``, or else ``event_type``, is the name (``event_type`` is kept top-level only when
    it says something else than the name);
  - ``time`` is the timestamp;
  - ``event`` is the data; a string holding a JSON object or array (browser events, old
    server request events) is parsed, as the LMS parsed it before emitting; any other string
    (empty, truncated JSON, plain text) stays a string;
  - the top-level ``username``, ``session``, ``ip``, ``agent``, ``host``, ``referer``,
    ``accept_language``, ``page`` and ``event_source`` go back into the context (where the
    LMS had moved them from); the line's own ``context`` (user_id, path, course_id, ...) is kept;
  - any other top-level key is kept as it is, so nothing in the log is lost.

  What the legacy processor deleted for good (``context.client_id``) cannot come back.

A line is legacy when it has no ``data`` but has ``event_type``, ``event`` or ``time``.

The messageId (:func:`message_id`) is a 128-bit BLAKE2b digest, as 32 hex characters, of the
line's JSON text (from its first ``{``, trailing whitespace removed) and the line's number in
its file. So the same line at the same place gives the same id on every run, whatever the file
is called (rotation renames and compresses files but keeps their lines in place) and whatever
prefix (syslog, logger format) stands before the JSON; two identical lines at different places
are two events.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import orjson

LEGACY_CONTEXT_FIELDS = (
    "username",
    "session",
    "ip",
    "agent",
    "host",
    "referer",
    "accept_language",
    "page",
    "event_source",
)
_LEGACY_MARKERS = ("event_type", "event", "time")


def message_id(json_text: bytes, line_number: int) -> str:
    """The deterministic messageId of the line whose JSON text is ``json_text`` (see module doc)."""
    digest = blake2b(json_text, digest_size=16)
    digest.update(b"#%d" % line_number)
    return digest.hexdigest()


def is_legacy(line_object: dict) -> bool:
    """True for an Open edX legacy tracking-log line, False for a native eventtracking event."""
    if "data" in line_object:
        return False
    return any(marker in line_object for marker in _LEGACY_MARKERS)


def to_live_event(line_object: dict) -> dict:
    """The live event ``{name, timestamp, context, data}`` for one parsed line (see module doc).

    ``line_object`` is consumed: the returned event may share (and reuse) its parts.
    """
    if not is_legacy(line_object):
        return line_object
    event_type = line_object.pop("event_type", None)
    name = line_object.pop("name", None)
    if name is None or name == "":
        name = event_type
    context = line_object.pop("context", None)
    if not isinstance(context, dict):
        # A legacy line without a usable context still carries its top-level fields.
        context = {} if context is None else {"legacy_context": context}
    for field in LEGACY_CONTEXT_FIELDS:
        if field in line_object:
            context[field] = line_object.pop(field)
    event: dict[str, Any] = {
        "name": name,
        "timestamp": line_object.pop("time", None),
        "context": context,
        "data": _parse_payload(line_object.pop("event", None)),
    }
    if event_type is not None and event_type != name:
        event["event_type"] = event_type
    for key, value in line_object.items():
        event.setdefault(key, value)  # the live shape's own keys win
    return event


def _parse_payload(payload: Any) -> Any:
    """A JSON object or array held in a string becomes the value; anything else stays."""
    if isinstance(payload, str) and payload[:1] in ("{", "[") and payload.endswith(("}", "]")):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload  # truncated or not JSON: keep what the log holds
    return payload
