"""What a replay shows: the progress bar while it runs (:class:`ProgressBar`), the summary when it
ends (:class:`Summary`, built from the sink's :class:`~eventtracking.queue.stats.Progress` by
:meth:`Summary.take_outcome`), and the backend's failure details as text."""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from eventtracking.queue.spool import DEAD_LETTER_FILE
from eventtracking.queue.stats import Progress
from eventtracking.replay.lines import Source
from eventtracking.replay.refusals import Refusals
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

    def take_outcome(self, progress: Progress, failures: Optional[Refusals] = None) -> None:
        """Fill in what the sink did with the events (``progress``, once it was closed) and what
        the destination refused (``failures``, the backend's ``on_error``)."""
        self.sent = sent(progress, self.dry_run)
        self.skipped = dict(progress.skipped)
        self.failed = dict(progress.dropped)
        self.failed_details = failure_details(progress)
        if failures is not None:
            self.failed_shown = list(failures.shown)
            self.dead_letters = failures.kept
            self.dead_letter_dir = failures.dead_letters
            self.dead_letters_not_kept = failures.not_kept
        if progress.dead_letters:  # the backend's spool keeps them (--spool)
            self.dead_letters = progress.dead_letters
        if progress.in_flight:
            self.failed["not_answered"] = progress.in_flight

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


class ProgressBar:
    """The progress bar (tqdm, on stderr): the bytes of the inputs read against their total size
    (compressed bytes for gzip), so it has a percentage and an ETA; a count of lines alone when
    an input is stdin. It shows the lines read and the events sent so far; when the run ends it
    shows the summary's own figures for both."""

    def __init__(self, sources: Sequence[Source], verb: str = "sent") -> None:
        from tqdm import tqdm

        self._verb = verb
        self._sizes = {source.key: _size(source) for source in sources}
        self.total: Optional[int] = None
        if None not in self._sizes.values():
            self.total = sum(size or 0 for size in self._sizes.values())
            bar_options: Dict[str, Any] = {"unit": "B", "unit_scale": True, "unit_divisor": 1024}
            self.bar = tqdm(total=self.total, file=sys.stderr, mininterval=0.5, **bar_options)
        else:
            self.bar = tqdm(unit=" lines", unit_scale=True, file=sys.stderr, mininterval=0.5)
        self._done = 0  # bytes of the inputs read to the end
        self._raw: Any = None

    def start(self, source: Source, stream: Any) -> None:
        """Follow ``stream``, the input being read (its raw file, below any gzip)."""
        self._raw = getattr(stream, "fileobj", stream) if self.total is not None else None

    def end(self, source: Source) -> None:
        self._raw = None
        self._done += self._sizes.get(source.key) or 0

    def update(self, lines: int, sent: int) -> None:
        position = lines
        if self.total is not None:
            position = self._done
            try:
                position += self._raw.tell() if self._raw is not None else 0
            except (OSError, ValueError):
                pass
            position = min(position, self.total)
        self.bar.update(position - self.bar.n)
        self.bar.set_postfix_str(f"{lines:,} lines, {sent:,} {self._verb}", refresh=False)

    def finish(self, lines: int, sent: int, complete: bool) -> None:
        """Show the final figures (the summary's) and close the bar."""
        if self.total is not None and complete:
            self.bar.update(self.total - self.bar.n)
        elif self.total is None:
            self.bar.update(lines - self.bar.n)
        self.bar.set_postfix_str(f"{lines:,} lines, {sent:,} {self._verb}", refresh=False)
        self.bar.close()


def _size(source: Source) -> Optional[int]:
    if source.is_stdin or source.is_object:
        return source.size
    try:
        return os.path.getsize(source.key)
    except OSError:
        return None


def sent(progress: Progress, dry_run: bool) -> int:
    """The events a run counts as sent: delivered; a dry run's, those that would be."""
    return progress.accepted if dry_run else progress.delivered


def failure_details(progress: Progress) -> Dict[str, str]:
    """Reason -> what the server or the network said (the HTTP status and the server's reason,
    or the network error and host), for the reasons that have a detail."""
    return {reason: detail for reason, detail in progress.reasons.items() if detail}
