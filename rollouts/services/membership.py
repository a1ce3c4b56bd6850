"""Inventory changes reach live rollouts (B3, E6), set-based, from what `load_inventory` recorded
(InventoryChange rows for hubs already in the SMI, and a temporary table of brand-new hubs).

- a hub that joins the SMI (or returns, or moves onto a replaced version of the model) after
  publication joins the safe launch group of the live rollout for its model and version;
- a hub that left the SMI, or changed model, gets deployment status `left`;
- a hub whose Supplier changed has its Suppliers updated and is marked `supplier_changed`, for the
  instruction issue to lapse the old Supplier's instructions and amendments (E6).
Hubs are never deleted. Counters move by the exact deltas of the rows that changed (U1).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from django.db import connection
from django.utils import timezone

from ..models import Organisation, OrgKind, Rollout
from .counters import DELTA_TABLE, apply_deltas, create_delta_table
from .instructions import lapse_for_supplier_changes, notify_joiners_not_covered
from .notifications import notify
from .piloting import GroupChange, recompute_pilot_group, tell_csps_group_changed
from .planning import UNDISTRIBUTED, tell_csps

LIVE = "('ACTIVE', 'PAUSED', 'SUSPENDED')"
OLD = 'o.import_supplier_id, o.gas_supplier_id, o.region, o."group", o.status'


ESTATE_LOCK = 0x43484657  # "CHFW": the transaction-level advisory lock key of the hub estate


def lock_estate(cursor) -> None:
    """The hub estate, for this transaction: an inventory load (which writes hubs and then reconciles the
    live rollouts) and a publication (which builds its rollout's rows from the hubs) take it first, so one
    waits for the other. Without it a load that committed while a publication was building its rows
    changed hubs the publication had already read, and its reconciliation could not see the new rollout
    (not yet committed): a hub that left stayed `pending` in it for good (tests/rollouts/test_membership.py).
    """
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ESTATE_LOCK])


def lock_live_rollouts(cursor) -> None:
    """L10 for an inventory load: the row lock of every live rollout, in id order (two loads cannot
    deadlock), taken before the load writes a hub row. A status feed, an instruction or a pilot change
    of a live rollout holds that lock from its first read of the rollout's hubs to its commit, so the
    load waits for it and then reconciles what it committed, and starts none of them until the load has
    committed. Without it a feed and a load that overlapped deadlocked (the load waited on the rollout row
    for a foreign-key check while holding a hub's rollout row the feed needed), or a feed that had read a
    hub as `scheduled` wrote `activated` over the load's `left`, with counter deltas from the status it had
    read (tests/rollouts/test_safe_launch_progress.py).
    Taking it before any hub write keeps the order every such service uses (the rollout, then hub rows),
    so the two cannot deadlock. The SMI versions a feed confirms are written after it commits, under the
    estate lock alone (`rollouts.services.smi`)."""
    cursor.execute(f"SELECT id FROM rollouts_rollout WHERE status IN {LIVE} ORDER BY id FOR UPDATE")


def reconcile_live_rollouts(upload_id: int, new_hubs: str | None = None) -> dict[str, Any]:
    """React to what the inventory upload changed: its InventoryChange rows, and the brand-new hubs in
    the temporary table `new_hubs` (hub_id), which the load fills with those a live rollout may take."""
    params = {"upload": upload_id, "now": timezone.now()}
    brand_new = f"UNION ALL SELECT hub_id FROM {new_hubs}" if new_hubs else ""
    with connection.cursor() as cursor:
        # The load took these locks before its hub writes; again here for any rollout that went live since.
        lock_live_rollouts(cursor)
        create_delta_table(cursor)
        cursor.execute("ANALYZE rollouts_inventorychange")  # this load's rows: plan the joins below on them
        # Leavers: out of the SMI, or now another device model.
        cursor.execute(
            f"""
            WITH o AS (
                SELECT rh.id, rh.rollout_id, rh.import_supplier_id, rh.gas_supplier_id, rh.region, rh."group",
                       rh.status, rh.batch_id
                FROM rollouts_inventorychange c
                JOIN rollouts_rollouthub rh ON rh.hub_id = c.hub_id
                JOIN rollouts_rollout r ON r.id = rh.rollout_id AND r.status IN {LIVE}
                JOIN rollouts_hub h ON h.id = c.hub_id
                WHERE c.upload_id = %(upload)s AND rh.status <> 'left'
                  AND (c."left" OR (c.model_changed AND h.device_model_id <> r.device_model_id))
            ), gone AS (
                UPDATE rollouts_rollouthub rh SET status = 'left', status_at = %(now)s FROM o WHERE rh.id = o.id
                RETURNING o.*
            )
            INSERT INTO {DELTA_TABLE}
            SELECT o.rollout_id, NULL, {OLD}, o.import_supplier_id, o.gas_supplier_id, o.region, o."group", 'left',
                   o.batch_id, o.batch_id
            FROM gone o""",
            params,
        )
        left = cursor.rowcount
        # Joiners: the live rollout for the hub's model and (replaced) version; the newest if several.
        cursor.execute(
            f"""
            CREATE TEMP TABLE membership_candidates ON COMMIT DROP AS
            SELECT DISTINCT ON (h.id) h.id AS hub_id, r.id AS rollout_id, r.auto_deploy_at, h.import_supplier_id,
                   h.gas_supplier_id, h.region, h.guid
            FROM (SELECT c.hub_id FROM rollouts_inventorychange c
                  WHERE c.upload_id = %(upload)s AND (c.is_new OR c.returned OR c.model_changed OR c.version_changed)
                  {brand_new}) c
            JOIN rollouts_hub h ON h.id = c.hub_id AND h.status = 'in_smi'
            JOIN rollouts_rollout r ON r.device_model_id = h.device_model_id AND r.status IN {LIVE}
            JOIN rollouts_rollout_replaced_versions rv ON rv.rollout_id = r.id
                                                    AND rv.firmwareversion_id = h.firmware_version_id
            ORDER BY h.id, r.published_at DESC""",
            params,
        )
        cursor.execute(
            f"""
            WITH o AS (
                SELECT rh.id, rh.rollout_id, rh.hub_id, rh.import_supplier_id, rh.gas_supplier_id, rh.region,
                       rh."group", rh.status, rh.batch_id, m.import_supplier_id AS new_import, m.gas_supplier_id AS new_gas,
                       m.region AS new_region, m.auto_deploy_at
                FROM membership_candidates m
                JOIN rollouts_rollouthub rh ON rh.rollout_id = m.rollout_id AND rh.hub_id = m.hub_id
                WHERE rh.status = 'left'
            ), back AS (
                UPDATE rollouts_rollouthub rh
                SET status = 'pending', status_at = %(now)s, "group" = 'safe_launch', import_supplier_id = o.new_import,
                    gas_supplier_id = o.new_gas, region = o.new_region, planned_activation_at = o.auto_deploy_at,
                    activation_source = 'automatic', batch_id = NULL
                FROM o WHERE rh.id = o.id
                RETURNING o.*
            )
            INSERT INTO {DELTA_TABLE}
            SELECT o.rollout_id, o.hub_id, {OLD}, o.new_import, o.new_gas, o.new_region, 'safe_launch', 'pending',
                   o.batch_id, NULL
            FROM back o
            """,
            params,
        )
        returned = cursor.rowcount
        cursor.execute(
            f"""
            WITH joined AS (
                INSERT INTO rollouts_rollouthub (rollout_id, hub_id, import_supplier_id, gas_supplier_id, region,
                                                 "group", status, status_at, failure_reason, planned_activation_at,
                                                 activation_source, supplier_changed, guid)
                SELECT rollout_id, hub_id, import_supplier_id, gas_supplier_id, region, 'safe_launch', 'pending',
                       %(now)s, '', auto_deploy_at, 'automatic', false, guid
                FROM membership_candidates
                ON CONFLICT (rollout_id, hub_id) DO NOTHING
                RETURNING rollout_id, hub_id, import_supplier_id, gas_supplier_id, region
            )
            INSERT INTO {DELTA_TABLE} (rollout_id, hub_id, new_import, new_gas, new_region, new_group, new_status)
            SELECT rollout_id, hub_id, import_supplier_id, gas_supplier_id, region, 'safe_launch', 'pending'
            FROM joined
            """,
            params,
        )
        joined = cursor.rowcount + returned
        # Supplier (or region) changes: the rollout row follows the SMI; E6 is marked for the instructions.
        cursor.execute(
            f"""
            WITH o AS (
                SELECT rh.id, rh.rollout_id, rh.import_supplier_id, rh.gas_supplier_id, rh.region, rh."group",
                       rh.status, h.import_supplier_id AS new_import, h.gas_supplier_id AS new_gas,
                       h.region AS new_region, c.supplier_changed
                FROM rollouts_inventorychange c
                JOIN rollouts_rollouthub rh ON rh.hub_id = c.hub_id
                JOIN rollouts_rollout r ON r.id = rh.rollout_id AND r.status IN {LIVE}
                JOIN rollouts_hub h ON h.id = c.hub_id
                WHERE c.upload_id = %(upload)s AND rh.status <> 'left'
                  AND (rh.import_supplier_id IS DISTINCT FROM h.import_supplier_id
                       OR rh.gas_supplier_id IS DISTINCT FROM h.gas_supplier_id OR rh.region <> h.region)
            ), moved AS (
                UPDATE rollouts_rollouthub rh
                SET import_supplier_id = o.new_import, gas_supplier_id = o.new_gas, region = o.new_region,
                    supplier_changed = rh.supplier_changed OR o.supplier_changed
                FROM o WHERE rh.id = o.id
                RETURNING o.*
            )
            INSERT INTO {DELTA_TABLE}
            SELECT o.rollout_id, NULL, {OLD}, o.new_import, o.new_gas, o.new_region, o."group", o.status
            FROM moved o
            """,
            params,
        )
        cursor.execute(f"SELECT count(DISTINCT rollout_id) FROM {DELTA_TABLE}")
        touched = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT count(*) FROM {DELTA_TABLE} WHERE old_import IS DISTINCT FROM new_import "
            "OR old_gas IS DISTINCT FROM new_gas"
        )
        supplier_moved = cursor.fetchone()[0]
        apply_deltas(cursor)
        cursor.execute("DROP TABLE membership_candidates")
        cursor.execute(
            f"""SELECT rollout_id, array_agg(hub_id) FROM {DELTA_TABLE}
                WHERE hub_id IS NOT NULL AND new_status = 'pending' GROUP BY 1"""
        )
        joiners = dict(cursor.fetchall())
        cursor.execute(
            f"""SELECT DISTINCT d.rollout_id, r.stage = 'NOTIFICATION' FROM {DELTA_TABLE} d
                JOIN rollouts_rollout r ON r.id = d.rollout_id"""
        )
        stages = dict(cursor.fetchall())
        # T5: undistributed hubs that joined a region's plan (a new or returning hub, or one whose region
        # changed) or left it, per rollout and region
        cursor.execute(
            f"""SELECT rollout_id, region, count(*) FROM (
                    SELECT rollout_id, new_region AS region FROM {DELTA_TABLE}
                    WHERE new_status IN {UNDISTRIBUTED}
                      AND (old_status IS NULL OR old_status NOT IN {UNDISTRIBUTED} OR old_region <> new_region)
                    UNION ALL
                    SELECT rollout_id, old_region FROM {DELTA_TABLE}
                    WHERE old_status IN {UNDISTRIBUTED}
                      AND (new_status NOT IN {UNDISTRIBUTED} OR old_region <> new_region)) moved
                GROUP BY 1, 2"""
        )
        plans: dict[int, Counter[str]] = defaultdict(Counter)
        for rollout_id, region, n in cursor.fetchall():
            plans[rollout_id][region] = n
    lapsed = lapse_for_supplier_changes(sorted(stages))  # E6, before the pilot group is recomputed
    rollouts = Rollout.objects.in_bulk(list(plans))
    for rollout_id, changed in sorted(plans.items()):
        tell_csps(
            rollouts[rollout_id], changed, "the inventory load moved hubs into or out of your region's plan"
        )
    for rollout_id, hub_ids in joiners.items():  # E4: "all my eligible hubs" did not cover them
        notify_joiners_not_covered(rollout_id, hub_ids)
    for rollout_id, before_pilot in stages.items():
        if before_pilot:  # PL6: amendments of former Suppliers no longer count
            change = recompute_pilot_group(rollout_id)
            rollout = Rollout.objects.get(pk=rollout_id)
            tell_csps_group_changed(rollout, change, why="An inventory load changed hubs' Suppliers")
            _tell_dcc_if_over_cap(rollout, change)
    return {
        "rollouts_touched": touched,
        "joined_rollouts": joined,
        "left_rollouts": left,
        "supplier_changed_in_rollouts": supplier_moved,
        "instructions_lapsed": lapsed["instructions_lapsed"],
        "amendments_lapsed": lapsed["amendments_lapsed"],
    }


def _tell_dcc_if_over_cap(rollout: Rollout, change: GroupChange) -> None:
    """PL1, L3: a load is never refused for the pilot cap, but when a lapsed veto (E6) takes the group past
    it, DCC is told that the pilot cannot start until hubs are removed."""
    grew = sum(change.joined.values()) > sum(change.left.values())
    if not grew or change.pilot <= rollout.pilot_max:
        return
    notify(
        Organisation.objects.filter(kind=OrgKind.DCC),
        kind="pilot.over_cap",
        rollout=rollout,
        subject=f"{rollout.reference}: the pilot group is past its cap",
        body=f"An inventory load changed hubs' Suppliers, and their former Suppliers' vetoes lapsed (E6): the "
        f"effective pilot group of {rollout} now has {change.pilot} hubs, more than the cap of {rollout.pilot_max}. "
        f"Remove {change.pilot - rollout.pilot_max} (take back DCC's hubs, or ask the CSPs or Suppliers) "
        "before the pilot can start (PL1, L3).",
    )
