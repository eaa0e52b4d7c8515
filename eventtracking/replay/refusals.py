"""What the destination refused during a replay, and what that means for the run.

The backend's ``on_error(reason, messages)`` hook is a :class:`Refusals`. It tells two kinds of
refusal apart by the HTTP status in the failure's detail (``HTTP 401: wrong write key``):

* **A refusal of the configuration**, not of the message: 401 and 403 (the write key), 404 and
  405 (the host or its path), a redirect (the host points elsewhere; the sender retries those,
  so it is seen in ``last_error`` instead), and the same 4xx for every message of at least
  :data:`SAME_REFUSAL_MESSAGES` messages while none was delivered. Sending anything more would
  be refused the same way, so the run stops early with the reason and the fix, and the lines
  refused are not settled: the checkpoint never passes them, and a rerun with the right key or
  host sends them.
* **A refusal of one message** (400 for that message once the sender has split its batch down
  to it, 413, 422...): it is final, so it is kept as a dead letter (``deadletters.jsonl``, the
  spool's format, which ``eventtracking deadletters list|resend --spool DIR`` reads), named in
  the summary, and settled: the checkpoint may pass it.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

import orjson

from eventtracking.queue.spool import DEAD_LETTER_FILE, append_dead_letters, dead_letter_lines
from eventtracking.queue.stats import Progress

FAILED_SHOWN = 10
# Refusals that say the write key or the host is wrong, whatever the message: with their fix.
CONFIGURATION_FIXES = {
    401: "give this source's write key (--write-key KEY or $SEGMENT_WRITE_KEY)",
    403: "give a write key that may send to this source (--write-key KEY or $SEGMENT_WRITE_KEY)",
    404: "give the API's base URL as --host, without /v1/batch (such as https://api.segment.io)",
    405: "give the API's base URL as --host, without /v1/batch (such as https://api.segment.io)",
}
REDIRECT_FIX = "give the URL the host redirects to as --host"
SAME_REFUSAL_FIX = "check --host and the write key: this destination refuses every message"
# This many messages refused with one 4xx and none delivered: it is the destination, not them.
SAME_REFUSAL_MESSAGES = 1000
_STATUS = re.compile(r"^HTTP (\d{3})\b")


def status_of(detail: Optional[str]) -> int:
    """The HTTP status in a failure's detail (``HTTP 401: ...``); 0 for a network error or none."""
    match = _STATUS.match(detail or "")
    return int(match.group(1)) if match else 0


class Refusals:
    """The backend's ``on_error`` hook during a replay (runs on the sender thread).

    ``dead_letters``: the directory whose ``deadletters.jsonl`` gets the messages refused one by
    one; ``keep`` False when the backend's spool there keeps them itself (``--spool``).
    :attr:`shown`: the first few failed messages, by event, timestamp and messageId, for the summary.
    """

    def __init__(
        self, dead_letters: Optional[str] = None, keep: bool = True, limit: int = FAILED_SHOWN
    ) -> None:
        self.dead_letters = dead_letters
        self._keep_here = keep and dead_letters is not None
        self.limit = limit
        self.shown: List[str] = []
        self.configuration: Optional[str] = None  # the first refusal of the configuration
        self.by_status: Dict[int, int] = {}  # messages refused one by one, per status
        self.kept = 0  # of those, written to dead_letters
        self.not_kept: Optional[str] = None  # why writing a dead letter failed

    def __call__(self, reason: str, messages: List[dict]) -> None:
        detail = getattr(reason, "detail", "")
        status = status_of(detail) if reason == "refused" else 0
        if status in CONFIGURATION_FIXES:  # not about these messages: the summary lists none
            if self.configuration is None:
                self.configuration = f"{detail}: {CONFIGURATION_FIXES[status]}"
            return
        for message in messages[: max(self.limit - len(self.shown), 0)]:
            self.shown.append(
                f"{reason}: {message.get('event')!r} at {message.get('timestamp')} "
                f"(messageId {message.get('messageId')})"
            )
        if reason != "refused":
            return
        self.by_status[status] = self.by_status.get(status, 0) + len(messages)
        if self._keep_here:
            self._keep(detail or str(reason), messages)

    def _keep(self, detail: str, messages: List[dict]) -> None:
        lines = dead_letter_lines(detail, [orjson.dumps(message) for message in messages])
        try:
            os.makedirs(self.dead_letters or ".", exist_ok=True)
            written = append_dead_letters(self.dead_letters or ".", lines)
        except OSError as exc:
            self.not_kept = f"cannot write {self.dead_letter_file}: {exc.strerror}"
            return
        if written:
            self.kept += len(messages)
        else:
            self.not_kept = f"{self.dead_letter_file} is full"

    @property
    def dead_letter_file(self) -> str:
        return os.path.join(self.dead_letters or ".", DEAD_LETTER_FILE)

    def configuration_error(self, progress: Progress) -> Optional[str]:
        """Why the destination refuses this run's configuration, with the fix; None when it does
        not (``progress``: the backend's)."""
        if self.configuration is not None:
            return self.configuration
        last_error = progress.last_error
        if 300 <= status_of(last_error) < 400:
            return f"{last_error}: {REDIRECT_FIX}"
        if not progress.delivered and len(self.by_status) == 1:
            [(status, count)] = self.by_status.items()
            if 400 <= status < 500 and count >= SAME_REFUSAL_MESSAGES:
                detail = progress.reasons.get("refused") or f"HTTP {status}"
                return f"{detail}, for each of {count:,} messages: {SAME_REFUSAL_FIX}"
        return None
