"""Reading rules of FILE_FORMATS.md, for CSV and XLSX (both XLSX readers)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import pickle
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import xlsxwriter
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile

from rollouts.intake import readers
from rollouts.intake.errors import CODES, FileRejected, RowsRejected, failure
from rollouts.intake.readers import cell_text, column_letter, read_rows, sniff

ROOT = Path(__file__).resolve().parents[2]
PILOT_LIST = {"guid": True, "action": False}
SCHEDULE = {"batch": True, "guid": True, "window_start": True, "window_end": True}
A, B, C = "00DB123456789ABC", "00DB123456789ABD", "00DB123456789ABE"


def load_corpus_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hostile_corpus", ROOT / "scripts" / "hostile_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = load_corpus_module()


# --- helpers --------------------------------------------------------------------------------


def rows_of(data: bytes, columns: dict[str, bool] = PILOT_LIST, **kwargs: Any) -> list[tuple[int, dict]]:
    with read_rows(io.BytesIO(data), columns=columns, **kwargs) as reader:
        return list(reader)


def codes_of(data: bytes, columns: dict[str, bool] = PILOT_LIST, **kwargs: Any) -> list[str]:
    with pytest.raises(RowsRejected) as raised:
        rows_of(data, columns, **kwargs)
    return [f.code for f in raised.value.failures]


def xlsx(rows: list[list[Any]], *, formats: dict[int, str] | None = None, sheets: int = 1) -> bytes:
    """A workbook written with xlsxwriter; formats maps a column index to a number format."""
    out = io.BytesIO()
    workbook = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = workbook.add_worksheet("First")
    cell_formats = {col: workbook.add_format({"num_format": fmt}) for col, fmt in (formats or {}).items()}
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            fmt = cell_formats.get(c)
            if value is None:
                continue
            if isinstance(value, dt.datetime | dt.date | dt.time):
                sheet.write_datetime(r, c, value, fmt)
            elif isinstance(value, bool):
                sheet.write_boolean(r, c, value)
            elif isinstance(value, int | float):
                sheet.write_number(r, c, value, fmt)
            else:
                sheet.write_string(r, c, value)
    for n in range(1, sheets):
        workbook.add_worksheet(f"Other{n}").write_string(0, 0, "not read")
    workbook.close()
    return out.getvalue()


def hand_xlsx(sheet: str, **parts: str | bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in {**corpus._package_parts(), "xl/worksheets/sheet1.xml": sheet, **parts}.items():
            zf.writestr(name, data)
    return out.getvalue()


@pytest.fixture(params=["calamine", "openpyxl"])
def xlsx_reader(request: pytest.FixtureRequest, settings: Any) -> str:
    """Run an XLSX test through both readers: calamine for small files, openpyxl above."""
    settings.INTAKE_CALAMINE_MAX_BYTES = 10**9 if request.param == "calamine" else 0
    return str(request.param)


@pytest.fixture(params=["csv", "xlsx"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def encode(rows: list[list[str]], fmt: str) -> bytes:
    if fmt == "csv":
        return corpus._csv(rows).encode()
    return xlsx([list(r) for r in rows])


# --- sniffing -------------------------------------------------------------------------------


def test_the_type_is_decided_by_content_not_name() -> None:
    assert sniff(io.BytesIO(b"guid\n" + A.encode())) == "csv"
    assert sniff(io.BytesIO(xlsx([["guid"], [A]]))) == "xlsx"
    upload = SimpleUploadedFile("list.csv", xlsx([["guid"], [A]]))
    assert sniff(upload) == "xlsx"
    assert upload.tell() == 0


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "file_type"),  # .xls or encrypted
        (b"\x89PNG\r\n\x1a\n\x00\x00", "file_type"),
        (b"%PDF-1.4\n", "file_type"),
        (b"\xff\xfeg\x00u\x00", "file_encoding"),
        (b"\xfe\xff\x00g\x00u", "file_encoding"),
        ("guid\n00DB123456789ABC\n".encode("utf-16-le"), "file_encoding"),
        (b"guid\nabc\x00\n", "file_nul_byte"),
        (b"guid\n\xe9t\xe9\n", "file_encoding"),
        (b"\x00\x01\x02\xff\xfe\x80binary", "file_type"),
    ],
)
def test_sniff_refuses_what_is_not_csv_or_xlsx(data: bytes, code: str) -> None:
    with pytest.raises(FileRejected) as raised:
        sniff(io.BytesIO(data))
    assert raised.value.failure.code == code
    assert raised.value.failure.row is None


def test_a_utf8_character_cut_by_the_sniff_window_is_not_an_encoding_error() -> None:
    data = b"guid,action\n" + b"x" * (readers.SNIFF_BYTES - 13) + "é".encode() + b"\n"
    assert data[: readers.SNIFF_BYTES].endswith(b"\xc3")
    assert sniff(io.BytesIO(data)) == "csv"


def test_sniff_refuses_macro_workbooks_and_other_zips(tmp_path: Path) -> None:
    files = {name: path for name, path in corpus.build_corpus(tmp_path).items() if name.endswith(".xlsx")}
    for name in ("xlsm_renamed.xlsx", "ods_renamed.xlsx", "plain_zip.xlsx"):
        with pytest.raises(FileRejected) as raised:
            sniff(io.BytesIO(files[name].read_bytes()))
        assert raised.value.failure.code == "file_type", name


# --- header ---------------------------------------------------------------------------------


def test_headers_match_case_insensitively_ignoring_surrounding_spaces(fmt: str) -> None:
    rows = rows_of(encode([[" GUID ", "Action  "], [A, "add"]], fmt))
    assert rows == [(2, {"guid": A, "action": "add"})]


def test_columns_may_come_in_any_order_and_optional_ones_may_be_missing(fmt: str) -> None:
    data = encode([["window_end", "guid", "batch", "window_start"], ["e", A, "b1", "s"]], fmt)
    with read_rows(io.BytesIO(data), columns=SCHEDULE) as reader:
        assert reader.columns == ("window_end", "guid", "batch", "window_start")
        assert list(reader) == [(2, {"batch": "b1", "guid": A, "window_start": "s", "window_end": "e"})]
    assert rows_of(encode([["guid"], [A]], fmt)) == [(2, {"guid": A, "action": ""})]


def test_every_header_problem_is_reported_at_once_before_any_row(fmt: str) -> None:
    data = encode([["colour", "", "action", "ACTION", "size"], ["red", "x", "add", "add", "1"]], fmt)
    with pytest.raises(RowsRejected) as raised:
        read_rows(io.BytesIO(data), columns=PILOT_LIST)  # raised by the call, not by iterating
    found = [(f.row, f.column, f.value, f.code) for f in raised.value.failures]
    assert found == [
        (1, "colour", "colour", "column_unknown"),
        (1, "B", "", "column_unknown"),
        (1, "action", "ACTION", "column_duplicate"),
        (1, "size", "size", "column_unknown"),
        (1, "guid", "", "column_missing"),
    ]
    assert not isinstance(raised.value, FileRejected)


def test_leading_and_trailing_unnamed_header_cells_are_ignored(fmt: str) -> None:
    # Spreadsheets keep formatted empty cells after the last column; a CSV shows them as ",,".
    assert rows_of(encode([["", "guid", "action", "", ""], ["", A, "add", "", ""]], fmt)) == [
        (2, {"guid": A, "action": "add"})
    ]


def test_a_value_under_no_header_is_a_cell_failure(fmt: str) -> None:
    with read_rows(
        io.BytesIO(encode([["guid", "action"], [A, "add", "stray"], [B, "add"]], fmt)), columns=PILOT_LIST
    ) as r:
        rows = list(r)
    assert [n for n, _ in rows] == [2, 3]
    assert [(f.row, f.column, f.value, f.code) for f in r.failures] == [(2, "C", "stray", "column_unknown")]


def test_semicolon_separated_files_get_a_hint() -> None:
    with pytest.raises(RowsRejected) as raised:
        rows_of(b"guid;action\n00DB123456789ABC;add\n")
    assert "semicolons" in raised.value.failures[0].message


@pytest.mark.parametrize(
    "data",
    [b"", b"\n\n\r\n", b",,\n , \n", b"guid,action\n", b"guid,action\n\n,\n  ,  \n", b"\xef\xbb\xbf"],
)
def test_no_header_or_no_rows_is_file_empty(data: bytes) -> None:
    assert codes_of(data) == ["file_empty"]


def test_an_xlsx_with_a_header_only_is_file_empty(xlsx_reader: str) -> None:
    assert codes_of(xlsx([["guid", "action"]])) == ["file_empty"]
    assert codes_of(xlsx([])) == ["file_empty"]


# --- rows -----------------------------------------------------------------------------------


def test_row_numbers_are_what_a_spreadsheet_shows_and_blank_rows_are_skipped(fmt: str) -> None:
    data = encode([["guid", "action"], [A, "add"], ["", ""], [" ", ""], [B, ""], [], [C, "remove"]], fmt)
    assert rows_of(data) == [
        (2, {"guid": A, "action": "add"}),
        (5, {"guid": B, "action": ""}),
        (7, {"guid": C, "action": "remove"}),
    ]


def test_blank_rows_before_the_header_keep_the_numbering(fmt: str) -> None:
    data = encode([[], ["", ""], ["guid", "action"], [A, "add"]], fmt)
    assert rows_of(data) == [(4, {"guid": A, "action": "add"})]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_any_line_ending(newline: str) -> None:
    data = f"guid,action{newline}{A},add{newline}{B},{newline}".encode()
    assert rows_of(data) == [(2, {"guid": A, "action": "add"}), (3, {"guid": B, "action": ""})]


def test_a_missing_final_line_ending_is_fine() -> None:
    assert rows_of(f"guid\n{A}".encode()) == [(2, {"guid": A, "action": ""})]


def test_the_utf8_byte_order_mark_is_not_part_of_the_first_header() -> None:
    assert rows_of(b"\xef\xbb\xbfguid,action\r\n" + A.encode() + b",add\r\n") == [
        (2, {"guid": A, "action": "add"})
    ]


def test_quoted_fields_and_rows_count_records_not_lines() -> None:
    data = (
        f'"guid","action"\r\n"{A}","a, b"\r\n"{B}","say ""hi""\r\nover two lines"\r\n{C},add\r\n'
    ).encode()
    assert rows_of(data) == [
        (2, {"guid": A, "action": "a, b"}),
        (3, {"guid": B, "action": 'say "hi"\r\nover two lines'}),
        (4, {"guid": C, "action": "add"}),
    ]


def test_values_are_kept_as_given(fmt: str) -> None:
    rows = rows_of(encode([["guid", "action"], [f"  {A} ", " Add "]], fmt))
    assert rows == [(2, {"guid": f"  {A} ", "action": " Add "})]


@pytest.mark.parametrize("escaped", ["=", "+", "-", "@", "\t", "\r", "\x00"])
def test_one_leading_apostrophe_is_stripped_before_a_formula_character(escaped: str) -> None:
    assert readers.unescape(f"'{escaped}SUM(A1)") == f"{escaped}SUM(A1)"
    assert readers.unescape(f"''{escaped}x") == f"''{escaped}x"  # only the one export added


@pytest.mark.parametrize("text", ["'", "'plain", "'1", "' =x", "'''", "it's"])
def test_other_apostrophes_are_kept(text: str) -> None:
    assert readers.unescape(text) == text


def test_exported_escapes_are_undone_in_both_formats(fmt: str) -> None:
    values = ["'=1+1", "'+44 1234", "'-5", "'@cmd", "'\tx", "'\rx", "'kept"]
    rows = rows_of(encode([["guid", "action"]] + [[A, v] for v in values], fmt))
    assert [row["action"] for _, row in rows] == ["=1+1", "+44 1234", "-5", "@cmd", "\tx", "\rx", "'kept"]


def test_every_declared_column_is_in_every_row() -> None:
    rows = rows_of(b"action,guid\nadd\n,x\n", columns={"guid": True, "action": False, "extra": False})
    assert rows == [
        (2, {"guid": "", "action": "add", "extra": ""}),
        (3, {"guid": "x", "action": "", "extra": ""}),
    ]


# --- limits ---------------------------------------------------------------------------------


def test_the_byte_limit_is_checked_before_parsing() -> None:
    data = f"guid\n{A}\n".encode()
    assert rows_of(data, max_bytes=len(data)) == [(2, {"guid": A, "action": ""})]
    with pytest.raises(FileRejected) as raised:
        read_rows(io.BytesIO(b"\x89PNG" + data), max_bytes=len(data), columns=PILOT_LIST)
    assert raised.value.failure.code == "file_too_large"  # not file_type: nothing was parsed
    assert raised.value.failure.value == f"{len(data) + 4} bytes"


def test_the_byte_limit_defaults_to_the_setting(settings: Any) -> None:
    settings.INTAKE_MAX_BYTES = 10
    assert codes_of(f"guid\n{A}\n".encode()) == ["file_too_large"]


def test_the_row_limit_counts_data_rows_only(fmt: str) -> None:
    data = encode([["guid"], [A], [""], [B], [""]], fmt)
    assert len(rows_of(data, max_rows=2)) == 2
    data = encode([["guid"], [A], [B], [C]], fmt)
    with read_rows(io.BytesIO(data), columns=PILOT_LIST, max_rows=2) as reader:
        assert next(reader)[0] == 2
        assert next(reader)[0] == 3
        with pytest.raises(FileRejected) as raised:
            next(reader)
    assert raised.value.failure.code == "file_too_many_rows"


def test_the_row_limit_defaults_to_the_setting_of_the_format(settings: Any) -> None:
    settings.INTAKE_MAX_CSV_ROWS = 1
    settings.INTAKE_MAX_XLSX_ROWS = 2
    assert codes_of(encode([["guid"], [A], [B]], "csv")) == ["file_too_many_rows"]
    assert len(rows_of(encode([["guid"], [A], [B]], "xlsx"))) == 2


# --- CSV errors met while reading -----------------------------------------------------------


def test_invalid_utf8_after_the_sniffed_start_is_refused_when_met() -> None:
    head = "guid,action\n" + "".join(f"{A},add\n" for _ in range(5000))
    data = head.encode() + b"caf\xe9,add\n"
    assert len(head) > readers.SNIFF_BYTES
    with read_rows(io.BytesIO(data), columns=PILOT_LIST) as reader, pytest.raises(FileRejected) as raised:
        for _ in reader:
            pass
    assert raised.value.failure.code == "file_encoding"
    assert "CSV UTF-8" in raised.value.failure.message
    assert reader.rows_read > 4000  # rows before the problem were streamed


def test_a_nul_byte_after_the_sniffed_start_is_refused_when_met() -> None:
    data = ("guid\n" + f"{A}\n" * 5000).encode() + b"00DB\x00\n"
    assert codes_of(data) == ["file_nul_byte"]


def test_an_endless_line_is_refused_without_reading_it_whole() -> None:
    data = b"guid\n" + b"x" * (readers.MAX_CSV_LINE + 10)
    assert codes_of(data) == ["file_type"]


def test_a_huge_field_is_refused() -> None:
    data = b'guid\n"' + b"x" * 200_000 + b'"\n'
    assert codes_of(data) == ["file_type"]


# --- XLSX cells -----------------------------------------------------------------------------


def test_numbers_in_a_guid_column_are_cell_not_text_and_the_stream_goes_on(xlsx_reader: str) -> None:
    data = xlsx(
        [["guid", "action"], [A, "add"], [12345678901234, "add"], [1.2e35, "remove"], [True, ""], [B, 7]]
    )
    with read_rows(io.BytesIO(data), columns=PILOT_LIST) as reader:
        rows = list(reader)
    assert rows == [
        (2, {"guid": A, "action": "add"}),
        (3, {"guid": None, "action": "add"}),
        (4, {"guid": None, "action": "remove"}),
        (5, {"guid": None, "action": ""}),
        (6, {"guid": B, "action": "7"}),
    ]
    assert [(f.row, f.column, f.value, f.code) for f in reader.failures] == [
        (3, "guid", "12345678901234", "cell_not_text"),
        (4, "guid", "1.2e+35", "cell_not_text"),
        (5, "guid", "TRUE", "cell_not_text"),
    ]
    assert "Text" in reader.failures[0].message and "leading zeros" in reader.failures[0].message
    with pytest.raises(RowsRejected) as raised:
        reader.raise_for_failures()
    assert raised.value.failures == reader.failures


def test_a_date_in_a_guid_column_is_cell_not_text(xlsx_reader: str) -> None:
    data = xlsx([["guid"], [dt.date(2026, 5, 1)]], formats={0: "yyyy-mm-dd"})
    with read_rows(io.BytesIO(data), columns=PILOT_LIST) as reader:
        assert list(reader) == [(2, {"guid": None, "action": ""})]
    assert [(f.value, f.code) for f in reader.failures] == [("2026-05-01", "cell_not_text")]


def test_a_guid_column_can_be_declared_under_another_name(xlsx_reader: str) -> None:
    data = xlsx([["hub", "note"], [123, 456]])
    with read_rows(io.BytesIO(data), columns={"hub": True, "note": False}, guid_columns=("HUB",)) as reader:
        assert list(reader) == [(2, {"hub": None, "note": "456"})]
    assert [f.code for f in reader.failures] == ["cell_not_text"]


def test_numbers_elsewhere_become_text_without_a_trailing_zero(xlsx_reader: str) -> None:
    data = xlsx([["guid", "action"], [A, 3], [B, 3.25], [C, -0.5], [A, 1e20], [B, False]])
    assert [row["action"] for _, row in rows_of(data)] == ["3", "3.25", "-0.5", "1e+20", "FALSE"]


# Spreadsheet cells carry no time zone: naive datetimes are what the readers give.
def test_dates_and_times_become_iso_8601(xlsx_reader: str) -> None:
    data = xlsx(
        [
            ["batch", "guid", "window_start", "window_end"],
            ["b1", A, dt.datetime(2026, 5, 1, 9, 30), dt.date(2026, 5, 8)],  # noqa: DTZ001
            ["b1", B, dt.datetime(2026, 5, 1, 0, 0), dt.datetime(2026, 5, 8, 17, 0, 15)],  # noqa: DTZ001
            ["b1", C, dt.time(9, 30), dt.datetime(2026, 5, 8, 0, 0)],  # noqa: DTZ001
        ],
        formats={2: "yyyy-mm-dd hh:mm", 3: "dd/mm/yyyy"},
    )
    rows = [(r["window_start"], r["window_end"]) for _, r in rows_of(data, SCHEDULE)]
    assert rows == [
        ("2026-05-01T09:30:00", "2026-05-08"),
        # midnight shown with a time stays a time: for window_end "a date alone" means end of day
        ("2026-05-01T00:00:00", "2026-05-08T17:00:15"),
        ("09:30:00", "2026-05-08"),
    ]


def test_spreadsheet_fractions_of_a_second_are_rounded_away() -> None:
    assert cell_text(dt.datetime(2026, 5, 1, 9, 29, 59, 999_999)) == "2026-05-01T09:30:00"  # noqa: DTZ001
    assert cell_text(dt.time(9, 29, 59, 999_800)) == "09:30:00"
    assert cell_text(dt.timedelta(hours=36, minutes=5)) == "PT36H5M0S"
    assert cell_text(7.0) == "7" and cell_text(10**16 * 1.0) == "1e+16"


def test_formula_cells_without_a_stored_value_are_cell_formula(xlsx_reader: str) -> None:
    sheet = corpus.sheet_xml(
        [
            ["guid", "action"],
            [A, '<c r="{ref}"><f>IF(1,"add","remove")</f></c>'],  # no <v>
            # an empty <v>, as openpyxl writes formulas
            ['<c r="{ref}"><f>CONCAT("00DB","123456789ABD")</f><v></v></c>', "add"],
            ['<c r="{ref}" t="str"><f>CONCAT("00DB","123456789ABE")</f><v>00DB123456789ABE</v></c>', "add"],
            [B, '<c r="{ref}" t="str"><f>""</f><v></v></c>'],  # a formula whose result is ""
            ['<c r="{ref}" t="e"><f>1/0</f><v>#DIV/0!</v></c>', "add"],
            [C, '<c r="{ref}"><f t="shared" si="0"/></c>'],  # shared formula, no value
        ]
    )
    with read_rows(io.BytesIO(hand_xlsx(sheet)), columns=PILOT_LIST) as reader:
        rows = list(reader)
    assert rows == [
        (2, {"guid": A, "action": None}),
        (3, {"guid": None, "action": "add"}),
        (4, {"guid": "00DB123456789ABE", "action": "add"}),  # the stored value is used
        (5, {"guid": B, "action": ""}),
        (6, {"guid": None, "action": "add"}),
        (7, {"guid": C, "action": None}),
    ]
    assert [(f.row, f.column, f.value, f.code) for f in reader.failures] == [
        (2, "action", '=IF(1,"add","remove")', "cell_formula"),
        (3, "guid", '=CONCAT("00DB","123456789ABD")', "cell_formula"),
        (6, "guid", "#DIV/0!", "cell_formula"),
        (7, "action", "", "cell_formula"),
    ]


def test_a_row_holding_only_a_formula_without_value_is_not_blank(xlsx_reader: str) -> None:
    sheet = corpus.sheet_xml([["guid"], [A], [], ['<c r="{ref}"><f>NOW()</f></c>']])
    with read_rows(io.BytesIO(hand_xlsx(sheet)), columns=PILOT_LIST) as reader:
        assert list(reader) == [(2, {"guid": A, "action": ""}), (4, {"guid": None, "action": ""})]
    assert [(f.row, f.code) for f in reader.failures] == [(4, "cell_formula")]


def test_xlsxwriter_formulas_carry_a_stored_zero(xlsx_reader: str) -> None:
    # xlsxwriter stores 0 as the result of every formula: that is a number, so cell_not_text.
    out = io.BytesIO()
    workbook = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = workbook.add_worksheet()
    sheet.write_row(0, 0, ["guid"])
    sheet.write_formula(1, 0, '=CONCAT("00DB","123456789ABC")')
    workbook.close()
    with read_rows(io.BytesIO(out.getvalue()), columns=PILOT_LIST) as reader:
        assert list(reader) == [(2, {"guid": None, "action": ""})]
    assert [(f.value, f.code) for f in reader.failures] == [("0", "cell_not_text")]


@pytest.mark.parametrize(
    "cell",
    [
        '<c r="{ref}"><f>A1</f></c>',
        '<c r="{ref}" s="1"><f>A1</f><v/></c>',
        '<c r="{ref}" t="str"><f>A1</f></c>',
        '<c r="{ref}" t="str"><f>A1</f><v/></c>',
        '<c r="{ref}" t="str"><f>A1</f><v>x</v></c>',
        '<c r="{ref}"><f t="shared" ref="B2:B3" si="0">A1&amp;"x"</f><v>3</v></c>',
        '<c r="{ref}"><f t="shared" si="0"/></c>',
        '<c r="{ref}" t="e"><v>#N/A</v></c>',
        '<c r="{ref}" t="e"><f>NA()</f><v>#N/A</v></c>',
        '<c r="{ref}" t="inlineStr"><f>A1</f><is><t>x</t></is></c>',
        '<c r="{ref}" t="inlineStr"><is><t>&lt;f&gt; t="e"</t></is></c>',
        '<c r="{ref}"/>',
        '<c r="{ref}" s="2"/>',
    ],
)
def test_the_fast_formula_scan_agrees_with_an_xml_parse(cell: str) -> None:
    sheet = corpus.sheet_xml([["guid", "action"], [A, cell], [cell, "add"], [f'<c r="{{ref}}"/>{cell}']])
    with zipfile.ZipFile(io.BytesIO(hand_xlsx(sheet))) as zf:
        fast = readers.scan_formulas(zf, "xl/worksheets/sheet1.xml")
        slow = readers._scan_cells(zf, "xl/worksheets/sheet1.xml")
    assert fast == slow


def test_the_formula_scan_falls_back_to_parsing_when_cells_have_no_reference() -> None:
    sheet = (
        f'<?xml version="1.0"?><worksheet xmlns="{corpus._MAIN_NS}"><sheetData>'
        '<row><c t="inlineStr"><is><t>guid</t></is></c></row>'
        "<row><c><f>A1</f></c></row></sheetData></worksheet>"
    )
    with zipfile.ZipFile(io.BytesIO(hand_xlsx(sheet))) as zf:
        assert readers.scan_formulas(zf, "xl/worksheets/sheet1.xml") == {2: {0: readers._Flagged("=A1", "")}}


def test_a_wrong_dimension_element_does_not_cut_rows_off(xlsx_reader: str) -> None:
    sheet = corpus.sheet_xml([["guid"], [A], [B], [C]], dimension="A1:A1")
    assert [n for n, _ in rows_of(hand_xlsx(sheet))] == [2, 3, 4]


def test_data_away_from_a1_keeps_its_row_numbers_and_columns(xlsx_reader: str) -> None:
    rows = [[], [], ["", "", "guid", "action"], ["", "", A, "add"], [], ["", "", B]]
    assert rows_of(xlsx(rows)) == [(4, {"guid": A, "action": "add"}), (6, {"guid": B, "action": ""})]
    with read_rows(io.BytesIO(xlsx([*rows, ["x", "", C]])), columns=PILOT_LIST) as reader:
        assert len(list(reader)) == 3
    assert [(f.row, f.column, f.code) for f in reader.failures] == [(7, "A", "column_unknown")]


def test_only_the_first_worksheet_is_read(xlsx_reader: str) -> None:
    assert rows_of(xlsx([["guid"], [A]], sheets=3)) == [(2, {"guid": A, "action": ""})]


def test_the_first_worksheet_is_the_first_tab_not_the_first_part(xlsx_reader: str) -> None:
    parts = corpus._package_parts()
    parts["xl/workbook.xml"] = parts["xl/workbook.xml"].replace(
        '<sheet name="Sheet1" sheetId="1" r:id="rId1"/>',
        '<sheet name="Tab A" sheetId="2" r:id="rId3"/><sheet name="Sheet1" sheetId="1" r:id="rId1"/>',
    )
    parts["xl/_rels/workbook.xml.rels"] = parts["xl/_rels/workbook.xml.rels"].replace(
        "</Relationships>",
        f'<Relationship Id="rId3" Type="{corpus._REL_NS}/worksheet" Target="/xl/worksheets/sheet2.xml"/>'
        "</Relationships>",
    )
    parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
        "</Types>",
        '<Override PartName="/xl/worksheets/sheet2.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>',
    )
    data = hand_xlsx(
        corpus.sheet_xml([["guid"], [A]]),
        **{
            **parts,
            "xl/worksheets/sheet2.xml": corpus.sheet_xml([["guid"], [B]]),
        },
    )
    assert rows_of(data) == [(2, {"guid": B, "action": ""})]


def test_a_numeric_header_cell_is_read_as_text(xlsx_reader: str) -> None:
    assert codes_of(xlsx([["guid", 2026], [A, "x"]])) == ["column_unknown"]


@pytest.mark.parametrize("calamine_max_bytes", [10**9, 0], ids=["calamine", "openpyxl"])
def test_django_uploaded_files_are_read_and_left_open(
    fmt: str, calamine_max_bytes: int, settings: Any
) -> None:
    settings.INTAKE_CALAMINE_MAX_BYTES = calamine_max_bytes
    data = encode([["guid"], [A]], fmt)
    memory = SimpleUploadedFile("list", data)
    disk = TemporaryUploadedFile("list", "application/octet-stream", len(data), None)
    disk.write(data)
    disk.seek(0)
    for upload in (memory, disk):
        with read_rows(upload, columns=PILOT_LIST) as reader:
            assert list(reader) == [(2, {"guid": A, "action": ""})]
        assert not upload.closed  # the caller owns the file (the CSV text wrapper is detached)
        upload.seek(0)
    disk.close()


# --- zip and XML bombs (settings lowered to keep the files small) ---------------------------


def test_too_many_zip_entries_is_a_bomb(settings: Any) -> None:
    settings.INTAKE_MAX_XLSX_ENTRIES = 5
    assert codes_of(xlsx([["guid"], [A]])) == ["file_bomb"]


def test_too_much_unpacked_data_is_a_bomb(settings: Any) -> None:
    data = xlsx([["guid"], [A]])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        total = sum(i.file_size for i in zf.infolist())
    settings.INTAKE_MAX_XLSX_UNPACKED = total - 1
    assert codes_of(data) == ["file_bomb"]
    settings.INTAKE_MAX_XLSX_UNPACKED = total
    assert len(rows_of(data)) == 1


def test_a_first_worksheet_over_its_limit_is_a_bomb(settings: Any) -> None:
    data = xlsx([["guid"]] + [[A]] * 100)
    settings.INTAKE_MAX_XLSX_SHEET = 1000
    with pytest.raises(RowsRejected) as raised:
        rows_of(data)
    assert raised.value.failures[0].code == "file_bomb"
    assert "first worksheet" in raised.value.failures[0].message


def test_the_ratio_limit_ignores_small_entries(settings: Any) -> None:
    padded = corpus.sheet_xml([["guid"], [A]]).replace("<sheetData>", "<sheetData>" + " " * 900_000)
    assert len(rows_of(hand_xlsx(padded))) == 1  # ratio ~900:1, but under 1 MiB
    padded = padded.replace("<sheetData>", "<sheetData>" + " " * 300_000)
    assert codes_of(hand_xlsx(padded)) == ["file_bomb"]
    settings.INTAKE_MAX_XLSX_RATIO = 10_000
    assert len(rows_of(hand_xlsx(padded))) == 1


@pytest.mark.parametrize(
    "prolog",
    [
        '<?xml version="1.0"?>\n<!DOCTYPE worksheet [<!ENTITY a "b">]>\n',
        '<?xml version="1.0"?>\n<!-- <worksheet> --><!DOCTYPE worksheet SYSTEM "http://example.test/x.dtd">\n',
        '<?xml version="1.0"?>\n<!doctype worksheet>\n',
    ],
)
def test_a_doctype_in_any_part_is_a_bomb(prolog: str, xlsx_reader: str) -> None:
    sheet = corpus.sheet_xml([["guid"], [A]], prolog=prolog)
    assert codes_of(hand_xlsx(sheet)) == ["file_bomb"]
    styles = f'{prolog}<styleSheet xmlns="{corpus._MAIN_NS}"/>'
    assert codes_of(hand_xlsx(corpus.sheet_xml([["guid"], [A]]), **{"xl/styles.xml": styles})) == [
        "file_bomb"
    ]


def test_openpyxl_refuses_entities_through_defusedxml_even_without_our_check(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.INTAKE_CALAMINE_MAX_BYTES = 0
    monkeypatch.setattr(readers, "_check_prolog", lambda zf, info: None)
    sheet = corpus.sheet_xml([["guid"], ["&lol9;"]], prolog=corpus.BILLION_LAUGHS).replace(
        "&amp;lol9;", "&lol9;"
    )
    assert codes_of(hand_xlsx(sheet)) == ["file_bomb"]


def test_a_damaged_workbook_is_file_type(xlsx_reader: str) -> None:
    data = xlsx([["guid"], [A]])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        parts = {i.filename: zf.read(i) for i in zf.infolist() if i.filename != "xl/worksheets/sheet1.xml"}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, part in parts.items():
            zf.writestr(name, part)
    assert codes_of(out.getvalue()) == ["file_type"]
    assert codes_of(hand_xlsx("<worksheet><sheetData><row>")) == ["file_type"]


# --- the error model ------------------------------------------------------------------------


def test_failures_use_the_default_message_of_their_code() -> None:
    item = failure("guid_format", row=3, column="guid", value="x")
    assert item.message == CODES["guid_format"]
    with pytest.raises(KeyError):
        failure("no_such_code")


def test_rejections_are_validation_errors_that_pickle() -> None:
    many = RowsRejected(
        [failure("guid_format", row=2, column="guid", value="x"), failure("cell_formula", row=3)]
    )
    assert many.messages == [CODES["guid_format"], CODES["cell_formula"]]
    assert pickle.loads(pickle.dumps(many)).failures == many.failures
    one = FileRejected(failure("file_bomb"))
    assert one.failure.row is None and one.messages == [CODES["file_bomb"]]
    assert pickle.loads(pickle.dumps(one)).failure == one.failure


DOCUMENTED_CODES = [
    "file_type",
    "file_encoding",
    "file_empty",
    "file_too_large",
    "file_too_many_rows",
    "file_bomb",
    "file_nul_byte",
    "column_unknown",
    "column_missing",
    "column_duplicate",
    "cell_not_text",
    "cell_formula",
    "value_invalid",
    "reference_unknown",
    "guid_format",
    "guid_duplicate",
    "guid_not_eligible",
    "guid_not_yours",
    "guid_not_in_region",
    "guid_unknown",
    "hub_not_in_live_batch",
    "already_distributed",
    "pilot_full",
    "batch_unknown",
    "batch_window_inconsistent",
    "window_invalid",
    "window_after_auto_deploy",
    "deadline_passed",
    "time_ambiguous",
    "time_in_past",
    "deploy_at_not_earlier",
    "rollout_on_hold",
    "status_invalid",
    "reason_missing",
    "version_missing",
    "processing_failed",
]


def test_every_documented_reason_code_has_a_message() -> None:
    # FILE_FORMATS.md's codes, and the one the inventory command adds (DCC and staff only, in README.md)
    assert sorted(CODES) == sorted([*DOCUMENTED_CODES, "too_many_removals"])
    assert all(CODES[code].endswith(".") for code in CODES)
    assert "Text" in CODES["cell_not_text"] and "15th" in CODES["cell_not_text"]
    assert "CSV UTF-8" in CODES["file_encoding"]


def test_column_letters() -> None:
    assert [column_letter(i) for i in (0, 25, 26, 51, 52, 701, 702)] == [
        "A",
        "Z",
        "AA",
        "AZ",
        "BA",
        "ZZ",
        "AAA",
    ]
    assert [readers._column_index(column_letter(i)) for i in range(800)] == list(range(800))


def test_closing_early_releases_the_workbook(xlsx_reader: str) -> None:
    reader = read_rows(io.BytesIO(xlsx([["guid"], [A], [B]])), columns=PILOT_LIST)
    assert next(reader)[0] == 2
    reader.close()
    reader.close()  # twice is fine
    with pytest.raises(StopIteration):
        next(reader)
