"""Exports (FILE_FORMATS.md "Writing rules"): BOM, formula escaping, GUIDs as text, scoping, audit."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile

import openpyxl
import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from rollouts.exports import FORMULA_STARTS, Query, copy_csv, csv_lines, escape_cell, write_xlsx, xlsx_file
from rollouts.intake.errors import FileRejected
from rollouts.intake.readers import read_rows
from rollouts.models import AuditEvent, Batch, RolloutHub, UploadState
from rollouts.services.exports import (
    DECISION_COLUMNS,
    DEFAULT_PILOT_LIST_COLUMNS,
    DEPLOYMENT_PLAN_COLUMNS,
    DEVICE_STATUS_COLUMNS,
    EFFECTIVE_PILOT_COLUMNS,
    ELIGIBILITY_COLUMNS,
    ESTATE_COLUMNS,
    SCHEDULE_COLUMNS,
    SCHEDULE_REQUEST_COLUMNS,
    download_deployment_plan,
)
from tests.rollouts.conftest import draft, estate  # noqa: F401 - fixtures

from .conftest import sign_in

# The rest of a cell: any printable text (control characters other than the starts are not our subject).
REST = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=30)
STARTS_WITHOUT_NUL = [s for s in FORMULA_STARTS if s != "\x00"]


def read_back(data: bytes) -> list[str]:
    with read_rows(io.BytesIO(data), columns={"v": True}, guid_columns=()) as reader:
        values = [row["v"] for _, row in reader]
        assert reader.failures == []
    return values


def csv_bytes(values: list[str]) -> bytes:
    return "".join(csv_lines(["v"], ([v] for v in values))).encode()


def xlsx_bytes(values: list[str]) -> bytes:
    out = io.BytesIO()
    write_xlsx(out, ["v"], ([v] for v in values), guid_columns=())
    return out.getvalue()


def xlsx_cells(data: bytes) -> list:
    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    return [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)]


@pytest.mark.req("X2")
@given(start=st.sampled_from(FORMULA_STARTS), rest=REST)
def test_every_formula_start_is_escaped_in_both_formats(start, rest):
    value = start + rest
    assert escape_cell(value) == "'" + value
    data = csv_bytes([value])
    assert data.startswith(b"\xef\xbb\xbfv\r\n")
    assert list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))[1] == ["'" + value]
    (cell,) = xlsx_cells(xlsx_bytes([value]))  # openpyxl shows control characters as _xHHHH_
    shown = {"\r": "_x000D_", "\x00": "_x0000_"}.get(start, start) + rest
    assert cell == "'" + shown


@pytest.mark.req("X2")
@given(start=st.sampled_from(FORMULA_STARTS), rest=REST)
def test_an_exported_xlsx_reads_back_unchanged(start, rest):
    assert read_back(xlsx_bytes([start + rest, "plain" + rest])) == [start + rest, "plain" + rest]


@pytest.mark.req("X2")
@given(start=st.sampled_from(STARTS_WITHOUT_NUL), rest=REST)
def test_an_exported_csv_reads_back_unchanged(start, rest):
    assert read_back(csv_bytes([start + rest, "plain" + rest])) == [start + rest, "plain" + rest]


def test_a_csv_holding_nul_is_escaped_but_refused_on_upload():
    # The readers refuse any CSV with a NUL byte (file_nul_byte); PostgreSQL text never holds one.
    data = csv_bytes(["\x00x"])
    assert "'\x00x" in data.decode()
    with pytest.raises(FileRejected) as caught:
        read_back(data)
    assert caught.value.failures[0].code == "file_nul_byte"


def sql_query(values: list[str]) -> Query:
    return Query(
        columns=["guid", "v"],
        select=["lpad(to_hex(t.n), 16, '0')", "t.v"],
        from_sql="FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, n) ORDER BY t.n",
        params=[values],
    )


@pytest.mark.req("X2")
@pytest.mark.django_db
@hsettings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(start=st.sampled_from(STARTS_WITHOUT_NUL), rest=REST)
def test_sql_escaping_matches_the_python_escaper_in_copy_csv_and_xlsx(start, rest):
    values = [start + rest, "x" + rest, ""]
    data = b"".join(copy_csv(sql_query(values)))
    assert data.startswith(b"\xef\xbb\xbfguid,v\n")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert [r[1] for r in rows[1:]] == [escape_cell(v) for v in values]
    with read_rows(io.BytesIO(data), columns={"guid": True, "v": False}) as reader:
        assert [row["v"] for _, row in reader] == values
    handle, count = xlsx_file(sql_query(values))
    with handle:
        content = handle.read()
    assert count == 3
    with read_rows(io.BytesIO(content), columns={"guid": True, "v": False}) as reader:
        assert [row["v"] for _, row in reader] == values
        assert reader.failures == []  # the GUID column is text, not a number


@pytest.mark.django_db
def test_the_xlsx_guid_column_is_stored_as_text_even_when_all_digits():
    handle, _ = xlsx_file(
        Query(columns=["guid"], select=["'0012345678901234'"], from_sql="FROM generate_series(1, 2)")
    )
    with handle:
        sheet = openpyxl.load_workbook(io.BytesIO(handle.read())).worksheets[0]
    assert sheet["A2"].value == "0012345678901234" and sheet["A2"].data_type == "s"
    assert sheet.column_dimensions["A"].number_format == "@"
    assert sheet["A1"].font.b and not sheet["A2"].font.b  # the header row is bold


# Any text PostgreSQL can hold: every character but NUL, surrogates and the two XML 1.0 excludes
# (U+FFFE, U+FFFF), with the characters XML and the _xHHHH_ convention treat specially made common.
ANY_TEXT = st.lists(
    st.one_of(
        st.sampled_from(
            ["&", "<", ">", '"', "'", "\\", "_x000D_", "_x", "\t", "\n", "\r", "\x01", "\x1f", " "]
        ),
        st.characters(codec="utf-8", exclude_characters="\x00\ufffe\uffff", exclude_categories=("Cs",)),
    ),
    max_size=12,
).map("".join)


def sheet_xml(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        return package.read("xl/worksheets/sheet1.xml")


def cells_by_both_readers(data: bytes) -> tuple[list, list]:
    """The data cells as openpyxl (read-only and normal) and calamine show them."""
    from python_calamine import CalamineWorkbook

    def trimmed(row, empty) -> list:  # read-only openpyxl leaves out trailing empty cells
        row = list(row)
        while row and row[-1] == empty:
            row.pop()
        return row

    shown = []
    for read_only in (True, False):
        sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=read_only).worksheets[0]
        shown.append([trimmed(row, None) for row in sheet.iter_rows(min_row=2, values_only=True)])
    assert shown[0] == shown[1]
    calamine = CalamineWorkbook.from_filelike(io.BytesIO(data)).get_sheet_by_index(0).to_python()
    return shown[0], [trimmed(row, "") for row in calamine[1:]]


def xlsxwriter_bytes(columns: list[str], rows: list[list[str]]) -> bytes:
    """The oracle: the same cells written by xlsxwriter in constant-memory mode (the writer used before)."""
    import xlsxwriter

    out = io.BytesIO()
    workbook = xlsxwriter.Workbook(out, {"constant_memory": True, "strings_to_numbers": False})
    sheet = workbook.add_worksheet("Export")
    for col, name in enumerate(columns):
        sheet.write_string(0, col, name)
    for n, row in enumerate(rows, 1):
        for col, value in enumerate(row):
            if value:
                sheet.write_string(n, col, value)
    workbook.close()
    return out.getvalue()


@pytest.mark.req("X2")
@hsettings(max_examples=100, deadline=None)
@given(values=st.lists(ANY_TEXT, min_size=1, max_size=4))
def test_xlsx_cells_read_back_as_xlsxwriter_wrote_them_whatever_the_text(values):
    # Both readers see exactly the cells xlsxwriter's file shows (control characters as _xHHHH_,
    # & < > \ tab and line feed as themselves), after the formula escaping.
    ours = io.BytesIO()
    rows = [[v, "x" + v] for v in values]
    assert write_xlsx(ours, ["v", "w"], rows, guid_columns=()) == len(values)
    escaped = [[escape_cell(c) for c in row] for row in rows]
    assert cells_by_both_readers(ours.getvalue()) == cells_by_both_readers(
        xlsxwriter_bytes(["v", "w"], escaped)
    )


@pytest.mark.req("X2")
@pytest.mark.django_db
@hsettings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(values=st.lists(ANY_TEXT, min_size=1, max_size=4))
def test_the_sql_built_sheet_is_byte_for_byte_the_python_written_one(values):
    # xlsx_file has PostgreSQL write each row's XML; write_xlsx does it in Python. Same rows, same
    # sheet: so the SQL path escapes (formulas and XML) exactly as the Python one tested above.
    handle, count = xlsx_file(sql_query(values))
    with handle:
        from_sql = handle.read()
    from_python = io.BytesIO()
    rows = [[f"{n:016x}", v] for n, v in enumerate(values, 1)]
    write_xlsx(from_python, ["guid", "v"], rows, guid_columns=("guid",))
    assert count == len(values)
    assert sheet_xml(from_sql) == sheet_xml(from_python.getvalue())


@pytest.mark.django_db
def test_an_xlsx_export_stops_at_the_formats_last_row(monkeypatch):
    # FILE_FORMATS: 1,048,576 rows is XLSX's own limit; a longer export still opens (its rows cut there).
    import rollouts.exports

    monkeypatch.setattr(rollouts.exports, "XLSX_MAX_ROWS", 4)  # the header and 3 rows
    handle, count = xlsx_file(
        Query(columns=["guid"], select=["lpad(n::text, 16, '0')"], from_sql="FROM generate_series(1, 6) n")
    )
    with handle:
        sheet = openpyxl.load_workbook(io.BytesIO(handle.read())).worksheets[0]
    assert count == 3
    assert [c.value for (c,) in sheet.iter_rows()] == ["guid", *(f"{n:016d}" for n in (1, 2, 3))]


# -- the exports of the faces: scoping (P3, P4), BOM, escaping, audit (X2) -------------------------


@pytest.fixture
def live(draft, dcc, dcc_2):  # noqa: F811 - the fixture imported above
    from rollouts.services.lifecycle import approve_proposal, propose

    approve_proposal(user=dcc_2, proposal_id=propose(user=dcc, rollout_id=draft.pk, move="publish").pk)
    draft.refresh_from_db()
    return draft


def download(client, user, name: str, *args) -> tuple[list[list[str]], bytes]:
    sign_in(client, user)
    response = client.get(reverse(name, args=args))
    assert response.status_code == 200, response
    data = b"".join(response.streaming_content)
    if name.endswith("xlsx"):
        with read_rows(io.BytesIO(data), columns=dict.fromkeys(HEADERS[name], False)) as reader:
            rows = [[row[c] for c in HEADERS[name]] for _, row in reader]
        return [list(HEADERS[name]), *rows], data
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))), data


HEADERS = {
    "ssi:estate-xlsx": ESTATE_COLUMNS,
    "ssmi:rollout-device-status-xlsx": DEVICE_STATUS_COLUMNS,
    "ssmi:rollout-default-pilot-list-xlsx": DEFAULT_PILOT_LIST_COLUMNS,
    "ssmi:rollout-default-pilot-schedule-xlsx": SCHEDULE_COLUMNS,
    "ssmi:rollout-safe-launch-schedule-xlsx": SCHEDULE_COLUMNS,
}


def guids(rows: list[list[str]]) -> list[str]:
    column = rows[0].index("guid")
    return sorted(r[column][-2:] for r in rows[1:])  # the last octet names the test hub


@pytest.mark.req("U2")
@pytest.mark.req("P3")
@pytest.mark.req("P4")
@pytest.mark.parametrize("name", ["ssi:estate-csv", "ssi:estate-xlsx"])
def test_the_estate_report_holds_every_hub_of_the_supplier_and_nobody_elses(
    client, live, import_supplier, gas_supplier, other_supplier, name
):
    rows, data = download(client, import_supplier, name)
    assert rows[0] == list(ESTATE_COLUMNS)
    by_guid = {r[0]: dict(zip(ESTATE_COLUMNS, r, strict=True)) for r in rows[1:]}
    assert guids(rows) == ["01", "02", "05", "06"]  # never 03 (GasCo's) or 04 (Other Power's)
    split = by_guid["00-DB-00-00-00-00-00-01"]
    assert (split["role"], split["split"], split["rollout"], split["stage"], split["deployment_status"]) == (
        "import",
        "yes",
        live.reference,
        "notification",
        "pending",
    )
    both = by_guid["00-DB-00-00-00-00-00-02"]
    assert (both["role"], both["split"], both["csp_region"]) == ("import+gas", "no", "north")
    assert by_guid["00-DB-00-00-00-00-00-05"]["rollout"] in ("", None)  # not eligible: no rollout row
    for other in (gas_supplier, other_supplier):  # P4: the partner is never named
        assert other.organisation.name.encode() not in data and other.organisation.slug.encode() not in data
    assert guids(download(client, gas_supplier, name)[0]) == ["01", "03"]
    assert guids(download(client, other_supplier, name)[0]) == ["04"]


@pytest.mark.req("U2")
def test_the_estate_page_counts_the_hubs_and_links_both_formats(client, live, import_supplier):
    sign_in(client, import_supplier)
    page = client.get(reverse("ssi:estate")).text
    assert "<strong>4 hubs</strong>" in page
    assert reverse("ssi:estate-csv") in page and reverse("ssi:estate-xlsx") in page


@pytest.mark.req("X2")
def test_every_download_is_audited_with_its_row_count(client, live, import_supplier, csp_north):
    download(client, import_supplier, "ssi:estate-csv")
    download(client, import_supplier, "ssi:estate-xlsx")
    download(client, import_supplier, "ssi:rollout-eligibility", live.pk)
    download(client, csp_north, "ssmi:rollout-device-status", live.pk)
    events = AuditEvent.objects.filter(action__startswith="export.").order_by("id")
    assert [(e.action, e.user, e.details) for e in events] == [
        ("export.estate", import_supplier, {"rows": 4, "format": "csv"}),
        ("export.estate", import_supplier, {"rows": 4, "format": "xlsx"}),
        ("export.eligibility", import_supplier, {"rows": 2, "format": "csv"}),
        ("export.device_status", csp_north, {"rows": 2, "format": "csv"}),
    ]
    assert events[2].object_id == str(live.pk)


@pytest.mark.req("P3")
@pytest.mark.req("P4")
def test_eligibility_lists_the_suppliers_hubs_of_the_rollout_with_its_role(
    client, live, import_supplier, gas_supplier, other_supplier
):
    rows, _ = download(client, import_supplier, "ssi:rollout-eligibility", live.pk)
    assert rows == [
        list(ELIGIBILITY_COLUMNS),
        ["00-DB-00-00-00-00-00-01", "010A030B", "0002012F", "north", "import", "yes"],
        ["00-DB-00-00-00-00-00-02", "010A030B", "0002012F", "north", "import+gas", "no"],
    ]
    rows, _ = download(client, gas_supplier, "ssi:rollout-eligibility", live.pk)
    assert [(r[0][-2:], r[4], r[5]) for r in rows[1:]] == [("01", "gas", "yes"), ("03", "gas", "no")]
    sign_in(client, import_supplier)
    assert client.get(reverse("ssi:rollout-eligibility", args=[live.pk + 1000])).status_code == 404


@pytest.mark.req("P3")
@pytest.mark.parametrize("name", ["ssmi:rollout-device-status", "ssmi:rollout-device-status-xlsx"])
def test_device_status_gives_a_csp_its_region_and_dcc_everything(
    client, live, csp_north, csp_south, dcc, name
):
    rows, _ = download(client, csp_north, name, live.pk)
    assert rows[0] == list(DEVICE_STATUS_COLUMNS) and guids(rows) == ["01", "02"]
    assert guids(download(client, csp_south, name, live.pk)[0]) == ["03", "04"]
    assert guids(download(client, dcc, name, live.pk)[0]) == ["01", "02", "03", "04"]


@pytest.mark.req("X2")
def test_a_failure_reason_that_looks_like_a_formula_is_escaped_and_reads_back(client, live, csp_north):
    RolloutHub.objects.filter(rollout=live, hub__guid="00DB000000000001").update(
        status="failed", failure_reason='=HYPERLINK("http://evil.test","x")'
    )
    rows, _ = download(client, csp_north, "ssmi:rollout-device-status", live.pk)
    assert rows[1][2] == "failed" and rows[1][5] == '\'=HYPERLINK("http://evil.test","x")'
    rows, _ = download(client, csp_north, "ssmi:rollout-device-status-xlsx", live.pk)
    assert rows[1][5] == '=HYPERLINK("http://evil.test","x")'  # the reader strips the apostrophe


# -- piloting and schedules of a rollout (PL3, SL3, T5, PL5), scoped and audited ------------------------------

SPLIT, BOTH, GAS_SOUTH, OTHER_SOUTH = (
    "00DB000000000001",
    "00DB000000000002",
    "00DB000000000003",
    "00DB000000000004",
)


def file(text: str, name: str = "upload.csv") -> ContentFile:
    return ContentFile(text.encode(), name=name)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def piloted(live, dcc, csp_north, csp_south, import_supplier, gas_supplier):
    """Default lists (01, 02 north; 03 south), a default schedule per region (north's batch named like a
    formula), a safe launch batch for 04, and schedule requests that conflict on the split hub 01."""
    from rollouts.services.constraints import declare_constraints, request_constraint
    from rollouts.services.piloting import upload_default_pilot_list
    from rollouts.services.schedules import upload_default_pilot_schedule, upload_safe_launch_schedule

    soon = timezone.now().replace(microsecond=0) + dt.timedelta(days=30)
    w1, w2, w3 = (
        (soon, soon + dt.timedelta(days=5)),
        (soon, soon + dt.timedelta(days=7)),
        (soon, soon + dt.timedelta(days=60)),
    )
    for csp, text in ((csp_north, f"guid\n{SPLIT}\n{BOTH}\n"), (csp_south, f"guid\n{GAS_SOUTH}\n")):
        upload = upload_default_pilot_list(user=csp, rollout_id=live.pk, content=file(text))
        assert upload.state == UploadState.APPLIED, list(upload.errors.values_list("code", "message"))
    north = f"batch,guid,window_start,window_end\n=P1,{SPLIT},{iso(w1[0])},{iso(w1[1])}\n=P1,{BOTH},{iso(w1[0])},{iso(w1[1])}\n"
    south = f"batch,guid,window_start,window_end\nS1,{GAS_SOUTH},{iso(w2[0])},{iso(w2[1])}\n"
    for csp, text in ((csp_north, north), (csp_south, south)):
        upload = upload_default_pilot_schedule(user=csp, rollout_id=live.pk, content=file(text))
        assert upload.state == UploadState.APPLIED, list(upload.errors.values_list("code", "message"))
    text = f"batch,guid,window_start,window_end\n+SL1,{OTHER_SOUTH},{iso(w3[0])},{iso(w3[1])}\n"
    upload = upload_safe_launch_schedule(user=csp_south, rollout_id=live.pk, content=file(text))
    assert upload.state == UploadState.APPLIED, list(upload.errors.values_list("code", "message"))
    declare_constraints(user=dcc, rollout_id=live.pk, kinds=["time_band"])
    request_constraint(
        user=import_supplier,
        rollout_id=live.pk,
        constraint_kind="time_band",
        value={"from": "22:00", "to": "06:00"},
        hub_guids=[SPLIT, BOTH],
    )
    request_constraint(
        user=gas_supplier,
        rollout_id=live.pk,
        constraint_kind="time_band",
        value={"from": "08:00", "to": "12:00"},
        hub_guids=[SPLIT],
    )
    live.refresh_from_db()
    return {"rollout": live, "w1": w1, "w2": w2, "w3": w3}


@pytest.mark.req("PL3")
@pytest.mark.req("P3")
@pytest.mark.parametrize("kind", ["default-pilot-list", "default-pilot-schedule"])
def test_the_default_pilot_list_and_schedule_are_scoped_to_region_own_hubs_or_all(
    client, piloted, kind, dcc, csp_north, csp_south, import_supplier, gas_supplier, other_supplier
):
    live = piloted["rollout"]
    assert guids(download(client, csp_north, f"ssmi:rollout-{kind}", live.pk)[0]) == ["01", "02"]
    assert guids(download(client, csp_south, f"ssmi:rollout-{kind}", live.pk)[0]) == ["03"]
    assert guids(download(client, dcc, f"ssmi:rollout-{kind}", live.pk)[0]) == ["01", "02", "03"]
    assert guids(download(client, import_supplier, f"ssi:rollout-{kind}", live.pk)[0]) == ["01", "02"]
    assert guids(download(client, gas_supplier, f"ssi:rollout-{kind}", live.pk)[0]) == ["01", "03"]
    assert (
        guids(download(client, other_supplier, f"ssi:rollout-{kind}", live.pk)[0]) == []
    )  # 04 is not a pilot hub


@pytest.mark.req("PL3")
def test_the_default_pilot_schedule_is_in_the_upload_layout_with_the_batch_name_escaped(
    client, piloted, csp_north
):
    live, (start, end) = piloted["rollout"], piloted["w1"]
    rows, _ = download(client, csp_north, "ssmi:rollout-default-pilot-schedule", live.pk)
    assert rows == [
        list(SCHEDULE_COLUMNS),
        ["'=P1", "00-DB-00-00-00-00-00-01", iso(start), iso(end)],
        ["'=P1", "00-DB-00-00-00-00-00-02", iso(start), iso(end)],
    ]


def batches_state(rollout) -> list[tuple]:
    return sorted(
        RolloutHub.objects.filter(rollout=rollout).values_list(
            "hub__guid",
            "batch__name",
            "batch__window_start",
            "batch__window_end",
            "group",
            "planned_activation_at",
        )
    )


@pytest.mark.req("PL2")
@pytest.mark.req("SL2")
@pytest.mark.req("X2")
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_an_exported_schedule_uploads_back_applied_and_changes_nothing(
    client, piloted, csp_north, csp_south, fmt
):
    from rollouts.services.piloting import upload_default_pilot_list
    from rollouts.services.schedules import upload_default_pilot_schedule, upload_safe_launch_schedule

    live = piloted["rollout"]
    suffix = "-xlsx" if fmt == "xlsx" else ""
    before = batches_state(live)
    batches_before = sorted(
        Batch.objects.filter(rollout=live).values_list("pk", "name", "window_start", "window_end")
    )
    for user, kind, service in (
        (csp_north, "default-pilot-list", upload_default_pilot_list),
        (csp_north, "default-pilot-schedule", upload_default_pilot_schedule),
        (csp_south, "safe-launch-schedule", upload_safe_launch_schedule),
    ):
        _, data = download(client, user, f"ssmi:rollout-{kind}{suffix}", live.pk)
        upload = service(user=user, rollout_id=live.pk, content=ContentFile(data, name=f"{kind}.{fmt}"))
        assert upload.state == UploadState.APPLIED, list(upload.errors.values_list("row", "code", "message"))
        changed = {k: v for k, v in upload.summary.items() if k in CHANGES and v}
        assert changed == {}, (kind, upload.summary)
        assert set(upload.summary) & set(CHANGES), upload.summary  # the check is not vacuous
        assert upload.summary.get("pilot_before") == upload.summary.get("pilot_after")
    assert batches_state(live) == before
    assert (
        sorted(Batch.objects.filter(rollout=live).values_list("pk", "name", "window_start", "window_end"))
        == batches_before
    )


# What an upload's summary counts as a change (the rest are sizes: hubs, batches_replaced, ...).
CHANGES = (
    "newly_listed",
    "no_longer_listed",
    "batches_added",
    "batches_removed",
    "hubs_given_a_batch",
    "hubs_left_without_batch",
    "plan_changed",
    "joined",
    "left",
    "added",
    "removed",
)


@pytest.mark.req("PL6")
@pytest.mark.req("P3")
@pytest.mark.req("P4")
def test_the_effective_pilot_group_says_why_and_a_supplier_sees_only_its_hubs(
    client, piloted, csp_south, dcc, import_supplier, gas_supplier, other_supplier
):
    live, (start, end) = piloted["rollout"], piloted["w2"]
    rows, _ = download(client, gas_supplier, "ssi:rollout-effective-pilot-group", live.pk)
    assert rows[0] == list(EFFECTIVE_PILOT_COLUMNS)
    assert rows[1:] == [
        ["00-DB-00-00-00-00-00-01", "north", "'=P1", iso(piloted["w1"][0]), iso(piloted["w1"][1]), "default"],
        ["00-DB-00-00-00-00-00-03", "south", "S1", iso(start), iso(end), "default"],
    ]
    assert guids(download(client, import_supplier, "ssi:rollout-effective-pilot-group", live.pk)[0]) == [
        "01",
        "02",
    ]
    assert guids(download(client, other_supplier, "ssi:rollout-effective-pilot-group", live.pk)[0]) == []
    assert guids(download(client, csp_south, "ssmi:rollout-effective-pilot-group", live.pk)[0]) == ["03"]
    assert guids(download(client, dcc, "ssmi:rollout-effective-pilot-group", live.pk)[0]) == [
        "01",
        "02",
        "03",
    ]


@pytest.mark.req("SL3")
@pytest.mark.req("P3")
def test_the_safe_launch_schedule_gives_a_supplier_its_hubs_a_csp_its_region(
    client, piloted, csp_north, csp_south, dcc, import_supplier, other_supplier
):
    live, (start, end) = piloted["rollout"], piloted["w3"]
    rows, _ = download(client, other_supplier, "ssi:rollout-safe-launch-schedule", live.pk)
    assert rows == [list(SCHEDULE_COLUMNS), ["'+SL1", "00-DB-00-00-00-00-00-04", iso(start), iso(end)]]
    assert guids(download(client, import_supplier, "ssi:rollout-safe-launch-schedule", live.pk)[0]) == []
    assert guids(download(client, csp_north, "ssmi:rollout-safe-launch-schedule", live.pk)[0]) == []
    assert guids(download(client, csp_south, "ssmi:rollout-safe-launch-schedule-xlsx", live.pk)[0]) == ["04"]
    assert guids(download(client, dcc, "ssmi:rollout-safe-launch-schedule", live.pk)[0]) == ["04"]


@pytest.mark.req("T5")
@pytest.mark.req("P3")
def test_the_deployment_plan_gives_a_csp_its_region_with_times_and_why(
    client, piloted, csp_north, dcc, import_supplier
):
    live, (start, end) = piloted["rollout"], piloted["w1"]
    rows, _ = download(client, csp_north, "ssmi:rollout-deployment-plan", live.pk)
    assert rows == [
        list(DEPLOYMENT_PLAN_COLUMNS),
        [
            "00-DB-00-00-00-00-00-01",
            "'=P1",
            iso(start),
            iso(end),
            iso(end),
            "pilot_window",
        ],  # T5: end of window
        ["00-DB-00-00-00-00-00-02", "'=P1", iso(start), iso(end), iso(end), "pilot_window"],
    ]
    assert guids(download(client, dcc, "ssmi:rollout-deployment-plan", live.pk)[0]) == [
        "01",
        "02",
        "03",
        "04",
    ]
    with pytest.raises(PermissionDenied):
        download_deployment_plan(user=import_supplier, rollout=live)


@pytest.mark.req("PL5")
@pytest.mark.req("P3")
@pytest.mark.req("P4")
def test_schedule_requests_list_each_hub_with_conflicts_for_the_csp_and_only_its_own_for_a_supplier(
    client, piloted, csp_north, csp_south, dcc, import_supplier, gas_supplier
):
    live = piloted["rollout"]
    rows, _ = download(client, csp_north, "ssmi:rollout-schedule-requests", live.pk)
    assert rows[0] == list(SCHEDULE_REQUEST_COLUMNS)
    volt, gas = sorted({r[0] for r in rows[1:]}, key=int)
    assert [r[1:] for r in rows[1:]] == [
        [
            "time_band",
            "22:00-06:00",
            "00-DB-00-00-00-00-00-01",
            "pending",
            "",
            "yes",
        ],  # GasCo asked 08:00-12:00
        ["time_band", "22:00-06:00", "00-DB-00-00-00-00-00-02", "pending", "", "no"],
        ["time_band", "08:00-12:00", "00-DB-00-00-00-00-00-01", "pending", "", "yes"],
    ]
    assert [r[0] for r in rows[1:]] == [volt, volt, gas]
    assert len(download(client, dcc, "ssmi:rollout-schedule-requests", live.pk)[0]) == 4
    assert download(client, csp_south, "ssmi:rollout-schedule-requests", live.pk)[0][1:] == []
    rows, data = download(client, import_supplier, "ssi:rollout-schedule-requests", live.pk)
    assert [(r[0], r[2], r[3][-2:], r[6]) for r in rows[1:]] == [
        (volt, "22:00-06:00", "01", "no"),
        (volt, "22:00-06:00", "02", "no"),
    ]
    assert b"08:00" not in data  # P4: never what the partner asked


@pytest.mark.req("X2")
def test_each_new_export_is_audited_against_the_rollout_with_its_row_count(
    client, piloted, csp_north, import_supplier
):
    live = piloted["rollout"]
    for name in (
        "default-pilot-list",
        "default-pilot-schedule-xlsx",
        "effective-pilot-group",
        "deployment-plan",
    ):
        download(client, csp_north, f"ssmi:rollout-{name}", live.pk)
    download(client, import_supplier, "ssi:rollout-schedule-requests", live.pk)
    events = AuditEvent.objects.filter(action__startswith="export.").order_by("id")
    assert [(e.action, e.user, e.object_id, e.details) for e in events] == [
        ("export.default_pilot_list", csp_north, str(live.pk), {"rows": 2, "format": "csv"}),
        ("export.default_pilot_schedule", csp_north, str(live.pk), {"rows": 2, "format": "xlsx"}),
        ("export.effective_pilot_group", csp_north, str(live.pk), {"rows": 2, "format": "csv"}),
        ("export.deployment_plan", csp_north, str(live.pk), {"rows": 2, "format": "csv"}),
        ("export.schedule_requests", import_supplier, str(live.pk), {"rows": 2, "format": "csv"}),
    ]


def test_the_rollout_pages_link_the_downloads_of_each_face(client, piloted, csp_north, dcc, import_supplier):
    live = piloted["rollout"]
    sign_in(client, import_supplier)
    page = client.get(reverse("ssi:rollout-detail", args=[live.pk])).text
    for name in (
        "eligibility",
        "default-pilot-list",
        "default-pilot-schedule",
        "effective-pilot-group",
        "safe-launch-schedule",
        "schedule-requests",
    ):
        assert reverse(f"ssi:rollout-{name}", args=[live.pk]) in page
    sign_in(client, csp_north)
    page = client.get(reverse("ssmi:rollout-detail", args=[live.pk])).text
    for name in ("device-status", "default-pilot-schedule-xlsx", "deployment-plan", "schedule-requests"):
        assert reverse(f"ssmi:rollout-{name}", args=[live.pk]) in page
    assert reverse("ssmi:rollout-evidence", args=[live.pk]) not in page  # DCC only (B5)
    sign_in(client, dcc)
    assert (
        reverse("ssmi:rollout-evidence", args=[live.pk])
        in client.get(reverse("ssmi:rollout-detail", args=[live.pk])).text
    )


# -- B5: the evidence pack ---------------------------------------------------------------------------------


def zip_csvs(data: bytes) -> dict[str, list[list[str]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        out = {}
        for name in archive.namelist():
            raw = archive.read(name)
            assert raw.startswith(b"\xef\xbb\xbf"), name
            out[name] = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
        return out


@pytest.mark.req("B5")
@pytest.mark.req("X2")
def test_the_evidence_pack_holds_timeline_notices_decisions_batches_outcomes_and_failure_reasons(
    client, piloted, dcc, dcc_2, csp_north
):
    from rollouts.services import counters
    from rollouts.services.lifecycle import propose

    live = piloted["rollout"]
    RolloutHub.objects.filter(rollout=live, hub__guid__in=[SPLIT, BOTH]).update(
        status="failed", failure_reason="=image rejected"
    )
    RolloutHub.objects.filter(rollout=live, hub__guid=OTHER_SOUTH).update(
        status="failed", failure_reason="timeout"
    )
    counters.recount([live.pk])
    stop = propose(user=dcc_2, rollout_id=live.pk, move="stop", reason="Field reports")
    sign_in(client, dcc)
    response = client.get(reverse("ssmi:rollout-evidence", args=[live.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    files = zip_csvs(b"".join(response.streaming_content))
    assert sorted(files) == [
        "batches.csv",
        "decisions.csv",
        "failure_reasons.csv",
        "notices.csv",
        "outcomes.csv",
        "timeline.csv",
    ]
    timeline = files["timeline.csv"]
    assert timeline[0] == ["at", "actor", "user", "organisation", "action", "object", "details"]
    publish = next(r for r in timeline if r[4] == "proposal.approve")
    assert publish[1:4] == ["dcc", "dev@dcc.test", "DCC"] and re.fullmatch(
        r"\d{4}-\d\d-\d\dT[\d:]{8}\+0[01]:00", publish[0]
    )
    assert {"rollout.create", "proposal.create", "schedule_request.create"} <= {r[4] for r in timeline}
    notices = files["notices.csv"]
    assert notices[0] == ["at", "organisation", "kind", "subject"]
    assert ["GasCo", "pilot.default_schedule"] in [r[1:3] for r in notices[1:]]
    decisions = files["decisions.csv"]
    assert decisions[0] == list(DECISION_COLUMNS)
    rows = {(r[0], r[2]): dict(zip(DECISION_COLUMNS, r, strict=True)) for r in decisions[1:]}
    assert (rows["proposal", "publish"]["state"], rows["proposal", "publish"]["proposed_by"]) == (
        "approved",
        "dee@dcc.test",
    )
    assert rows["proposal", "publish"]["approved_by"] == "dev@dcc.test"
    assert (rows["proposal", "stop"]["id"], rows["proposal", "stop"]["state"]) == (str(stop.pk), "pending")
    assert (
        rows["proposal", "stop"]["reason"] == "Field reports"
        and rows["proposal", "stop"]["approved_by"] == ""
    )
    batches = files["batches.csv"]
    assert batches[0] == ["name", "region", "group", "window_start", "window_end", "held", "hubs"]
    assert [(r[0], r[1], r[2], r[5], r[6]) for r in batches[1:]] == [
        ("'=P1", "north", "pilot", "no", "2"),
        ("S1", "south", "pilot", "no", "1"),
        ("'+SL1", "south", "safe_launch", "no", "1"),
    ]
    assert files["outcomes.csv"] == [
        ["group", "status", "hubs"],
        ["pilot", "failed", "2"],
        ["pilot", "pending", "1"],
        ["safe_launch", "failed", "1"],
    ]  # U1: the CSP rows count the split hub once
    assert files["failure_reasons.csv"] == [["reason", "hubs"], ["'=image rejected", "2"], ["timeout", "1"]]
    event = AuditEvent.objects.get(action="export.evidence_pack")
    assert (event.user, event.object_id, event.details["format"]) == (dcc, str(live.pk), "zip")
    assert event.details["rows"]["batches.csv"] == 3 and event.details["rows"]["failure_reasons.csv"] == 2
