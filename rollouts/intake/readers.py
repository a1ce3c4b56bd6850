"""Streaming readers for uploaded CSV and XLSX files (FILE_FORMATS.md "Reading rules").

``read_rows(fileobj, columns=...)`` returns a ``RowReader``: an iterator of
``(row_number, {column: text})`` that never holds the whole file (CSV is read line by line;
large XLSX files go through openpyxl's read-only mode).

Error contract:
- Problems with the file as a whole (type, encoding, size, bombs, empty) raise ``FileRejected``;
  header problems (unknown, empty, missing or duplicated columns) raise ``RowsRejected`` with
  every header failure. Both happen before the first row is yielded, except the ones that can
  only be met while reading: ``file_encoding`` and ``file_nul_byte`` past the first 64 KiB,
  ``file_too_many_rows`` and ``file_empty`` (a header and no rows) at the end.
- Cell problems do not stop the stream: each is appended to ``reader.failures`` and the row
  is still yielded, with ``None`` as the value of the failed cell. So the caller can COPY every
  row into a staging table, run its own checks on the other columns, and report every error of
  the file at once (all-or-nothing: any failure means nothing is applied). A ``None`` never
  stands for an empty cell (that is ``""``). ``reader.raise_for_failures()`` raises
  ``RowsRejected`` with them.

Values are text exactly as given (no stripping), except that one leading apostrophe is removed
when the next character is one our exports escape (FILE_FORMATS.md "Writing rules"). Every
declared column is a key of every row; a declared optional column absent from the header is
``""`` in every row. Typed spreadsheet cells become text: integers without ".0", dates and times
in ISO 8601 (a midnight date shown without a time is the date alone). In a GUID column any
non-text cell is ``cell_not_text``.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import posixpath
import re
import struct
import zipfile
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import unescape as xml_unescape

import defusedxml
import defusedxml.ElementTree as SafeET
import openpyxl
import python_calamine
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from openpyxl.styles.numbers import BUILTIN_FORMATS

from rollouts.intake.errors import Failure, RowsRejected, failure, reject_file

Kind = Literal["csv", "xlsx"]
Row = dict[str, str | None]  # None: the cell failed; its Failure is in RowReader.failures
Records = Generator[tuple[int, list[Any]], None, None]  # physical row number, raw cell values

SNIFF_BYTES = 64 * 1024
MAX_CSV_LINE = 1024 * 1024  # characters; a longer physical line is not a CSV we can read
MAX_KEPT_FAILURES = 100_000  # more are counted (failure_count) but not kept: memory stays bounded
RATIO_MIN_ENTRY = 1024 * 1024  # the ratio limit ignores entries smaller than this, uncompressed
PROLOG_BYTES = 64 * 1024  # an XML part's DOCTYPE must appear before its root element, within this
MAX_SMALL_PART = 16 * 1024 * 1024  # workbook.xml and its rels are parsed whole: they are small

ESCAPED_STARTS = frozenset("=+-@\t\r\x00")  # Writing rules: exports prefix these with "'"
_SAFE_XML_ERRORS = (defusedxml.DefusedXmlException,)  # DTDForbidden, EntitiesForbidden, ...

_MAGIC_TYPES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"%PDF-", "a PDF document"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"{\\rtf", "an RTF document"),
)
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


# --------------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------------


def sniff(fileobj: IO[bytes]) -> Kind:
    """Decide "csv" or "xlsx" from the content (never the name); raise FileRejected otherwise.

    Leaves the file positioned at its start.
    """
    fileobj.seek(0)
    head = fileobj.read(SNIFF_BYTES)
    fileobj.seek(0)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _sniff_zip(fileobj)
    if head.startswith(_OLE2):
        raise reject_file(
            "file_type",
            message=(
                "This is an old-style Excel file (.xls) or a password-protected workbook. Remove any "
                "password, then save it as Excel Workbook (.xlsx) or CSV UTF-8."
            ),
        )
    for magic, what in _MAGIC_TYPES:
        if head.startswith(magic):
            raise reject_file("file_type", message=f"This file is {what}, not a CSV or XLSX file.")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or _looks_utf16(head):
        raise reject_file(
            "file_encoding",
            message=(
                'The file is saved as UTF-16 ("Unicode text"). In your spreadsheet program choose Save '
                'As and the type "CSV UTF-8 (Comma delimited)", then upload that file.'
            ),
        )
    valid_utf8 = _valid_utf8_start(head, final=len(head) < SNIFF_BYTES)
    if b"\x00" in head:
        if not valid_utf8:  # NULs and invalid UTF-8: binary data, not text
            raise reject_file("file_type")
        raise reject_file("file_nul_byte")
    if not valid_utf8:
        raise reject_file("file_encoding")
    return "csv"


def _valid_utf8_start(data: bytes, *, final: bool) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError:
        return False
    return True


def _looks_utf16(head: bytes) -> bool:
    """UTF-16 without a byte-order mark: ASCII text with a NUL in every other byte."""
    sample = head[:4096]
    if len(sample) < 8:
        return False
    odd, even = sample[1::2].count(0), sample[0::2].count(0)
    return max(odd, even) >= len(sample) // 4 and min(odd, even) <= max(odd, even) // 10


def _sniff_zip(fileobj: IO[bytes]) -> Kind:
    _check_zip_entry_count(fileobj)  # before ZipFile reads the whole central directory
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        raise reject_file("file_type", message="This file is a damaged or unsupported zip archive.") from None
    try:
        names = set(zf.namelist())
        if "xl/workbook.xml" in names:
            if (
                "xl/vbaProject.bin" in names
                or b"macroenabled" in _read_head(zf, "[Content_Types].xml").lower()
            ):
                raise reject_file(
                    "file_type",
                    message=(
                        "This is a macro-enabled workbook (.xlsm). Save it as Excel Workbook (.xlsx) or "
                        "CSV UTF-8, without macros."
                    ),
                )
            return "xlsx"
        if "xl/workbook.bin" in names:
            what = "a binary Excel workbook (.xlsb)"
        elif "mimetype" in names and b"opendocument" in _read_head(zf, "mimetype"):
            what = "an OpenDocument file (.ods)"
        elif any(name.startswith("Index/") for name in names):
            what = "a Numbers file"
        else:
            what = "a zip archive"
        raise reject_file(
            "file_type",
            message=f"This file is {what}, not a CSV or XLSX file. Save it as Excel Workbook (.xlsx) or CSV UTF-8.",
        )
    finally:
        zf.close()
        fileobj.seek(0)


def _read_head(zf: zipfile.ZipFile, name: str, size: int = SNIFF_BYTES) -> bytes:
    try:
        with zf.open(name) as member:
            return member.read(size)
    except (KeyError, zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError):
        return b""


def _check_zip_entry_count(fileobj: IO[bytes]) -> None:
    """Refuse a zip with too many entries from its end record: zipfile would build them all."""
    end = fileobj.seek(0, io.SEEK_END)
    tail_start = max(0, end - (22 + 65535))
    fileobj.seek(tail_start)
    tail = fileobj.read()
    fileobj.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # zipfile will say it is not a zip
    entries, directory_size = struct.unpack_from("<HI", tail, at + 10)
    limit = settings.INTAKE_MAX_XLSX_ENTRIES
    if (entries == 0xFFFF and limit < 0xFFFF) or entries > limit or directory_size > limit * 4096:
        raise reject_file("file_bomb", value=f"{entries} entries")


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Flagged:
    """A spreadsheet cell found unusable by the sheet scan (a formula with no stored result)."""

    text: str
    message: str


class RowReader:
    """Iterator of ``(row_number, row)``; see the module docstring for the contract.

    Attributes: ``kind`` ("csv" or "xlsx"), ``columns`` (the declared columns present in the
    header, in file order), ``failures`` (cell failures so far, in row order, at most
    MAX_KEPT_FAILURES), ``failure_count`` (all of them), ``rows_read`` (data rows yielded).
    """

    def __init__(
        self,
        fileobj: IO[bytes],
        *,
        columns: Mapping[str, bool],
        guid_columns: Sequence[str] = ("guid",),
        max_bytes: int | None = None,
        max_rows: int | None = None,
    ) -> None:
        self.failures: list[Failure] = []
        self.failure_count = 0
        self.rows_read = 0
        self._declared = {name.strip().casefold(): name for name in columns}
        self._required = {name.strip().casefold() for name, required in columns.items() if required}
        self._guid = {name.strip().casefold() for name in guid_columns}
        self._template: Row = dict.fromkeys(columns, "")

        limit = settings.INTAKE_MAX_BYTES if max_bytes is None else max_bytes
        size = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(0)
        if size > limit:
            raise reject_file(
                "file_too_large",
                value=f"{size} bytes",
                message=f"The file is {_mib(size)}; one upload may be at most {_mib(limit)}. "
                "Split it into several files and upload each one.",
            )
        self.kind: Kind = sniff(fileobj)
        if self.kind == "csv":
            self._max_rows = settings.INTAKE_MAX_CSV_ROWS if max_rows is None else max_rows
            self._records = _csv_records(fileobj)
        else:
            self._max_rows = settings.INTAKE_MAX_XLSX_ROWS if max_rows is None else max_rows
            self._records = _xlsx_records(fileobj, size)
        try:
            self._by_index, self.columns = self._read_header()
        except BaseException:
            self.close()
            raise
        self._rows = self._generate()

    def __iter__(self) -> Iterator[tuple[int, Row]]:
        return self

    def __next__(self) -> tuple[int, Row]:
        return next(self._rows)

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file (detach the text wrapper, close the workbook); safe to call twice."""
        self._records.close()
        rows = getattr(self, "_rows", None)
        if rows is not None:
            rows.close()

    def raise_for_failures(self) -> None:
        """Raise RowsRejected with every cell failure, if there is any."""
        if self.failures:
            raise RowsRejected(self.failures)

    # ----------------------------------------------------------------------------------------

    def _read_header(self) -> tuple[dict[int, str], tuple[str, ...]]:
        for number, values in self._records:
            names = [_header_text(v) for v in values]
            if any(name.strip() for name in names):
                return self._match_header(number, names)
        raise reject_file("file_empty", message="The file is empty: it needs a header row and rows of data.")

    def _match_header(self, number: int, names: list[str]) -> tuple[dict[int, str], tuple[str, ...]]:
        while names and not names[-1].strip():
            names.pop()  # spreadsheets keep formatted empty cells after the last column
        first = next(i for i, name in enumerate(names) if name.strip())  # and a table may start at C1
        failures: list[Failure] = []
        by_index: dict[int, str] = {}
        seen: set[str] = set()
        for index, given in enumerate(names):
            key = given.strip().casefold()
            if not key and index < first:
                continue  # a value under it is reported per cell, as for trailing columns
            if not key:
                failures.append(
                    failure(
                        "column_unknown",
                        row=number,
                        column=column_letter(index),
                        value=given,
                        message=f"Column {column_letter(index)} has no name in the header row. Name it "
                        "or delete the column.",
                    )
                )
            elif key not in self._declared:
                hint = ""
                if ";" in given or "\t" in given:
                    hint = (
                        " The columns seem to be separated by semicolons or tabs: save the file as "
                        '"CSV UTF-8 (Comma delimited)".'
                    )
                expected = ", ".join(self._declared.values())
                failures.append(
                    failure(
                        "column_unknown",
                        row=number,
                        column=given.strip(),
                        value=given,
                        message=f"Column {given.strip()!r} is not part of this layout (columns: {expected}). "
                        f"Check that you chose the right file.{hint}",
                    )
                )
            elif key in seen:
                failures.append(
                    failure("column_duplicate", row=number, column=self._declared[key], value=given)
                )
            else:
                seen.add(key)
                by_index[index] = self._declared[key]
        for key in self._declared:
            if key in self._required and key not in seen:
                failures.append(
                    failure(
                        "column_missing",
                        row=number,
                        column=self._declared[key],
                        message=f"The required column {self._declared[key]!r} is missing from the header row.",
                    )
                )
        if failures:
            raise RowsRejected(failures)
        return by_index, tuple(by_index[i] for i in sorted(by_index))

    def _generate(self) -> Generator[tuple[int, Row], None, None]:
        try:
            yield from self._rows_of(self._records)
        finally:
            self._records.close()  # release the file however the stream ends

    def _rows_of(self, records: Iterator[tuple[int, list[Any]]]) -> Iterator[tuple[int, Row]]:
        by_index, guid, template = self._by_index, self._guid, self._template
        for number, values in records:
            row = template.copy()
            found: list[Failure] = []
            blank = True
            for index, raw in enumerate(values):
                if raw is None or raw == "":
                    continue
                name = by_index.get(index)
                if isinstance(raw, str):
                    if not raw.strip():  # whitespace only: no content, wherever it is
                        if name is not None:
                            row[name] = raw
                        continue
                    blank = False
                    text = unescape(raw)
                    if name is None:
                        found.append(_unnamed_column(number, index, text))
                    else:
                        row[name] = text
                    continue
                blank = False
                if isinstance(raw, _Flagged):
                    column = name or column_letter(index)
                    found.append(
                        failure(
                            "cell_formula", row=number, column=column, value=raw.text, message=raw.message
                        )
                    )
                    if name is not None:
                        row[name] = None
                    continue
                text = cell_text(raw)
                if name is None:
                    found.append(_unnamed_column(number, index, text))
                elif name.casefold() in guid:
                    found.append(failure("cell_not_text", row=number, column=name, value=text))
                    row[name] = None
                else:
                    row[name] = text
            if blank:
                continue
            if self.rows_read >= self._max_rows:
                raise reject_file(
                    "file_too_many_rows",
                    value=f"row {number}",
                    message=f"The file has more than {self._max_rows:,} rows of data, the limit for one "
                    "upload. Split it into several files and upload each one.",
                )
            self.rows_read += 1
            for item in found:
                self._add_failure(item)
            yield number, row
        if self.rows_read == 0:
            raise reject_file("file_empty", message="The file has a header row but no rows of data.")

    def _add_failure(self, item: Failure) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_KEPT_FAILURES:
            self.failures.append(item)


