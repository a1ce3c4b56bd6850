"""A plain CSV parsed by PostgreSQL (COPY ... FORMAT csv) stages exactly what the Python reader stages.

FILE_FORMATS.md "Reading rules" are the reader's: every file here is staged both ways, and the rows,
row numbers, normalised GUIDs and failures (or the file's reason code) must be the same. Files that
COPY could read differently go through the reader: the test names which path each one takes.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
from django.db import connection, transaction

from rollouts.intake import pipeline
from rollouts.intake.errors import RowsRejected
from rollouts.services.instructions import INSTRUCTION_LAYOUT
from rollouts.services.inventory import INVENTORY

HEADER = b"guid,device_model,firmware_version,csp_region,import_supplier,gas_supplier,flags\n"
ROW_A = b"00-DB-12-34-56-78-9A-01,010A030B,0002012F,north,volt-energy,gasco,friendly\n"
ROW_B = b"00-db-12-34-56-78-9a-02,010A030B,0002012F,North,,volt-energy,\n"
ROW_C = b"00:DB:12:34:56:78:9A:03,020B0001,00010001, south ,gasco,,friendly;production_proving\n"
BIG = 70 * 1024  # past the 64 KiB the reader checks before the first row

# name: (file, whether COPY reads it: True = COPY, False = the reader)
FILES: dict[str, tuple[bytes, bool]] = {
    "plain": (HEADER + ROW_A + ROW_B + ROW_C, True),
    "crlf": ((HEADER + ROW_A + ROW_B + ROW_C).replace(b"\n", b"\r\n"), True),
    "bom": (b"\xef\xbb\xbf" + HEADER + ROW_A, True),
    "no final line end": (HEADER + ROW_A + ROW_B.rstrip(b"\n"), True),
    "blank lines at the end": (HEADER + ROW_A + b"\n\r\n\n", True),
    "rows of empty or blank cells": (
        HEADER + ROW_A + b",,,,,,\n" + b" ,\t, ,\x1c,\xe3\x80\x80,,\xc2\xa0\n" + ROW_B,
        True,
    ),
    "every GUID spelling": (
        HEADER
        + b"00DB123456789A04,010A030B,0002012F,north,,,\n"
        + b"00 db 12 34 56 78 9a 05,010A030B,0002012F,north,,,\n"
        + b" \t00-DB-12-34-56-78-9A-06 ,010A030B,0002012F,north,,,\n"
        + b"00-DB-12:34-56-78-9A-07,010A030B,0002012F,north,,,\n"
        + b"00DB123456789A0,010A030B,0002012F,north,,,\n"
        + b"00db123456789a0f,010A030B,0002012F,north,,,\n"
        + b"  ,010A030B,0002012F,north,,,\n",
        True,
    ),
    "a GUID twice in two spellings": (
        HEADER + ROW_A + b"00db123456789a01,010A030B,0002012F,north,,,\n",
        True,
    ),
    "bad values": (HEADER + b"00DB123456789A08,XX,0002012f,west,nobody,\xc3\xa9nergie,vip\n", True),
    "optional columns absent, reordered, spaced": (
        b" CSP_Region ,GUID,firmware_version,device_model\n" + b"north,00DB123456789A09,0002012F,010A030B\n",
        True,
    ),
    "a dashed GUID that is not hex": (
        HEADER + ROW_A + b"00-DB-12-34-56-78-9A-ZZ,010A030B,0002012F,north,,,\n",
        False,
    ),
    "a bare GUID that is not hex": (HEADER + ROW_A + b"00DB123456789AZZ,010A030B,0002012F,north,,,\n", False),
    "quoted": (HEADER + ROW_A + b'"00-DB-12-34-56-78-9A-0A",010A030B,0002012F,north,"a,b",,\n', False),
    "an exported escape": (HEADER + b"00DB123456789A0B,010A030B,0002012F,north,'=gasco,,\n", False),
    "a backslash end marker": (HEADER + ROW_A + b"\\.\n" + ROW_B, False),
    "a blank line inside": (HEADER + ROW_A + b"\n" + ROW_B, False),
    "a short row": (HEADER + ROW_A + b"00DB123456789A0C,010A030B\n", False),
    "a value past the last column": (HEADER + ROW_A.rstrip(b"\n") + b",extra\n", False),
    "mixed line ends": (
        HEADER + ROW_A.replace(b"\n", b"\r\n") + ROW_B + ROW_C.replace(b"\n", b"\r\n"),
        False,
    ),
    "bare CR line ends": ((HEADER + ROW_A + ROW_B).replace(b"\n", b"\r"), False),
    "header only": (HEADER, False),
    "too many rows": (HEADER + ROW_A + ROW_B + ROW_C, False),  # the limit is set to 2 below
    "not UTF-8 past 64 KiB": (HEADER + ROW_A * (BIG // len(ROW_A)) + b"\xff\xfe,x,,,,,\n", False),
    "a NUL past 64 KiB": (HEADER + ROW_A * (BIG // len(ROW_A)) + b"00DB\x00,x,,,,,\n", False),
    "a line over 1 MiB": (HEADER + ROW_A + b"x" * (1024 * 1024 + 10) + b",,,,,,\n", False),
}


def stage(content: bytes, *, copy_csv: bool, monkeypatch, base=INVENTORY) -> tuple[object, str]:
    """Stage `content` with the inventory layout (or `base`); (what was staged or the file's codes, path taken)."""
    layout = dataclasses.replace(base, copy_csv=copy_csv)
    columns = ", ".join(["row_no", *(f'"{name}"' for name in layout.names), "guid_hex"])
    taken = ["header"]
    real_copy_rows, real_copy_plain = pipeline._copy_rows, pipeline._copy_plain
    monkeypatch.setattr(pipeline, "_copy_rows", lambda *a: taken.append("reader") or real_copy_rows(*a))
    monkeypatch.setattr(pipeline, "_copy_plain", lambda *a: taken.append("copy") or real_copy_plain(*a))
    try:
        with (
            transaction.atomic(),
            connection.cursor() as cursor,
        ):  # as apply_upload: a refused file rolls back
            count = pipeline._stage_rows(cursor, 0, layout, io.BytesIO(content))
            cursor.execute(f"SELECT {columns} FROM {pipeline.ROWS} ORDER BY row_no")
            rows = cursor.fetchall()
            cursor.execute(f"SELECT row_no, col, value, code FROM {pipeline.FAILURES} ORDER BY 1, 2, 4")
            failures = cursor.fetchall()
            transaction.set_rollback(True)
    except RowsRejected as rejected:
        return sorted((f.row, f.column, f.code) for f in rejected.failures), taken[-1]
    return (count, rows, failures), taken[-1]


@pytest.mark.req("X3")
@pytest.mark.parametrize("name", FILES)
def test_copy_stages_what_the_reader_stages(db, name, monkeypatch, settings):
    content, by_copy = FILES[name]
    if name == "too many rows":
        settings.INTAKE_MAX_CSV_ROWS = 2
    expected, reader_path = stage(content, copy_csv=False, monkeypatch=monkeypatch)
    got, path = stage(content, copy_csv=True, monkeypatch=monkeypatch)
    assert got == expected
    assert reader_path in ("reader", "header")
    assert path == ("copy" if by_copy else reader_path)


def test_blank_rows_keep_the_row_numbers_of_the_file(db, monkeypatch):
    (count, rows, _), path = stage(
        FILES["rows of empty or blank cells"][0], copy_csv=True, monkeypatch=monkeypatch
    )
    assert path == "copy" and count == 2
    assert [(r[0], r[-1]) for r in rows] == [(2, "00DB123456789A01"), (5, "00DB123456789A02")]


# A Supplier's deployment instruction file (E1, E5) takes the same COPY path (INSTRUCTION_LAYOUT.copy_csv).
INSTRUCTION_FILES: dict[str, tuple[bytes, bool]] = {
    "guid and time": (b"guid,deploy_at\n00-DB-12-34-56-78-9A-01,2027-01-10T09:00\n00db123456789a02,\n", True),
    "guid only": (b"GUID\r\n00DB123456789A01\r\n 00:DB:12:34:56:78:9A:02 \r\n", True),
    "blank time and blank row": (
        b"guid,deploy_at\n00DB123456789A01, \n,\n00DB123456789A02,2027-01-10\n",
        True,
    ),
    "a GUID that is not hex": (b"guid,deploy_at\n00DB123456789A01,\n00DB123456789A0Z,2027-01-10\n", False),
    "time first": (b"deploy_at,guid\n2027-01-10T09:00Z,00DB123456789A01\n", True),
    "quoted time": (b'guid,deploy_at\n00DB123456789A01,"2027-01-10T09:00"\n', False),
    "a third column": (b"guid,deploy_at\n00DB123456789A01,2027-01-10,x\n", False),
}


@pytest.mark.req("X3")
@pytest.mark.req("E5")
@pytest.mark.parametrize("name", INSTRUCTION_FILES)
def test_an_instruction_file_stages_the_same_by_copy(db, name, monkeypatch):
    content, by_copy = INSTRUCTION_FILES[name]
    expected, reader_path = stage(content, copy_csv=False, monkeypatch=monkeypatch, base=INSTRUCTION_LAYOUT)
    got, path = stage(content, copy_csv=True, monkeypatch=monkeypatch, base=INSTRUCTION_LAYOUT)
    assert got == expected
    assert path == ("copy" if by_copy else reader_path)
    assert INSTRUCTION_LAYOUT.copy_csv
