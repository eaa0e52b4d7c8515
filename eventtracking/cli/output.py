"""How the ``eventtracking`` commands print tables: cells of one line, aligned columns."""

from __future__ import annotations

from typing import Any, Sequence

import orjson

MAX_CELL = 80  # characters of one table cell; longer values are shortened with "..."


def cell(value: Any, width: int = MAX_CELL) -> str:
    """A value as one table cell: ``-`` for None, JSON for non-strings, one line, at most ``width``."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())  # one line per row, whatever the value holds
    return text if len(text) <= width else text[: width - 3] + "..."


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``header`` and ``rows`` (cells already text) as aligned columns, one line each."""
    lines = [list(header), *[list(row) for row in rows]]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() + "\n" for line in lines
    )
