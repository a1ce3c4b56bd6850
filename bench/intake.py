"""Intake benchmark (issue part 9): figures printed, never asserted.

    python -m bench.intake [--quick] [--inventory-only] [--repeat N] [--profile TEXT] [--xlsx-1m-timeout S]

Run through `make bench` (scripts/bench.sh), which provides DATABASE_URL (default chfw_bench) and
BENCH_INV_DATABASE_URL (chfw_bench_inv), both migrated. What it measures:

a. The intake pipeline for a Supplier-scoped GUID list (receive_upload + process_upload, a handler
   whose check is check_guids_visible and whose apply does nothing), 50,000 and 1,000,000 GUIDs, CSV
   and XLSX, against 1,000,000 hubs (created once in DATABASE_URL with a bare COPY, then reused).
b. Beside it, in the same run, the floor: a bare COPY of the same GUIDs (already canonical) into a
   temporary table, ANALYZE, and one anti-join against rollouts_hub counting the rows not visible.
c. load_inventory of 1,000,000 hubs into an empty hub table (BENCH_INV_DATABASE_URL, truncated
   first), then the same file with 5% of rows changed as a delta; beside a bare COPY + INSERT ... ON
   CONFLICT upsert of the same rows.

Every measurement runs in a fresh child process (`python -m bench.intake --child NAME PARAMS`), so its
peak memory is its own. Peak memory is VmHWM from /proc/self/status (the high-water RSS of the
child's own address space). getrusage(RUSAGE_SELF).ru_maxrss is recorded too, but on Linux a
child started with vfork (what subprocess does) inherits the parent's high-water mark at exec, so it
is only a valid figure when it exceeds the parent's RSS; the orchestrator imports no Django and
holds no data to keep that small.

The figures go to the terminal and to bench-results/intake.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench-results"
RESULTS = RESULTS_DIR / "intake.json"

HUBS = 1_000_000
SMALL = 50_000
SIZES = {"50k": SMALL, "1M": HUBS}
MULT = 0x5DEECE66D  # odd: i -> i * MULT mod 2**48 is a bijection, so GUIDs are unique and unordered
MASK48 = (1 << 48) - 1
REGIONS = ("north", "central", "south")
SUPPLIERS = tuple((f"bench-supplier-{n}", f"Bench Supplier {n}") for n in range(1, 5))
MODEL = "BE0C0001"
FIRMWARE = ("00010001", "00010002")
SEED = 20261127
AS_OF_NEW = "2026-11-01T06:00:00+00:00"
AS_OF_DELTA = "2026-11-02T06:00:00+00:00"
CHILD_TIMEOUT = 900  # seconds, any child
XLSX_1M_TIMEOUT = 180  # seconds: past this the 1M XLSX case is reported as skipped
RESULT_MARK = "BENCH-RESULT "

TARGET_STAGE_50K = 0.5  # s, 50,000 CSV, staging + validation
TARGET_INVENTORY_1M = 10.0  # s, load_inventory of 1,000,000 new hubs
TARGET_PEAK_MB = 250.0  # any CSV size


# --------------------------------------------------------------------------------------------
# Data: hub i of the bench estate
# --------------------------------------------------------------------------------------------


def guid(i: int) -> str:
    return f"00DB{(i * MULT) & MASK48:012X}"


def display(hex16: str) -> str:
    return "-".join(hex16[k : k + 2] for k in range(0, 16, 2))


def hub_attrs(i: int, *, delta: bool = False) -> tuple[str, int, int, int, bool]:
    """(region, import supplier index, gas supplier index, firmware index, friendly) of hub i.

    Supplier 1 is the gas supplier of every hub (so a 1M-GUID list of its hubs exists); import
    suppliers rotate over the 4. The delta changes 5% of hubs: half their import supplier, half
    their firmware version.
    """
    region, imp, gas, fw, friendly = REGIONS[i % 3], i % 4, 0, i % 2, i % 50 == 0
    if delta and i % 20 == 7:
        if (i // 20) % 2 == 0:
            imp = (imp + 1) % 4
        else:
            fw = 1 - fw
    return region, imp, gas, fw, friendly


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chfw_portal.settings")
    import django

    django.setup()


def _memory() -> dict[str, float]:
    hwm = 0.0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return {
        "peak_mb": round(hwm, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


class Phases:
    """Wall time of wrapped functions: name -> list of (start, end)."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {}

    def span(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans.setdefault(name, []).append((start, perf_counter()))

        return timed

    def instrument_pipeline(self, pipeline: Any) -> None:
        for attr, name in (
            ("_stage_rows", "stage_rows"),
            ("read_rows", "open_file"),
            ("_copy_rows", "read_normalise_copy"),
            ("_copy_plain", "copy_csv"),
            ("_copy_failures", "copy_failures"),
            ("_check_guids", "guid_checks"),
        ):
            setattr(pipeline, attr, self.span(name, getattr(pipeline, attr)))
        pipeline.Staging.failure_count = self.span("failure_count", pipeline.Staging.failure_count)

    def first(self, name: str) -> tuple[float, float] | None:
        spans = self.spans.get(name)
        return spans[0] if spans else None

    def seconds(self, name: str) -> float:
        return sum(end - start for start, end in self.spans.get(name, ()))

    def pipeline_figures(self, process: float) -> dict[str, float]:
        """The phases of one process_upload, and staging + validation from CREATE TEMP to the count."""
        created = self.first("stage_rows")
        guid_checks, counted = self.first("guid_checks"), self.first("failure_count")
        out = {
            name: self.seconds(name)
            for name in ("open_file", "read_normalise_copy", "copy_csv", "guid_checks", "check", "apply")
        }
        if created and guid_checks:
            out["analyze"] = guid_checks[0] - created[1]  # ANALYZE intake_rows (and closing the file)
        if created and counted:
            out["stage_validate"] = counted[1] - created[0]
            out["other"] = process - out["stage_validate"] - out.get("apply", 0.0)
        return {k: round(v, 4) for k, v in out.items()}


class SlowSql:
    """A Django execute wrapper that keeps the statements slower than `threshold` seconds."""

    def __init__(self, threshold: float = 0.02) -> None:
        self.threshold = threshold
        self.items: list[tuple[float, str]] = []

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        start = perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            took = perf_counter() - start
            if took >= self.threshold:
                self.items.append((round(took, 3), " ".join(sql.split())[:160]))

    def slowest(self, n: int = 12) -> list[tuple[float, str]]:
        return sorted(self.items, reverse=True)[:n]


def ensure_reference() -> dict[str, Any]:
    """The organisations, device model and firmware versions the bench hubs refer to (idempotent)."""
    from rollouts.models import DeviceModel, FirmwareVersion, Organisation, OrgKind

    dcc = Organisation.objects.filter(kind=OrgKind.DCC).first()
    if dcc is None:
        dcc = Organisation.objects.create(name="Bench DCC", slug="bench-dcc", kind=OrgKind.DCC)
    suppliers = [
        Organisation.objects.get_or_create(slug=slug, defaults={"name": name, "kind": OrgKind.SUPPLIER})[0]
        for slug, name in SUPPLIERS
    ]
    model = DeviceModel.objects.get_or_create(
        cpl_code=MODEL, defaults={"manufacturer": "Bench", "model": "CH-B", "hardware_version": "1"}
    )[0]
    versions = [FirmwareVersion.objects.get_or_create(device_model=model, version=v)[0] for v in FIRMWARE]
    return {
        "dcc": dcc.pk,
        "suppliers": [s.pk for s in suppliers],
        "model": model.pk,
        "firmware": [v.pk for v in versions],
    }


def _server_settings(cursor: Any) -> dict[str, str]:
    out = {}
    for name in (
        "server_version",
        "shared_buffers",
        "work_mem",
        "maintenance_work_mem",
        "max_wal_size",
        "synchronous_commit",
        "random_page_cost",
    ):
        cursor.execute(f"SHOW {name}")
        out[name] = cursor.fetchone()[0]
    return out


HUB_COLUMNS = (
    "guid, device_model_id, firmware_version_id, region, import_supplier_id, gas_supplier_id, friendly, "
    "production_proving, status, firmware_as_of, updated_at, left_at"
)


def child_setup_hubs(params: dict[str, Any]) -> dict[str, Any]:
    """1,000,000 hubs of the bench device model in DATABASE_URL with a bare COPY, unless already there.

    Other bench modules keep their own hubs (other device models and GUID prefixes) in the same
    table: only this estate's hubs are counted, and only they are replaced when they are wrong.
    """
    _django()
    from django.db import connection, transaction

    ref = ensure_reference()
    sup, model, fws = ref["suppliers"], ref["model"], ref["firmware"]
    with connection.cursor() as cur:
        server = _server_settings(cur)
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE device_model_id = %s), "
            "count(*) FILTER (WHERE gas_supplier_id = %s AND device_model_id = %s), "
            "count(*) FILTER (WHERE guid IN (%s, %s)) FROM rollouts_hub",
            [model, sup[0], model, guid(0), guid(HUBS - 1)],
        )
        table, mine, ours, ends = cur.fetchone()
        if mine == HUBS and ours == HUBS and ends == 2:
            return {
                "created": False,
                "hubs": mine,
                "hubs_in_table": table,
                "server": server,
                "reference": ref,
            }
        start = perf_counter()
        stamp = "2026-10-01 06:00:00+00"
        with transaction.atomic():
            if mine:
                cur.execute(
                    "DELETE FROM rollouts_inventorychange c USING rollouts_hub h "
                    "WHERE c.hub_id = h.id AND h.device_model_id = %s",
                    [model],
                )
                cur.execute("DELETE FROM rollouts_hub WHERE device_model_id = %s", [model])
            with cur.copy(f"COPY rollouts_hub ({HUB_COLUMNS}) FROM STDIN") as copy:
                for block in range(0, HUBS, 20_000):
                    lines = []
                    for i in range(block, min(block + 20_000, HUBS)):
                        region, imp, gas, fw, friendly = hub_attrs(i)
                        lines.append(
                            f"{guid(i)}\t{model}\t{fws[fw]}\t{region}\t{sup[imp]}\t{sup[gas]}\t"
                            f"{'t' if friendly else 'f'}\tf\tin_smi\t{stamp}\t{stamp}\t\\N\n"
                        )
                    copy.write("".join(lines))
        copied = perf_counter() - start
        cur.execute("VACUUM (ANALYZE) rollouts_hub")
        cur.execute("SELECT count(*) FROM rollouts_hub")
        table = cur.fetchone()[0]
        return {
            "created": True,
            "hubs": HUBS,
            "hubs_in_table": table,
            "copy_seconds": round(copied, 2),
            "with_vacuum_seconds": round(perf_counter() - start, 2),
            "server": server,
            "reference": ref,
        }


