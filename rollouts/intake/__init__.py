"""Reading uploaded CSV and XLSX files (FILE_FORMATS.md), one row at a time.

``readers.read_rows`` streams rows; ``errors`` holds the one error model (``Failure``,
``RowsRejected``, ``FileRejected``) and the reason codes.
"""

from __future__ import annotations
