"""A replay spread over Celery workers: the parts, what a worker does with one, the shared rate.

``eventtracking replay SOURCE... --celery APP`` (the coordinator: :mod:`eventtracking.replay.distributed`)
splits its inputs into parts (:func:`split`): one per object or file, and byte ranges of
:data:`PART_BYTES` for a large plain local file, each starting just after a newline, with the
number of lines before it, so that a line's messageId (its text and its line number in its
file) is the same whichever worker sends it, and the same as a local run's.

A worker runs a part with :func:`run_part` (the task ``eventtracking.replay.run_part`` of
:mod:`eventtracking.replay.tasks`): the same loop as a local replay, into a SegmentBackend made
with the worker's own write key and host (:func:`worker_destination`: they never travel
through the broker), throttled by :class:`SharedRate`, one limit in requests per second for all
workers, kept in the broker's Redis. It reports its progress and its summary into a Redis hash
of the run (:func:`run_key`), which the coordinator reads: no result backend is needed.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import time
from hashlib import blake2b
from typing import Any, Dict, List, Optional, Sequence

import orjson

from eventtracking.replay.lines import CHUNK_BYTES, Source
from eventtracking.replay.summary import Summary

PART_BYTES = 64 << 20  # a plain local file larger than this is split in parts of about this size
DEFAULT_REQUESTS_PER_SECOND = 500.0  # Segment's guidance: under 1,000 requests/s per workspace
EVENTS_PER_REQUEST = 500  # the sender's batch: a request is counted for this many events
HOST_ENV = "EVENTTRACKING_REPLAY_HOST"
SETTINGS_NAME = "EVENTTRACKING_REPLAY"  # Django setting: {"write_key": ..., "host": ...}
RUN_TTL = 7 * 24 * 3600  # seconds a run's hash stays in Redis


@dataclasses.dataclass(frozen=True)
class Part:
    """One task's share of the inputs: ``source`` (maybe a byte range of it), in run order."""

    index: int
    source: Source

    @property
    def id(self) -> str:
        spec = f"{self.source.key}\0{self.source.start}\0{self.source.end}".encode()
        return blake2b(spec, digest_size=8).hexdigest()

    @property
    def key(self) -> str:
        """The checkpoint's key for this part."""
        source = self.source
        if source.start or source.end is not None:
            return f"{source.key}#bytes={source.start}-{'' if source.end is None else source.end}"
        return self.source.key

    def to_json(self) -> Dict[str, Any]:
        return {"index": self.index, "source": dataclasses.asdict(self.source)}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Part:
        return cls(int(data["index"]), Source(**data["source"]))


def split(sources: Sequence[Source], part_bytes: int = PART_BYTES) -> List[Part]:
    """The parts of ``sources``, in order (see the module doc). Only plain local files are split:
    gzip cannot be entered mid-stream, and counting an object's lines would mean reading it here."""
    parts: List[Part] = []
    for source in sources:
        ranges = [source]
        if not source.is_object and not source.is_stdin:
            try:
                if os.path.getsize(source.key) > part_bytes:
                    ranges = _ranges(source, part_bytes)
            except OSError:
                pass  # the worker will say what is wrong with it
        parts += [Part(len(parts) + offset, part) for offset, part in enumerate(ranges)]
    return parts


def _ranges(source: Source, part_bytes: int) -> List[Source]:
    """A plain file cut after the first newline past every ``part_bytes``; a gzip file whole."""
    ranges: List[Source] = []
    start = first_line = position = lines = 0
    with open(source.key, "rb") as stream:
        if stream.read(2) == b"\x1f\x8b":
            return [source]
        stream.seek(0)
        while True:
            chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                break
            offset = 0
            while True:
                cut = max(start + part_bytes - position, offset)
                newline = chunk.find(b"\n", cut) if cut < len(chunk) else -1
                if newline < 0:
                    break
                end = position + newline + 1
                ranges.append(dataclasses.replace(source, start=start, end=end, first_line=first_line))
                first_line = lines + chunk.count(b"\n", 0, newline + 1)
                start, offset = end, newline + 1
            lines += chunk.count(b"\n")
            position += len(chunk)
    if start < position or not ranges:
        ranges.append(dataclasses.replace(source, start=start, end=None, first_line=first_line))
    else:  # the last cut fell at the very end
        ranges[-1] = dataclasses.replace(ranges[-1], end=None)
    if len(ranges) == 1:
        return [source]
    return ranges


def run_key(run_id: str) -> str:
    """The Redis hash of a run: ``{part id: JSON}``, progress then the part's summary."""
    return f"eventtracking:replay:{run_id}"


