"""Export benchmark (issue 7, part 4): figures printed, never asserted.

    python -m bench.exports [--rows-xlsx N]

Needs DATABASE_URL of a migrated bench database (as `make bench` provides); creates the 1,000,000
bench hubs with bench.intake's bare COPY when they are missing. Each measurement runs in a fresh
child process, so its peak memory (VmHWM) is its own:

a. the Supplier's estate report (rollouts.services.exports: count + COPY … TO STDOUT with escaping in
   SQL, BOM and header) for a Supplier holding all 1,000,000 hubs, read to the end;
b. beside it, the floor: a bare `COPY (SELECT <the hub columns>) TO STDOUT` of the same hubs;
c. a 50,000-row XLSX of the estate layout (rollouts.exports.xlsx_file: PostgreSQL builds each row's
   worksheet XML, COPY streams it into the zip; every cell a string);
d. a 50,000-row XLSX of the schedule layout (A03/A08: batch, guid, window_start, window_end), the file
   a CSP downloads, edits and uploads back: 4 cells a row instead of the estate's 13 (about 6 of them
   filled). Its rows come from the bench hubs with the same SQL cell expressions as
   rollouts.services.exports._schedule_query (escaped batch name, display GUID, ISO windows), since the
   bench database holds no rollout; the writer path (`xlsx_file`) is the one downloads use;
e. the issue's reference writer, openpyxl in write-only mode, on the rows of (c).

Figures go to the terminal and to bench-results/exports.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.intake import HUBS, RESULT_MARK, _django, _memory, child_setup_hubs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results" / "exports.json"
CHILD_TIMEOUT = 900
TARGET_ROWS_PER_S = 500_000
TARGET_PEAK_MB = 100.0
TARGET_XLSX_S = 1.5


def _supplier() -> Any:
    from rollouts.models import Organisation

    return Organisation.objects.get(slug="bench-supplier-1")  # gas Supplier of every bench hub


def child_estate_csv(params: dict[str, Any]) -> dict[str, Any]:
    _django()
    from rollouts.exports import copy_csv
    from rollouts.services.exports import estate_query

    query = estate_query(_supplier())
    start = perf_counter()
    rows = query.count()  # the service counts first, for the audit event
    counted = perf_counter() - start
    size = lines = 0
    for chunk in copy_csv(query):
        size += len(chunk)
        lines += chunk.count(b"\n")
    seconds = perf_counter() - start
    return {
        "rows": rows,
        "lines": lines - 1,
        "bytes": size,
        "seconds": round(seconds, 3),
        "count_seconds": round(counted, 3),
        **_memory(),
    }


def child_bare_copy(params: dict[str, Any]) -> dict[str, Any]:
    _django()
    from django.db import connection

    org = _supplier()
    start = perf_counter()
    size = lines = 0
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY (SELECT h.guid, h.device_model_id, h.firmware_version_id, h.region, h.import_supplier_id, "
            "h.gas_supplier_id FROM rollouts_hub h WHERE h.import_supplier_id = %s OR h.gas_supplier_id = %s) "
            "TO STDOUT WITH (FORMAT csv)",
            [org.pk, org.pk],
        ) as copy,
    ):
        for data in copy:
            size += len(data)
            lines += 1
    return {"rows": lines, "bytes": size, "seconds": round(perf_counter() - start, 3), **_memory()}


def child_xlsx(params: dict[str, Any]) -> dict[str, Any]:
    _django()
    import dataclasses

    from rollouts.exports import xlsx_file
    from rollouts.services.exports import estate_query

    query = estate_query(_supplier())
    query = dataclasses.replace(query, order_by=f"h.guid LIMIT {int(params['rows'])}")
    start = perf_counter()
    handle, rows = xlsx_file(query)
    seconds = perf_counter() - start
    size = handle.seek(0, 2)
    handle.close()
    return {"rows": rows, "bytes": size, "seconds": round(seconds, 3), **_memory()}


def child_xlsx_schedule(params: dict[str, Any]) -> dict[str, Any]:
    _django()
    from rollouts.exports import Query, iso_sql, xlsx_file
    from rollouts.services.exports import SCHEDULE_COLUMNS, guid_sql

    query = Query(
        columns=SCHEDULE_COLUMNS,
        select=[
            "'SL-' || (row_number() OVER (ORDER BY h.guid) - 1) / 5000",  # batches of 5,000 hubs
            guid_sql("h.guid"),
            iso_sql("timestamptz '2027-01-11 08:00+00'"),
            iso_sql("timestamptz '2027-01-15 18:00+00'"),
        ],
        from_sql="FROM rollouts_hub h WHERE h.gas_supplier_id = %s",
        params=[_supplier().pk],
        order_by=f"h.guid LIMIT {int(params['rows'])}",
        text_columns=("batch",),
    )
    start = perf_counter()
    handle, rows = xlsx_file(query)
    seconds = perf_counter() - start
    size = handle.seek(0, 2)
    handle.close()
    return {
        "rows": rows,
        "cells": rows * len(SCHEDULE_COLUMNS),
        "bytes": size,
        "seconds": round(seconds, 3),
        **_memory(),
    }


def child_xlsx_openpyxl(params: dict[str, Any]) -> dict[str, Any]:
    """The issue's reference writer on the same estate rows: openpyxl in write-only mode."""
    _django()
    import dataclasses
    import tempfile

    from openpyxl import Workbook

    from rollouts.exports import query_rows
    from rollouts.services.exports import estate_query

    query = dataclasses.replace(estate_query(_supplier()), order_by=f"h.guid LIMIT {int(params['rows'])}")
    start = perf_counter()
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Export")
    sheet.append(list(query.columns))
    rows = 0
    for row in query_rows(query):
        sheet.append(row)
        rows += 1
    with tempfile.TemporaryFile(suffix=".xlsx") as handle:
        workbook.save(handle)
        seconds = perf_counter() - start
        size = handle.seek(0, 2)
    return {"rows": rows, "bytes": size, "seconds": round(seconds, 3), **_memory()}