def _schema(cursor: Any) -> dict[str, Any]:
    """What each written row pays for: indexes and (deferred) foreign keys of the tables the load writes."""
    out = {}
    for table in ("rollouts_hub", "rollouts_inventorychange"):
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", [table])
        indexes = [r[0] for r in cursor.fetchall()]
        cursor.execute(
            "SELECT conname, condeferred FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
            [table],
        )
        fks = cursor.fetchall()
        out[table] = {
            "indexes": indexes,
            "foreign_keys": len(fks),
            "deferred_foreign_keys": sum(1 for _, deferred in fks if deferred),
        }
    return out


def child_setup_inv(params: dict[str, Any]) -> dict[str, Any]:
    """Reference data in the inventory database, and the baseline's files (ids already resolved)."""
    _django()
    from django.db import connection

    ref = ensure_reference()
    sup, model, fws = ref["suppliers"], ref["model"], ref["firmware"]
    folder = Path(params["dir"])
    for name, delta in (("inventory_new.tsv", False), ("inventory_delta.tsv", True)):
        with (folder / name).open("w") as out:
            for i in range(HUBS):
                region, imp, gas, fw, friendly = hub_attrs(i, delta=delta)
                out.write(
                    f"{guid(i)}\t{model}\t{fws[fw]}\t{region}\t{sup[imp]}\t{sup[gas]}\t{'t' if friendly else 'f'}\tf\n"
                )
    with connection.cursor() as cur:
        server = _server_settings(cur)
        schema = _schema(cur)
    return {"reference": ref, "server": server, "schema": schema}


