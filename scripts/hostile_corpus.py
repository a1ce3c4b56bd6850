"""Write the corpus of hostile (and valid) upload files, so no binary is ever committed.

    python scripts/hostile_corpus.py OUTDIR

or ``build_corpus(outdir) -> {name: path}``. Every file uses the Preferred Pilot List layout
(FILE_FORMATS.md: **guid**, action). Files whose limit is a setting (rows, bytes) are small:
the tests pass a small limit. ``EXPECTED`` says what reading each file must give.
"""

from __future__ import annotations

import codecs
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import xlsxwriter

GUIDS = ["00DB123456789ABC", "00DB123456789ABD", "00DB123456789ABE", "00DB123456789ABF", "00DB1234567890A0"]
VALID_ROWS = [  # (guid as written, action)
    ("00-DB-12-34-56-78-9A-BC", "add"),
    ("00:db:12:34:56:78:9a:bd", "remove"),
    ("00DB123456789ABE", ""),
    (" 00 DB 12 34 56 78 9A BF ", "add"),
    ("00db1234567890a0", "add"),
]
ZIP_BOMB_SHEET_BYTES = 450 * 1024 * 1024  # > INTAKE_MAX_XLSX_SHEET (400 MiB); deflates to ~0.5 MB
RATIO_BOMB_SHEET_BYTES = 20 * 1024 * 1024  # under every size limit; only the ratio (~1000:1) catches it

# name -> the reason code reading it must give; "ok" reads fully; "cell:<code>" streams every row
# and leaves failures with that code; "limit:<code>" needs the small limit the tests pass.
EXPECTED: dict[str, str] = {
    "valid.csv": "ok",
    "bom.csv": "ok",
    "crlf.csv": "ok",
    "cr_only.csv": "ok",
    "quoted.csv": "ok",
    "escaped_formulae.csv": "ok",
    "duplicate_guid_spellings.csv": "ok",
    "empty.csv": "file_empty",
    "blank_lines_only.csv": "file_empty",
    "header_only.csv": "file_empty",
    "unknown_column.csv": "column_unknown",
    "empty_column_name.csv": "column_unknown",
    "semicolon.csv": "column_unknown",  # and column_missing: guid;action is one unknown name
    "missing_column.csv": "column_missing",
    "duplicate_column.csv": "column_duplicate",
    "latin1.csv": "file_encoding",
    "latin1_late.csv": "file_encoding",
    "utf16.csv": "file_encoding",
    "utf16_no_bom.csv": "file_encoding",
    "nul_byte.csv": "file_nul_byte",
    "nul_byte_late.csv": "file_nul_byte",
    "png_renamed.csv": "file_type",
    "pdf_renamed.csv": "file_type",
    "too_many_rows.csv": "limit:file_too_many_rows",
    "too_large.csv": "limit:file_too_large",
    "valid.xlsx": "ok",
    "duplicate_guid_spellings.xlsx": "ok",
    "wrong_dimension.xlsx": "ok",
    "header_only.xlsx": "file_empty",
    "unknown_column.xlsx": "column_unknown",
    "xls_renamed.xlsx": "file_type",
    "xlsm_renamed.xlsx": "file_type",
    "ods_renamed.xlsx": "file_type",
    "plain_zip.xlsx": "file_type",
    "zip_bomb.xlsx": "file_bomb",
    "ratio_bomb.xlsx": "file_bomb",
    "many_entries.xlsx": "file_bomb",
    "xml_bomb.xlsx": "file_bomb",
    "xml_bomb_shared_strings.xlsx": "file_bomb",
    "numeric_guid.xlsx": "cell:cell_not_text",
    "formula_no_value.xlsx": "cell:cell_formula",
    "too_many_rows.xlsx": "limit:file_too_many_rows",
}

# ---------------------------------------------------------------------------------------------
# XLSX packages written by hand (xlsxwriter cannot write these shapes)
# ---------------------------------------------------------------------------------------------

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_WORKBOOK_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
_MACRO_WORKBOOK_TYPE = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"