def read_rows(
    fileobj: IO[bytes],
    *,
    columns: Mapping[str, bool],
    guid_columns: Sequence[str] = ("guid",),
    max_bytes: int | None = None,
    max_rows: int | None = None,
) -> RowReader:
    """Stream the rows of an uploaded CSV or XLSX file (binary, seekable file object).

    ``columns`` maps each column name of the layout to whether it is required. ``max_bytes``
    and ``max_rows`` default to the INTAKE_* settings for the file's type.
    """
    return RowReader(
        fileobj, columns=columns, guid_columns=guid_columns, max_bytes=max_bytes, max_rows=max_rows
    )


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


def unescape(text: str) -> str:
    """Strip the apostrophe our exports put before = + - @ tab CR NUL (Writing rules)."""
    if len(text) > 1 and text[0] == "'" and text[1] in ESCAPED_STARTS:
        return text[1:]
    return text


def cell_text(value: object) -> str:
    """A typed spreadsheet value as text: integers without ".0", dates and times in ISO 8601."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime):
        return _round_ms(value).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return _round_ms(dt.datetime.combine(dt.date(2000, 1, 1), value)).time().isoformat()
    if isinstance(value, dt.timedelta):
        return _iso_duration(value)
    return str(value)


def column_letter(index: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA" (spreadsheet column names)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _column_index(letters: str) -> int:
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch) - 64)
    return index - 1


def _header_text(value: object) -> str:
    if value is None or isinstance(value, _Flagged):
        return ""
    return cell_text(value)


def _unnamed_column(number: int, index: int, text: str) -> Failure:
    return failure(
        "column_unknown",
        row=number,
        column=column_letter(index),
        value=text,
        message=f"This value is in column {column_letter(index)}, which has no name in the header row. "
        "Delete the value or check that you chose the right file.",
    )


def _round_ms(value: dt.datetime) -> dt.datetime:
    # Spreadsheets store times as fractions of a day: 09:30 may come back as 09:29:59.999999.
    micro = value.microsecond
    return value + dt.timedelta(microseconds=round(micro, -3) - micro)


def _iso_duration(value: dt.timedelta) -> str:
    seconds = round(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}PT{hours}H{minutes}M{secs}S"


def _mib(size: int) -> str:
    """A size as people read it: 100 MiB, 1.5 MiB, 4 KiB, 12 bytes."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def _csv_records(fileobj: IO[bytes]) -> Records:
    fileobj.seek(0)
    text = io.TextIOWrapper(fileobj, encoding="utf-8-sig", errors="strict", newline="")  # type: ignore[type-var]
    number = 0
    try:
        for number, record in enumerate(csv.reader(_checked_lines(text)), 1):  # noqa: B007
            yield number, record
    except UnicodeDecodeError:
        raise reject_file(
            "file_encoding",
            message=f"The file is not UTF-8 text (first problem near row {number + 1}). In your spreadsheet "
            'program choose Save As and the type "CSV UTF-8 (Comma delimited)", then upload that file.',
        ) from None
    except csv.Error as exc:
        raise reject_file(
            "file_type",
            message=f"Row {number + 1} cannot be read as CSV ({exc}). Save the file as CSV UTF-8.",
        ) from None
    finally:
        text.detach()  # the caller owns fileobj: do not let the wrapper close it


