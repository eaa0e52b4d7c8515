"""Where an interrupted replay resumes: per input, the line up to which everything was acknowledged.

The file is JSON::

    {"version": 2,
     "selection": {"name": [...], "since": ..., "until": ..., "anonymous_id_field": ...,
                   "destination": URL, "write_key": HASH},
     "files": {KEY: {"line": N, "head": HEX}}}

KEY is the input's absolute path (``-`` for stdin); lines 1..N of it were delivered, skipped by
rule, found unreadable or finally refused by the destination, and need not be read again.
``head`` fingerprints the input's first line, so a different file now at the same path (the live
``tracking.log`` after a rotation) is read from its start instead of being skipped.

``selection`` is what decided which lines became deliveries, and where to: the options that
select events and the destination (its URL; for the write key only an 8-byte BLAKE2b digest,
never the key). A checkpoint says nothing about lines a run with other options or another
destination would send, so opening one whose selection differs is refused
(:class:`CheckpointMismatch`) rather than silently skipping lines that were never sent there,
or silently starting over and overwriting the other run's state. A version 1 checkpoint, which
records no selection, is refused the same way.

It is written to a temporary file beside it (hidden, named after the process id and a random
token, so two runs sharing a checkpoint never write into one another's file, and a directory
being replayed never reads it), fsynced, then moved over it with ``os.replace``: a run killed at
any moment leaves the previous checkpoint or the new one, never a torn one. Two runs sharing one
checkpoint each write their own view (the last one wins): that is safe, as is resuming from any
older checkpoint, since messageIds are deterministic and what is sent again is deduplicated by
Segment.
"""

from __future__ import annotations

import os
import secrets
from hashlib import blake2b
from typing import Any, Dict, Optional, Tuple

import orjson

VERSION = 2


class CheckpointError(Exception):
    """The checkpoint file exists but cannot be used."""


class CheckpointMismatch(CheckpointError):
    """The checkpoint was written by a replay with other options or another destination."""


def key_fingerprint(write_key: str) -> str:
    """What the checkpoint keeps of a write key: a short digest, never the key."""
    return blake2b(write_key.encode(), digest_size=8).hexdigest()


def head_fingerprint(first_line: bytes) -> str:
    """The fingerprint of an input's first line, as recorded in the checkpoint."""
    return blake2b(first_line.rstrip(), digest_size=8).hexdigest()


def _is_entry(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    return isinstance(entry.get("line"), int) and isinstance(entry.get("head"), str)


class Checkpoint:
    """The resume state kept in ``path`` (created on the first :meth:`record`).

    ``selection`` (JSON-able) is what this run selects and where it sends (see the module doc):
    an existing file made with another selection raises :class:`CheckpointMismatch`. Only the
    keys given are compared (a dry run, which sends nowhere, gives no destination); the file is
    written with the ``selection`` given here.
    """

    def __init__(self, path: str, selection: Optional[Dict[str, Any]] = None) -> None:
        self.path = path
        self.selection: Dict[str, Any] = dict(selection or {})
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
        if not isinstance(files, dict) or not isinstance(document.get("version"), int):
            raise CheckpointError(f"{self.path} is not a replay checkpoint")
        if document["version"] < VERSION:
            raise CheckpointMismatch(
                f"checkpoint {self.path} was written by an older replay that does not record the options "
                "and destination it was made with: delete it to start over (messageIds are "
                "deterministic, so what is sent again adds nothing new)"
            )
        if document["version"] != VERSION:
            raise CheckpointError(f"{self.path} is not a version {VERSION} replay checkpoint")
        stored = document.get("selection")
        stored = stored if isinstance(stored, dict) else {}
        differ = [key for key, value in self.selection.items() if stored.get(key) != value]
        if differ:
            raise CheckpointMismatch(
                f"checkpoint {self.path} was written by a replay with other "
                f"{', '.join(_option(key) for key in differ)}: it cannot say what this run has "
                "already sent. Give another --checkpoint file, or rerun with the same options"
            )
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
        document = {"version": VERSION, "selection": self.selection, "files": self.files}
        directory, name = os.path.split(os.path.abspath(self.path))
        temporary = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            with open(temporary, "xb") as handle:
                handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise


def _option(key: str) -> str:
    if key == "destination":
        return "--host/--local destination"
    if key == "write_key":
        return "write key"
    return "--" + key.replace("_", "-")
