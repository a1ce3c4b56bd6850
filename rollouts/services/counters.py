"""U1: the counter table, maintained set-based, and the check that recounts and compares."""

from __future__ import annotations

from django.db import connection

# Each hub counts under each of its Suppliers (once when one organisation holds both roles) and once
# under the CSP of its region, so CSP totals never double-count split hubs.
COUNT_SQL = """
    SELECT rollout_id, organisation_id, "group", status, sum(hubs)::bigint AS hubs FROM (
        SELECT rollout_id, import_supplier_id AS organisation_id, "group", status, count(*) AS hubs
        FROM rollouts_rollouthub
        WHERE rollout_id = ANY(%(rollouts)s) AND import_supplier_id IS NOT NULL
        GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT rollout_id, gas_supplier_id, "group", status, count(*)
        FROM rollouts_rollouthub
        WHERE rollout_id = ANY(%(rollouts)s) AND gas_supplier_id IS NOT NULL
          AND gas_supplier_id IS DISTINCT FROM import_supplier_id
        GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT r.rollout_id, csp.id, r."group", r.status, r.hubs
        FROM (SELECT rollout_id, region, "group", status, count(*) AS hubs FROM rollouts_rollouthub
              WHERE rollout_id = ANY(%(rollouts)s) GROUP BY 1, 2, 3, 4) r
        JOIN rollouts_organisation csp ON csp.kind = 'csp' AND csp.region = r.region
    ) x
    GROUP BY 1, 2, 3, 4
"""


def recount(rollout_ids: list[int]) -> None:
    """Rebuild the counters of these rollouts from their hubs (publication, inventory changes)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM rollouts_rolloutcounter WHERE rollout_id = ANY(%(rollouts)s)",
            {"rollouts": rollout_ids},
        )
        cursor.execute(
            f'INSERT INTO rollouts_rolloutcounter (rollout_id, organisation_id, "group", status, hubs) {COUNT_SQL}',
            {"rollouts": rollout_ids},
        )


def counter_mismatches(rollout_ids: list[int] | None = None) -> list[tuple]:
    """Rows where the maintained counters differ from a fresh recount: (rollout, org, group, status,
    counted, maintained). Empty when they agree."""
    with connection.cursor() as cursor:
        if rollout_ids is None:
            cursor.execute("SELECT array_agg(id) FROM rollouts_rollout")
            rollout_ids = cursor.fetchone()[0] or []
        cursor.execute(
            f"""
            WITH counted AS ({COUNT_SQL}),
                 kept AS (SELECT rollout_id, organisation_id, "group", status, hubs FROM rollouts_rolloutcounter
                          WHERE rollout_id = ANY(%(rollouts)s) AND hubs <> 0)
            SELECT coalesce(c.rollout_id, k.rollout_id), coalesce(c.organisation_id, k.organisation_id),
                   coalesce(c."group", k."group"), coalesce(c.status, k.status), c.hubs, k.hubs
            FROM counted c FULL JOIN kept k
              ON (c.rollout_id, c.organisation_id, c."group", c.status)
               = (k.rollout_id, k.organisation_id, k."group", k.status)
            WHERE c.hubs IS DISTINCT FROM k.hubs
            ORDER BY 1, 2, 3, 4""",
            {"rollouts": rollout_ids},
        )
        return cursor.fetchall()