def _checked_lines(text: io.TextIOWrapper) -> Iterator[str]:
    while line := text.readline(MAX_CSV_LINE):
        if "\x00" in line:
            raise reject_file("file_nul_byte")
        if len(line) == MAX_CSV_LINE and not line.endswith(("\n", "\r")):
            raise reject_file(
                "file_type",
                message="The file has a line longer than 1 MiB: it is not a CSV file we can read.",
            )
        yield line


# --------------------------------------------------------------------------------------------
# Plain CSV: rows PostgreSQL may parse itself (COPY ... FORMAT csv)
# --------------------------------------------------------------------------------------------

PLAIN_CHUNK = 512 * 1024  # < MAX_CSV_LINE: a line longer than the limit always spans two chunks
_NOT_PLAIN_BYTES = (b'"', b"\\", b"\x00")
# `unescape` drops an apostrophe that starts a cell when one of ESCAPED_STARTS follows it; COPY would keep
# it. A file holding any such pair (anywhere: a superset of the cells concerned) goes to the reader; any
# other apostrophe ("didn't join") is plain text, read the same both ways.
_ESCAPE_PAIRS = tuple(b"'" + start.encode() for start in sorted(ESCAPED_STARTS))


class NotPlain(Exception):
    """This CSV file needs the Python reader: PostgreSQL might read it differently, or refuse it."""


