"""Admin import and export of reference data with django-import-export (issue 7, part 3).

Device models and firmware versions only; a file with any invalid row imports nothing; every
confirmed import and every export is audited (X1, X2); exports escape formulas like ours.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import zipfile

import openpyxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from rollouts.admin import DeviceModelResource, FirmwareVersionResource
from rollouts.exports import FORMULA_STARTS
from rollouts.models import AuditEvent, DeviceModel, FirmwareVersion

pytestmark = pytest.mark.django_db

CSV_FORMAT, XLSX_FORMAT = "0", "1"  # the admin's formats: [CSV, SafeXLSX]


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


def preview(client, model: str, text: str):
    """Step 1: upload the file; import-export dry-runs it and shows the rows or their errors."""
    upload = SimpleUploadedFile(f"{model}.csv", text.encode(), content_type="text/csv")
    response = client.post(
        reverse(f"admin:rollouts_{model}_import"), {"import_file": upload, "format": CSV_FORMAT}
    )
    assert response.status_code == 200
    return response


def confirm(client, model: str, response):
    """Step 2: confirm the import previewed in `response`."""
    form = response.context["confirm_form"]
    assert form is not None, response.context["result"]
    return client.post(reverse(f"admin:rollouts_{model}_process_import"), form.initial)


def test_a_valid_device_model_file_imports_and_is_audited(admin_client, staff):
    text = "cpl_code,manufacturer,model,hardware_version\n010A030B,Toshiba,CH1,1\n020B0001,WNC,CH2,2\n"
    response = confirm(admin_client, "devicemodel", preview(admin_client, "devicemodel", text))
    assert response.status_code == 302
    assert sorted(DeviceModel.objects.values_list("cpl_code", "manufacturer")) == [
        ("010A030B", "Toshiba"),
        ("020B0001", "WNC"),
    ]
    event = AuditEvent.objects.get(action="admin.import")
    assert (event.user, event.actor) == (staff, "staff")
    assert event.details == {"model": "rollouts.devicemodel", "rows": 2, "new": 2}


@pytest.mark.req("X3")
def test_a_device_model_file_with_one_invalid_row_imports_nothing(admin_client):
    text = "cpl_code,manufacturer,model,hardware_version\n010A030B,Toshiba,CH1,1\n020B0001,,CH2,2\n"
    response = preview(admin_client, "devicemodel", text)
    result = response.context["result"]
    assert result.has_validation_errors() and response.context.get("confirm_form") is None
    assert [row.number for row in result.invalid_rows] == [2]
    assert not DeviceModel.objects.exists()
    assert not AuditEvent.objects.filter(action="admin.import").exists()


@pytest.mark.req("X3")
def test_a_confirmed_firmware_file_that_has_become_invalid_rolls_back_whole(admin_client, staff):
    DeviceModel.objects.create(cpl_code="010A030B", manufacturer="Toshiba", model="CH1", hardware_version="1")
    good = "device_model,version,release_note_url\n010A030B,0002012F,\n"
    response = preview(admin_client, "firmwareversion", good)
    # The kept file changes under the confirmation (what a stale preview would do): one valid row and
    # one with a version that is not 8 hex digits and one with an unknown device model.
    name = response.context["confirm_form"].initial["import_file_name"]
    with open(os.path.join(tempfile.gettempdir(), name), "w", encoding="utf-8") as kept:
        kept.write(good + "010A030B,XYZ,\n99999999,00020130,\n")
    response = confirm(admin_client, "firmwareversion", response)
    assert response.status_code == 302
    assert not FirmwareVersion.objects.exists()  # rollback_on_validation_errors: not even the valid row
    event = AuditEvent.objects.get(action="admin.import_rejected")
    # XYZ fails the model's check (invalid); the unknown CPL code fails its widget (an error).
    assert event.details == {"model": "rollouts.firmwareversion", "rows": 3, "invalid": 1, "error": 1}


def test_a_valid_firmware_file_imports_against_the_device_model_by_cpl_code(admin_client):
    model = DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="T", model="CH1", hardware_version="1"
    )
    text = "device_model,version,release_note_url\n010A030B,0002012F,https://example.test/rn\n"
    confirm(admin_client, "firmwareversion", preview(admin_client, "firmwareversion", text))
    assert list(FirmwareVersion.objects.values_list("device_model", "version")) == [(model.pk, "0002012F")]


@pytest.mark.req("X2")
@pytest.mark.parametrize("start", FORMULA_STARTS[:4])
def test_an_export_escapes_a_name_that_starts_like_a_formula(start):
    DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer=f"{start}1+1", model="CH1", hardware_version="1"
    )
    rows = DeviceModelResource().export().dict
    assert rows[0]["manufacturer"] == f"'{start}1+1"


@pytest.mark.req("X2")
def test_the_admin_export_is_escaped_in_csv_and_xlsx_and_audited(admin_client, staff):
    DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="==1+1", model="@SUM(A1)", hardware_version="1"
    )
    fields = {
        f"devicemodelresource_{f}": "on" for f in ("cpl_code", "manufacturer", "model", "hardware_version")
    }
    url = reverse("admin:rollouts_devicemodel_export")
    response = admin_client.post(url, {"format": CSV_FORMAT, "resource": "0", **fields})
    assert response.status_code == 200, response.content[:500]
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[1] == ["010A030B", "'==1+1", "'@SUM(A1)", "1"]  # import-export's own escaper: "=1+1"
    response = admin_client.post(url, {"format": XLSX_FORMAT, "resource": "0", **fields})
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).worksheets[0]
    assert [c.value for c in sheet[2]] == ["010A030B", "'==1+1", "'@SUM(A1)", "1"]
    events = AuditEvent.objects.filter(action="admin.export").order_by("id")
    assert [(e.user, e.details["rows"], e.details["format"]) for e in events] == [
        (staff, 1, "csv"),
        (staff, 1, "xlsx"),
    ]


def test_an_exported_file_imports_back_unchanged():
    DeviceModel.objects.create(cpl_code="010A030B", manufacturer="-Minus", model="CH1", hardware_version="1")
    dataset = DeviceModelResource().export()
    result = DeviceModelResource().import_data(dataset, dry_run=False, rollback_on_validation_errors=True)
    assert not result.has_errors() and not result.has_validation_errors()
    assert result.totals["skip"] == 1  # unchanged: the apostrophe was stripped again
    assert DeviceModel.objects.get().manufacturer == "-Minus"


def test_firmware_versions_export_the_device_model_by_cpl_code():
    model = DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="T", model="CH1", hardware_version="1"
    )
    FirmwareVersion.objects.create(device_model=model, version="0002012F")
    assert FirmwareVersionResource().export().dict == [
        {"device_model": "010A030B", "version": "0002012F", "release_note_url": ""}
    ]


def test_a_device_model_workbook_imports_and_a_zip_that_is_not_one_is_refused(admin_client):
    from rollouts.exports import write_xlsx

    out = io.BytesIO()
    columns = ["cpl_code", "manufacturer", "model", "hardware_version"]
    write_xlsx(
        out, columns, [["010A030B", "'=Toshiba", "CH1", "1"]], guid_columns=("cpl_code",), escape=False
    )
    upload = SimpleUploadedFile("models.xlsx", out.getvalue())
    url = reverse("admin:rollouts_devicemodel_import")
    response = admin_client.post(url, {"import_file": upload, "format": XLSX_FORMAT})
    confirm(admin_client, "devicemodel", response)
    assert list(DeviceModel.objects.values_list("cpl_code", "manufacturer")) == [("010A030B", "=Toshiba")]
    not_a_workbook = io.BytesIO()
    with zipfile.ZipFile(not_a_workbook, "w") as archive:
        archive.writestr("hello.txt", "hi")
    upload = SimpleUploadedFile("models.xlsx", not_a_workbook.getvalue())
    response = admin_client.post(url, {"import_file": upload, "format": XLSX_FORMAT})
    assert response.context["form"].errors["import_file"]
    assert DeviceModel.objects.count() == 1