def child_gen_files(params: dict[str, Any]) -> dict[str, Any]:
    """The uploaded files: GUID lists (CSV, XLSX, and canonical hex for the baseline), inventory CSVs."""
    import csv

    import xlsxwriter

    folder = Path(params["dir"])
    sizes: dict[str, Any] = {}
    timings: dict[str, float] = {}
    rng = random.Random(SEED)
    for key, count in SIZES.items():
        if (params.get("quick") and count > SMALL) or params.get("inventory_only"):
            continue
        indexes = list(range(0, HUBS, HUBS // count))  # hubs of Supplier 1 (gas supplier of every hub)
        rng.shuffle(indexes)  # files arrive in no particular order
        hexes = [guid(i) for i in indexes]
        del indexes
        start = perf_counter()
        with (folder / f"list_{key}.csv").open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["guid"])
            writer.writerows([display(h)] for h in hexes)  # the spelling people use: 00-DB-12-...
        with (folder / f"list_{key}.hex").open("w") as out:
            out.writelines(f"{h}\n" for h in hexes)
        timings[f"csv_{key}"] = round(perf_counter() - start, 2)
        start = perf_counter()
        workbook = xlsxwriter.Workbook(str(folder / f"list_{key}.xlsx"), {"constant_memory": True})
        text = workbook.add_format({"num_format": "@"})
        sheet = workbook.add_worksheet("GUIDs")
        sheet.set_column(0, 0, 26, text)  # the GUID column formatted as text, as our templates do
        sheet.write_string(0, 0, "guid", text)
        for row, h in enumerate(hexes, 1):
            sheet.write_string(row, 0, display(h), text)
        workbook.close()
        timings[f"xlsx_{key}"] = round(perf_counter() - start, 2)
        del hexes
        for ext in ("csv", "xlsx", "hex"):
            sizes[f"list_{key}.{ext}"] = (folder / f"list_{key}.{ext}").stat().st_size
    if not params.get("quick"):
        start = perf_counter()
        header = "guid,device_model,firmware_version,csp_region,import_supplier,gas_supplier,flags\n"
        for name, delta in (("inventory_new.csv", False), ("inventory_delta.csv", True)):
            with (folder / name).open("w", newline="", encoding="utf-8") as out:
                out.write(header)
                for block in range(0, HUBS, 20_000):
                    lines = []
                    for i in range(block, min(block + 20_000, HUBS)):
                        region, imp, gas, fw, friendly = hub_attrs(i, delta=delta)
                        lines.append(
                            f"{display(guid(i))},{MODEL},{FIRMWARE[fw]},{region},{SUPPLIERS[imp][0]},"
                            f"{SUPPLIERS[gas][0]},{'friendly' if friendly else ''}\n"
                        )
                    out.write("".join(lines))
            sizes[name] = (folder / name).stat().st_size
        timings["inventory_csv"] = round(perf_counter() - start, 2)
    return {"bytes": sizes, "seconds": timings}


class GuidListHandler:
    """A Supplier's GUID list: the layout of Vulnerable premises flags (guid only), checked for
    visibility with check_guids_visible; applying does nothing (the bench measures intake only)."""

    def __init__(self, org: Any, phases: Phases) -> None:
        from rollouts.intake.pipeline import Layout
        from rollouts.models import UploadKind

        self.org = org
        self.layout = Layout(kind=UploadKind.VULNERABLE_FLAGS, columns={"guid": True})
        self.check = phases.span("check", self.check)
        self.apply = phases.span("apply", self.apply)

    def check(self, staging: Any, upload: Any) -> None:
        from rollouts.intake.pipeline import check_guids_visible

        check_guids_visible(staging, self.org)

    def apply(self, staging: Any, upload: Any) -> dict[str, Any]:
        return {}


def child_pipeline(params: dict[str, Any]) -> dict[str, Any]:
    _django()
    from django.core.files import File
    from django.db import connection

    from rollouts.intake import pipeline
    from rollouts.models import Organisation, Upload, UploadKind

    org = Organisation.objects.get(slug=SUPPLIERS[0][0])
    # Earlier bench uploads of the same file would make process_upload stop at "same as applied".
    Upload.objects.filter(kind=UploadKind.VULNERABLE_FLAGS, organisation=org).delete()
    phases = Phases()
    phases.instrument_pipeline(pipeline)
    handler = GuidListHandler(org, phases)
    path = Path(params["path"])
    slow = SlowSql()
    with connection.execute_wrapper(slow):
        start = perf_counter()
        with path.open("rb") as fh:
            upload = pipeline.receive_upload(
                user=None,
                organisation=org,
                kind=UploadKind.VULNERABLE_FLAGS,
                content=File(fh, name=path.name),
            )
        received = perf_counter()
        upload = pipeline.process_upload(upload.pk, handler)
        done = perf_counter()
    figures = phases.pipeline_figures(done - received)
    return {
        "state": upload.state,
        "rows": upload.row_count,
        "errors": upload.error_count,
        "seconds": figures.get("stage_validate"),
        "total_seconds": round(done - start, 4),
        "phases": {"receive": round(received - start, 4), "process": round(done - received, 4), **figures},
        "slow_sql": slow.slowest(),
        **_memory(),
    }


def child_baseline(params: dict[str, Any]) -> dict[str, Any]:
    """Bare COPY of canonical GUIDs into a temp table, ANALYZE, one anti-join against the hubs."""
    _django()
    from django.db import connection, transaction

    from rollouts.models import Organisation

    org = Organisation.objects.get(slug=SUPPLIERS[0][0])
    start = perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE bench_guids (guid varchar(16)) ON COMMIT DROP")
        with open(params["path"], "rb") as fh, cur.copy("COPY bench_guids (guid) FROM STDIN") as copy:
            while block := fh.read(1 << 20):
                copy.write(block)
        copied = perf_counter()
        cur.execute("ANALYZE bench_guids")
        analyzed = perf_counter()
        cur.execute(
            """SELECT count(*) FROM bench_guids g WHERE NOT EXISTS (
                   SELECT 1 FROM rollouts_hub h
                   WHERE h.guid = g.guid AND (h.import_supplier_id = %s OR h.gas_supplier_id = %s))""",
            [org.pk, org.pk],
        )
        not_visible = cur.fetchone()[0]
        joined = perf_counter()
        cur.execute("SELECT count(*) FROM bench_guids")
        rows = cur.fetchone()[0]
    done = perf_counter()
    return {
        "rows": rows,
        "not_visible": not_visible,
        "seconds": round(done - start, 4),
        "total_seconds": round(done - start, 4),
        "phases": {
            "copy": round(copied - start, 4),
            "analyze": round(analyzed - copied, 4),
            "join": round(joined - analyzed, 4),
        },
        **_memory(),
    }


def child_reader(params: dict[str, Any]) -> dict[str, Any]:
    """read_rows alone (no database), optionally with the pipeline's GUID normalisation per row."""
    _django()
    from rollouts.intake.pipeline import _canonical
    from rollouts.intake.readers import read_rows

    normalise = params["normalise"]
    rows = 0
    with open(params["path"], "rb") as fh:
        start = perf_counter()
        with read_rows(fh, columns={"guid": True}) as reader:
            opened = perf_counter()
            if normalise:
                for _number, row in reader:
                    _canonical(row["guid"])
                    rows += 1
            else:
                for _ in reader:
                    rows += 1
        done = perf_counter()
    return {
        "rows": rows,
        "seconds": round(done - start, 4),
        "total_seconds": round(done - start, 4),
        "phases": {"open_file": round(opened - start, 4), "rows": round(done - opened, 4)},
        **_memory(),
    }


def child_sql(params: dict[str, Any]) -> dict[str, Any]:
    """Maintenance between measurements (not timed as a case): TRUNCATE, VACUUM, CHECKPOINT."""
    _django()
    from django.db import connection

    start = perf_counter()
    with connection.cursor() as cur:
        for statement in params["statements"]:
            cur.execute(statement)
    return {"seconds": round(perf_counter() - start, 2)}


def child_inventory(params: dict[str, Any]) -> dict[str, Any]:
    _django()
    from django.core.files import File
    from django.db import connection

    from rollouts.intake import pipeline
    from rollouts.services import inventory

    phases = Phases()
    phases.instrument_pipeline(pipeline)
    inventory.InventoryHandler.check = phases.span("check", inventory.InventoryHandler.check)
    inventory.InventoryHandler.apply = phases.span("apply", inventory.InventoryHandler.apply)
    inventory.receive_upload = phases.span("receive", inventory.receive_upload)
    inventory.process_upload = phases.span("process", inventory.process_upload)
    path = Path(params["path"])
    slow = SlowSql()
    with connection.execute_wrapper(slow), path.open("rb") as fh:
        start = perf_counter()
        upload = inventory.load_inventory(
            user=None,
            content=File(fh, name=path.name),
            mode="delta",
            as_of=dt.datetime.fromisoformat(params["as_of"]),
        )
        done = perf_counter()
    figures = phases.pipeline_figures(phases.seconds("process"))
    return {
        "state": upload.state,
        "rows": upload.row_count,
        "errors": upload.error_count,
        "summary": upload.summary,
        "seconds": round(done - start, 4),
        "total_seconds": round(done - start, 4),
        "phases": {
            "receive": round(phases.seconds("receive"), 4),
            "process": round(phases.seconds("process"), 4),
            **figures,
        },
        "slow_sql": slow.slowest(),
        **_memory(),
    }


BASELINE_STAGE = """CREATE TEMP TABLE bench_inventory (
    guid varchar(16), device_model_id bigint, firmware_version_id bigint, region varchar(10),
    import_supplier_id bigint, gas_supplier_id bigint, friendly boolean, production_proving boolean
) ON COMMIT DROP"""
BASELINE_UPSERT = """
INSERT INTO rollouts_hub AS h (guid, device_model_id, firmware_version_id, region, import_supplier_id,
                               gas_supplier_id, friendly, production_proving, status, firmware_as_of,
                               updated_at, left_at)
SELECT s.*, 'in_smi', %(as_of)s, %(as_of)s, NULL FROM bench_inventory s
ON CONFLICT (guid) DO UPDATE SET
    device_model_id = EXCLUDED.device_model_id, firmware_version_id = EXCLUDED.firmware_version_id,
    region = EXCLUDED.region, import_supplier_id = EXCLUDED.import_supplier_id,
    gas_supplier_id = EXCLUDED.gas_supplier_id, friendly = EXCLUDED.friendly,
    production_proving = EXCLUDED.production_proving, firmware_as_of = EXCLUDED.firmware_as_of,
    updated_at = EXCLUDED.updated_at
WHERE (h.device_model_id, h.firmware_version_id, h.region, h.import_supplier_id, h.gas_supplier_id,
       h.friendly, h.production_proving)
      IS DISTINCT FROM
      (EXCLUDED.device_model_id, EXCLUDED.firmware_version_id, EXCLUDED.region, EXCLUDED.import_supplier_id,
       EXCLUDED.gas_supplier_id, EXCLUDED.friendly, EXCLUDED.production_proving)"""


def child_inv_baseline(params: dict[str, Any]) -> dict[str, Any]:
    """Bare COPY of the resolved rows into a temp table + one INSERT ... ON CONFLICT DO UPDATE."""
    _django()
    from django.db import connection, transaction

    start = perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(BASELINE_STAGE)
        with open(params["path"], "rb") as fh, cur.copy("COPY bench_inventory FROM STDIN") as copy:
            while block := fh.read(1 << 20):
                copy.write(block)
        copied = perf_counter()
        cur.execute(BASELINE_UPSERT, {"as_of": dt.datetime.fromisoformat(params["as_of"])})
        written = cur.rowcount
        upserted = perf_counter()
    done = perf_counter()
    return {
        "rows": HUBS,
        "written": written,
        "seconds": round(done - start, 4),
        "total_seconds": round(done - start, 4),
        "phases": {
            "copy": round(copied - start, 4),
            "upsert": round(upserted - copied, 4),
            "commit": round(done - upserted, 4),
        },
        **_memory(),
    }


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "setup-hubs": child_setup_hubs,
    "setup-inv": child_setup_inv,
    "gen-files": child_gen_files,
    "pipeline": child_pipeline,
    "baseline": child_baseline,
    "reader": child_reader,
    "sql": child_sql,
    "inventory": child_inventory,
    "inv-baseline": child_inv_baseline,
}


