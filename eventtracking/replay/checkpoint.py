"""Where an interrupted replay resumes: per input, the line up to which everything was acknowledged.

The file is JSON: ``{"version": 1, "files": {KEY: {"line": N, "head": HEX}}}``. KEY is the
input's absolute path (``-`` for stdin); lines 1..N of it were delivered or skipped by rule
(or found unreadable) and need not be read again. ``head`` fingerprints the input's first line,
so a different file now at the same path (the live ``tracking.log`` after a rotation) is read
from its start instead of being skipped.

It is written to a temporary file beside it, fsynced, then moved over it with ``os.replace``:
a run killed at any moment leaves the previous checkpoint or the new one, never a torn one.
Resuming is safe even from an older checkpoint: messageIds are deterministic, so what is sent
again is deduplicated by Segment.
"""

from __future__ import annotations

import os
from hashlib import blake2b
from typing import Dict, Tuple

import orjson

VERSION = 1


class CheckpointError(Exception):
    """The checkpoint file exists but cannot be used."""


def head_fingerprint(first_line: bytes) -> str:
    """The fingerprint of an input's first line, as recorded in the checkpoint."""
    return blake2b(first_line.rstrip(), digest_size=8).hexdigest()


def _is_entry(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    return isinstance(entry.get("line"), int) and isinstance(entry.get("head"), str)


class Checkpoint:
    """The resume state kept in ``path`` (created on the first :meth:`record`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.files: Dict[str, dict] = self._load()

    def _load(self) -> Dict[str, dict]:
        try:
            with open(self.path, "rb") as handle:
                text = handle.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {exc}") from None
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise CheckpointError(f"{self.path} is not a replay checkpoint (not JSON)") from None
        files = document.get("files") if isinstance(document, dict) else None
        if not isinstance(files, dict) or document.get("version") != VERSION:
            raise CheckpointError(f"{self.path} is not a version {VERSION} replay checkpoint")
        return {key: entry for key, entry in files.items() if _is_entry(entry)}

    def acknowledged(self, key: str, head: str) -> int:
        """How many leading lines of the input ``key`` (whose first line has ``head``) to skip."""
        entry = self.files.get(key)
        if entry is None or entry["head"] != head:
            return 0
        return entry["line"]

    def record(self, positions: Dict[str, Tuple[int, str]]) -> None:
        """Note ``{key: (line, head)}`` as acknowledged and write the file atomically."""
        for key, (line, head) in positions.items():
            self.files[key] = {"line": line, "head": head}
        temporary = f"{self.path}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(orjson.dumps({"version": VERSION, "files": self.files}, option=orjson.OPT_INDENT_2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
