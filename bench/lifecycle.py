"""Lifecycle figures for `make bench` (printed, not asserted): issue 4.

- publish a rollout with 1,000,000 eligible hubs (eligibility INSERT … SELECT, counters, notices);
  target under 10 s;
- the counter check (recount and compare) at 1,000,000 hubs;
- an inventory delta of 50,000 hubs (25,000 Supplier changes, 25,000 new eligible hubs) applied to
  the live rollout through load_inventory.

Runs against its own database (DATABASE_URL with "_life" appended), created and migrated here.
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HUBS = int(os.environ.get("BENCH_LIFE_HUBS", "1000000"))
DELTA = 50_000
SUPPLIERS = ["alpha-energy", "beacon-power", "cobalt-gas", "delta-utilities"]


def setup_database() -> None:
    from bench.db import use_own_database

    use_own_database("life")
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chfw_portal.settings")
    django.setup()


def build_estate() -> dict:
    from django.db import connection

    from rollouts.models import DeviceModel, FirmwareVersion, Organisation, OrgKind, Region, Role, User

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE rollouts_rolloutcounter, rollouts_notice, rollouts_noticeread, rollouts_proposal, "
            "rollouts_hubinstruction, rollouts_instruction, rollouts_pilotamendment, rollouts_batch, "
            "rollouts_rollouthub, rollouts_rollout_replaced_versions, rollouts_rollout, "
            "rollouts_inventorychange, rollouts_uploaderror, rollouts_upload, rollouts_hub CASCADE"
        )
    dcc, _ = Organisation.objects.get_or_create(name="DCC", defaults={"slug": "dcc", "kind": OrgKind.DCC})
    for region in Region:
        Organisation.objects.get_or_create(
            name=f"CSP {region.label}",
            defaults={"slug": f"csp-{region}", "kind": OrgKind.CSP, "region": region},
        )
    suppliers = [
        Organisation.objects.get_or_create(
            name=s.replace("-", " ").title(), defaults={"slug": s, "kind": OrgKind.SUPPLIER}
        )[0]
        for s in SUPPLIERS
    ]
    users = [
        User.objects.filter(email=e).first() or User.objects.create_user(e, organisation=dcc, role=Role.ADMIN)
        for e in ("bench-1@dcc.test", "bench-2@dcc.test")
    ]
    model, _ = DeviceModel.objects.get_or_create(
        cpl_code="010A030B", defaults={"manufacturer": "T", "model": "CH", "hardware_version": "1"}
    )
    v1, _ = FirmwareVersion.objects.get_or_create(device_model=model, version="0002012F")
    v2, _ = FirmwareVersion.objects.get_or_create(device_model=model, version="00020130")
    regions = ["north", "central", "south"]
    started = time.perf_counter()
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY rollouts_hub (guid, device_model_id, firmware_version_id, region, import_supplier_id, gas_supplier_id, "
            "friendly, production_proving, status, firmware_as_of, updated_at) FROM STDIN"
        ) as copy,
    ):
        for n in range(HUBS):
            imp = suppliers[n % 4].pk
            gas = suppliers[(n + 1) % 4].pk if n % 10 == 0 else imp  # 10% split
            copy.write_row(
                (
                    f"00DB{n:012X}",
                    model.pk,
                    v1.pk,
                    regions[n % 3],
                    imp,
                    gas,
                    False,
                    False,
                    "in_smi",
                    "2026-01-01T00:00Z",
                    "2026-01-01T00:00Z",
                )
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rollouts_hub")
    return {"users": users, "v1": v1, "v2": v2, "copy_s": time.perf_counter() - started}


def delta_file(v1_version: str) -> bytes:
    out = io.StringIO()
    out.write("guid,device_model,firmware_version,csp_region,import_supplier,gas_supplier,flags\n")
    for n in range(DELTA // 2):  # existing hubs whose Import Supplier changes
        i = (n * 7) % HUBS
        out.write(
            f"00DB{i:012X},010A030B,{v1_version},{['north', 'central', 'south'][i % 3]},"
            f"{SUPPLIERS[(i + 2) % 4]},{SUPPLIERS[(i + 2) % 4]},\n"
        )
    for n in range(DELTA // 2):  # new hubs on the replaced version: they join the live rollout
        out.write(f"00DB{HUBS + n:012X},010A030B,{v1_version},north,{SUPPLIERS[n % 4]},,\n")
    return out.getvalue().encode()


def main() -> int:
    setup_database()
    from django.core.files.base import ContentFile

    from rollouts.models import RolloutHub
    from rollouts.services.counters import counter_mismatches
    from rollouts.services.inventory import load_inventory
    from rollouts.services.lifecycle import approve_proposal, create_rollout, propose

    estate = build_estate()
    first, second = estate["users"]
    rollout = create_rollout(
        user=first,
        title="bench",
        target_version=estate["v2"],
        replaced_versions=[estate["v1"]],
        release_note_url="https://example.test/rn",
        severity="high",
        priority="high",
        release_type="sec_release",
        impact="functional",
    )
    proposal = propose(user=first, rollout_id=rollout.pk, move="publish")
    started = time.perf_counter()
    approve_proposal(user=second, proposal_id=proposal.pk)
    publish_s = time.perf_counter() - started
    eligible = RolloutHub.objects.filter(rollout=rollout).count()

    started = time.perf_counter()
    mismatches = counter_mismatches([rollout.pk])
    check_s = time.perf_counter() - started

    content = ContentFile(delta_file(estate["v1"].version), name="delta.csv")
    started = time.perf_counter()
    upload = load_inventory(user=first, content=content)
    delta_s = time.perf_counter() - started

    figures = {
        "hubs": HUBS,
        "setup_copy_s": round(estate["copy_s"], 2),
        "publish_s": round(publish_s, 2),
        "eligible": eligible,
        "counter_check_s": round(check_s, 2),
        "counter_mismatches": len(mismatches),
        "inventory_delta_rows": DELTA,
        "inventory_delta_s": round(delta_s, 2),
        "inventory_delta_state": upload.state,
        "inventory_delta_summary": upload.summary,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print("\nLifecycle (issue 4)")
    print(
        f"  publish, {eligible:,} eligible hubs ........ {publish_s:6.2f} s  (target < 10 s: "
        f"{'met' if publish_s < 10 else 'MISSED'})"
    )
    print(f"  counter check at {eligible:,} hubs ......... {check_s:6.2f} s  ({len(mismatches)} mismatches)")
    print(
        f"  inventory delta of {DELTA:,} hubs, live ..... {delta_s:6.2f} s  "
        f"(joined {upload.summary.get('joined_rollouts')}, Supplier changed "
        f"{upload.summary.get('supplier_changed_in_rollouts')})"
    )
    print(f"  peak RSS {figures['peak_rss_mb']} MB")
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "lifecycle.json").write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