@dataclass(frozen=True)
class PlainCsv:
    """The header of a CSV file whose rows PostgreSQL's COPY reads exactly as the reader would."""

    columns: tuple[str, ...]  # the layout's columns present, in file order (every header field is one)
    data_start: int  # byte offset of the first data row


def plain_csv(
    fileobj: IO[bytes],
    *,
    columns: Mapping[str, bool],
    guid_columns: Sequence[str] = ("guid",),
    max_bytes: int | None = None,
) -> PlainCsv | None:
    """The header of a CSV file that COPY (FORMAT csv) may read instead of the reader, else None.

    The file first passes the reader's own checks, with the same errors (size, type, encoding and NUL
    bytes of the first 64 KiB, every header problem). Only a CSV whose first line is the whole header,
    every field naming a column, with no quote, backslash, apostrophe or NUL, qualifies; its rows are
    checked as they stream (``plain_rows``), and anything else falls back to the reader.
    """
    with RowReader(fileobj, columns=columns, guid_columns=guid_columns, max_bytes=max_bytes) as reader:
        if reader.kind != "csv":
            return None
        present = reader.columns
    fileobj.seek(0)
    line = fileobj.readline(MAX_CSV_LINE)
    fileobj.seek(0)
    start = len(line)
    line = line.removeprefix(codecs.BOM_UTF8)
    if line.endswith(b"\r\n"):
        line = line[:-2]
    elif line.endswith(b"\n"):
        line = line[:-1]
    else:
        return None  # no data row, a bare CR line end, or an overlong line: the reader decides
    if b"\r" in line or b"'" in line or any(ch in line for ch in _NOT_PLAIN_BYTES):
        return None
    try:
        fields = line.decode("utf-8").split(",")
    except UnicodeDecodeError:
        return None
    declared = {name.strip().casefold(): name for name in columns}
    if tuple(declared.get(field.strip().casefold()) for field in fields) != present:
        return None  # an unnamed field, or the header is not on the first line
    return PlainCsv(columns=present, data_start=start)


