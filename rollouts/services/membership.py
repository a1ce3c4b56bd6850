"""Inventory changes reach live rollouts (B3, E6), set-based, from what `load_inventory` recorded.

- a hub that joins the SMI (or returns, or moves onto a replaced version of the model) after
  publication joins the safe launch group of the live rollout for its model and version;
- a hub that left the SMI, or changed model, gets deployment status `left`;
- a hub whose Supplier changed has its Suppliers updated and is marked `supplier_changed`, for the
  instruction issue to lapse the old Supplier's instructions and amendments (E6).
Hubs are never deleted. Counters of the rollouts touched are rebuilt.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.utils import timezone

from . import counters

LIVE = "('ACTIVE', 'PAUSED', 'SUSPENDED')"


def reconcile_live_rollouts(upload_id: int) -> dict[str, Any]:
    params = {"upload": upload_id, "now": timezone.now()}
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH gone AS (
                UPDATE rollouts_rollouthub rh SET status = 'left', status_at = %(now)s
                FROM rollouts_inventorychange c, rollouts_rollout r, rollouts_hub h
                WHERE c.upload_id = %(upload)s AND rh.hub_id = c.hub_id AND r.id = rh.rollout_id
                  AND h.id = c.hub_id AND r.status IN {LIVE} AND rh.status <> 'left'
                  AND (c."left" OR (c.model_changed AND h.device_model_id <> r.device_model_id))
                RETURNING rh.rollout_id
            ) SELECT rollout_id, count(*) FROM gone GROUP BY 1""",
            params,
        )
        left = dict(cursor.fetchall())
        cursor.execute(
            f"""
            WITH candidates AS (
                SELECT DISTINCT ON (h.id) h.id AS hub_id, r.id AS rollout_id, r.auto_deploy_at, h.import_supplier_id,
                       h.gas_supplier_id, h.region
                FROM rollouts_inventorychange c
                JOIN rollouts_hub h ON h.id = c.hub_id AND h.status = 'in_smi'
                JOIN rollouts_rollout r ON r.device_model_id = h.device_model_id AND r.status IN {LIVE}
                JOIN rollouts_rollout_replaced_versions rv ON rv.rollout_id = r.id
                                                        AND rv.firmwareversion_id = h.firmware_version_id
                WHERE c.upload_id = %(upload)s AND (c.is_new OR c.returned OR c.model_changed OR c.version_changed)
                ORDER BY h.id, r.published_at DESC
            ), joined AS (
                INSERT INTO rollouts_rollouthub (rollout_id, hub_id, import_supplier_id, gas_supplier_id, region,
                                                 "group", status, status_at, failure_reason, planned_activation_at,
                                                 activation_source, supplier_changed)
                SELECT rollout_id, hub_id, import_supplier_id, gas_supplier_id, region, 'safe_launch', 'pending',
                       %(now)s, '', auto_deploy_at, 'automatic', false
                FROM candidates
                ON CONFLICT (rollout_id, hub_id) DO UPDATE
                    SET status = 'pending', status_at = EXCLUDED.status_at, "group" = 'safe_launch',
                        import_supplier_id = EXCLUDED.import_supplier_id, gas_supplier_id = EXCLUDED.gas_supplier_id,
                        region = EXCLUDED.region, planned_activation_at = EXCLUDED.planned_activation_at,
                        activation_source = 'automatic'
                    WHERE rollouts_rollouthub.status = 'left'
                RETURNING rollout_id
            ) SELECT rollout_id, count(*) FROM joined GROUP BY 1""",
            params,
        )
        joined = dict(cursor.fetchall())
        cursor.execute(
            f"""
            WITH moved AS (
                UPDATE rollouts_rollouthub rh
                SET import_supplier_id = h.import_supplier_id, gas_supplier_id = h.gas_supplier_id,
                    region = h.region, supplier_changed = rh.supplier_changed OR c.supplier_changed
                FROM rollouts_inventorychange c, rollouts_rollout r, rollouts_hub h
                WHERE c.upload_id = %(upload)s AND rh.hub_id = c.hub_id AND r.id = rh.rollout_id
                  AND h.id = c.hub_id AND r.status IN {LIVE} AND rh.status <> 'left'
                  AND (rh.import_supplier_id IS DISTINCT FROM h.import_supplier_id
                       OR rh.gas_supplier_id IS DISTINCT FROM h.gas_supplier_id OR rh.region <> h.region)
                RETURNING rh.rollout_id, c.supplier_changed
            ) SELECT rollout_id, count(*) FILTER (WHERE supplier_changed) FROM moved GROUP BY 1""",
            params,
        )
        moved = dict(cursor.fetchall())
    touched = sorted(set(left) | set(joined) | set(moved))
    if touched:
        counters.recount(touched)
    return {
        "rollouts_touched": len(touched),
        "joined_rollouts": sum(joined.values()),
        "left_rollouts": sum(left.values()),
        "supplier_changed_in_rollouts": sum(moved.values()),
    }