def run_as_child(name: str, params: dict[str, Any]) -> None:
    function = CHILDREN[name]
    profile_to = params.pop("profile_to", None)
    if profile_to:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(function, params)
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).strip_dirs()
        stats.sort_stats("tottime").print_stats(35)
        stats.sort_stats("cumulative").print_stats(45)
        Path(profile_to).write_text(text.getvalue())
        result["profiled"] = True
    else:
        result = function(params)
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# The orchestrator (no Django, no data held: see the module docstring about ru_maxrss)
# --------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, media: Path, profile: str | None) -> None:
        self.media = media
        self.profile = profile

    def child(
        self,
        name: str,
        params: dict[str, Any],
        *,
        inv: bool = False,
        timeout: float = CHILD_TIMEOUT,
        label: str = "",
    ) -> dict[str, Any]:
        env = dict(os.environ, MEDIA_ROOT=str(self.media), PYTHONUNBUFFERED="1")
        if inv:
            env["DATABASE_URL"] = os.environ["BENCH_INV_DATABASE_URL"]
        params = dict(params)
        if self.profile and label and self.profile.lower() in label.lower():
            slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
            params["profile_to"] = str(RESULTS_DIR / f"profile-{slug}.txt")
        command = [sys.executable, "-m", "bench.intake", "--child", name, json.dumps(params)]
        load_before = os.getloadavg()[0]
        try:
            done = subprocess.run(
                command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"skipped": f"stopped after the {timeout:.0f} s limit"}
        for line in reversed(done.stdout.splitlines()):
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK) :])
                result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                return result
        raise SystemExit(f"bench child {name} {params} failed (exit code {done.returncode})")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in runs if "skipped" not in r]
    if not done:
        return runs[0]
    middle = statistics.median_low([r["seconds"] for r in done])
    chosen = dict(next(r for r in done if r["seconds"] == middle))
    if len(done) > 1:
        chosen["runs_seconds"] = [r["seconds"] for r in done]
        chosen["runs_total_seconds"] = [r["total_seconds"] for r in done]
        chosen["runs_peak_mb"] = [r["peak_mb"] for r in done]
    return chosen


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK") == "1",
        help="50,000-row cases only: no 1M files, no inventory load",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each 50,000-row case (median reported)"
    )
    parser.add_argument(
        "--profile",
        default=os.environ.get("BENCH_PROFILE"),
        help="cProfile the cases whose label contains this text (bench-results/profile-*.txt)",
    )
    parser.add_argument("--xlsx-1m-timeout", type=float, default=XLSX_1M_TIMEOUT)
    parser.add_argument(
        "--inventory-only",
        action="store_true",
        default=os.environ.get("BENCH_INVENTORY_ONLY") == "1",
        help="only the load_inventory cases and their bare COPY + upsert baselines (BENCH_INV_DATABASE_URL)",
    )
    parser.add_argument("--child", nargs=2, metavar=("NAME", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_as_child(args.child[0], json.loads(args.child[1]))
        return 0
    if not os.environ.get("DATABASE_URL") or not os.environ.get("BENCH_INV_DATABASE_URL"):
        raise SystemExit("Run it with `make bench` (DATABASE_URL and BENCH_INV_DATABASE_URL, migrated).")

    RESULTS_DIR.mkdir(exist_ok=True)
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="chfw-bench-"))
    try:
        return _run(args, tmp, started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace, tmp: Path, started: float) -> int:
    media = tmp / "media"
    media.mkdir()
    runner = Runner(media, args.profile)
    repeat = max(1, args.repeat)
    report: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "hubs": HUBS,
        "quick": args.quick,
        "cases": [],
    }
    cases: list[dict[str, Any]] = report["cases"]
    if args.inventory_only:
        _say("Generating the inventory files...")
        report["files"] = runner.child("gen-files", {"dir": str(tmp), "inventory_only": True})
        _inventory(runner, tmp, report)
        return _finish(report, started)

    _say(f"Hubs: {HUBS:,} in {os.environ['DATABASE_URL'].rsplit('/', 1)[-1]} (created once, then reused)...")
    setup = runner.child("setup-hubs", {})
    report["setup"] = setup
    report["server"] = setup["server"]
    _say(f"  created in {setup['with_vacuum_seconds']:.1f} s" if setup["created"] else "  reused")
    _say(
        f"  rollouts_hub holds {setup['hubs_in_table']:,} hubs in all (other bench modules keep theirs there)"
    )
    _say("Generating files...")
    report["files"] = runner.child("gen-files", {"dir": str(tmp), "quick": args.quick})
    _say(f"  {report['files']['seconds']}")

    sizes = [k for k, n in SIZES.items() if not (args.quick and n > SMALL)]
    for key in sizes:
        count = SIZES[key]
        runs = repeat if count == SMALL else 1
        base_label = f"baseline COPY+join {key}"
        _say(f"{base_label}...")
        base = _median_run(
            [
                runner.child("baseline", {"path": str(tmp / f"list_{key}.hex")}, label=base_label)
                for _ in range(runs)
            ]
        )
        cases.append({"case": base_label, "group": "baseline", "size": key, "format": "hex", **base})
        for fmt in ("csv", "xlsx"):
            label = f"pipeline {fmt.upper()} {key}"
            _say(f"{label}...")
            timeout = args.xlsx_1m_timeout if (fmt == "xlsx" and count > SMALL) else CHILD_TIMEOUT
            result = _median_run(
                [
                    runner.child(
                        "pipeline", {"path": str(tmp / f"list_{key}.{fmt}")}, timeout=timeout, label=label
                    )
                    for _ in range(runs)
                ]
            )
            if "skipped" in result and fmt == "xlsx":
                result["skipped"] = (
                    f"{result['skipped']} (openpyxl read-only streams ~{count:,} rows; "
                    "see the 50k XLSX rate for an estimate)"
                )
            cases.append(
                {
                    "case": label,
                    "group": "pipeline",
                    "size": key,
                    "format": fmt,
                    "rows": count,
                    "baseline": base_label,
                    **result,
                }
            )
        for fmt, normalise in (("csv", False), ("csv", True), ("xlsx", False), ("xlsx", True)):
            if fmt == "xlsx" and count > SMALL:
                continue  # the 1M XLSX reader is the pipeline case itself
            label = f"diag read_rows{' + parse_guid' if normalise else ''} {fmt.upper()} {key}"
            _say(f"{label}...")
            result = runner.child(
                "reader", {"path": str(tmp / f"list_{key}.{fmt}"), "normalise": normalise}, label=label
            )
            cases.append({"case": label, "group": "diagnostic", "size": key, "format": fmt, **result})

    if not args.quick:
        _inventory(runner, tmp, report)
    return _finish(report, started)


