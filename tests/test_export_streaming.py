"""Exports stream (issue 7): a download's memory does not grow with its rows, in either format.

Each measurement is the peak resident size (VmHWM) of a fresh subprocess that builds the Supplier's
estate report through the export service (what the SSI download view returns) and reads it to the
end, once for a small estate and once for one many times larger. tracemalloc would miss libpq's
buffers; ru_maxrss of a forked child includes the pytest process.
A service that gathered the file in memory (the CSV's bytes, or an XLSX writer that keeps every
cell as an object, like xlsxwriter without constant memory) grows by far more than the bound for
the extra rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from rollouts.models import DeviceModel, FirmwareVersion, OrgKind

from .conftest import database_url_for_children
from .factories import OrganisationFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent
SMALL = 10_000
# The extra rows: ~60 bytes a row in CSV (12 MB more for 200,000); xlsxwriter without constant
# memory keeps ~6 cell objects a row (hundreds of MB).
BIG = {"csv": 210_000, "xlsx": 110_000}
GROWTH_BOUND_MB = 6

MEASURE = """
import json, sys, django
django.setup()
from rollouts.models import User
from rollouts.services.exports import download_estate_report

download = download_estate_report(user=User.objects.get(email=sys.argv[1]), fmt=sys.argv[2])
size = 0
if download.chunks is not None:
    for chunk in download.chunks:
        size += len(chunk)
else:
    while data := download.file.read(64 * 1024):  # as FileResponse sends it
        size += len(data)
    download.file.close()
peak = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": download.rows, "bytes": size, "peak_mb": peak}))
"""


def _estate(prefix: str, count: int) -> str:
    """A Supplier holding `count` hubs (inserted by one statement) and its user's email."""
    org = OrganisationFactory(kind=OrgKind.SUPPLIER)
    user = UserFactory(organisation=org)
    model = DeviceModel.objects.get_or_create(
        cpl_code="010A030B", defaults={"manufacturer": "Toshiba", "model": "CH", "hardware_version": "1.0"}
    )[0]
    version = FirmwareVersion.objects.get_or_create(device_model=model, version="00020101")[0]
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO rollouts_hub (guid, device_model_id, firmware_version_id, region, import_supplier_id,
                   gas_supplier_id, friendly, production_proving, status, firmware_as_of, updated_at)
               SELECT %s || lpad(upper(to_hex(n)), 12, '0'), %s, %s, 'north', %s, NULL, false, false,
                      'in_smi', now(), now()
               FROM generate_series(1, %s) n""",
            [prefix, model.pk, version.pk, org.pk, count],
        )
        cursor.execute("ANALYZE rollouts_hub")
    return user.email


def _measure(email: str, fmt: str) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chfw_portal.settings",
        "PORTAL_TESTING": "true",
        "DATABASE_URL": database_url_for_children(),
    }
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, email, fmt],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.req("U2")
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status (Linux)")
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_the_estate_download_streams_its_memory_flat_as_rows_grow(fmt):
    small, big = _estate("00DA", SMALL), _estate("00DB", BIG[fmt])

    few, many = _measure(small, fmt), _measure(big, fmt)

    assert (few["rows"], many["rows"]) == (SMALL, BIG[fmt])
    assert many["bytes"] > 8 * few["bytes"]  # the files really grew
    growth = many["peak_mb"] - few["peak_mb"]
    print(
        f"{fmt}: {SMALL:,} rows peak {few['peak_mb']:.1f} MB, {BIG[fmt]:,} rows peak {many['peak_mb']:.1f} MB"
    )
    assert growth < GROWTH_BOUND_MB, (few, many)
