"""The hostile corpus through the whole intake pipeline (issue 3 part 6; X3).

Each bad file is refused with its reason code and changes no domain table; each valid file of the
same shape is applied (so the test cannot pass by refusing everything); peak memory is measured as
the peak resident size of a subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files import File

from rollouts.intake.pipeline import ROWS, Layout, check_guids_visible, process_upload, receive_upload
from rollouts.models import DeviceModel, FirmwareVersion, Hub, Organisation, OrgKind, UploadKind, UploadState
from tests.conftest import database_url_for_children

from .test_hostile_files import corpus

ROOT = Path(__file__).resolve().parents[2]
# At pipeline level a GUID twice in two spellings is caught by the staging checks.
PIPELINE_EXPECTED = {
    **corpus.EXPECTED,
    "duplicate_guid_spellings.csv": "guid_duplicate",
    "duplicate_guid_spellings.xlsx": "guid_duplicate",
}
RSS_BOUND_MB = 250  # issue 3: memory under 250 MB for any CSV size


class MarkFriendly:
    """A real domain write if applied: the listed hubs become friendly."""

    layout = Layout(kind=UploadKind.DEFAULT_PILOT_LIST, columns={"guid": True, "action": False})

    def __init__(self, org, *, copy_csv: bool = False):
        self.org = org
        self.layout = dataclasses.replace(MarkFriendly.layout, copy_csv=copy_csv)

    def check(self, staging, upload):
        check_guids_visible(staging, self.org)

    def apply(self, staging, upload):
        staging.cursor.execute(
            f"UPDATE rollouts_hub SET friendly = true WHERE guid IN (SELECT guid_hex FROM {ROWS})"
        )
        return {"friendly": staging.cursor.rowcount}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return corpus.build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def dcc_org(db):
    org = Organisation.objects.create(name="DCC", slug="dcc", kind=OrgKind.DCC)
    model = DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="T", model="CH1", hardware_version="1"
    )
    version = FirmwareVersion.objects.create(device_model=model, version="0002012F")
    Hub.objects.bulk_create(
        Hub(guid=g, device_model=model, firmware_version=version, region="north")
        for g in [*corpus.GUIDS, "00DB000000000001", "00DB000000000002"]
    )
    return org


def domain_snapshot() -> list:
    return list(Hub.objects.order_by("guid").values_list("guid", "friendly", "status", "updated_at"))


@pytest.mark.req("X3")
@pytest.mark.parametrize("name", sorted(PIPELINE_EXPECTED))
@pytest.mark.parametrize("copy_csv", [False, True], ids=["reader", "copy-csv"])  # PostgreSQL parses plain CSV
def test_each_file_through_the_pipeline(files, name, copy_csv, dcc_org, settings):
    expected = PIPELINE_EXPECTED[name].split(":")[-1]
    if name.startswith("too_many_rows"):
        settings.INTAKE_MAX_CSV_ROWS = settings.INTAKE_MAX_XLSX_ROWS = 10
    if name.startswith("too_large"):
        settings.INTAKE_MAX_BYTES = 1024
    before = domain_snapshot()
    with files[name].open("rb") as fh:
        upload = receive_upload(
            user=None, organisation=dcc_org, kind=UploadKind.DEFAULT_PILOT_LIST, content=File(fh, name=name)
        )
    upload = process_upload(upload.pk, MarkFriendly(dcc_org, copy_csv=copy_csv))
    if expected == "ok":
        assert upload.state == UploadState.APPLIED, list(upload.errors.values_list("code", "message"))
        assert upload.summary["friendly"] > 0 and domain_snapshot() != before
    else:
        assert upload.state == UploadState.REJECTED
        assert expected in set(upload.errors.values_list("code", flat=True))
        assert domain_snapshot() == before


MEASURE = """
import json, os, sys, django
django.setup()
from django.core.files import File
from rollouts.intake.pipeline import Layout, process_upload, receive_upload
from rollouts.models import Organisation, Upload, UploadKind

class FormatOnly:
    layout = Layout(kind=UploadKind.DEFAULT_PILOT_LIST, columns={"guid": True, "action": False})
    def __init__(self, copy_csv=False):
        self.layout = Layout(kind=UploadKind.DEFAULT_PILOT_LIST, columns={"guid": True, "action": False},
                             copy_csv=copy_csv)
    def check(self, staging, upload): pass
    def apply(self, staging, upload): return {}

org = Organisation.objects.get(slug="dcc-rss")
out = {}
for path in sys.argv[1:]:
    for copy_csv in (False, True):  # the Python reader, then COPY of a plain CSV by PostgreSQL
        Upload.objects.filter(organisation=org).delete()  # else the same file is recognised, not read again
        with open(path, "rb") as fh:
            upload = receive_upload(user=None, organisation=org, kind=UploadKind.DEFAULT_PILOT_LIST,
                                    content=File(fh, name=os.path.basename(path)))
        upload = process_upload(upload.pk, FormatOnly(copy_csv))
        out[os.path.basename(path) + (" copy" if copy_csv else "")] = [
            upload.state, upload.row_count, sorted(set(upload.errors.values_list("code", flat=True)))]
out["peak_mb"] = next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
# VmHWM: this process's own peak; ru_maxrss would include the memory of the pytest process that forked it
print(json.dumps(out))
"""


@pytest.mark.req("X3")
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status (Linux)")
def test_peak_memory_of_the_pipeline_stays_bounded(files, tmp_path, settings):
    Organisation.objects.create(name="DCC RSS", slug="dcc-rss", kind=OrgKind.DCC)
    big = tmp_path / "million.csv"
    with big.open("w") as fh:
        fh.write("guid,action\n")
        for n in range(1_000_000):
            fh.write(f"00DB{n:012X},add\n")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chfw_portal.settings",
        "PORTAL_TESTING": "true",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "DATABASE_URL": database_url_for_children(),
    }
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(big), str(files["zip_bomb.xlsx"]), str(files["xml_bomb.xlsx"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["million.csv"] == out["million.csv copy"] == ["applied", 1_000_000, []]
    assert out["zip_bomb.xlsx"][0] == "rejected" and out["zip_bomb.xlsx"][2] == ["file_bomb"]
    assert out["xml_bomb.xlsx"][0] == "rejected" and out["xml_bomb.xlsx"][2] == ["file_bomb"]
    print(f"pipeline peak RSS: {out['peak_mb']:.0f} MB for 1,000,000 CSV rows and both bombs")
    assert out["peak_mb"] < RSS_BOUND_MB, out
