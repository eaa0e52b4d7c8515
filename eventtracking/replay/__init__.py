"""``eventtracking replay``: send tracking logs to Segment, fast, resumable and idempotent.

Sites keep months of tracking logs (JSON lines from the LoggerBackend or Open edX's legacy
tracking log, plain or gzip-rotated). Replaying them sends each event through
:class:`~eventtracking.backends.segment.SegmentBackend` in the shape the live backend sent it
(:mod:`~eventtracking.replay.events`), under a messageId derived from the line and its line
number, so a repeated or resumed replay adds nothing new in Segment (which dedupes on
messageId). The modules:

* :mod:`~eventtracking.replay.lines`: inputs (files, gzip, directories, stdin) read in chunks;
* :mod:`~eventtracking.replay.storage`: object storage (``s3://``, ``gs://``, ``az://``) as input;
* :mod:`~eventtracking.replay.events`: a line's object → the live event; the messageId;
* :mod:`~eventtracking.replay.checkpoint`: per input, the line up to which all was acknowledged;
* :mod:`~eventtracking.replay.refusals`: refusals of the configuration (stop) and of one
  message (dead letters);
* :mod:`~eventtracking.replay.reading`: an input's lines as numbered events, and the selection;
* :mod:`~eventtracking.replay.flow`: flow control (back-pressure, drain, stop and checkpoint rules)
  on the sink's typed :class:`~eventtracking.queue.stats.Progress`;
* :mod:`~eventtracking.replay.loop`: the replay loop, which joins them;
  :mod:`~eventtracking.replay.summary`: the progress bar and the summary;
* :mod:`~eventtracking.replay.parts`, :mod:`~eventtracking.replay.tasks` and
  :mod:`~eventtracking.replay.distributed`: a replay spread over Celery workers (``--celery``).

The user guide is ``docs/replay.rst``.

The command line is :mod:`eventtracking.cli.replay`.
"""

from __future__ import annotations

from eventtracking.replay.events import message_id, to_live_event
from eventtracking.replay.loop import Replay, Summary

__all__ = ["Replay", "Summary", "message_id", "to_live_event"]
