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


# Per batch: B1's figures (Batch.activated_hubs, failed_hubs), its hubs with each outcome, and its hubs
# (Batch.hubs), every rollout row that points at it.
BATCH_COUNT_SQL = """
    SELECT b.rollout_id, b.id AS batch_id, coalesce(c.activated, 0) AS activated, coalesce(c.failed, 0) AS failed,
           coalesce(c.hubs, 0) AS hubs
    FROM rollouts_batch b
    LEFT JOIN (SELECT batch_id, count(*) FILTER (WHERE status = 'activated') AS activated,
                      count(*) FILTER (WHERE status = 'failed') AS failed, count(*) AS hubs
               FROM rollouts_rollouthub
               WHERE rollout_id = ANY(%(rollouts)s) AND batch_id IS NOT NULL
               GROUP BY 1) c ON c.batch_id = b.id
    WHERE b.rollout_id = ANY(%(rollouts)s)
"""
OUTCOMES = ("activated", "failed")


def recount(rollout_ids: list[int]) -> None:
    """Rebuild the counters of these rollouts from their hubs (publication, inventory changes), and
    their batches' figures."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE rollouts_batch b SET activated_hubs = c.activated, failed_hubs = c.failed, hubs = c.hubs
                FROM ({BATCH_COUNT_SQL}) c
                WHERE b.id = c.batch_id
                  AND (b.activated_hubs, b.failed_hubs, b.hubs) <> (c.activated, c.failed, c.hubs)""",
            {"rollouts": rollout_ids},
        )
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
    counted, maintained), then the batches' figures that differ: (rollout, None, "batch <id>", status or
    "hubs", counted, maintained). Empty when they agree."""
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
        mismatches = cursor.fetchall()
        cursor.execute(
            f"""
            SELECT c.rollout_id, NULL, 'batch ' || c.batch_id, s.status, s.counted, s.kept
            FROM ({BATCH_COUNT_SQL}) c JOIN rollouts_batch b ON b.id = c.batch_id
            CROSS JOIN LATERAL (VALUES ('activated', c.activated, b.activated_hubs),
                                       ('failed', c.failed, b.failed_hubs),
                                       ('hubs', c.hubs, b.hubs)) s(status, counted, kept)
            WHERE s.counted <> s.kept
            ORDER BY 1, c.batch_id, 4""",
            {"rollouts": rollout_ids},
        )
        return mismatches + cursor.fetchall()


DELTA_TABLE = "counter_deltas"


def create_delta_table(cursor) -> None:
    """A temp table of hub rows that changed: their old and new (Suppliers, region, group, status, batch).
    Old values are NULL for a row that joined; new values NULL for one that went away. The batches are
    needed where a hub changes batch (Batch.hubs), or where a hub with an outcome (activated, failed)
    changes status (B1's figures); a row without them moves no batch."""
    cursor.execute(f"DROP TABLE IF EXISTS {DELTA_TABLE}")
    cursor.execute(
        f"""CREATE TEMP TABLE {DELTA_TABLE} (
                rollout_id bigint NOT NULL, hub_id bigint,
                old_import bigint, old_gas bigint, old_region text, old_group text, old_status text,
                new_import bigint, new_gas bigint, new_region text, new_group text, new_status text,
                old_batch bigint, new_batch bigint
            ) ON COMMIT DROP"""
    )


def delta_keys_sql(source: str, weight: str | None = None) -> str:
    """The counter keys a set of changed hub rows moves, summed: each old key loses the hub, each new key
    gains it (U1). `source` is a table or CTE with the delta table's columns (rollout_id, old_import,
    old_gas, old_region, old_group, old_status and the same new_*). Yields (rollout_id, org, grp, status, d).

    With `weight`, each source row stands for that many hubs (the name of an integer column of `source`):
    a source already grouped by its keys costs a few rows here instead of six scans of every changed hub."""
    keys = []
    for side, sign in (("old", -1), ("new", 1)):
        d, joined_d = (f"{sign} * {weight}", f"{sign} * d.{weight}") if weight else (sign, sign)
        keys.append(
            f"""SELECT rollout_id, {side}_import AS org, {side}_group AS grp, {side}_status AS status, {d} AS d
                FROM {source} WHERE {side}_status IS NOT NULL AND {side}_import IS NOT NULL
                UNION ALL
                SELECT rollout_id, {side}_gas, {side}_group, {side}_status, {d}
                FROM {source} WHERE {side}_status IS NOT NULL AND {side}_gas IS NOT NULL
                  AND {side}_gas IS DISTINCT FROM {side}_import
                UNION ALL
                SELECT d.rollout_id, csp.id, d.{side}_group, d.{side}_status, {joined_d}
                FROM {source} d JOIN rollouts_organisation csp ON csp.kind = 'csp' AND csp.region = d.{side}_region
                WHERE d.{side}_status IS NOT NULL"""
        )
    return f"""SELECT rollout_id, org, grp, status, sum(d)::bigint AS d FROM ({" UNION ALL ".join(keys)}) k
               GROUP BY 1, 2, 3, 4 HAVING sum(d) <> 0"""


DELTA_KEYS_TABLE = "counter_delta_keys"


def create_delta_keys_table(cursor) -> None:
    """An empty temp table for summed counter deltas, for a statement that computes them itself
    (INSERT INTO it from a data-modifying CTE, then `apply_delta_keys`)."""
    cursor.execute(f"DROP TABLE IF EXISTS {DELTA_KEYS_TABLE}")
    cursor.execute(
        f"""CREATE TEMP TABLE {DELTA_KEYS_TABLE} (rollout_id bigint NOT NULL, org bigint NOT NULL, grp text NOT NULL,
                                                  status text NOT NULL, d bigint NOT NULL) ON COMMIT DROP"""
    )


def apply_deltas(cursor) -> int:
    """Move the counters by the changes in the delta table, set-based: each old key loses the hub,
    each new key gains it (U1), and so do the batches' outcome figures (B1). Touches only the keys
    that changed. Returns counter rows written."""
    cursor.execute(f"DROP TABLE IF EXISTS {DELTA_KEYS_TABLE}")
    cursor.execute(f"CREATE TEMP TABLE {DELTA_KEYS_TABLE} ON COMMIT DROP AS {delta_keys_sql(DELTA_TABLE)}")
    apply_batch_deltas(cursor, DELTA_TABLE)
    return apply_delta_keys(cursor)


def apply_batch_deltas(cursor, source: str, weight: str | None = None) -> int:
    """Move the batches' figures by a set of changed hub rows: their hubs (Batch.hubs) and their outcome
    figures (Batch.activated_hubs, failed_hubs; B1). `source` is a table or parenthesised, aliased subquery
    with old_batch, old_status, new_batch and new_status (with `weight`, an integer column: how many hubs
    each row stands for). A hub leaves its old batch's figure for its old status and joins its new batch's
    for its new one, and leaves its old batch's hubs for its new batch's when the two differ. The batch rows
    are locked in id order first, so two transactions moving the same batches cannot deadlock. Returns
    batches moved."""
    w = weight or "1"
    cursor.execute("DROP TABLE IF EXISTS batch_deltas")
    cursor.execute(
        f"""CREATE TEMP TABLE batch_deltas ON COMMIT DROP AS
            SELECT batch_id, sum(activated)::bigint AS activated, sum(failed)::bigint AS failed,
                   sum(hubs)::bigint AS hubs FROM (
                SELECT old_batch AS batch_id, -{w} * (old_status = 'activated')::int AS activated,
                       -{w} * (old_status = 'failed')::int AS failed,
                       -{w} * (old_batch IS DISTINCT FROM new_batch)::int AS hubs
                FROM {source}
                WHERE old_batch IS NOT NULL AND (old_status IN {OUTCOMES} OR old_batch IS DISTINCT FROM new_batch)
                UNION ALL
                SELECT new_batch, {w} * (new_status = 'activated')::int, {w} * (new_status = 'failed')::int,
                       {w} * (new_batch IS DISTINCT FROM old_batch)::int
                FROM {source}
                WHERE new_batch IS NOT NULL AND (new_status IN {OUTCOMES} OR new_batch IS DISTINCT FROM old_batch)
            ) x
            GROUP BY 1 HAVING sum(activated) <> 0 OR sum(failed) <> 0 OR sum(hubs) <> 0"""
    )
    cursor.execute(
        "SELECT b.id FROM rollouts_batch b WHERE b.id IN (SELECT batch_id FROM batch_deltas) ORDER BY b.id FOR UPDATE"
    )
    cursor.execute(
        """UPDATE rollouts_batch b SET activated_hubs = b.activated_hubs + coalesce(d.activated, 0),
                                       failed_hubs = b.failed_hubs + coalesce(d.failed, 0),
                                       hubs = b.hubs + d.hubs
           FROM batch_deltas d WHERE b.id = d.batch_id"""
    )
    moved = cursor.rowcount
    cursor.execute("DROP TABLE batch_deltas")
    return moved


def apply_delta_keys(cursor) -> int:
    """Move the counters by the summed deltas in the delta keys table. Returns counter rows written."""
    # Not INSERT … ON CONFLICT: PostgreSQL checks `hubs >= 0` on the proposed row before it finds the
    # conflict, so a negative delta must be an UPDATE of the existing key.
    cursor.execute(
        f"""UPDATE rollouts_rolloutcounter c SET hubs = c.hubs + k.d FROM {DELTA_KEYS_TABLE} k
           WHERE (c.rollout_id, c.organisation_id, c."group", c.status) = (k.rollout_id, k.org, k.grp, k.status)"""
    )
    written = cursor.rowcount
    cursor.execute(
        f"""INSERT INTO rollouts_rolloutcounter (rollout_id, organisation_id, "group", status, hubs)
           SELECT k.rollout_id, k.org, k.grp, k.status, k.d FROM {DELTA_KEYS_TABLE} k
           WHERE NOT EXISTS (SELECT 1 FROM rollouts_rolloutcounter c
                             WHERE (c.rollout_id, c.organisation_id, c."group", c.status)
                                 = (k.rollout_id, k.org, k.grp, k.status))"""
    )
    return written + cursor.rowcount
