"""Writing files for people to open in spreadsheets (FILE_FORMATS.md "Writing rules").

CSV in UTF-8 with a byte-order mark, streamed; any cell that a spreadsheet would evaluate is
written with a leading apostrophe (the readers strip it again on upload).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

BOM = "\ufeff"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\x00")


def escape_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


class _Line:
    """A file-like sink for csv.writer that hands back each line written."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """The lines of a CSV file (BOM first), for a StreamingHttpResponse: memory does not grow with rows."""
    writer = csv.writer(_Line())
    yield BOM + writer.writerow(header)
    for row in rows:
        yield writer.writerow([escape_cell(v) for v in row])