def plain_rows(fileobj: IO[bytes], plain: PlainCsv) -> Iterator[bytes]:
    """The data rows of a plain CSV file as byte chunks for COPY; NotPlain as soon as one is not plain.

    Checked on the way, so that COPY reads what the reader would: valid UTF-8, no quote, backslash
    (COPY's end-of-data marker), apostrophe before an escaped start (`_ESCAPE_PAIRS`) or NUL, CR only in
    CRLF, no line over MAX_CSV_LINE. Line ends at the end of the file are dropped (blank rows, which
    the reader skips). COPY itself refuses ragged rows, blank lines and mixed line ends: the caller
    treats its error as NotPlain too.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    fileobj.seek(plain.data_start)
    carry = b""
    tail = b""  # the previous chunk's last byte when no line end followed it: a pair may span two chunks
    run = 0  # bytes of the current line so far
    while chunk := fileobj.read(PLAIN_CHUNK):
        buffer = carry + chunk
        body = buffer.rstrip(b"\r\n")
        carry = buffer[len(body) :]
        if not body:
            continue
        if any(ch in body for ch in _NOT_PLAIN_BYTES):
            raise NotPlain("quote, backslash or NUL")
        # Only a chunk with an apostrophe is searched for the pairs (each search copies the chunk).
        if b"'" in body or tail == b"'":
            joined = tail + body
            if any(pair in joined for pair in _ESCAPE_PAIRS):
                raise NotPlain("an apostrophe that the reader removes")
        tail = b"" if carry else body[-1:]
        if b"\r" in body and body.count(b"\r") != body.count(b"\r\n"):
            raise NotPlain("a CR that does not end a CRLF line")
        try:
            decoder.decode(body)
        except UnicodeDecodeError:
            raise NotPlain("not UTF-8") from None
        first = body.find(b"\n")  # lines inside one chunk are shorter than the limit (PLAIN_CHUNK)
        if first < 0:
            run += len(body)
        elif run + first < MAX_CSV_LINE - 1:
            run = len(body) - body.rfind(b"\n") - 1
        else:
            run = MAX_CSV_LINE
        if run >= MAX_CSV_LINE - 1:  # bytes >= characters: a conservative test of the reader's limit
            raise NotPlain("a line over the limit")
        yield body
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise NotPlain("not UTF-8 at the end") from None


# --------------------------------------------------------------------------------------------
# XLSX (figures for calamine and openpyxl in _xlsx_records)
# --------------------------------------------------------------------------------------------

_REL_NS_SUFFIX = "relationships"
_COMMENTS_AND_PIS = re.compile(rb"<!--.*?-->|<\?.*?\?>", re.DOTALL)
_START_TAG = re.compile(rb"<[A-Za-z_]")
_REF = re.compile(r"([A-Z]{1,3})([0-9]+)")
_NOT_A_FORMAT_TOKEN = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]')


@dataclass
class _Sheet:
    name: str
    path: str
    styles_path: str | None
    flags: dict[int, dict[int, _Flagged]] = field(default_factory=dict)  # row -> column index -> flag


def _xlsx_records(fileobj: IO[bytes], size: int) -> Records:
    """Check the package, then read the first worksheet with calamine (small) or openpyxl.

    Measured here (2 cores), read_rows over 50,000 rows x 4 columns (batch, guid, window_start,
    window_end), whole call including the package checks; RSS = process peak, 42 MB before:
      text cells, shared strings (1.0 MB file):  calamine 0.25 s, 62 MB;  openpyxl 1.56 s, 52 MB
      text cells, inline strings (0.8 MB file):  calamine 0.29 s, 65 MB;  openpyxl 2.40 s, 50 MB
      2 datetime columns, midnights shown with a time (0.8 MB): calamine 0.74 s (0.45 s of it the
      time-cell scan), 76 MB;  openpyxl 2.5 s, 50 MB
    The libraries alone: calamine 0.16 s, openpyxl read-only 2.1 s. calamine holds the whole sheet
    in memory, hence the INTAKE_CALAMINE_MAX_BYTES switch; openpyxl streams it.
    """
    sheet = _inspect_xlsx(fileobj)
    fileobj.seek(0)
    if size <= settings.INTAKE_CALAMINE_MAX_BYTES:
        return _calamine_records(fileobj, sheet)
    return _openpyxl_records(fileobj, sheet)


def _inspect_xlsx(fileobj: IO[bytes]) -> _Sheet:
    """Every check that needs no parsing of the sheet: zip directory, XML prologs, first sheet."""
    fileobj.seek(0)
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        raise reject_file("file_type", message="This workbook is damaged: it cannot be opened.") from None
    try:
        infos = zf.infolist()
        _check_zip_directory(infos)
        for info in infos:
            if info.filename.endswith((".xml", ".rels")):
                _check_prolog(zf, info)
        sheet = _first_worksheet(zf)
        try:
            sheet_info = zf.getinfo(sheet.path)
        except KeyError:
            raise reject_file(
                "file_type", message="This workbook is damaged: its first sheet is missing."
            ) from None
        if sheet_info.file_size > settings.INTAKE_MAX_XLSX_SHEET:
            raise reject_file(
                "file_bomb",
                value=f"{sheet_info.file_size} bytes",
                message=f"The first worksheet unpacks to {_mib(sheet_info.file_size)}, more than the "
                f"{_mib(settings.INTAKE_MAX_XLSX_SHEET)} one upload may hold. Split it into several files.",
            )
        sheet.flags = scan_formulas(zf, sheet.path)
        return sheet
    except _SAFE_XML_ERRORS:
        raise reject_file("file_bomb") from None
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError, ParseError):
        # damaged compressed data, unsupported compression, encryption, malformed XML
        raise reject_file("file_type", message="This workbook is damaged: it cannot be read.") from None
    finally:
        zf.close()
        fileobj.seek(0)


def _check_zip_directory(infos: list[zipfile.ZipInfo]) -> None:
    """Zip-bomb checks on the directory alone (0.1 ms; TOOLCHAIN.md "Traps")."""
    if len(infos) > settings.INTAKE_MAX_XLSX_ENTRIES:
        raise reject_file("file_bomb", value=f"{len(infos)} entries")
    total = sum(info.file_size for info in infos)
    if total > settings.INTAKE_MAX_XLSX_UNPACKED:
        raise reject_file(
            "file_bomb",
            value=f"{total} bytes",
            message=f"The workbook unpacks to {_mib(total)}, more than the "
            f"{_mib(settings.INTAKE_MAX_XLSX_UNPACKED)} one upload may hold. Split it into several files.",
        )
    for info in infos:
        if info.flag_bits & 0x1:
            raise reject_file(
                "file_type", message="This workbook is encrypted. Remove the password and save it again."
            )
        if info.file_size >= RATIO_MIN_ENTRY and info.file_size > settings.INTAKE_MAX_XLSX_RATIO * max(
            info.compress_size, 1
        ):
            raise reject_file(
                "file_bomb", value=f"{info.filename}: {info.file_size} / {info.compress_size} bytes"
            )


def _check_prolog(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse a DOCTYPE (entity definitions, XML bombs) before calamine, which is not defused, sees it."""
    with zf.open(info) as member:
        head = member.read(PROLOG_BYTES)
    if not head:
        return
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise reject_file("file_bomb", value=info.filename)  # UTF-16 XML: our byte checks cannot see a DTD
    if b"<!DOCTYPE" in head.upper() or b"<!ENTITY" in head.upper():
        raise reject_file("file_bomb", value=info.filename)
    body = _COMMENTS_AND_PIS.sub(b"", head)
    start = _START_TAG.search(body)
    if start is None:
        if len(head) == PROLOG_BYTES:
            raise reject_file("file_bomb", value=info.filename)  # no root element within 64 KiB
        return
    if b"<!" in body[: start.start()]:
        raise reject_file("file_bomb", value=info.filename)


