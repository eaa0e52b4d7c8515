"""The Segment pipeline (mapping, encoding, buffer, sender, spool) and segment-analytics-python's
API on it: :class:`Client` and :func:`install_global_client` (from :mod:`.client`, imported on
first use, so that the pipeline's modules do not pull it in)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventtracking.segment.client import Client, install_global_client

__all__ = ["Client", "install_global_client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from eventtracking.segment import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
