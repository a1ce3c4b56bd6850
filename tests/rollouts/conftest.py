"""An estate for lifecycle tests: device model M with versions v1 -> v2, hubs across regions and Suppliers."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from rollouts.models import DeviceModel, FirmwareVersion, OrgKind, Region
from rollouts.services.inventory import load_inventory
from rollouts.services.lifecycle import create_rollout
from tests.factories import OrganisationFactory

HEADER = "guid,device_model,firmware_version,csp_region,import_supplier,gas_supplier,flags\n"


def inventory(*rows: str, name: str = "smi.csv") -> ContentFile:
    return ContentFile((HEADER + "".join(r + "\n" for r in rows)).encode(), name=name)


@pytest.fixture
def estate(db, dcc, dcc_2, csp_north, csp_south, import_supplier, gas_supplier, other_supplier):
    """Hubs of model 010A030B: 01-04 on v1 (eligible), 05 on v2 already, 06 another model.

    01 Volt (import) + GasCo (gas): split, north
    02 Volt both roles, north
    03 GasCo gas only, south
    04 Other Power import only, south
    """
    OrganisationFactory(name="CSP Central", kind=OrgKind.CSP, region=Region.CENTRAL)
    model = DeviceModel.objects.create(
        cpl_code="010A030B", manufacturer="Toshiba", model="CH1", hardware_version="1"
    )
    other = DeviceModel.objects.create(
        cpl_code="020B0001", manufacturer="WNC", model="CH2", hardware_version="2"
    )
    v1 = FirmwareVersion.objects.create(device_model=model, version="0002012F")
    v2 = FirmwareVersion.objects.create(device_model=model, version="00020130")
    v3 = FirmwareVersion.objects.create(device_model=model, version="00020131")
    w1 = FirmwareVersion.objects.create(device_model=other, version="00010001")
    volt, gasco, oscar = (u.organisation.slug for u in (import_supplier, gas_supplier, other_supplier))
    load_inventory(
        user=None,
        content=inventory(
            f"00DB000000000001,010A030B,0002012F,north,{volt},{gasco},",
            f"00DB000000000002,010A030B,0002012F,north,{volt},{volt},",
            f"00DB000000000003,010A030B,0002012F,south,,{gasco},",
            f"00DB000000000004,010A030B,0002012F,south,{oscar},,",
            f"00DB000000000005,010A030B,00020130,north,{volt},,",
            f"00DB000000000006,020B0001,00010001,north,{volt},,",
        ),
    )
    return {"model": model, "other": other, "v1": v1, "v2": v2, "v3": v3, "w1": w1}


@pytest.fixture
def draft(estate, dcc):
    return new_draft(dcc, estate["v2"], [estate["v1"]])


def new_draft(user, target, replaced, impact: str = "functional", **extra):
    return create_rollout(
        **extra,
        user=user,
        title=f"CH1 firmware {target.version}",
        target_version=target,
        replaced_versions=replaced,
        release_note_url="https://example.test/release-notes",
        severity="high",
        priority="high",
        release_type="sec_release",
        impact=impact,
    )


def another_waits_for_a_lock(done: threading.Event | None = None, seconds: float = 10) -> bool:
    """For tests that force an overlap: poll until another backend of this database waits for a lock (True),
    or until `done` is set or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline and not (done and done.is_set()):
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # activity is cached per transaction
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.01)
    return False


@contextlib.contextmanager
def savepoint():
    """For a test that runs many sequences: each starts from the same data, with a savepoint of our own (the
    services' atomic blocks are durable, so they may not be nested in another atomic block of the test's)."""
    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT model")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ROLLBACK TO SAVEPOINT model")
