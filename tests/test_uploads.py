"""Kept files and error reports (X2, X3, PL3): only the sender and DCC get the raw file; all audited."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from rollouts.intake.pipeline import Layout, check_guids_visible, process_upload, receive_upload
from rollouts.models import AuditEvent, Hub, UploadKind, UploadState
from tests.rollouts.test_inventory_load import csv as inventory_csv
from tests.rollouts.test_inventory_load import smi  # noqa: F401 - fixture

from .conftest import sign_in


class GuidListHandler:
    """A GUID list with the visibility check every list upload uses (P3 reason codes)."""

    layout = Layout(kind=UploadKind.VULNERABLE_FLAGS, columns={"guid": True, "vulnerable": False})

    def __init__(self, org):
        self.org = org

    def check(self, staging, upload):
        check_guids_visible(staging, self.org)

    def apply(self, staging, upload):
        return {"rows": staging.row_count}


def send(user, text: str, name: str = "list.csv"):
    upload = receive_upload(
        user=user,
        organisation=user.organisation,
        kind=UploadKind.VULNERABLE_FLAGS,
        content=ContentFile(text.encode(), name=name),
    )
    return process_upload(upload.pk, GuidListHandler(user.organisation))


@pytest.fixture
def estate(smi, import_supplier, other_supplier):  # noqa: F811
    from rollouts.services.inventory import load_inventory

    smi["volt"].users.add(import_supplier)  # Alice works for the Supplier that holds A and B
    load_inventory(
        user=None,
        content=inventory_csv(
            "00DB123456789A01,010A030B,0002012F,north,volt-energy,,",
            "00DB123456789A02,010A030B,0002012F,south,,volt-energy,",
            "00DB123456789A03,010A030B,0002012F,north,gasco,,",
        ),
    )
    return smi


UNKNOWN = "00DB123456789AFF"


@pytest.mark.req("P3")
def test_a_supplier_gets_guid_not_yours_for_unknown_and_other_hubs_alike(estate, import_supplier):
    upload = send(import_supplier, f"guid\n00DB123456789A01\n00DB123456789A02\n00DB123456789A03\n{UNKNOWN}\n")
    assert upload.state == UploadState.REJECTED
    assert sorted((e.row, e.code) for e in upload.errors.all()) == [
        (4, "guid_not_yours"),
        (5, "guid_not_yours"),
    ]
    messages = {e.message for e in upload.errors.all()}
    assert len(messages) == 1  # the same words for both: nothing tells the hub exists


@pytest.mark.req("P3")
def test_a_csp_gets_guid_not_in_region_and_only_dcc_gets_guid_unknown(estate, csp_north, dcc):
    upload = send(csp_north, f"guid\n00DB123456789A01\n00DB123456789A02\n{UNKNOWN}\n")
    assert sorted((e.row, e.code) for e in upload.errors.all()) == [
        (3, "guid_not_in_region"),
        (4, "guid_not_in_region"),
    ]
    upload = send(dcc, f"guid\n00DB123456789A02\n{UNKNOWN}\n")
    assert [(e.row, e.code) for e in upload.errors.all()] == [(3, "guid_unknown")]
    assert send(dcc, "guid\n00DB123456789A02\n", name="ok.csv").state == UploadState.APPLIED


@pytest.mark.req("X3")
def test_the_error_page_groups_by_reason_and_offers_every_error_as_csv(client, estate, import_supplier):
    rows = "".join(f"00DB12345678{n:04X}\n" for n in range(0x1000, 0x1000 + 130))  # 130 unknown hubs
    upload = send(import_supplier, "guid\nnot-a-guid\n" + rows)
    sign_in(client, import_supplier)
    page = client.get(reverse("ssi:upload-detail", args=[upload.pk])).text
    assert (
        "131 errors" in page
        and "130 × <code>guid_not_yours</code>" in page
        and "1 × <code>guid_format</code>" in page
    )
    assert (
        "The first 100 errors" in page
        and page.count('class="govuk-table__cell govuk-table__cell--numeric"') == 100
    )
    response = client.get(reverse("ssi:upload-errors", args=[upload.pk]))
    body = b"".join(response.streaming_content).decode()
    assert body.startswith("\ufeffrow,column,value,code,message")
    lines = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert len(lines) == 1 + 131 and lines[1][:4] == ["2", "guid", "not-a-guid", "guid_format"]
    assert AuditEvent.objects.filter(action="upload.errors_downloaded", object_id=str(upload.pk)).count() == 1


@pytest.mark.req("X2")
@pytest.mark.req("PL3")
def test_the_raw_file_goes_to_its_sender_and_dcc_only_and_each_download_is_audited(
    client, estate, import_supplier, other_supplier, dcc
):
    upload = send(import_supplier, "guid\n00DB123456789A01\n")
    url = reverse("ssi:upload-file", args=[upload.pk])
    sign_in(client, import_supplier)
    assert b"".join(client.get(url).streaming_content) == b"guid\n00DB123456789A01\n"
    sign_in(client, other_supplier)
    assert client.get(url).status_code == 404  # as if it did not exist
    sign_in(client, dcc)
    response = client.get(reverse("ssmi:upload-file", args=[upload.pk]))
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment")
    downloads = AuditEvent.objects.filter(action="upload.file_downloaded", object_id=str(upload.pk))
    assert sorted(e.user.email for e in downloads) == sorted([import_supplier.email, dcc.email])


def test_a_rejected_list_changes_no_domain_data(estate, import_supplier):
    before = list(Hub.objects.order_by("id").values())
    send(import_supplier, f"guid\n{UNKNOWN}\n")
    assert list(Hub.objects.order_by("id").values()) == before