def _first_worksheet(zf: zipfile.ZipFile) -> _Sheet:
    """The first worksheet in workbook order (what a user sees as the first tab), and styles."""
    workbook = _parse_small(zf, "xl/workbook.xml")
    rels = _relationships(zf, "xl/_rels/workbook.xml.rels", base="xl")
    styles_path = next((target for kind, target in rels.values() if kind.endswith("/styles")), None)
    for element in workbook.iter():
        if _local(element.tag) != "sheet":
            continue
        rid = next((v for k, v in element.attrib.items() if _local(k) == "id" and _REL_NS_SUFFIX in k), None)
        kind, target = rels.get(rid or "", ("", ""))
        if kind.endswith("/worksheet"):
            return _Sheet(name=element.get("name", ""), path=target, styles_path=styles_path)
    raise reject_file("file_type", message="This workbook has no worksheet.")


def _parse_small(zf: zipfile.ZipFile, name: str) -> Any:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise reject_file("file_type", message=f"This workbook is damaged: {name} is missing.") from None
    if info.file_size > MAX_SMALL_PART:
        raise reject_file("file_bomb", value=f"{name}: {info.file_size} bytes")
    try:
        return SafeET.fromstring(zf.read(info), forbid_dtd=True)
    except _SAFE_XML_ERRORS:
        raise reject_file("file_bomb", value=name) from None


def _relationships(zf: zipfile.ZipFile, name: str, *, base: str) -> dict[str, tuple[str, str]]:
    rels: dict[str, tuple[str, str]] = {}
    for element in _parse_small(zf, name).iter():
        if _local(element.tag) == "Relationship":
            target = element.get("Target", "")
            path = (
                target.lstrip("/")
                if target.startswith("/")
                else posixpath.normpath(posixpath.join(base, target))
            )
            rels[element.get("Id", "")] = (element.get("Type", ""), path)
    return rels


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


# Fast scans of the sheet XML with regular expressions, which skip in C over the cells that do
# not matter; _scan_cells (a defused XML parse, 4x slower) is the fallback when a matched cell has
# no r="A1" reference, and the oracle the tests compare these scans with.
_P = rb"(?:[\w.-]+:)?"  # an optional namespace prefix
_FORMULA_CELL = re.compile(
    rb"<" + _P + rb"c(\s[^>]*?)?(?<!/)>\s*<" + _P + rb"f(?:\s[^>]*?)?(?:/>|>([^<]*)</" + _P + rb"f>)"
    rb"(.*?)</" + _P + rb"c>",
    re.DOTALL,
)
_ERROR_CELL = re.compile(
    rb"<" + _P + rb"c(\s[^>]*?\st=[\"']e[\"'][^>]*?)(?<!/)>(.*?)</" + _P + rb"c>", re.DOTALL
)
_ATTR_R = re.compile(rb"(?<![\w:.-])r=[\"']([A-Z]{1,3})([0-9]+)[\"']")
_ATTR_T = re.compile(rb"(?<![\w:.-])t=[\"'](\w+)[\"']")
_V = re.compile(rb"<" + _P + rb"v(?:\s[^>]*)?(?:/>|>([^<]*)</)")
_INLINE = re.compile(rb"<" + _P + rb"is[\s>]")
_XML_ENTITIES = {"&quot;": '"', "&apos;": "'"}
_SCAN_CHUNK = 1024 * 1024


def scan_formulas(zf: zipfile.ZipFile, path: str) -> dict[int, dict[int, _Flagged]]:
    """Formula cells with no stored result, and error results: {row: {column index: flag}}."""
    found: dict[int, dict[int, _Flagged]] = {}
    for piece in _sheet_pieces(zf, path):
        # memchr-fast hints first: most sheets have neither, and the expressions cost ~15 ms/MB
        has_formula = b"<f" in piece or b":f" in piece
        has_error = b't="e"' in piece or b"t='e'" in piece
        for match in _FORMULA_CELL.finditer(piece) if has_formula else ():
            attrs, formula, rest = match.group(1) or b"", match.group(2), match.group(3)
            ref = _ATTR_R.search(attrs)
            if ref is None:
                return _scan_cells(zf, path)
            kind = _attr_t(attrs)
            value = _V.search(rest)
            has_value = _INLINE.search(rest) is not None or (
                value is not None and (bool(value.group(1)) or kind == "str")
            )
            if kind != "e" and not has_value:
                text = f"={_xml_text(formula)}" if formula else ""
                found.setdefault(int(ref.group(2)), {})[_column_index(ref.group(1).decode())] = _Flagged(
                    text[:200], ""
                )
        for match in _ERROR_CELL.finditer(piece) if has_error else ():
            ref = _ATTR_R.search(match.group(1))
            if ref is None:
                return _scan_cells(zf, path)
            value = _V.search(match.group(2))
            shown = _xml_text(value.group(1)) if value is not None and value.group(1) else ""
            found.setdefault(int(ref.group(2)), {})[_column_index(ref.group(1).decode())] = _error_flag(shown)
    return found