class SharedRate:
    """At most ``requests_per_second`` requests, counted as :data:`EVENTS_PER_REQUEST` events each,
    for all the processes that share ``key`` in Redis (one counter per second of the clock)."""

    def __init__(self, client: Any, key: str, requests_per_second: float) -> None:
        self.client = client
        self.key = key
        self.limit = max(int(requests_per_second), 1)
        self._events = 0

    def __call__(self) -> None:
        self._events += 1
        if self._events < EVENTS_PER_REQUEST:
            return
        self._events = 0
        while True:
            now = time.time()
            window = f"{self.key}:{int(now)}"
            pipeline = self.client.pipeline()
            pipeline.incr(window)
            pipeline.expire(window, 10)
            count = pipeline.execute()[0]
            if count <= self.limit:
                return
            time.sleep(max(int(now) + 1 - now, 0.001))


def worker_destination() -> Dict[str, Optional[str]]:
    """This worker's write key and host: ``$SEGMENT_WRITE_KEY`` (or its aliases) and
    ``$EVENTTRACKING_REPLAY_HOST``, else the Django setting ``EVENTTRACKING_REPLAY``."""
    from eventtracking.cli.args import write_key

    settings: Dict[str, Any] = {}
    try:
        from django.conf import settings as django_settings

        if django_settings.configured:
            settings = dict(getattr(django_settings, SETTINGS_NAME, None) or {})
    except ImportError:
        pass
    return {
        "write_key": write_key(None) or settings.get("write_key"),
        "host": os.environ.get(HOST_ENV) or settings.get("host"),
    }


def run_part(
    part_data: Dict[str, Any], options: Dict[str, Any], redis_url: str, run_id: str
) -> Dict[str, Any]:
    """Replay one part on this worker (see the module doc); its summary is also returned."""
    import redis

    from eventtracking.backends.segment import SegmentBackend
    from eventtracking.cli.args import WRITE_KEY_ENV
    from eventtracking.replay.loop import Replay
    from eventtracking.replay.refusals import Refusals

    part = Part.from_json(part_data)
    client = redis.Redis.from_url(redis_url)
    hash_key = run_key(run_id)

    def report(lines: int, sent: int, summary: Optional[Summary] = None) -> None:
        entry: Dict[str, Any] = {"lines": lines, "sent": sent}
        if summary is not None:
            entry["summary"] = summary_to_json(summary)
        client.hset(hash_key, part.id, orjson.dumps(entry))
        client.expire(hash_key, RUN_TTL)

    destination = worker_destination()
    if not destination["write_key"]:
        missing = f"a worker has no write key: set ${WRITE_KEY_ENV} or {SETTINGS_NAME}"
        summary = Summary(inputs=1, stopped=missing)
        report(0, 0, summary)
        return summary_to_json(summary)
    failures = Refusals(options.get("dead_letters"))
    backend_options: Dict[str, Any] = {
        name: options[name] for name in ("anonymous_id_field", "retry_timeout") if options.get(name)
    }
    backend = SegmentBackend(
        write_key=destination["write_key"], host=destination["host"], on_error=failures, **backend_options
    )
    replay = Replay(
        backend,
        names=[re.compile(pattern) for pattern in options.get("name") or ()],
        since=_time(options.get("since")),
        until=_time(options.get("until")),
        failures=failures,
        throttle=SharedRate(client, f"{hash_key}:rate", options["requests_per_second"]),
        on_progress=report,
    )
    summary = replay.run([part.source])
    report(summary.lines, summary.sent, summary)
    return summary_to_json(summary)


def _time(text: Optional[str]) -> Optional[datetime.datetime]:
    return datetime.datetime.fromisoformat(text) if text else None


def summary_to_json(summary: Summary) -> Dict[str, Any]:
    return dataclasses.asdict(summary)


def complete(summary: Summary) -> bool:
    """A part whose every line was answered (delivered, skipped by rule, or settled): done."""
    unfinished = summary.stopped or summary.interrupted or summary.checkpoint_frozen
    return not unfinished and not summary.failed.get("not_answered")


def merge(summaries: Sequence[Summary], shown: int = 10) -> Summary:
    """One summary for parts' summaries (in part order), as a local run over them would print."""
    total = Summary()
    for part in summaries:
        for field in ("lines", "acknowledged", "events", "filtered", "unreadable", "sent", "dead_letters"):
            setattr(total, field, getattr(total, field) + getattr(part, field))
        for field in ("skipped", "failed"):
            counts = getattr(total, field)
            for reason, count in getattr(part, field).items():
                counts[reason] = counts.get(reason, 0) + count
        total.failed_details.update(part.failed_details)
        total.unreadable_shown += part.unreadable_shown
        total.failed_shown += part.failed_shown
        total.partial += part.partial
        total.stopped = total.stopped or part.stopped
        total.checkpoint_frozen = total.checkpoint_frozen or part.checkpoint_frozen
        total.dead_letter_dir = total.dead_letter_dir or part.dead_letter_dir
        total.dead_letters_not_kept = total.dead_letters_not_kept or part.dead_letters_not_kept
    total.unreadable_shown = total.unreadable_shown[:shown]
    total.failed_shown = total.failed_shown[:shown]
    return total


def summary_from_json(data: Dict[str, Any]) -> Summary:
    known = {field.name for field in dataclasses.fields(Summary)}
    return Summary(**{key: value for key, value in data.items() if key in known})