def _finish(report: dict[str, Any], started: float) -> int:
    cases = report["cases"]
    report["elapsed_seconds"] = round(time.time() - started, 1)
    report["targets"] = _targets(cases)
    RESULTS.write_text(json.dumps(report, indent=2, default=str) + "\n")
    _print(report)
    _say(f"\nFigures written to {RESULTS.relative_to(ROOT)} ({report['elapsed_seconds']:.0f} s in all).")
    return 0


def _inventory(runner: Runner, tmp: Path, report: dict[str, Any]) -> None:
    cases = report["cases"]
    _say("Inventory database: reference data and baseline files...")
    report["inventory_setup"] = runner.child("setup-inv", {"dir": str(tmp)}, inv=True)
    reset = [
        "TRUNCATE rollouts_inventorychange, rollouts_uploaderror, rollouts_upload, rollouts_hub CASCADE",
        "CHECKPOINT",
    ]
    settle = ["VACUUM (ANALYZE) rollouts_hub", "VACUUM (ANALYZE) rollouts_inventorychange", "CHECKPOINT"]
    steps = (
        ("baseline COPY+upsert inventory 1M new", "inv-baseline", "inventory_new.tsv", AS_OF_NEW, reset),
        (
            "baseline COPY+upsert inventory 1M delta 5%",
            "inv-baseline",
            "inventory_delta.tsv",
            AS_OF_DELTA,
            settle,
        ),
        ("load_inventory CSV 1M new", "inventory", "inventory_new.csv", AS_OF_NEW, reset),
        ("load_inventory CSV 1M delta 5%", "inventory", "inventory_delta.csv", AS_OF_DELTA, settle),
    )
    for label, child, name, as_of, before in steps:
        runner.child("sql", {"statements": before}, inv=True)
        _say(f"{label}...")
        result = runner.child(child, {"path": str(tmp / name), "as_of": as_of}, inv=True, label=label)
        kind = "delta" if "delta" in label else "new"
        record = {
            "case": label,
            "group": "inventory" if child == "inventory" else "baseline",
            "size": "1M",
            "format": "csv" if child == "inventory" else "tsv",
            "rows": HUBS,
            **result,
        }
        if child == "inventory":
            record["baseline"] = (
                f"baseline COPY+upsert inventory 1M {'delta 5%' if kind == 'delta' else 'new'}"
            )
        cases.append(record)


