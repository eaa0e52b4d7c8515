"""The Celery task of ``eventtracking replay --celery``: ``eventtracking.replay.run_part``.

The site's workers know it when their app imports ``eventtracking.tasks`` (which imports this
module). It is acknowledged late and rejected when its worker process is lost, so a part whose
worker was killed is delivered again to another (Segment dedupes what is sent twice: the
messageIds are the same). See :mod:`eventtracking.replay.parts`.
"""

from __future__ import annotations

from typing import Any, Dict

from celery import shared_task

TASK_NAME = "eventtracking.replay.run_part"


@shared_task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_part(part: Dict[str, Any], options: Dict[str, Any], redis_url: str, run_id: str) -> Dict[str, Any]:
    """Replay one part (:func:`eventtracking.replay.parts.run_part`)."""
    from eventtracking.replay import parts

    return parts.run_part(part, options, redis_url, run_id)
