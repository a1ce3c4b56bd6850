"""The one error model for uploaded files (FILE_FORMATS.md "Reason codes").

Every problem with an upload is a ``Failure``: (row, column, value as given, reason code,
message). ``RowsRejected`` carries a list of them and is a ``ValidationError``, so a service can
raise it and a view can hand it to ``form.add_error(None, e)``. ``FileRejected`` is the
file-level case: one failure with no row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

_TEXT_COLUMN_HOWTO = (
    "Spreadsheets store a GUID typed as a number without its leading zeros and change digits "
    "after the 15th (0012345678901234 becomes 12345678901234). Format the GUID column as Text "
    "(select the column, Format Cells, Text) and type or paste the GUIDs again, or use the "
    "downloadable template, which has the column formatted as text."
)

# Every reason code of FILE_FORMATS.md, with a default message that says what to do.
CODES: dict[str, str] = {
    # File
    "file_type": (
        "This file is not a CSV or XLSX file. Other spreadsheet formats (.xls, .xlsm, .ods, .numbers, "
        "password-protected workbooks) are not accepted: open it in your spreadsheet program and save "
        "it as Excel Workbook (.xlsx) or CSV UTF-8."
    ),
    "file_encoding": (
        'The file is not UTF-8 text. In your spreadsheet program choose Save As and the type "CSV UTF-8 '
        '(Comma delimited)", then upload that file.'
    ),
    "file_empty": "The file has no rows to read: it needs a header row and at least one row of data.",
    "file_too_large": (
        "The file is larger than the limit for one upload. Split it into several files and upload each one."
    ),
    "file_too_many_rows": (
        "The file has more rows than the limit for one upload. Split it into several files and upload "
        "each one."
    ),
    "file_bomb": (
        "The workbook is packed in a way we refuse for safety (it expands far beyond its size, has too "
        "many parts, or contains XML entity definitions). Open it in your spreadsheet program and save "
        "it again as Excel Workbook (.xlsx), or save it as CSV UTF-8."
    ),
    "file_nul_byte": (
        "The file contains a NUL character, which a text file never has: it is probably not a CSV file. "
        'Save it from your spreadsheet program as "CSV UTF-8 (Comma delimited)".'
    ),
    # Columns and cells
    "column_unknown": (
        "This column is not part of this file's layout, or has no name. Check that you chose the right "
        "file, and remove or rename the column."
    ),
    "column_missing": "A required column is missing. Add it to the header row, using the name in the layout.",
    "column_duplicate": "This column appears more than once in the header row. Keep one of them.",
    "cell_not_text": f"This GUID is stored as a number, not as text. {_TEXT_COLUMN_HOWTO}",
    "cell_formula": (
        "This cell holds a formula with no stored result. Open the file in your spreadsheet program so "
        "that it calculates, then save it again, or paste the values only (Paste Special, Values)."
    ),
    "value_invalid": "This value is not one of the values allowed in this column.",
    "reference_unknown": (
        "This device model, firmware version or organisation is not known to the SMI. Check the spelling "
        "against the reference lists."
    ),
    # GUIDs
    "guid_format": (
        "This is not a GUID. Write 16 hexadecimal digits, such as 00-DB-12-34-56-78-9A-BC, "
        "00:DB:12:34:56:78:9A:BC or 00DB123456789ABC."
    ),
    "guid_duplicate": "This GUID appears more than once in the file (perhaps spelt differently). Keep one row.",
    "guid_not_eligible": "This Communications Hub is not eligible for this rollout.",
    "guid_not_yours": "This GUID is not one of your Communications Hubs. Check the GUID.",
    "guid_not_in_region": "This GUID is not a Communications Hub in your region. Check the GUID.",
    "guid_unknown": "This GUID is not in the SMI inventory. Check the GUID.",
    "hub_not_in_live_batch": "This Communications Hub is not in a live batch of this rollout.",
    "already_distributed": "The firmware has already been distributed to this Communications Hub.",
    # Rules
    "pilot_full": "The pilot group is full: remove hubs before adding others.",
    "batch_unknown": "This batch is not part of this rollout. Check the batch name.",
    "batch_window_inconsistent": "Every row of one batch must carry the same window. Make the windows of this batch equal.",
    "window_invalid": "The window is not valid: its end must come after its start.",
    "window_after_auto_deploy": "The window ends after the automatic deployment time. Choose an earlier window.",
    "deadline_passed": "The deadline for this has passed.",
    "time_ambiguous": (
        "This local time does not exist or happens twice at a clock change. Add an offset, such as "
        "2026-10-25T01:30+01:00."
    ),
    "time_in_past": "This time is in the past. Choose a later time.",
    "deploy_at_not_earlier": "The deployment time must be earlier than the automatic deployment time.",
    "rollout_on_hold": "The rollout is paused, suspended or held: nothing can change until it resumes.",
    "status_invalid": "The hub's current status does not allow this change.",
    "reason_missing": "A reason is required when the status is failed.",
    "version_missing": "A firmware version is required when the status is activated.",
    # Inventory (DCC/staff command line only)
    "too_many_removals": (
        "This full inventory load would mark more hubs as left the SMI than the limit allows. Check that "
        "the file is the whole inventory; if it is, load it again with --force or a higher --max-removals."
    ),
    # Processing
    "processing_failed": (
        "Processing this file failed repeatedly. The file changed nothing; please send it again."
    ),
}


@dataclass(frozen=True, slots=True)
class Failure:
    """One problem with an upload.

    ``row`` is the row number as a spreadsheet shows it (header = row 1, first data row = 2), or
    None for a problem with the whole file. ``value`` is the value as given in the file.
    """

    row: int | None
    column: str
    value: str
    code: str
    message: str


def failure(
    code: str, *, row: int | None = None, column: str = "", value: str = "", message: str | None = None
) -> Failure:
    """A Failure with the default message of its code (KeyError for a code FILE_FORMATS.md lacks)."""
    return Failure(row=row, column=column, value=value, code=code, message=message or CODES[code])


class RowsRejected(ValidationError):
    """An upload refused for the listed failures; its messages are the failure messages."""

    def __init__(self, failures: list[Failure]) -> None:
        if not failures:
            raise ValueError("RowsRejected needs at least one failure")
        self.failures = list(failures)
        super().__init__([ValidationError(f.message, code=f.code) for f in self.failures])

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (Celery results, caches)
        return (type(self), (self.failures,))


class FileRejected(RowsRejected):
    """A file refused as a whole: a single failure with row None."""

    def __init__(self, failure: Failure) -> None:
        super().__init__([failure])

    @property
    def failure(self) -> Failure:
        return self.failures[0]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures[0],))


def reject_file(code: str, *, value: str = "", message: str | None = None) -> FileRejected:
    """The FileRejected for ``code``, ready to raise."""
    return FileRejected(failure(code, value=value, message=message))
