"""Exports (FILE_FORMATS.md "Writing rules"): BOM, formula escaping, GUIDs as text, scoping, audit."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from rollouts.exports import FORMULA_STARTS, Query, copy_csv, csv_lines, escape_cell, write_xlsx, xlsx_file
from rollouts.intake.errors import FileRejected
from rollouts.intake.readers import read_rows
from rollouts.models import AuditEvent, RolloutHub
from rollouts.services.exports import DEVICE_STATUS_COLUMNS, ELIGIBILITY_COLUMNS, ESTATE_COLUMNS
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


HEADERS = {"ssi:estate-xlsx": ESTATE_COLUMNS, "ssmi:rollout-device-status-xlsx": DEVICE_STATUS_COLUMNS}


def guids(rows: list[list[str]]) -> list[str]:
    return sorted(r[0][-2:] for r in rows[1:])  # the last octet names the test hub


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
