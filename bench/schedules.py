"""Schedule benchmark (SL2, T5): figures printed, never asserted.

    python -m bench.schedules [--hubs-per-region N] [--batch N] [--repeat N]

Needs DATABASE_URL (migrated) and DJANGO settings from the environment, as `make bench` provides.
Creates once, with a bare COPY, N hubs per region of a bench device model (5C4ED001, GUIDs 5C4E…),
then for each run publishes a fresh rollout of that model (the previous bench rollout is superseded)
and measures, each through the whole service (file kept and hashed, read, COPY to staging, checks,
apply, replan, notices, one durable transaction):

a. upload_safe_launch_schedule: one new batch of --batch hubs (default 50,000), one CSV file;
b. the same file again with another window (the batch replaced, every hub already in it);
c. a file moving the same hubs to a second batch (every hub's batch changes);
d. a rejected file: the same 50,000 rows with every window ending after the automatic time (X3:
   every row is an error, nothing applied);
e. deployment_plan_for(CSP): streaming every row of the region with .iterator();
f. parse_window_time: per call.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from time import perf_counter
from typing import Any

MODEL = "5C4ED001"
FIRMWARE = ("00050001", "00050002")
REGIONS = ("north", "central", "south")
MULT = 0x5DEECE66D  # odd: a bijection mod 2**48, so GUIDs are unique and not in insertion order
MASK48 = (1 << 48) - 1


def guid(i: int) -> str:
    return f"5C4E{(i * MULT) & MASK48:012X}"


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chfw_portal.settings")
    os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="bench-schedules-"))
    import django

    django.setup()


def _say(text: str) -> None:
    print(text, flush=True)


def _parties() -> dict[str, Any]:
    from rollouts.models import Organisation, OrgKind, User

    dcc = Organisation.objects.filter(kind=OrgKind.DCC).first() or Organisation.objects.create(
        name="DCC", slug="dcc", kind=OrgKind.DCC
    )
    csps = {}
    for region in REGIONS:
        csps[region] = Organisation.objects.filter(kind=OrgKind.CSP, region=region).first() or (
            Organisation.objects.create(
                name=f"Bench CSP {region}", slug=f"bench-csp-{region}", kind=OrgKind.CSP, region=region
            )
        )
    supplier, _ = Organisation.objects.get_or_create(
        slug="bench-schedules-supplier",
        defaults={"name": "Bench Schedules Supplier", "kind": OrgKind.SUPPLIER},
    )

    def user(email: str, org: Organisation) -> User:
        return User.objects.filter(email=email).first() or User.objects.create_user(
            email, None, organisation=org
        )

    return {
        "dcc": user("bench-dcc-1@bench.test", dcc),
        "dcc_2": user("bench-dcc-2@bench.test", dcc),
        "csp": user("bench-csp-north@bench.test", csps["north"]),
        "supplier": supplier,
    }


def _estate(per_region: int, supplier_id: int) -> tuple[Any, Any, Any]:
    """The bench model, its two versions and per_region hubs in each region (bare COPY, once)."""
    from django.db import connection, transaction

    from rollouts.models import DeviceModel, FirmwareVersion, Hub

    model, _ = DeviceModel.objects.get_or_create(
        cpl_code=MODEL, defaults={"manufacturer": "Bench", "model": "CH-S", "hardware_version": "1"}
    )
    v1, _ = FirmwareVersion.objects.get_or_create(device_model=model, version=FIRMWARE[0])
    v2, _ = FirmwareVersion.objects.get_or_create(device_model=model, version=FIRMWARE[1])
    have = Hub.objects.filter(device_model=model).count()
    wanted = per_region * len(REGIONS)
    if have < wanted:
        _say(f"Creating {wanted - have:,} bench hubs (bare COPY)...")
        now = dt.datetime.now(dt.UTC)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE bench_hubs (LIKE rollouts_hub INCLUDING DEFAULTS) ON COMMIT DROP; "
                "ALTER TABLE bench_hubs DROP COLUMN id"
            )
            with cursor.copy(
                "COPY bench_hubs (guid, device_model_id, firmware_version_id, region, import_supplier_id, "
                "gas_supplier_id, friendly, production_proving, status, firmware_as_of, updated_at) FROM STDIN"
            ) as copy:
                for i in range(wanted):
                    copy.write_row(
                        [
                            guid(i),
                            model.pk,
                            v1.pk,
                            REGIONS[i % 3],
                            supplier_id,
                            None,
                            False,
                            False,
                            "in_smi",
                            now,
                            now,
                        ]
                    )
            cursor.execute(
                "INSERT INTO rollouts_hub (guid, device_model_id, firmware_version_id, region, import_supplier_id, "
                "gas_supplier_id, friendly, production_proving, status, firmware_as_of, updated_at) "
                "SELECT guid, device_model_id, firmware_version_id, region, import_supplier_id, gas_supplier_id, "
                "friendly, production_proving, status, firmware_as_of, updated_at FROM bench_hubs "
                "ON CONFLICT (guid) DO NOTHING"
            )
            cursor.execute("ANALYZE rollouts_hub")
    # Hubs moved to v2 by nothing: every run's rollout replaces v1 with v2 again.
    return model, v1, v2


def _publish(
    parties: dict[str, Any],
    v1: Any,
    v2: Any,
    *,
    title: str = "Bench schedules",
    impact: str = "operational",  # no pilot: every hub is in the safe launch group
    pilot_max: int | None = None,
) -> Any:
    from rollouts.models import Rollout
    from rollouts.services.lifecycle import approve_proposal, create_rollout, propose

    draft = create_rollout(
        user=parties["dcc"],
        title=title,
        target_version=v2,
        replaced_versions=[v1],
        release_note_url="https://example.test/bench",
        severity="low",
        priority="low",
        release_type="sec_release",
        impact=impact,
    )
    if pilot_max is not None:
        Rollout.objects.filter(pk=draft.pk).update(pilot_max=pilot_max)  # DCC's N1 field
    proposal = propose(user=parties["dcc"], rollout_id=draft.pk, move="publish")
    return approve_proposal(user=parties["dcc_2"], proposal_id=proposal.pk)


def _north_guids(rollout: Any, count: int) -> list[str]:
    from rollouts.models import RolloutHub

    return list(
        RolloutHub.objects.filter(rollout=rollout, region="north")
        .order_by("hub__guid")
        .values_list("hub__guid", flat=True)[:count]
    )


def _file(guids: list[str], batch: str, start: str, end: str) -> Any:
    from django.core.files.base import ContentFile

    body = "".join(f"{batch},{g},{start},{end}\n" for g in guids)
    return ContentFile(("batch,guid,window_start,window_end\n" + body).encode(), name=f"{batch}.csv")


def _timed(label: str, fn: Any) -> tuple[float, Any]:
    start = perf_counter()
    result = fn()
    seconds = perf_counter() - start
    return seconds, result


def run(per_region: int, batch: int, repeat: int) -> dict[str, list[float]]:
    from django.db import connection, transaction

    from rollouts.models import RolloutHub, UploadState
    from rollouts.services.schedules import (
        deployment_plan_for,
        parse_window_time,
        upload_safe_launch_schedule,
    )

    parties = _parties()
    _model, v1, v2 = _estate(per_region, parties["supplier"].pk)
    figures: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        figures.setdefault(name, []).append(seconds)

    for n in range(repeat):
        seconds, rollout = _timed("publish", lambda: _publish(parties, v1, v2))
        record("publish (setup)", seconds)
        with connection.cursor() as cursor:
            # What autovacuum does a little after a publication: without it the planner sees the new
            # rollout's rows as a handful and picks nested loops (seen: a plan stream of 27+ s).
            cursor.execute("ANALYZE rollouts_rollouthub")
        guids = _north_guids(rollout, batch)
        auto = rollout.auto_deploy_at
        day = (auto - dt.timedelta(days=60)).date()
        w1 = (f"{day}T08:00", f"{day + dt.timedelta(days=4)}T18:00")
        w2 = (f"{day + dt.timedelta(days=7)}", f"{day + dt.timedelta(days=11)}")
        late = (f"{day}", f"{auto.date() + dt.timedelta(days=2)}")
        csp = parties["csp"]
        steps = [
            ("a. new batch", "BATCH-A", w1, UploadState.APPLIED),
            ("b. same batch, new window", "BATCH-A", w2, UploadState.APPLIED),
            ("c. every hub to another batch", "BATCH-B", w1, UploadState.APPLIED),
            ("d. rejected (every row an error)", "BATCH-C", late, UploadState.REJECTED),
        ]
        for name, batch_name, window, expected in steps:
            content = _file(guids, batch_name, *window)
            seconds, upload = _timed(
                name,
                lambda c=content, u=csp, r=rollout.pk: upload_safe_launch_schedule(
                    user=u, rollout_id=r, content=c
                ),
            )
            if upload.state != expected:
                raise SystemExit(f"{name}: {upload.state}, expected {expected} ({upload.error_count} errors)")
            record(f"{name}, {len(guids):,} hubs", seconds)
            _say(f"  run {n + 1} {name}: {seconds:.2f} s ({upload.state}, {upload.error_count:,} errors)")
        assert RolloutHub.objects.filter(rollout=rollout, batch__name="BATCH-B").count() == len(guids)

        def stream(csp: Any = csp, rollout: Any = rollout) -> int:
            with transaction.atomic():
                return sum(
                    1 for _ in deployment_plan_for(csp.organisation, rollout).iterator(chunk_size=5000)
                )

        seconds, rows = _timed("plan", stream)
        record(f"e. deployment plan, {rows:,} rows streamed", seconds)

    start = perf_counter()
    calls = 20_000
    for i in range(calls):
        parse_window_time("2027-01-11T08:00" if i % 2 else "2027-01-11", end=bool(i % 3))
    record("f. parse_window_time, per call (us)", (perf_counter() - start) / calls * 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hubs-per-region", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.batch > args.hubs_per_region:
        raise SystemExit("--batch must not exceed --hubs-per-region")
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("Set DATABASE_URL (a migrated database), e.g. through `make bench`.")
    _django()
    started = time.time()
    from rollouts.intake.pipeline import applied_here

    with applied_here():  # the service in this process, as measured before the background path
        figures = run(args.hubs_per_region, args.batch, args.repeat)
    _say(f"\nSchedules (SL2, T5), median of {args.repeat} (min-max):")
    for name, values in figures.items():
        unit = "" if "(us)" in name else " s"
        _say(
            f"  {name:<55} {statistics.median(values):8.2f}{unit}"
            + (f"   ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")
        )
    _say(f"Total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
