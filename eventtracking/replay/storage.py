"""Object storage as replay input: ``s3://``, ``gs://``, ``az://`` (and ``file://``) through fsspec.

``eventtracking replay s3://bucket/prefix/`` lists every object under the prefix and reads each
as a stream, in ranged reads of :data:`BLOCK_BYTES` (never downloaded whole, never on disk).
The file system is fsspec's for the scheme: s3fs (extra ``[s3]``), gcsfs (``[gcs]``) or adlfs
(``[azure]``); ``file://`` is the local walk of :mod:`eventtracking.replay.lines`.

* **Order**: the objects' keys below the prefix compared ``/``-separated part by part, as the
  local walk orders paths (so zero-padded date prefixes come in time order). Keys with a part
  starting with ``.`` are left out, as hidden files are.
* **Credentials** come from each SDK's own chain (for S3: the environment, ``AWS_PROFILE``
  and the shared files, then the instance or task role), and never appear in output: an error
  that quotes one has it replaced by ``<credential>``. The endpoint can be overridden for MinIO
  and other S3-compatible stores with ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``).
* **Resumption**: the checkpoint records each object by its URL, like a local file by its
  path. A read cut mid-object (a reset connection) is taken up again at the same byte, up to
  :data:`READ_ATTEMPTS` times, below any gzip decompression; past that the run counts the
  rest of the object as not read and stops advancing the checkpoint there, so a rerun resumes
  at the object's last checkpointed line.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any, Dict, List, Optional, Tuple

# The schemes read, each with the extra that installs its file system.
SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
LIBRARIES = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}
BLOCK_BYTES = 5 << 20  # one ranged GET (s3fs's smallest); the file system keeps one block ahead
READ_BYTES = 1 << 20  # what the line reader takes at a time
READ_ATTEMPTS = 3  # on top of the SDK's own retries (AWS_MAX_ATTEMPTS, and s3fs's 5 for a short body)
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_SECRET",
)


class StorageError(Exception):
    """An object-storage URL that cannot be listed or read (its message is one line)."""


def scheme_of(path: str) -> Optional[str]:
    """The URL scheme of a PATH argument (``s3``), or None for a local path or ``-``."""
    head, separator, _ = path.partition("://")
    if separator and head and head.replace("+", "").isalnum():
        return head.lower()
    return None


def local_path(url: str) -> str:
    """The local path of a ``file://`` URL."""
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(url).path)


def list_objects(url: str) -> List[Tuple[str, Optional[int]]]:
    """``(url, size)`` of every object under ``url``, in the documented order. Raises
    :class:`StorageError` with one line naming the URL and what is wrong."""
    scheme = scheme_of(url) or ""
    filesystem = _filesystem(url, scheme)
    root = filesystem._strip_protocol(url).rstrip("/")
    try:
        found: Dict[str, Dict[str, Any]] = filesystem.find(root, withdirs=False, detail=True)
    except Exception as exc:  # each SDK has its own errors: say which, in one line
        raise StorageError(f"{url}: {_explain(exc)}") from None
    objects = []
    for path, info in found.items():
        below = path[len(root) :].lstrip("/") if path.startswith(root) else path
        parts = below.split("/")
        if any(part.startswith(".") for part in parts) or info.get("type") == "directory":
            continue
        objects.append((parts, f"{scheme}://{path}", info.get("size")))
    objects.sort(key=lambda entry: [part.encode() for part in entry[0]])
    return [(name, size) for _, name, size in objects]


def open_object(url: str) -> io.BufferedReader:
    """A buffered binary stream of the object's bytes, as stored (a gzip object stays gzip)."""
    filesystem = _filesystem(url, scheme_of(url) or "")
    return io.BufferedReader(_ResumingReader(filesystem, filesystem._strip_protocol(url)), READ_BYTES)


def _filesystem(url: str, scheme: str) -> Any:
    kind = SCHEMES.get(scheme)
    if kind is None:
        known = ", ".join(f"{name}://" for name in ("s3", "gs", "az", "file"))
        raise StorageError(f"{url}: unknown scheme {scheme}:// (replay reads local paths, - and {known})")
    try:
        import fsspec

        options: Dict[str, Any] = {}
        if kind == "s3":
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options["endpoint_url"] = endpoint
        return fsspec.filesystem(scheme, **options)
    except ImportError:
        library = LIBRARIES[kind]
        raise StorageError(
            f"{url}: reading {scheme}:// needs {library}: pip install 'event-tracking[{kind}]'"
        ) from None
    except Exception as exc:
        raise StorageError(f"{url}: {_explain(exc)}") from None


def _explain(exc: BaseException) -> str:
    """One line for an SDK's error: what kind, and its words, without any credential."""
    if isinstance(exc, FileNotFoundError):
        what = "no such bucket or object"
    elif isinstance(exc, PermissionError):
        what = "access denied: check the credentials (the SDK's standard chain: environment, profile, role)"
    else:
        what = type(exc).__name__
    text = " ".join(str(exc).split())
    for name in _CREDENTIAL_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "<credential>")
    return f"{what} ({text})" if text and text != what else what


class _ResumingReader(io.RawIOBase):
    """An object's bytes, read in ranges; a read that fails (a cut connection) is tried again
    from the same byte, up to :data:`READ_ATTEMPTS` times with a growing pause."""

    def __init__(self, filesystem: Any, path: str) -> None:
        super().__init__()
        self._filesystem = filesystem
        self._path = path
        self._position = 0
        self._file: Any = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        for attempt in range(READ_ATTEMPTS):
            try:
                if self._file is None:
                    self._file = self._filesystem.open(
                        self._path, "rb", block_size=BLOCK_BYTES, cache_type="readahead"
                    )
                    self._file.seek(self._position)
                data = self._file.read(len(buffer))
                break
            except Exception as exc:  # a reset, a timeout, a short body: each SDK has its own
                self._drop_file()
                if isinstance(exc, (FileNotFoundError, PermissionError)) or attempt == READ_ATTEMPTS - 1:
                    raise OSError(f"{_explain(exc)} at byte {self._position:,}") from None
                time.sleep(0.5 * 2**attempt)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _drop_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except Exception:
                pass

    def close(self) -> None:
        self._drop_file()
        super().close()