BILLION_LAUGHS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    + "]>\n"
)


def _content_types(*, workbook_type: str = _WORKBOOK_TYPE, shared_strings: bool = False) -> str:
    strings = (
        '<Override PartName="/xl/sharedStrings.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
        if shared_strings
        else ""
    )
    return (
        f'{_XML_DECL}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{workbook_type}"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        f"{strings}</Types>"
    )


def _package_parts(*, shared_strings: bool = False, workbook_type: str = _WORKBOOK_TYPE) -> dict[str, str]:
    strings_rel = (
        f'<Relationship Id="rId2" Type="{_REL_NS}/sharedStrings" Target="sharedStrings.xml"/>'
        if shared_strings
        else ""
    )
    return {
        "[Content_Types].xml": _content_types(workbook_type=workbook_type, shared_strings=shared_strings),
        "_rels/.rels": (
            f'{_XML_DECL}<Relationships xmlns="{_PKG_REL_NS}">'
            f'<Relationship Id="rId1" Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'{_XML_DECL}<workbook xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}">'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'{_XML_DECL}<Relationships xmlns="{_PKG_REL_NS}">'
            f'<Relationship Id="rId1" Type="{_REL_NS}/worksheet" Target="worksheets/sheet1.xml"/>'
            f"{strings_rel}</Relationships>"
        ),
    }


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def sheet_xml(rows: list[list[str]], *, dimension: str | None = None, prolog: str = _XML_DECL) -> str:
    """A worksheet of inline-string cells; a cell text starting with "<c" is written as raw XML."""
    body = []
    for r, cells in enumerate(rows, 1):
        xml_cells = []
        for c, text in enumerate(cells):
            ref = f"{chr(65 + c)}{r}"
            if text.startswith("<c"):
                xml_cells.append(text.replace("{ref}", ref))
            elif text:
                xml_cells.append(
                    f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{_escape(text)}</t></is></c>'
                )
        body.append(f'<row r="{r}">{"".join(xml_cells)}</row>')
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    return f'{prolog}<worksheet xmlns="{_MAIN_NS}">{dim}<sheetData>{"".join(body)}</sheetData></worksheet>'


def write_package(path: Path, parts: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return path


def _hand_xlsx(path: Path, sheet: str, **extra: str | bytes) -> Path:
    parts: dict[str, str | bytes] = {**_package_parts(), "xl/worksheets/sheet1.xml": sheet}
    parts.update(extra)
    return write_package(path, parts)


def _xlsxwriter_file(path: Path, rows: list[list[object]]) -> Path:
    """A workbook as a user's spreadsheet program would save it, the GUID column formatted as text."""
    workbook = xlsxwriter.Workbook(str(path))
    sheet = workbook.add_worksheet("Hubs")
    text = workbook.add_format({"num_format": "@"})
    sheet.set_column(0, 0, 26, text)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, str):
                sheet.write_string(r, c, value)
            elif isinstance(value, int | float):
                sheet.write_number(r, c, value)
    workbook.close()
    return path