CHILDREN = {
    "xlsx_openpyxl": child_xlsx_openpyxl,
    "setup": lambda p: child_setup_hubs(p),
    "estate_csv": child_estate_csv,
    "bare_copy": child_bare_copy,
    "xlsx": child_xlsx,
    "xlsx_schedule": child_xlsx_schedule,
}


def run_child(name: str, params: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.exports", "--child", name, json.dumps(params)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        env={**os.environ, "PORTAL_TESTING": os.environ.get("PORTAL_TESTING", "true")},
    )
    for line in out.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise SystemExit(f"{name} failed:\n{out.stdout}\n{out.stderr}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("params", nargs="?", default="{}")
    parser.add_argument("--rows-xlsx", type=int, default=50_000)
    args = parser.parse_args(argv)
    if args.child:
        print(RESULT_MARK + json.dumps(CHILDREN[args.child](json.loads(args.params))), flush=True)
        return 0

    setup = run_child("setup", {})
    print(f"hubs: {setup['hubs']:,} ({'created' if setup['created'] else 'reused'})")
    estate = run_child("estate_csv", {})
    bare = run_child("bare_copy", {})
    xlsx = run_child("xlsx", {"rows": args.rows_xlsx})
    schedule = run_child("xlsx_schedule", {"rows": args.rows_xlsx})
    openpyxl = run_child("xlsx_openpyxl", {"rows": args.rows_xlsx})
    rate, bare_rate = estate["rows"] / estate["seconds"], bare["rows"] / bare["seconds"]
    print(
        f"estate CSV   {estate['rows']:>9,} rows {estate['seconds']:6.2f} s ({rate:,.0f} rows/s; count "
        f"{estate['count_seconds']:.2f} s) {estate['bytes'] / 1e6:6.1f} MB, peak {estate['peak_mb']:.0f} MB "
        f"[target >= {TARGET_ROWS_PER_S:,} rows/s, < {TARGET_PEAK_MB:.0f} MB]"
    )
    print(
        f"bare COPY    {bare['rows']:>9,} rows {bare['seconds']:6.2f} s ({bare_rate:,.0f} rows/s) "
        f"{bare['bytes'] / 1e6:6.1f} MB, peak {bare['peak_mb']:.0f} MB; estate/bare time "
        f"{estate['seconds'] / bare['seconds']:.2f}x"
    )
    print(
        f"XLSX         {xlsx['rows']:>9,} rows {xlsx['seconds']:6.2f} s {xlsx['bytes'] / 1e6:6.1f} MB, "
        f"peak {xlsx['peak_mb']:.0f} MB [target < {TARGET_XLSX_S} s]"
    )
    print(
        f"XLSX schedule {schedule['rows']:>8,} rows {schedule['seconds']:6.2f} s {schedule['bytes'] / 1e6:6.1f} MB, "
        f"peak {schedule['peak_mb']:.0f} MB ({schedule['cells']:,} cells) [target < {TARGET_XLSX_S} s]"
    )
    print(
        f"XLSX openpyxl {openpyxl['rows']:>8,} rows {openpyxl['seconds']:6.2f} s (write-only mode, the estate rows "
        f"above): ours takes {xlsx['seconds'] / openpyxl['seconds']:.0%} of its time"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "hubs": HUBS,
                "estate_csv": estate,
                "bare_copy": bare,
                "xlsx": xlsx,
                "xlsx_schedule": schedule,
                "xlsx_openpyxl": openpyxl,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
