"""The SMI inventory load through the intake pipeline (issue 3: X1, X2, X3, B3, E6)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection

from rollouts.models import (
    AuditEvent,
    DeviceModel,
    FirmwareVersion,
    Hub,
    HubStatus,
    InventoryChange,
    OrgKind,
    UploadState,
)
from rollouts.services.inventory import load_inventory
from tests.factories import OrganisationFactory

HEADER = "guid,device_model,firmware_version,csp_region,import_supplier,gas_supplier,flags\n"
A = "00-DB-12-34-56-78-9A-01"
B = "00-DB-12-34-56-78-9A-02"
C = "00-DB-12-34-56-78-9A-03"
UTC = dt.UTC


def csv(*rows: str, name: str = "smi.csv") -> ContentFile:
    return ContentFile((HEADER + "".join(r + "\n" for r in rows)).encode(), name=name)


@pytest.fixture
def smi(db):
    OrganisationFactory(name="DCC", slug="dcc", kind=OrgKind.DCC)
    volt = OrganisationFactory(name="Volt Energy", slug="volt-energy")
    gasco = OrganisationFactory(name="GasCo", slug="gasco")
    model = DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="Toshiba", model="CH1", hardware_version="1"
    )
    other = DeviceModel.objects.create(
        cpl_code="020B0001", manufacturer="WNC", model="CH2", hardware_version="2"
    )
    v1 = FirmwareVersion.objects.create(device_model=model, version="0002012F")
    v2 = FirmwareVersion.objects.create(device_model=model, version="00020130")
    w1 = FirmwareVersion.objects.create(device_model=other, version="00010001")
    return {"volt": volt, "gasco": gasco, "model": model, "other": other, "v1": v1, "v2": v2, "w1": w1}


def hub(guid: str) -> Hub:
    return Hub.objects.get(guid=guid.replace("-", ""))


def test_a_valid_file_is_applied_and_reports_what_is_new(smi):
    upload = load_inventory(
        user=None,
        content=csv(
            f"{A},010A030B,0002012F,north,volt-energy,gasco,friendly",
            f"{B},010a030b,0002012f,North,volt-energy,volt-energy,",
            f"{C},020B0001,00010001,south,,gasco,friendly;production_proving",
        ),
    )
    assert upload.state == UploadState.APPLIED and upload.row_count == 3
    assert upload.summary["new"] == 3 and upload.summary["updated"] == 0
    a = hub(A)
    assert (a.device_model, a.firmware_version, a.region) == (smi["model"], smi["v1"], "north")
    assert (a.import_supplier, a.gas_supplier, a.friendly, a.production_proving) == (
        smi["volt"],
        smi["gasco"],
        True,
        False,
    )
    assert a.is_split and not hub(B).is_split  # one organisation in both roles is not split
    assert hub(C).import_supplier is None and hub(C).production_proving
    # brand-new hubs are counted in the summary, not logged one by one (the log is for changed hubs)
    assert not InventoryChange.objects.filter(upload=upload).exists()


def hub_indexes() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'rollouts_hub' ORDER BY 1"
        )
        return cursor.fetchall()


def test_a_first_load_leaves_every_index_of_the_smi_in_place(smi):
    before = hub_indexes()  # the first load into an empty SMI builds its secondary indexes after the rows
    upload = load_inventory(user=None, content=csv(f"{A},010A030B,0002012F,north,volt-energy,,"))
    assert upload.summary["new"] == 1 and hub_indexes() == before
    assert Hub.objects.filter(import_supplier=smi["volt"]).count() == 1


def test_a_stored_guid_reads_back_whole(smi):
    load_inventory(user=None, content=csv(f"{A},010A030B,0002012F,north,,,"))
    assert Hub.objects.get().guid == "00DB123456789A01"  # all 16 digits (the char(16) trap)
    assert str(Hub.objects.get()) == A


@pytest.mark.req("X3")
def test_a_file_with_any_error_changes_nothing_and_lists_every_error(smi):
    load_inventory(user=None, content=csv(f"{A},010A030B,0002012F,north,volt-energy,,"))
    before = list(Hub.objects.values_list("guid", "import_supplier_id", "firmware_version_id", "region"))
    upload = load_inventory(
        user=None,
        content=csv(
            f"{A},010A030B,00020130,central,gasco,,",  # valid on its own
            "00DB123456789AZZ,010A030B,0002012F,north,,,",
            f"{B},XX,0002012F,west,nobody,,vip",
            f"{C},010A030B,00010001,north,,,",  # a version of another model
            "00:db:12:34:56:78:9a:01,010A030B,0002012F,north,,,",  # A again, another spelling
        ),
    )
    assert upload.state == UploadState.REJECTED
    got = sorted((e.row, e.column, e.value, e.code) for e in upload.errors.all())
    assert got == [
        (2, "guid", A, "guid_duplicate"),
        (3, "guid", "00DB123456789AZZ", "guid_format"),
        (4, "csp_region", "west", "value_invalid"),
        (4, "device_model", "XX", "reference_unknown"),
        (4, "flags", "vip", "value_invalid"),
        (4, "import_supplier", "nobody", "reference_unknown"),
        (5, "firmware_version", "00010001", "reference_unknown"),
        (6, "guid", "00:db:12:34:56:78:9a:01", "guid_duplicate"),
    ]
    assert upload.error_count == 8
    assert (
        list(Hub.objects.values_list("guid", "import_supplier_id", "firmware_version_id", "region")) == before
    )
    assert not InventoryChange.objects.filter(upload=upload).exists()
    events = AuditEvent.objects.filter(object_type="rollouts.upload", object_id=str(upload.pk))
    assert [e.action for e in events] == ["upload.rejected"]  # one event, and nothing else recorded
    assert events[0].details["errors"] == 8 and events[0].details["sha256"] == upload.sha256


@pytest.mark.req("X1")
@pytest.mark.req("X2")
def test_the_file_is_kept_with_its_hash_outside_the_static_root(smi):
    content = (HEADER + f"{A},010A030B,0002012F,north,,,\n").encode()
    upload = load_inventory(user=None, content=ContentFile(content, name="../../etc/passwd.csv"))
    assert upload.sha256 == hashlib.sha256(content).hexdigest() and upload.size == len(content)
    assert upload.name == "../../etc/passwd.csv"  # kept as sent, for people; never used as a path
    path = Path(upload.file.path).resolve()
    assert path.read_bytes() == content
    assert path.is_relative_to(Path(settings.MEDIA_ROOT).resolve())
    assert not path.is_relative_to(Path(settings.STATIC_ROOT).resolve())
    assert "passwd" not in path.name
    event = AuditEvent.objects.get(action="upload.applied.inventory")
    assert event.details["upload_id"] == upload.pk and event.details["sha256"] == upload.sha256
    assert event.details["new"] == 1 and event.actor == "system"


def test_the_same_file_again_is_recognised_and_not_applied_twice(smi):
    first = load_inventory(user=None, content=csv(f"{A},010A030B,0002012F,north,volt-energy,,"))
    Hub.objects.filter(guid=hub(A).guid).update(region="south")  # a change the re-upload would undo
    again = load_inventory(user=None, content=csv(f"{A},010A030B,0002012F,north,volt-energy,,"))
    assert again.state == UploadState.APPLIED and again.summary == {"same_as_upload": first.pk, "changed": 0}
    assert hub(A).region == "south"


@pytest.mark.req("E6")
def test_a_delta_reports_supplier_and_version_changes_with_the_old_values(smi):
    load_inventory(
        user=None,
        content=csv(
            f"{A},010A030B,0002012F,north,volt-energy,gasco,", f"{B},010A030B,0002012F,north,volt-energy,,"
        ),
    )
    upload = load_inventory(
        user=None,
        content=csv(
            f"{A},010A030B,00020130,north,gasco,gasco,", f"{B},010A030B,0002012F,north,volt-energy,,"
        ),
    )
    assert upload.summary | {"as_of": None} == {
        "mode": "delta",
        "as_of": None,
        "new": 0,
        "updated": 1,
        "unchanged": 1,
        "supplier_changed": 1,
        "model_changed": 0,
        "version_changed": 1,
        "left": 0,
        "returned": 0,
        "rollouts_touched": 0,  # no live rollout holds these hubs
        "joined_rollouts": 0,
        "left_rollouts": 0,
        "supplier_changed_in_rollouts": 0,
        "instructions_lapsed": 0,
        "amendments_lapsed": 0,
    }
    change = InventoryChange.objects.get(upload=upload)
    assert change.hub == hub(A) and change.supplier_changed and change.version_changed
    assert (change.old_import_supplier, change.old_gas_supplier, change.old_firmware_version) == (
        smi["volt"],
        smi["gasco"],
        smi["v1"],
    )
    assert hub(A).import_supplier == smi["gasco"] and hub(A).firmware_version == smi["v2"]


def test_an_older_load_never_undoes_a_newer_confirmed_version(smi):
    load_inventory(
        user=None,
        content=csv(f"{A},010A030B,00020130,north,volt-energy,,"),
        as_of=dt.datetime(2026, 11, 2, tzinfo=UTC),
    )
    upload = load_inventory(
        user=None,
        content=csv(f"{A},010A030B,0002012F,north,gasco,,"),
        as_of=dt.datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert hub(A).firmware_version == smi["v2"]  # stays the newer confirmed version
    assert hub(A).import_supplier == smi["gasco"]  # other facts still load
    assert upload.summary["version_changed"] == 0


@pytest.mark.req("B3")
def test_a_full_load_marks_absent_hubs_left_and_never_deletes_them(smi):
    load_inventory(
        user=None, content=csv(f"{A},010A030B,0002012F,north,,,", f"{B},010A030B,0002012F,north,,,")
    )
    upload = load_inventory(user=None, content=csv(f"{A},010A030B,0002012F,north,,,"), mode="full")
    assert upload.summary["left"] == 1 and hub(B).status == HubStatus.LEFT and hub(B).left_at is not None
    assert Hub.objects.count() == 2
    back = load_inventory(
        user=None, content=csv(f"{A},010A030B,0002012F,north,,,", f"{B},020B0001,00010001,north,,,")
    )
    assert back.summary["returned"] == 1 and back.summary["model_changed"] == 1
    assert hub(B).status == HubStatus.IN_SMI and hub(B).device_model == smi["other"]


@pytest.mark.req("B3")
def test_a_full_load_refuses_to_remove_more_than_the_limit_without_force(smi):
    load_inventory(
        user=None,
        content=csv(
            f"{A},010A030B,0002012F,north,,,",
            f"{B},010A030B,0002012F,north,,,",
            f"{C},010A030B,0002012F,north,,,",
        ),
    )
    refused = load_inventory(
        user=None, content=csv(f"{A},010A030B,0002012F,north,,,"), mode="full", max_removals=1
    )
    assert refused.state == UploadState.REJECTED
    assert [e.code for e in refused.errors.all()] == ["too_many_removals"]
    assert "would mark 2 hubs as left" in refused.errors.get().message
    assert Hub.objects.filter(status=HubStatus.LEFT).count() == 0
    forced = load_inventory(
        user=None,
        content=csv(f"{A},010A030B,0002012F,north,,,", name="again.csv"),
        mode="full",
        max_removals=1,
        force=True,
    )
    assert forced.summary["left"] == 2


def test_the_command_loads_and_reports(smi, tmp_path, capsys):
    path = tmp_path / "smi.csv"
    path.write_text(HEADER + f"{A},010A030B,0002012F,north,volt-energy,,\n")
    call_command("load_inventory", str(path), "--as-of", "2026-11-27T06:00")
    assert "1 new" in capsys.readouterr().out
    assert hub(A).firmware_as_of == dt.datetime(2026, 11, 27, 6, 0, tzinfo=UTC)  # UK time in winter = UTC
    path.write_text(HEADER + "nonsense,010A030B,0002012F,north,,,\n")
    with pytest.raises(CommandError, match="refused with 1 error"):
        call_command("load_inventory", str(path))
