"""The coordinator of ``eventtracking replay SOURCE... --celery APP``.

It loads the site's Celery app as ``celery -A APP`` does, splits the inputs into parts
(:func:`eventtracking.replay.parts.split`), skips the parts its checkpoint records as done,
sends one task per remaining part, and follows them in a Redis hash of the run (the app's
broker must be Redis, as an Open edX site's is): progress while they run, and each part's
summary when it ends. A part whose every line was answered is recorded in the checkpoint (key:
the file, object or byte range; head: the part's id), so a coordinator killed at any moment
resumes with the same command: parts done are skipped, the others sent again (what a part had
already delivered is then deduplicated by messageId). It prints one summary, the merge of the
parts', as a local run would.

A part that stops on a refusal of the configuration (a wrong key or host on the workers) stops
the run: the parts not started are revoked.
"""

from __future__ import annotations

import secrets
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import orjson

from eventtracking.replay.checkpoint import Checkpoint
from eventtracking.replay.lines import Source
from eventtracking.replay.parts import Part, complete, merge, run_key, split, summary_from_json
from eventtracking.replay.summary import Summary
from eventtracking.replay.tasks import TASK_NAME

POLL_SECONDS = 0.5
WAITING_SAID_AFTER = 30.0  # seconds without any part taken before saying what is awaited


class CoordinatorError(Exception):
    """The app cannot be loaded, or its broker is not Redis (a usage error)."""


def load_app(name: str) -> Any:
    """The Celery app ``name`` names, as ``celery -A name`` finds it."""
    from celery.app.utils import find_app

    try:
        return find_app(name)
    except Exception as exc:
        what = f"{type(exc).__name__}: {exc}"
        raise CoordinatorError(f"--celery {name}: cannot load the Celery app: {what}") from None


class Coordinator:
    """Run parts of a replay on the workers of ``app`` (see the module doc)."""

    def __init__(
        self,
        app: Any,
        options: Dict[str, Any],
        checkpoint: Checkpoint,
        part_bytes: int,
        progress: bool = False,
    ) -> None:
        self.app = app
        self.options = options
        self.checkpoint = checkpoint
        self.part_bytes = part_bytes
        self.progress = progress
        broker = str(app.conf.broker_url or "")
        if not broker.startswith(("redis://", "rediss://", "unix://")):
            raise CoordinatorError(
                f"--celery: the app's broker is {broker.split('://')[0] or 'not set'}; the replay follows "
                "its parts in the broker's Redis: a Redis broker is needed"
            )
        self.redis_url = broker
        self._stop = False

    def stop(self) -> None:
        """Stop following the parts (the workers finish those they run); the summary says so."""
        self._stop = True

    def run(self, sources: Sequence[Source]) -> Summary:
        import redis

        started = time.monotonic()
        client = redis.Redis.from_url(self.redis_url)
        parts = split(sources, self.part_bytes)
        done = [part for part in parts if self._done(part)]
        acknowledged = sum(self.checkpoint.files[part.key]["line"] for part in done)
        todo = [part for part in parts if part not in done]
        run_id = secrets.token_hex(8)
        task_ids = {
            part.id: self.app.send_task(
                TASK_NAME, args=[part.to_json(), self.options, self.redis_url, run_id]
            ).id
            for part in todo
        }
        finished: Dict[str, Summary] = {}
        bar = _bar(sources, len(todo)) if self.progress else None
        interrupted = said_waiting = False
        try:
            while len(finished) < len(todo):
                if self._stop:
                    interrupted = True
                    break
                time.sleep(POLL_SECONDS)
                entries = {
                    key.decode() if isinstance(key, bytes) else key: orjson.loads(value)
                    for key, value in client.hgetall(run_key(run_id)).items()
                }
                if not entries and not said_waiting and time.monotonic() - started > WAITING_SAID_AFTER:
                    said_waiting = True
                    print(
                        f"eventtracking replay: waiting for a worker to take the {len(todo)} parts: is one "
                        "running (celery -A APP worker) with eventtracking.tasks imported?",
                        file=sys.stderr,
                        flush=True,
                    )
                newly = self._collect(todo, entries, finished)
                if bar is not None:
                    lines = sum(entry.get("lines", 0) for entry in entries.values())
                    sent = sum(entry.get("sent", 0) for entry in entries.values())
                    bar.update(len(finished) - bar.n)
                    bar.set_postfix_str(f"{lines:,} lines, {sent:,} sent", refresh=False)
                if any(summary.stopped for summary in newly):
                    pending = [task_ids[part.id] for part in todo if part.id not in finished]
                    self.app.control.revoke(pending)
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if bar is not None:
                bar.close()
        summary = merge([finished[part.id] for part in todo if part.id in finished])
        summary.inputs = len(sources)
        summary.acknowledged = acknowledged
        summary.checkpoint = True
        summary.interrupted = interrupted
        unfinished = len(todo) - len(finished)
        if unfinished and not interrupted and not summary.stopped:
            summary.stopped = f"{unfinished} parts did not finish"
        summary.elapsed = time.monotonic() - started
        return summary

    def _done(self, part: Part) -> bool:
        entry = self.checkpoint.files.get(part.key)
        return entry is not None and entry["head"] == part.id

    def _collect(
        self, todo: List[Part], entries: Dict[str, Any], finished: Dict[str, Summary]
    ) -> List[Summary]:
        """Take the summaries of parts that ended since the last look; checkpoint the complete ones."""
        newly: List[Summary] = []
        positions = {}
        for part in todo:
            entry = entries.get(part.id)
            if part.id in finished or entry is None or "summary" not in entry:
                continue
            summary = summary_from_json(entry["summary"])
            finished[part.id] = summary
            newly.append(summary)
            if complete(summary):
                positions[part.key] = (summary.lines, part.id)
        if positions:
            self.checkpoint.record(positions)
        return newly


def _bar(sources: Sequence[Source], parts: int) -> Optional[Any]:
    from tqdm import tqdm

    return tqdm(total=parts, unit=" parts", file=sys.stderr, mininterval=0.5)