def _targets(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {c["case"]: c for c in cases}
    out = []

    def add(what: str, case: str, field: str, limit: float) -> None:
        value = by.get(case, {}).get(field)
        out.append(
            {
                "target": what,
                "case": case,
                "value": value,
                "limit": limit,
                "met": None if value is None else value < limit,
            }
        )

    add("50,000 CSV: staging + validation < 0.5 s", "pipeline CSV 50k", "seconds", TARGET_STAGE_50K)
    add(
        "load_inventory 1,000,000 new hubs < 10 s",
        "load_inventory CSV 1M new",
        "seconds",
        TARGET_INVENTORY_1M,
    )
    for c in cases:
        if c.get("format") == "csv" and c["group"] in ("pipeline", "inventory"):
            add(f"peak memory < 250 MB ({c['case']})", c["case"], "peak_mb", TARGET_PEAK_MB)
    return out


def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def _print(report: dict[str, Any]) -> None:
    cases = report["cases"]
    by = {c["case"]: c for c in cases}
    server = report.get("server", {})
    _say("")
    _say(
        f"Intake benchmark: {report['hubs']:,} hubs; {report['machine']['cpus']} CPUs; PostgreSQL "
        f"{server.get('server_version', '?')} (shared_buffers {server.get('shared_buffers')}, max_wal_size "
        f"{server.get('max_wal_size')}); Python {report['machine']['python']}; "
        f"{report.get('setup', {}).get('hubs_in_table', 0):,} hubs in rollouts_hub for the GUID lists"
    )
    _say(
        "seconds: pipeline = staging + validation (CREATE TEMP .. failure count: open, read, normalise, COPY, "
        "ANALYZE, checks);"
    )
    _say(
        "         load_inventory and baselines = the whole call; total = receive_upload + process_upload. "
        "50k: median of runs."
    )
    header = (
        f"{'case':<44} {'rows':>9} {'seconds':>8} {'total s':>8} {'rows/s':>10} {'peak MB':>8} {'x base':>7} "
        f"{'load':>5}"
    )
    _say("")
    _say(header)
    _say("-" * len(header))
    for c in cases:
        if "skipped" in c:
            _say(f"{c['case']:<44} {c.get('rows', 0):>9,} skipped: {c['skipped']}")
            continue
        rows, seconds = c.get("rows") or 0, c.get("seconds")
        base = by.get(c.get("baseline", ""), {})
        ratio = seconds / base["seconds"] if seconds and base.get("seconds") else None
        rate = rows / seconds if seconds else None
        _say(
            f"{c['case']:<44} {rows:>9,} {_fmt(seconds):>8} {_fmt(c.get('total_seconds')):>8} "
            f"{_fmt(rate, '{:,.0f}'):>10} {_fmt(c.get('peak_mb'), '{:.0f}'):>8} {_fmt(ratio, '{:.1f}x'):>7} "
            f"{_fmt(max(c.get('load_avg_1m') or [0]), '{:.1f}'):>5}"
        )
    _say(
        f"(load: the machine's 1-minute load average around the run, {report['machine']['cpus']} CPUs; "
        "figures taken above ~1.5 include other people's work.)"
    )
    schema = report.get("inventory_setup", {}).get("schema")
    if schema:
        for table, facts in schema.items():
            _say(
                f"{table}: {len(facts['indexes'])} indexes, {facts['foreign_keys']} foreign keys "
                f"({facts['deferred_foreign_keys']} deferred: checked row by row at COMMIT)"
            )

    _say("")
    _say("Phases (seconds)")
    names = (
        "receive",
        "open_file",
        "read_normalise_copy",
        "copy_csv",
        "analyze",
        "guid_checks",
        "check",
        "apply",
        "other",
    )
    _say(f"{'case':<44} " + " ".join(f"{n[:10]:>10}" for n in names))
    for c in cases:
        if c["group"] in ("pipeline", "inventory") and "phases" in c:
            _say(f"{c['case']:<44} " + " ".join(f"{_fmt(c['phases'].get(n)):>10}" for n in names))
    for c in cases:
        if c["group"] in ("baseline", "diagnostic") and "phases" in c:
            _say(f"{c['case']:<44} " + ", ".join(f"{k} {v:.3f}" for k, v in c["phases"].items()))

    slow = [
        c for c in cases if c.get("slow_sql") and c["group"] == "inventory" or c["case"] == "pipeline CSV 1M"
    ]
    for c in slow:
        if not c.get("slow_sql"):
            continue
        _say(f"\nSlowest SQL statements, {c['case']}:")
        for took, sql in c["slow_sql"][:8]:
            _say(f"  {took:7.3f} s  {sql[:120]}")

    for c in cases:
        failed = c.get("state") != "applied" or c.get("errors")
        if c["group"] in ("pipeline", "inventory") and "skipped" not in c and failed:
            _say(f"\nWARNING: {c['case']} ended {c.get('state')} with {c.get('errors')} errors")
        if c["group"] == "baseline" and c.get("not_visible"):
            _say(f"\nWARNING: {c['case']}: {c['not_visible']} GUIDs not visible (expected 0)")

    _say("\nTargets")
    for t in report["targets"]:
        verdict = "n/a" if t["met"] is None else ("MET" if t["met"] else "MISSED")
        _say(f"  {verdict:<7} {t['target']}: {_fmt(t['value'], '{:.3f}')} (limit {t['limit']})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