def _bomb(path: Path, sheet_bytes: int) -> Path:
    """A sheet entry of valid XML padded with spaces: tiny compressed, huge unpacked."""
    head = f'{_XML_DECL}<worksheet xmlns="{_MAIN_NS}"><sheetData>'.encode()
    tail = b"</sheetData></worksheet>"
    chunk = b" " * (1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in _package_parts().items():
            zf.writestr(name, data)
        with zf.open("xl/worksheets/sheet1.xml", "w", force_zip64=False) as member:
            member.write(head)
            left = sheet_bytes - len(head) - len(tail)
            while left > 0:
                member.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
            member.write(tail)
    return path


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


def _csv(rows: list[list[str]], *, newline: str = "\n") -> str:
    def field(text: str) -> str:
        return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(ch in text for ch in ',"\r\n') else text

    return "".join(",".join(field(v) for v in row) + newline for row in rows)


def build_corpus(outdir: Path | str) -> dict[str, Path]:
    """Write every corpus file into ``outdir`` (created if needed); return {name: path}."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    header = ["guid", "action"]
    valid = [header, *([g, a] for g, a in VALID_ROWS)]

    def put(name: str, data: bytes | str) -> None:
        path = out / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        files[name] = path

    def make(name: str, builder: Callable[[Path], Path]) -> None:
        files[name] = builder(out / name)

    # CSV, valid shapes
    put("valid.csv", _csv(valid))
    put("bom.csv", codecs.BOM_UTF8 + _csv(valid).encode())
    put("crlf.csv", _csv(valid, newline="\r\n"))
    put("cr_only.csv", _csv(valid, newline="\r"))
    put(
        "quoted.csv",
        '"GUID","Action"\r\n'
        '"00-DB-12-34-56-78-9A-BC","add"\r\n'
        '"00 DB 12 34 56 78 9A BD","a ""quoted"", multi\nline value"\r\n'
        '00DB123456789ABE,"remove"\r\n',
    )
    put(
        "escaped_formulae.csv",
        _csv(
            [
                header,
                *([g, a] for g, a in zip(GUIDS, ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx"], strict=True)),
            ]
        )
        + _csv([["00DB000000000001", "'plain"], ["00DB000000000002", "''=x"]]),
    )
    put(
        "duplicate_guid_spellings.csv",
        _csv([header, ["00-DB-12-34-56-78-9A-BC", "add"], ["00db123456789abc", "add"]]),
    )
    # CSV, refused
    put("empty.csv", b"")
    put("blank_lines_only.csv", "\r\n\r\n,\r\n")
    put("header_only.csv", "guid,action\r\n\r\n")
    put("unknown_column.csv", _csv([["guid", "colour"], [GUIDS[0], "red"]]))
    put("empty_column_name.csv", _csv([["guid", "", "action"], [GUIDS[0], "x", "add"]]))
    put("semicolon.csv", "guid;action\n00DB123456789ABC;add\n")
    put("missing_column.csv", _csv([["action"], ["add"]]))
    put("duplicate_column.csv", _csv([["guid", "action", "GUID "], [GUIDS[0], "add", GUIDS[1]]]))
    put("latin1.csv", _csv([header, [GUIDS[0], "supprimé"]]).encode("latin-1"))
    put(
        "latin1_late.csv",
        _csv([header] + [[g, "add"] for g in GUIDS * 2000]).encode() + "é,add\n".encode("latin-1"),
    )
    put("utf16.csv", _csv(valid).encode("utf-16"))  # with a BOM, as "Unicode text" saves it
    put("utf16_no_bom.csv", _csv(valid).encode("utf-16-le"))
    put("nul_byte.csv", _csv([header, [GUIDS[0] + "\x00", "add"]]))
    put("nul_byte_late.csv", _csv([header] + [[g, "add"] for g in GUIDS * 2000]) + "00DB\x00,add\n")
    put(
        "png_renamed.csv",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00",
    )
    put("pdf_renamed.csv", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    # the tests pass max_rows=10 and max_bytes=1024
    put("too_many_rows.csv", _csv([header] + [[f"00DB0000000000{i:02X}", "add"] for i in range(11)]))
    put("too_large.csv", _csv([header] + [[f"00DB000000000{i:03X}", "add"] for i in range(200)]))

    # XLSX, valid shapes
    make("valid.xlsx", lambda p: _xlsxwriter_file(p, [header, *([g, a] for g, a in VALID_ROWS)]))
    make(
        "duplicate_guid_spellings.xlsx",
        lambda p: _xlsxwriter_file(
            p, [header, ["00-DB-12-34-56-78-9A-BC", "add"], ["00db123456789abc", "add"]]
        ),
    )
    make("wrong_dimension.xlsx", lambda p: _hand_xlsx(p, sheet_xml(valid, dimension="A1:A1")))
    make("header_only.xlsx", lambda p: _xlsxwriter_file(p, [header]))
    make("unknown_column.xlsx", lambda p: _xlsxwriter_file(p, [["guid", "colour"], [GUIDS[0], "red"]]))
    # XLSX, refused by type
    put(
        "xls_renamed.xlsx",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 16 + b"\x3e\x00\x03\x00\xfe\xff" + b"\x00" * 482,
    )
    make(
        "xlsm_renamed.xlsx",
        lambda p: write_package(
            p,
            {
                **_package_parts(workbook_type=_MACRO_WORKBOOK_TYPE),
                "xl/worksheets/sheet1.xml": sheet_xml(valid),
                "xl/vbaProject.bin": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504,
            },
        ),
    )
    make(
        "ods_renamed.xlsx",
        lambda p: write_package(
            p,
            {
                "mimetype": "application/vnd.oasis.opendocument.spreadsheet",
                "content.xml": f"{_XML_DECL}<office:document-content "
                'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"/>',
                "META-INF/manifest.xml": f"{_XML_DECL}<manifest/>",
            },
        ),
    )
    make("plain_zip.xlsx", lambda p: write_package(p, {"readme.txt": "not a workbook"}))
    # XLSX, bombs
    make("zip_bomb.xlsx", lambda p: _bomb(p, ZIP_BOMB_SHEET_BYTES))
    make("ratio_bomb.xlsx", lambda p: _bomb(p, RATIO_BOMB_SHEET_BYTES))
    make(
        "many_entries.xlsx",
        lambda p: write_package(
            p,
            {
                **_package_parts(),
                "xl/worksheets/sheet1.xml": sheet_xml(valid),
                **{f"xl/media/image{i}.png": b"x" for i in range(1001)},
            },
        ),
    )
    make(
        "xml_bomb.xlsx",
        lambda p: _hand_xlsx(
            p, sheet_xml([header, ["&lol9;", "add"]], prolog=BILLION_LAUGHS).replace("&amp;lol9;", "&lol9;")
        ),
    )
    make(
        "xml_bomb_shared_strings.xlsx",
        lambda p: write_package(
            p,
            {
                **_package_parts(shared_strings=True),
                "xl/worksheets/sheet1.xml": sheet_xml([header, ['<c r="{ref}" t="s"><v>0</v></c>', "add"]]),
                "xl/sharedStrings.xml": f'{BILLION_LAUGHS}<sst xmlns="{_MAIN_NS}" count="1" uniqueCount="1">'
                "<si><t>&lol9;</t></si></sst>",
            },
        ),
    )
    # XLSX, cell problems (reported per cell, every row still read)
    make(
        "numeric_guid.xlsx",
        lambda p: _xlsxwriter_file(
            p, [header, [GUIDS[0], "add"], [12345678901234, "add"], [1.2e35, "remove"], [GUIDS[1], "add"]]
        ),
    )
    make(
        "formula_no_value.xlsx",
        lambda p: _hand_xlsx(
            p,
            sheet_xml(
                [
                    header,
                    [GUIDS[0], "add"],
                    ['<c r="{ref}" t="str"><f>CONCAT("00DB","123456789ABD")</f></c>', "add"],  # no <v>
                    [GUIDS[2], '<c r="{ref}"><f>IF(1,"add","remove")</f><v></v></c>'],  # empty <v>
                    ['<c r="{ref}" t="e"><f>VLOOKUP(1,Z:Z,2,0)</f><v>#N/A</v></c>', "add"],  # an error result
                    [GUIDS[4], '<c r="{ref}" t="str"><f>"add"</f><v>add</v></c>'],  # has its value: fine
                ]
            ),
        ),
    )
    make(
        "too_many_rows.xlsx",
        lambda p: _xlsxwriter_file(p, [header] + [[f"00DB0000000000{i:02X}", "add"] for i in range(11)]),
    )
    missing = set(EXPECTED) - set(files)
    assert not missing, missing
    return files


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/hostile_corpus.py OUTDIR", file=sys.stderr)
        return 2
    for name, path in sorted(build_corpus(argv[1]).items()):
        print(f"{path.stat().st_size:>10}  {name}  ({EXPECTED[name]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
