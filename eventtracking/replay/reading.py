"""A replay's inputs read as numbered events: :class:`SourceEvents` turns one source into chunks
of ``(line number, JSON text, live event)``, the events a run selects (:class:`Selection`).

Contract:

* Every line of the source is read once, in order, numbered from the source's ``first_line``.
  A line is a JSON object, possibly after a prefix (parsing starts at its first ``{``); blank
  lines are skipped; anything else is an unreadable line, counted and named (``file:line``) in
  the summary, never a crash.
* The lines a checkpoint (``resume_from``) records as acknowledged for this source (same key,
  same first line) are skipped; :attr:`SourceEvents.skip_through` says how many.
* The last line of a plain file without its newline yet (the live ``tracking.log`` being
  written) is a partial line: never counted unreadable and never checkpointed (it comes as a
  :attr:`Chunk.partial` chunk, the last), so the next run reads it again once it is finished;
  the summary names it. When it already parses as a complete JSON object its event comes too;
  otherwise it is left for the next run. A gzip file or stdin will not grow: there a last line
  without a newline is an ordinary line.
* Events are parsed lazily, as the caller takes them from :attr:`Chunk.events`:
  :attr:`SourceEvents.line_number` is the line of the event last taken (the chunk's last line once
  all were taken), so a caller that stops mid-chunk knows where it stopped.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Pattern, Sequence, Tuple

import orjson

from eventtracking.replay.checkpoint import Checkpoint, head_fingerprint
from eventtracking.replay.events import to_live_event
from eventtracking.replay.lines import OVERLONG_LINE, LineReader, Source, may_grow, open_source
from eventtracking.replay.summary import ProgressBar, Summary
from eventtracking.segment.mapping import event_time

_NAME_CACHE_LIMIT = 100_000

NumberedEvent = Tuple[int, bytes, Any]  # (line number in its file, the line's JSON text, the live event)


class Selection:
    """The events a run selects: a name matching one of ``names`` (regular expressions, searched),
    a timestamp from ``since`` to before ``until``. Falsy when it selects everything."""

    def __init__(
        self,
        names: Sequence[Pattern[str]] = (),
        since: Optional[datetime.datetime] = None,
        until: Optional[datetime.datetime] = None,
    ) -> None:
        self.names = list(names)
        self.since = since
        self.until = until
        self._name_matches: Dict[Any, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.names or self.since or self.until)

    def wanted(self, event: Any) -> bool:
        if not isinstance(event, dict):
            return False
        if self.names:
            name = event.get("name")
            try:
                matches = self._name_matches[name]
            except (KeyError, TypeError):
                matches = isinstance(name, str) and any(pattern.search(name) for pattern in self.names)
                if len(self._name_matches) >= _NAME_CACHE_LIMIT:
                    self._name_matches.clear()  # legacy names include URL paths: keep the cache bounded
                if isinstance(name, (str, int, float)) or name is None:
                    self._name_matches[name] = matches
            if not matches:
                return False
        if self.since or self.until:
            when = event_time(event.get("timestamp"))
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True


@dataclass
class Chunk:
    """Lines ``start + 1`` to ``end`` of a source, read together, and their selected events."""

    start: int
    end: int
    events: Iterator[NumberedEvent]
    partial: bool = False  # the partial last line (see the module doc): never checkpointed

    @property
    def lines(self) -> int:
        return self.end - self.start


class SourceEvents:
    """One source's numbered events, chunk by chunk (see the module doc). Counts into ``summary``
    the lines with an event (``events``), those not selected (``filtered``), the unreadable and the
    partial ones; the caller counts the lines read. Opens the source when iterated; errors reading
    it (OSError, EOFError, zlib.error) reach the caller."""

    def __init__(
        self,
        source: Source,
        summary: Summary,
        selection: Optional[Selection] = None,
        resume_from: Optional[Checkpoint] = None,
        bar: Optional[ProgressBar] = None,
    ) -> None:
        self.source = source
        self.summary = summary
        self.selection = selection or Selection()
        self.resume_from = resume_from
        self.bar = bar
        self.line_number = source.first_line
        self.skip_through = 0  # lines acknowledged by the checkpoint: not sent again
        self.head = ""  # the first line's fingerprint: a checkpoint's position is valid for it only

    def __iter__(self) -> Iterator[Chunk]:
        with open_source(self.source) as stream:
            if self.bar is not None:
                self.bar.start(self.source, stream)
            reader = LineReader(stream)
            growing = may_grow(self.source, stream)
            for lines in reader:
                if reader.unterminated and growing:
                    if self.line_number >= self.skip_through:
                        partial = self._partial_line(self.line_number + 1, lines[0])
                        if partial is not None:
                            yield partial
                    return  # never checkpointed: the next run reads it again
                if self.line_number == 0 and lines:
                    self.head = head_fingerprint(lines[0])
                    if self.resume_from is not None:
                        self.skip_through = self.resume_from.acknowledged(self.source.key, self.head)
                start = self.line_number
                yield Chunk(start, start + len(lines), self._events(start, lines))
                self.line_number = start + len(lines)

    def _events(self, line_number: int, lines: List[bytes]) -> Iterator[NumberedEvent]:
        summary, name = self.summary, self.source.name
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        selection = self.selection
        filtering = bool(selection)
        skip_through = self.skip_through
        for line in lines:
            line_number += 1
            if line_number <= skip_through:
                continue
            start = line.find(b"{")
            if start < 0:
                if line.strip():
                    summary.add_unreadable(f"{name}:{line_number}", _unreadable_reason(line))
                continue
            text = line[start:].rstrip() if start else line.rstrip()
            try:
                event = to_live_event(loads(text))
            except decode_error as exc:
                summary.add_unreadable(f"{name}:{line_number}", f"not JSON ({exc})")
                continue
            summary.events += 1
            if filtering and not selection.wanted(event):
                summary.filtered += 1
                continue
            self.line_number = line_number
            yield line_number, text, event
        self.line_number = line_number

    def _partial_line(self, line_number: int, line: bytes) -> Optional[Chunk]:
        """The last line of a file that may grow, its newline not written yet (see module doc):
        a partial chunk when it is complete JSON already, else None (left for the next run)."""
        summary = self.summary
        where = f"{self.source.name}:{line_number}"
        start = line.find(b"{")
        if start < 0:  # OVERLONG_LINE included
            if line.strip():
                summary.partial.append(f"{where}: left for the next run")
            return None
        text = line[start:].rstrip()
        try:
            event = to_live_event(orjson.loads(text))
        except orjson.JSONDecodeError:
            summary.partial.append(f"{where}: left for the next run")
            return None
        summary.events += 1
        summary.partial.append(f"{where}: complete JSON, sent (the next run reads it again)")
        events: List[NumberedEvent] = [(line_number, text, event)]
        if self.selection and not self.selection.wanted(event):
            summary.filtered += 1
            events = []
        return Chunk(line_number - 1, line_number, iter(events), partial=True)


def _unreadable_reason(line: bytes) -> str:
    return "line longer than 16 MiB" if line is OVERLONG_LINE else "no JSON object on the line"
