"""Instruction benchmark (issue 5): figures printed, never asserted.

    python -m bench.instructions [--quick] [--big N] [--others N] [--sql] [--explain] [--only 50k|all]

Needs DATABASE_URL (migrated; `make bench` gives chfw_bench) and PORTAL_TESTING=true. Builds, once, its
own estate with a bare COPY (device model 1E570001, GUIDs 00BF..., so it never touches bench.intake's
hubs): one live rollout with 50,000 split hubs (Suppliers A import, B gas) and N hubs of one big
Supplier (default 1,000,000; --quick 100,000), in a hub table that also holds --others hubs of another
model (default 2,000,000: 3,050,000 hubs, as the status feed bench's 3,000,000; with the hub table at
1,050,000 the planner hashed the whole table to resolve 50,000 GUIDs, which it does not do at national
size). Then times the services, each one durable transaction committed as in production (the rollout lock, staging, HubInstruction upsert, replan, notices):

  file 50k (A)           instruction file of 50,000 split-hub GUIDs by A (plan unchanged: B not yet)
  file 50k (B, split)    the same hubs by B: all 50,000 move to the later time
  file 50k replace (A)   A replaces its instruction with a later time
  withdraw 50k (A)       A withdraws all: the hubs return to the automatic time
  selection 50k (big)    a list of 50,000 GUIDs (the Supplier's first: neighbours in the tables)
  selection 50k spread   50,000 GUIDs spread over its 1,000,000 (every 20th: each on its own pages),
                         at another time (2,500 of them replace the previous selection's)
  all eligible (big)     "all my eligible hubs" for the big Supplier (N hubs)
  withdraw all (big)     and back
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from time import perf_counter

SPLIT_HUBS = 50_000
MODEL = "1E570001"
OTHER_MODEL = "1E570002"  # the --others hubs: in the hub table, in no rollout


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chfw_portal.settings")
    os.environ.setdefault(
        "EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend"
    )  # no console flood
    import logging

    import django

    django.setup()
    logging.getLogger("celery").setLevel(logging.WARNING)


def guid(prefix: int, i: int) -> str:
    """Hub i of group `prefix` (0 split, 1 big Supplier, 2 others): 00BF and 48 scrambled bits (an odd
    multiplier mod 2**48, so distinct), so that each group's GUIDs are spread over the whole key range,
    interleaved with the others', as manufacturers' GUIDs are over a national estate (with contiguous
    GUIDs per Supplier the planner merge-joined a list with one range of the GUID index)."""
    return f"00BF{(((prefix << 40) | i) * 0x9E3779B97F4B) % (1 << 48):012X}"


def estate(big: int, others: int) -> dict:
    from django.db import connection
    from django.utils import timezone

    from rollouts.models import DeviceModel, FirmwareVersion, Organisation, OrgKind, Rollout, RolloutHub, User

    dcc, _ = Organisation.objects.get_or_create(kind=OrgKind.DCC, defaults={"name": "DCC", "slug": "dcc"})
    orgs = {
        key: Organisation.objects.get_or_create(
            slug=f"bench-instr-{key}",
            defaults={"name": f"Bench Instr {key.upper()}", "kind": OrgKind.SUPPLIER},
        )[0]
        for key in ("a", "b", "big", "others")
    }
    users = {
        key: User.objects.filter(email=f"{key}@bench-instr.test").first()
        or User.objects.create_user(f"{key}@bench-instr.test", "bench-password-1", organisation=org)
        for key, org in {**orgs, "dcc": dcc}.items()
    }
    model, _ = DeviceModel.objects.get_or_create(
        cpl_code=MODEL, defaults={"manufacturer": "Bench", "model": "BI", "hardware_version": "1"}
    )
    v1, _ = FirmwareVersion.objects.get_or_create(device_model=model, version="00000001")
    v2, _ = FirmwareVersion.objects.get_or_create(device_model=model, version="00000002")
    other_model, _ = DeviceModel.objects.get_or_create(
        cpl_code=OTHER_MODEL, defaults={"manufacturer": "Bench", "model": "BO", "hardware_version": "1"}
    )
    other_v1, _ = FirmwareVersion.objects.get_or_create(device_model=other_model, version="00000001")
    now = timezone.now()
    rollout = Rollout.objects.filter(reference="BENCH-INSTR").first()
    if rollout is None:
        rollout = Rollout.objects.create(
            reference="BENCH-INSTR",
            title="Instruction bench",
            device_model=model,
            target_version=v2,
            release_note_url="https://example.test/notes",
            severity="high",
            priority="high",
            release_type="sec_release",
            impact="operational",
            status="ACTIVE",
            published_at=now,
            created_by=users["dcc"],
        )
    # Keep the timeline ahead of now on every run.
    rollout.auto_deploy_at = now + dt.timedelta(days=150)
    rollout.save(update_fields=["auto_deploy_at"])
    wanted = {0: SPLIT_HUBS, 1: big, 2: others}
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM rollouts_hub WHERE guid LIKE '00BE%%')")
        if cursor.fetchone()[0]:
            raise SystemExit(
                "This database holds the bench's earlier estate (GUIDs 00BE...): drop it and migrate."
            )
        group_of = {0: orgs["a"].pk, 1: orgs["big"].pk, 2: orgs["others"].pk}
        for prefix, n in wanted.items():
            cursor.execute(
                "SELECT count(*) FROM rollouts_hub WHERE import_supplier_id = %s", [group_of[prefix]]
            )
            have = cursor.fetchone()[0]
            if have >= n:
                continue
            t = perf_counter()
            imp = group_of[prefix]
            gas = orgs["b"].pk if prefix == 0 else None
            hub_model, version = (other_model, other_v1) if prefix == 2 else (model, v1)
            with cursor.copy(
                "COPY rollouts_hub (guid, device_model_id, firmware_version_id, region, import_supplier_id, "
                "gas_supplier_id, friendly, production_proving, status, firmware_as_of, updated_at) FROM STDIN"
            ) as copy:
                for i in range(have, n):
                    copy.write_row(
                        [
                            guid(prefix, i),
                            hub_model.pk,
                            version.pk,
                            "north",
                            imp,
                            gas,
                            False,
                            False,
                            "in_smi",
                            now,
                            now,
                        ]
                    )
            print(f"setup: COPY {n - have:,} hubs in {perf_counter() - t:.1f} s", flush=True)
        t = perf_counter()
        cursor.execute(
            """INSERT INTO rollouts_rollouthub (rollout_id, hub_id, import_supplier_id, gas_supplier_id, region,
                   "group", status, status_at, failure_reason, planned_activation_at, activation_source,
                   supplier_changed, in_default_pilot, pilot_reason, guid)
               SELECT %s, h.id, h.import_supplier_id, h.gas_supplier_id, h.region, 'safe_launch', 'pending', %s, '',
                      %s, 'automatic', false, false, '', h.guid
               FROM rollouts_hub h WHERE h.device_model_id = %s
               ON CONFLICT (rollout_id, hub_id) DO NOTHING""",
            [rollout.pk, now, rollout.auto_deploy_at, model.pk],
        )
        if cursor.rowcount:
            print(f"setup: {cursor.rowcount:,} rollout hubs in {perf_counter() - t:.1f} s", flush=True)
        # A clean start: no standing instructions, every hub at the automatic time.
        cursor.execute("DELETE FROM rollouts_hubinstruction WHERE rollout_id = %s", [rollout.pk])
        cursor.execute(
            "UPDATE rollouts_rollouthub SET planned_activation_at = %s, activation_source = 'automatic', "
            "status = 'pending' WHERE rollout_id = %s AND (planned_activation_at <> %s OR activation_source <> "
            "'automatic' OR status <> 'pending')",
            [rollout.auto_deploy_at, rollout.pk, rollout.auto_deploy_at],
        )
        # Every case rewrites up to a million rows; without autovacuum (off on bench servers) a rerun would start
        # from the previous runs' dead rows and time them too. VACUUM cannot run in a transaction: autocommit here.
        t = perf_counter()
        cursor.execute("VACUUM (ANALYZE) rollouts_hub, rollouts_rollouthub, rollouts_hubinstruction")
        print(f"setup: VACUUM (ANALYZE) in {perf_counter() - t:.1f} s", flush=True)
    assert RolloutHub.objects.filter(rollout=rollout).count() >= SPLIT_HUBS
    return {"rollout": rollout, "users": users}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    parser.add_argument("--big", type=int, default=None, help="hubs of the big Supplier (default 1,000,000)")
    parser.add_argument(
        "--others",
        type=int,
        default=None,
        help="hubs of another model and Supplier, not in the rollout (default 2,000,000; --quick 200,000): the "
        "hub table of a national estate is much bigger than one Supplier's part of it",
    )
    parser.add_argument(
        "--sql",
        action="store_true",
        help="print each case's SQL statements slower than 50 ms (BENCH_SQL_MIN_MS=N for N ms), with their time",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print the plan (auto_explain: analyze, buffers, WAL) of each statement slower than 100 ms",
    )
    parser.add_argument(
        "--only", choices=("50k", "all"), default=None, help="only the 50,000-hub cases, or only all eligible"
    )
    args = parser.parse_args(argv)
    big = args.big or (100_000 if args.quick else 1_000_000)
    others = args.others if args.others is not None else (200_000 if args.quick else 2_000_000)
    _django()
    from django.core.files.base import ContentFile
    from django.db import connection

    from bench.db import conditions
    from rollouts.intake.pipeline import applied_here
    from rollouts.models import RolloutHub
    from rollouts.services.instructions import instruct_early_deployment, withdraw_instruction

    print(conditions(), flush=True)
    data = estate(big, others)
    if args.explain:  # needs a superuser (LOAD); the plans arrive as LOG notices on this connection
        connection.ensure_connection()
        connection.connection.add_notice_handler(lambda diag: print(diag.message_primary, flush=True))
        with connection.cursor() as cursor:
            cursor.execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 100; SET auto_explain.log_analyze = on;"
                " SET auto_explain.log_buffers = on; SET auto_explain.log_wal = on;"
                " SET auto_explain.log_nested_statements = on; SET client_min_messages = log"
            )
    rollout, users = data["rollout"], data["users"]
    auto = rollout.auto_deploy_at
    early, later = auto - dt.timedelta(days=60), auto - dt.timedelta(days=40)
    split_file = ("guid\n" + "".join(guid(0, i) + "\n" for i in range(SPLIT_HUBS))).encode()
    figures: list[tuple[str, int, float]] = []

    def timed(label: str, fn) -> object:
        statements: list[tuple[float, str]] = []

        def wrapper(execute, sql, params, many, context):
            start = perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                statements.append((perf_counter() - start, sql))

        t = perf_counter()
        if args.sql:
            commit = connection._commit

            def timed_commit():  # the deferred foreign-key checks run here
                start = perf_counter()
                try:
                    return commit()
                finally:
                    statements.append((perf_counter() - start, "COMMIT"))

            connection._commit = timed_commit
            try:
                with connection.execute_wrapper(wrapper), applied_here():
                    result = fn()
            finally:
                del connection._commit
        else:
            with applied_here():  # the service itself, not the queue: big files would go to a worker
                result = fn()
        seconds = perf_counter() - t
        hubs = getattr(result, "hub_count", None) or (
            result.get("withdrawn") if isinstance(result, dict) else 0
        )
        figures.append((label, hubs, seconds))
        print(f"{label:<28} {hubs:>10,} hubs {seconds:8.2f} s", flush=True)
        if args.sql:
            print(
                f"    {sum(took for took, _ in statements):7.3f} s  all {len(statements)} statements and COMMIT"
            )
        for took, sql in statements:
            if took >= float(os.environ.get("BENCH_SQL_MIN_MS", "50")) / 1000:
                print(f"    {took:7.3f} s  {' '.join(sql.split())[:150]}", flush=True)
        return result

    def by_file(user, at):
        return instruct_early_deployment(
            user=user,
            rollout_id=rollout.pk,
            content=ContentFile(split_file, name="bench.csv"),
            default_deploy_at=at,
        )

    if args.only == "all":
        return _all_eligible(timed, rollout, users, big, early)
    timed("file 50k (A)", lambda: by_file(users["a"], early))
    timed("file 50k (B, split)", lambda: by_file(users["b"], later))
    moved = RolloutHub.objects.filter(rollout=rollout, planned_activation_at=later).count()
    print(f"  split hubs at the later time after both: {moved:,}")
    timed("file 50k replace (A)", lambda: by_file(users["a"], later + dt.timedelta(days=1)))
    timed("withdraw 50k (A)", lambda: withdraw_instruction(user=users["a"], rollout_id=rollout.pk, all=True))
    # The lists are built before the clock starts: a caller of the service has its list already.
    first = [guid(1, i) for i in range(SPLIT_HUBS)]
    step = max(big // SPLIT_HUBS, 1)  # every k-th hub: about one on each page of the rollout's rows
    spread = [guid(1, i) for i in range(0, step * SPLIT_HUBS, step)][:SPLIT_HUBS]
    timed(
        "selection 50k (big)",
        lambda: instruct_early_deployment(
            user=users["big"], rollout_id=rollout.pk, guids=first, default_deploy_at=early
        ),
    )
    timed(
        "selection 50k spread (big)",
        lambda: instruct_early_deployment(
            user=users["big"], rollout_id=rollout.pk, guids=spread, default_deploy_at=later
        ),
    )
    if args.only != "50k":
        _all_eligible(timed, rollout, users, big, early)
    return 0


def _all_eligible(timed, rollout, users, big: int, early: dt.datetime) -> int:
    from rollouts.services.instructions import instruct_early_deployment, withdraw_instruction

    timed(
        f"all eligible ({big // 1000:,}k, big)",
        lambda: instruct_early_deployment(
            user=users["big"], rollout_id=rollout.pk, all_eligible=True, default_deploy_at=early
        ),
    )
    timed(
        "withdraw all (big)", lambda: withdraw_instruction(user=users["big"], rollout_id=rollout.pk, all=True)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
