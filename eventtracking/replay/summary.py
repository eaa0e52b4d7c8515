"""The summary a replay prints (:class:`Summary`), and the backend's failure details as text."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from eventtracking.queue.spool import DEAD_LETTER_FILE
from eventtracking.wording import plural

UNREADABLE_SHOWN = 10


@dataclass
class Summary:
    """What a replay did; :meth:`format` is what the command prints."""

    dry_run: bool = False
    inputs: int = 0
    lines: int = 0
    acknowledged: int = 0  # lines skipped because the checkpoint says they were acknowledged
    events: int = 0  # lines that held an event
    filtered: int = 0
    unreadable: int = 0
    unreadable_shown: List[str] = field(default_factory=list)
    partial: List[str] = field(default_factory=list)  # last lines without a newline yet
    sent: int = 0  # delivered (acknowledged by the destination); a dry run: would be sent
    skipped: Dict[str, int] = field(default_factory=dict)
    failed: Dict[str, int] = field(default_factory=dict)
    failed_details: Dict[str, str] = field(default_factory=dict)  # reason -> what the server/network said
    failed_shown: List[str] = field(default_factory=list)
    stopped: Optional[str] = None
    interrupted: bool = False
    checkpoint: bool = False  # the run had --checkpoint: it says what it skipped and what it saved
    checkpoint_frozen: bool = False  # a delivery failed: the checkpoint stayed before it
    dead_letters: int = 0  # messages refused one by one, kept in dead_letter_dir
    dead_letter_dir: Optional[str] = None
    dead_letters_not_kept: Optional[str] = None  # why some could not be kept
    resend_options: str = ""  # the destination options a resend needs (never the write key)
    elapsed: float = 0.0

    def add_unreadable(self, where: str, reason: str) -> None:
        self.unreadable += 1
        if len(self.unreadable_shown) < UNREADABLE_SHOWN:
            self.unreadable_shown.append(f"{where}: {reason}")

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def exit_status(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.unreadable or self.failed_total or self.stopped else 0

    def exit_meaning(self) -> str:
        """What the exit status says, in words (the summary's last line)."""
        status = self.exit_status()
        if status == 130:
            resume = (
                "rerun with the same --checkpoint to resume after what was acknowledged"
                if self.checkpoint
                else "rerun to send again (with --checkpoint, a rerun resumes instead)"
            )
            return f"exit status 130: interrupted; {resume}"
        if status == 0:
            return "exit status 0: every readable event was delivered or skipped by rule"
        causes = []
        if self.unreadable:
            causes.append(f"{plural(self.unreadable, 'line')} unreadable (listed above)")
        if self.failed_total:
            causes.append(f"{plural(self.failed_total, 'delivery', 'deliveries')} failed (reasons above)")
        if self.stopped:
            causes.append("stopped early (see above)")
        return "exit status 1: " + "; ".join(causes)

    def format(self) -> str:
        skipped = dict(self.skipped)
        if self.filtered:
            skipped["filtered"] = self.filtered
        rate = self.lines / self.elapsed if self.elapsed > 0 else 0.0
        title = "replay summary (dry run: nothing sent)" if self.dry_run else "replay summary"
        if self.interrupted:
            title += " (interrupted)"
        rows = [("lines read", f"{self.lines:,} in {plural(self.inputs, 'input')}")]
        if self.checkpoint:
            rows.append(("already acknowledged", f"{self.acknowledged:,} lines (checkpoint: not sent again)"))
        rows += [
            ("events would be sent" if self.dry_run else "events sent", f"{self.sent:,}"),
            ("skipped", f"{sum(skipped.values()):,}{_reasons(skipped)}"),
            ("unreadable lines", f"{self.unreadable:,}"),
        ]
        lines = [title] + [f"  {label:<21} {value}" for label, value in rows]
        lines += [f"      {where}" for where in self.unreadable_shown]
        if self.unreadable > len(self.unreadable_shown):
            lines.append(f"      ... and {self.unreadable - len(self.unreadable_shown):,} more")
        if self.partial:
            count = f"{len(self.partial):,} (no newline yet: not checkpointed)"
            lines.append(f"  {'partial last lines':<21} {count}")
            lines += [f"      {where}" for where in self.partial]
        failed = _reasons(self.failed, self.failed_details)
        lines.append(f"  {'failed deliveries':<21} {self.failed_total:,}{failed}")
        lines += [f"      {what}" for what in self.failed_shown]
        if self.failed_total > len(self.failed_shown) and self.failed_shown:
            lines.append(f"      ... and {self.failed_total - len(self.failed_shown):,} more")
        lines += self._dead_letter_lines()
        lines.append(f"  {'elapsed':<21} {self.elapsed:.1f} s ({rate:,.0f} lines/s)")
        if self.checkpoint_frozen:
            lines.append("the checkpoint stays before the first failed delivery: a rerun retries from there")
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}")
        lines.append(self.exit_meaning())
        return "\n".join(lines) + "\n"

    def _dead_letter_lines(self) -> List[str]:
        if not (self.dead_letters or self.dead_letters_not_kept):
            return []
        where = os.path.join(self.dead_letter_dir or ".", DEAD_LETTER_FILE)
        lines = [f"  {'dead letters':<21} {self.dead_letters:,} refused one by one, kept in {where}"]
        if self.dead_letters_not_kept:
            lines.append(f"      not all kept: {self.dead_letters_not_kept}")
        if self.dead_letters:
            spool = shlex.quote(self.dead_letter_dir or ".")
            lines.append(f"      list them:   eventtracking deadletters list --spool {spool}")
            lines.append(
                f"      fix, resend: eventtracking deadletters resend --spool {spool}{self.resend_options}"
            )
        return lines


def _reasons(counts: Dict[str, int], details: Optional[Dict[str, str]] = None) -> str:
    """``: refused 2 (HTTP 400: ...), gave_up 5 (connection refused: host)``; "" for no counts."""
    if not counts:
        return ""
    details = details or {}
    return ": " + ", ".join(
        f"{reason} {count:,}" + (f" ({details[reason]})" if details.get(reason) else "")
        for reason, count in sorted(counts.items())
    )


def failure_details(stats: Dict[str, Any]) -> Dict[str, str]:
    """The reason -> detail mapping of a backend's ``stats()`` (the HTTP status and the server's
    reason, or the network error and host), as text; {} when the backend gives none."""
    details = stats.get("reasons") or {}
    result: Dict[str, str] = {}
    for reason, detail in details.items() if isinstance(details, dict) else ():
        if isinstance(detail, dict):  # several details for one reason: the most frequent first
            detail = "; ".join(str(text) for text, _ in sorted(detail.items(), key=lambda item: -item[1]))
        elif isinstance(detail, (list, tuple)):
            detail = "; ".join(str(text) for text in detail)
        if detail:
            result[str(reason)] = str(detail)
    return result