def scan_time_cells(zf: zipfile.ZipFile, path: str, time_styles: frozenset[int]) -> dict[int, dict[int, Any]]:
    """Whole-day numeric cells whose style shows a time: {row: {column index: _TIME_SHOWN}}."""
    if not time_styles:
        return {}
    styles = b"|".join(str(i).encode() for i in sorted(time_styles))
    cell = re.compile(
        rb"<" + _P + rb"c(\s[^>]*?\ss=[\"'](?:" + styles + rb")[\"'][^>]*?)(?<!/)>\s*"
        rb"(?:<" + _P + rb"f(?:\s[^>]*?)?(?:/>|>[^<]*</" + _P + rb"f>)\s*)?"
        rb"<" + _P + rb"v>([^<]*)</"
    )
    found: dict[int, dict[int, Any]] = {}
    for piece in _sheet_pieces(zf, path):
        for match in cell.finditer(piece):
            attrs = match.group(1)
            ref = _ATTR_R.search(attrs)
            if ref is None:
                return _scan_cells(zf, path, time_styles=time_styles)
            if _attr_t(attrs) == "n" and _whole_number(match.group(2)):
                found.setdefault(int(ref.group(2)), {})[_column_index(ref.group(1).decode())] = _TIME_SHOWN
    return found


def _sheet_pieces(zf: zipfile.ZipFile, path: str) -> Iterator[bytes]:
    """The sheet XML in pieces that end at the end of a row, so that no cell is cut in two."""
    carry = b""
    with zf.open(path) as member:
        while chunk := member.read(_SCAN_CHUNK):
            buffer = carry + chunk
            cut = buffer.rfind(b"row>")
            if cut < 0 and len(buffer) < 16 * _SCAN_CHUNK:
                carry = buffer
                continue
            cut = len(buffer) if cut < 0 else cut + 4
            yield buffer[:cut]
            carry = buffer[cut:]
    if carry:
        yield carry


def _attr_t(attrs: bytes) -> str:
    kind = _ATTR_T.search(attrs)
    return kind.group(1).decode() if kind else "n"


def _xml_text(raw: bytes) -> str:
    return xml_unescape(raw.decode("utf-8", "replace"), _XML_ENTITIES)


def _whole_number(raw: bytes | str) -> bool:
    try:
        return float(raw).is_integer()
    except ValueError:
        return False


def _error_flag(shown: str) -> _Flagged:
    shown = shown or "#ERROR"
    return _Flagged(
        shown,
        f"This cell holds an error ({shown}), not a value. Correct the formula, or replace it with the value.",
    )


def _scan_cells(
    zf: zipfile.ZipFile, path: str, *, time_styles: frozenset[int] = frozenset()
) -> dict[int, dict[int, Any]]:
    """Find the cells neither reader reports reliably, streaming the sheet XML (defused).

    Without ``time_styles``: formula cells with no stored result (openpyxl's data_only gives
    None and calamine "", the same as an empty cell) and error results (#N/A: calamine drops
    them). With ``time_styles``: whole-day date cells whose number format shows a time
    (calamine returns them as a date, which for a window_end would mean the end of the day).
    """
    found: dict[int, dict[int, Any]] = {}
    row_number, col = 0, -1
    container = None
    with zf.open(path) as member:
        for event, element in SafeET.iterparse(member, events=("start", "end"), forbid_dtd=True):
            tag = _local(element.tag)
            if event == "start":
                if tag == "sheetData":
                    container = element
                elif tag == "row":
                    r = element.get("r")
                    row_number = int(r) if r and r.isdigit() else row_number + 1
                    col = -1
                continue
            if tag == "c":
                ref = _REF.fullmatch(element.get("r") or "")
                if ref:
                    col, row_number = _column_index(ref.group(1)), int(ref.group(2))
                else:
                    col += 1
                flag = _time_flag(element, time_styles) if time_styles else _formula_flag(element)
                if flag is not None:
                    found.setdefault(row_number, {})[col] = flag
                element.clear()
            elif tag == "row" and container is not None:
                container.clear()  # keep memory flat: drop the rows already seen
    return found


def _formula_flag(cell: Any) -> _Flagged | None:
    kind = cell.get("t", "n")
    formula = value = inline = None
    for child in cell:
        local = _local(child.tag)
        if local == "f":
            formula = child
        elif local == "v":
            value = child
        elif local == "is":
            inline = child
    if kind == "e":
        return _error_flag(value.text if value is not None and value.text else "")
    if formula is None:
        return None
    has_value = inline is not None or (value is not None and (bool(value.text) or kind == "str"))
    if has_value:
        return None
    text = f"={formula.text}" if formula.text else ""
    return _Flagged(text[:200], "")


def _time_flag(cell: Any, time_styles: frozenset[int]) -> Any:
    style = cell.get("s")
    if not style or not style.isdigit() or int(style) not in time_styles or cell.get("t", "n") != "n":
        return None
    for child in cell:
        if _local(child.tag) == "v" and child.text:
            return _TIME_SHOWN if _whole_number(child.text) else None
    return None


_TIME_SHOWN = object()  # marker from _scan_cells(time_styles=...)


def _shows_time(number_format: str) -> bool:
    """Whether an Excel number format displays a time of day (hours or seconds)."""
    tokens = _NOT_A_FORMAT_TOKEN.sub("", number_format or "")
    return any(ch in tokens for ch in "hHsS")


