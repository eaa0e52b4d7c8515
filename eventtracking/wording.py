"""Counts in words, the same in every message the package prints or logs: ``1 message``, ``2 messages``."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str = "") -> str:
    """``1 message``, ``2 messages``, ``1,000 dead letters`` (``plural_noun`` for irregular ones)."""
    if count == 1:
        return f"1 {noun}"
    return f"{count:,} {plural_noun or noun + 's'}"