def _time_styles(zf: zipfile.ZipFile, styles_path: str | None) -> frozenset[int]:
    """Indexes of cell styles (cellXfs) whose number format shows a time."""
    if not styles_path:
        return frozenset()
    custom: dict[int, str] = {}
    xf_formats: list[int] = []
    in_cell_xfs = False
    try:
        with zf.open(styles_path) as member:
            for event, element in SafeET.iterparse(member, events=("start", "end"), forbid_dtd=True):
                tag = _local(element.tag)
                if tag == "cellXfs":
                    in_cell_xfs = event == "start"
                elif event == "end" and tag == "numFmt":
                    custom[int(element.get("numFmtId", "0"))] = element.get("formatCode", "")
                elif event == "end" and tag == "xf" and in_cell_xfs:
                    xf_formats.append(int(element.get("numFmtId", "0")))
    except (KeyError, ValueError, ParseError):
        return frozenset()
    return frozenset(
        index
        for index, format_id in enumerate(xf_formats)
        if _shows_time(custom.get(format_id) or BUILTIN_FORMATS.get(format_id, ""))
    )


def _with_flags(values: list[Any], flags: dict[int, _Flagged] | None) -> list[Any]:
    if flags:
        needed = max(flags) + 1 - len(values)
        if needed > 0:
            values = values + [None] * needed
        for col, flag in flags.items():
            values[col] = flag
    return values


def _calamine_records(fileobj: IO[bytes], sheet: _Sheet) -> Records:
    try:
        workbook = python_calamine.CalamineWorkbook.from_filelike(fileobj)
        data = workbook.get_sheet_by_name(sheet.name)
    except python_calamine.CalamineError:
        raise reject_file(
            "file_type", message="This workbook cannot be read. Save it again as .xlsx."
        ) from None
    return _calamine_rows(fileobj, workbook, data, sheet)


def _calamine_rows(fileobj: IO[bytes], workbook: Any, data: Any, sheet: _Sheet) -> Records:
    # iter_rows starts at row 1 but at the first used column: put the columns back in place.
    start = data.start
    pad = [""] * start[1] if start and start[1] else None
    time_shown: dict[int, dict[int, Any]] | None = None  # computed at the first whole-day date
    number = 0
    try:
        for number, values in enumerate(data.iter_rows(), 1):  # noqa: B007
            if pad:
                values = pad + values
            for index, value in enumerate(values):
                if type(value) is dt.date:
                    if time_shown is None:
                        time_shown = _calamine_time_cells(fileobj, sheet)
                    if index in time_shown.get(number, ()):
                        values[index] = dt.datetime.combine(value, dt.time())
            yield number, _with_flags(values, sheet.flags.get(number))
        for later in sorted(r for r in sheet.flags if r > number):  # flagged cells past the data
            yield later, _with_flags([], sheet.flags[later])
    except python_calamine.CalamineError:
        raise reject_file(
            "file_type", message="This workbook cannot be read. Save it again as .xlsx."
        ) from None
    finally:
        workbook.close()


def _calamine_time_cells(fileobj: IO[bytes], sheet: _Sheet) -> dict[int, dict[int, Any]]:
    position = fileobj.tell()
    fileobj.seek(0)
    try:
        with zipfile.ZipFile(fileobj) as zf:
            styles = _time_styles(zf, sheet.styles_path)
            return scan_time_cells(zf, sheet.path, styles)
    finally:
        fileobj.seek(position)


def _openpyxl_records(fileobj: IO[bytes], sheet: _Sheet) -> Records:
    if not openpyxl.DEFUSEDXML:  # openpyxl decides at import; it needs defusedxml against XML bombs
        raise ImproperlyConfigured("defusedxml must be installed (and OPENPYXL_DEFUSEDXML not False)")
    try:
        workbook = openpyxl.load_workbook(fileobj, read_only=True, data_only=True, keep_links=False)
    except Exception as exc:  # openpyxl raises many types, and wraps defusedxml's in ValueError
        if _caused_by_defusedxml(exc):
            raise reject_file("file_bomb") from None
        raise reject_file(
            "file_type", message="This workbook cannot be read. Save it again as .xlsx."
        ) from None
    return _openpyxl_rows(workbook, sheet)


def _caused_by_defusedxml(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, _SAFE_XML_ERRORS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _openpyxl_rows(workbook: Any, sheet: _Sheet) -> Records:
    number = 0
    try:
        worksheet = workbook[sheet.name]
        worksheet.reset_dimensions()  # else a wrong <dimension> silently cuts rows off
        for number, cells in enumerate(worksheet.iter_rows(min_row=1), 1):  # noqa: B007
            values = [_openpyxl_value(cell) for cell in cells]
            yield number, _with_flags(values, sheet.flags.get(number))
        for later in sorted(r for r in sheet.flags if r > number):
            yield later, _with_flags([], sheet.flags[later])
    except (ParseError, KeyError, ValueError, TypeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        if _caused_by_defusedxml(exc):  # DefusedXmlException is a ValueError
            raise reject_file("file_bomb") from None
        raise reject_file(
            "file_type", message="This workbook cannot be read. Save it again as .xlsx."
        ) from None
    finally:
        workbook.close()


def _openpyxl_value(cell: Any) -> Any:
    value = cell.value
    if (
        type(value) is dt.datetime
        and value.time() == dt.time()
        and not _shows_time(getattr(cell, "number_format", "") or "")
    ):
        return value.date()  # as calamine does: a whole-day date shown without a time
    return value
