"""T5: the planned activation time of each hub, replanned set-based after every change.

A pilot hub activates at the end of its pilot batch window; a safe launch hub at its instructed
time (E3: every Supplier of the hub instructed; the later of their times) or, without one, at the
automatic time; an earlier instruction wins over a pilot window; nothing is ever later than the
automatic time. Only hubs not yet distributed are replanned.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from ..models import Organisation, OrgKind, Rollout
from .notifications import notify

UNDISTRIBUTED = "('pending', 'scheduled')"  # the statuses of hubs that are planned (and replanned)

# What every replan returns: per region, how many hubs' planned time or source changed (rows that did not
# change are not written, nor counted). Each CSP is told of its own region's count (`tell_csps`).
Replanned = Counter[str]

# The counts come from the UPDATE itself: it returns each changed row's region, grouped here.
BY_REGION = "SELECT region, count(*) FROM changed GROUP BY region"

# E3 without a per-hub subquery: at most two Suppliers count for a hub (its Import and its Gas Supplier,
# once when one organisation is both), so each is one LEFT JOIN on the unique (rollout, hub, supplier)
# key of HubInstruction. A hub is instructed when every one of its Suppliers has a row; the later time
# wins (GREATEST ignores the NULL of a Supplier the hub does not have). The previous LATERAL
# count/max per hub gave the same answer row by row; this form takes a merge or hash join at 1,000,000
# hubs (replan 13.2 s -> 7.4 s, most of it now the UPDATE itself) and unique-key lookups at 50,000.
PLAN = """
    SELECT rh.id,
           r.auto_deploy_at AS automatic,
           CASE WHEN rh."group" = 'pilot' THEN b.window_end END AS pilot_end,
           CASE WHEN (rh.import_supplier_id IS NULL OR imp.deploy_at IS NOT NULL)
                 AND (rh.gas_supplier_id IS NULL OR rh.gas_supplier_id = rh.import_supplier_id
                      OR gas.deploy_at IS NOT NULL)
                THEN GREATEST(imp.deploy_at, gas.deploy_at) END AS instructed
    FROM rollouts_rollouthub rh
    JOIN rollouts_rollout r ON r.id = rh.rollout_id
    LEFT JOIN rollouts_batch b ON b.id = rh.batch_id
    LEFT JOIN rollouts_hubinstruction imp
           ON imp.rollout_id = rh.rollout_id AND imp.hub_id = rh.hub_id AND imp.supplier_id = rh.import_supplier_id
    LEFT JOIN rollouts_hubinstruction gas
           ON gas.rollout_id = rh.rollout_id AND gas.hub_id = rh.hub_id AND gas.supplier_id = rh.gas_supplier_id
          AND rh.gas_supplier_id IS DISTINCT FROM rh.import_supplier_id
    WHERE rh.rollout_id = %(rollout)s AND rh.status IN ('pending', 'scheduled') {only}
"""


def tell_csps(rollout: Rollout, changed: Replanned, why: str) -> None:
    """T5: each CSP whose region's plan changed is told how many of its hubs changed and why (`why` names
    no Supplier, P4), and to download the plan; a CSP is never told of another region's hubs."""
    for csp in Organisation.objects.filter(kind=OrgKind.CSP, region__in=[r for r, n in changed.items() if n]):
        n = changed[csp.region]
        notify(
            [csp],
            kind="plan.changed",
            rollout=rollout,
            subject=f"{rollout.reference}: the deployment plan of your region changed",
            body=f"The deployment plan of your region in {rollout} changed for {n:,} {'hub' if n == 1 else 'hubs'}: "
            f"{why}. Download the deployment plan to see the new times (T5).",
        )


@contextmanager
def _index_lookups(cursor, on: bool) -> Iterator[None]:
    """random_page_cost 1.1 for the statements inside, the transaction's own setting back afterwards."""
    if not on:
        yield
        return
    cursor.execute("SELECT current_setting('random_page_cost'), set_config('random_page_cost', '1.1', true)")
    before = cursor.fetchone()[0]
    yield
    cursor.execute("SELECT set_config('random_page_cost', %s, true)", [before])


def replan(
    rollout_id: int, *, hubs_table: str | None = None, supplier_id: int | None = None, skip_sole: bool = False
) -> Replanned:
    """Replan the rollout's hubs (or only those whose hub_id is in the temp table `hubs_table`, or only
    those of one Supplier). Returns, per region, how many hubs' planned time or source changed (rows that
    did not change are not written).

    `supplier_id` serves "all my eligible hubs" and its withdrawal, whose hubs are exactly the Supplier's
    undistributed ones: a filter on the hub rows instead of a semi-join against a million-row temp table
    (1,000,000 hubs: 11.2 s -> 8.8 s, bench/instructions.py).

    An instruction list's hubs, but for pilot hubs, go through `replan_given` instead, which knows the acting
    Supplier's time."""
    # A list's hubs are visited in hub order (DISTINCT ... ORDER BY: each index and table page of the rollout's
    # rows read once, in order; a hashed IN visited them in hash order), by index lookups (random_page_cost
    # 1.1 for this statement, TOOLCHAIN "National scale"; at the default a withdrawal of 50,000 hubs read all
    # of a 1,050,000-hub rollout). 50,000 hubs spread over a Supplier's 1,000,000, tuned server: 0.36-0.38 s
    # against 0.56-0.63 s; clustered lists 0.21-0.28 s against 0.19-0.24 s (bench/instructions.py).
    only = (
        f"AND rh.hub_id IN (SELECT DISTINCT hub_id FROM {hubs_table} WHERE hub_id IS NOT NULL ORDER BY hub_id)"
        if hubs_table
        else ""
    )
    if supplier_id is not None:
        only += " AND (rh.import_supplier_id = %(supplier)s OR rh.gas_supplier_id = %(supplier)s)"
    if skip_sole:  # replan_supplier has written those hubs itself
        only += f" AND NOT ({SOLE})"
    with connection.cursor() as cursor, _index_lookups(cursor, hubs_table is not None):
        cursor.execute(
            f"""
            WITH plan AS ({PLAN.format(only=only)}),
                 chosen AS (
                    SELECT id,
                           LEAST(automatic, pilot_end, instructed) AS at,
                           CASE WHEN instructed IS NOT NULL AND instructed <= LEAST(automatic, pilot_end)
                                     THEN 'instruction'
                                WHEN pilot_end IS NOT NULL AND pilot_end < automatic THEN 'pilot_window'
                                ELSE 'automatic' END AS source
                    FROM plan),
                 changed AS (
                    UPDATE rollouts_rollouthub rh SET planned_activation_at = c.at, activation_source = c.source
                    FROM chosen c
                    WHERE rh.id = c.id
                      AND (rh.planned_activation_at IS DISTINCT FROM c.at OR rh.activation_source <> c.source)
                    RETURNING rh.region)
            {BY_REGION}""",
            {"rollout": rollout_id, "supplier": supplier_id},
        )
        return Counter(dict(cursor.fetchall()))


# The same rule for the commonest hubs of "all my eligible hubs" and of withdrawing all: safe launch hubs
# whose only Supplier is the one acting (one Supplier, or one organisation in both roles, E2), when that
# Supplier has just given every one of them the same time (or withdrawn every one: None). Their instructed
# time is then that time, known without reading HubInstruction, and without a pilot window the plan is
# LEAST(automatic, instructed) with source `instruction` when instructed <= automatic: one UPDATE with no
# join to HubInstruction nor back to the hub rows, which were half of `replan`'s time at 1,000,000 hubs
# (3.5 s of 7 at load 1.5; 9.4-10.3 s against 27 s paired at load 3). Split and pilot hubs of the
# Supplier go through `replan` as before; tests check a full `replan` afterwards changes nothing.
ONLY_SUPPLIER = """rh.rollout_id = %(rollout)s AND rh.status IN ('pending', 'scheduled')
    AND (rh.import_supplier_id = %(supplier)s OR rh.gas_supplier_id = %(supplier)s)"""
SOLE = """(rh.import_supplier_id IS NULL OR rh.gas_supplier_id IS NULL
           OR rh.import_supplier_id = rh.gas_supplier_id) AND rh."group" <> 'pilot'"""


def replan_given(rollout_id: int, automatic: dt.datetime, touched: str) -> Replanned:
    """Replan the hubs of a list one Supplier has just instructed or withdrawn, but for pilot hubs: the temp
    table `touched` holds (hub_id, rh_id, deploy_at, partner, pilot) for each listed hub, read from the
    Supplier's own rollout hub row in this transaction under the rollout lock; deploy_at is the time the
    Supplier has just given the hub (NULL: just withdrawn) and partner the hub's other Supplier (NULL: the
    acting Supplier is its only one, E2). Rows with `pilot` are left to `replan`. Returns hubs changed, as
    `replan`.

    Only valid under that precondition, as `replan_supplier`: the acting Supplier's time is known, so the rule
    (E3) needs only the partner's HubInstruction, one key lookup per split hub and none for the others, and each
    hub row is visited once (`replan` looks up both Suppliers' and joins the hub rows again to update them).
    50,000 hubs spread over a Supplier's 1,000,000, tuned server: 0.19-0.24 s against 0.36-0.50 s
    (bench/instructions.py).
    A full `replan` afterwards changes nothing (tests/rollouts/test_instructions.py).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH changed AS (
            UPDATE rollouts_rollouthub rh
            SET planned_activation_at = t.at, activation_source = t.source
            FROM (SELECT rh_id, LEAST(%(automatic)s, instructed) AS at,
                         CASE WHEN instructed <= %(automatic)s THEN 'instruction' ELSE 'automatic' END AS source
                  FROM (SELECT rh_id,
                               CASE WHEN partner IS NULL THEN deploy_at
                                    -- a split hub: instructed when the partner has too (no row: NULL), the later
                                    WHEN deploy_at IS NOT NULL
                                    THEN (SELECT GREATEST(t.deploy_at, p.deploy_at) FROM rollouts_hubinstruction p
                                          WHERE p.rollout_id = %(rollout)s AND p.hub_id = t.hub_id
                                            AND p.supplier_id = t.partner)
                               END AS instructed
                        FROM {touched} t WHERE NOT pilot) i
                  ORDER BY rh_id) t
            WHERE rh.id = t.rh_id AND rh.rollout_id = %(rollout)s AND rh.status IN ('pending', 'scheduled')
              AND (rh.planned_activation_at IS DISTINCT FROM t.at OR rh.activation_source <> t.source)
            RETURNING rh.region)
            {BY_REGION}""",
            {"rollout": rollout_id, "automatic": automatic},
        )
        return Counter(dict(cursor.fetchall()))


def replan_supplier(
    rollout_id: int, supplier_id: int, at: dt.datetime | None, residual_table: str | None
) -> Replanned:
    """Replan every undistributed hub of one Supplier, which has just instructed all of them at `at`
    ("all my eligible hubs") or withdrawn all of them (`at` None). Returns hubs changed, as `replan`.
    Only valid under that precondition: the caller holds the rollout lock and has just written it.

    The Supplier's split and pilot hubs go through `replan`: the caller, which read them when it wrote the
    instructions, names those whose instruction changed in the temp table `residual_table` (hub_id), or
    passes None when there are none (no second pass over the Supplier's hub rows to find them)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH changed AS (
            UPDATE rollouts_rollouthub rh
            SET planned_activation_at = CASE WHEN %(at)s::timestamptz <= r.auto_deploy_at THEN %(at)s::timestamptz
                                             ELSE r.auto_deploy_at END,
                activation_source = CASE WHEN %(at)s::timestamptz <= r.auto_deploy_at THEN 'instruction'
                                         ELSE 'automatic' END
            FROM rollouts_rollout r
            WHERE r.id = rh.rollout_id AND {ONLY_SUPPLIER} AND {SOLE}
              AND (rh.planned_activation_at IS DISTINCT FROM
                       (CASE WHEN %(at)s::timestamptz <= r.auto_deploy_at THEN %(at)s::timestamptz
                             ELSE r.auto_deploy_at END)
                   OR rh.activation_source <> (CASE WHEN %(at)s::timestamptz <= r.auto_deploy_at
                                                     THEN 'instruction' ELSE 'automatic' END))
            RETURNING rh.region)
            {BY_REGION}""",
            {"rollout": rollout_id, "supplier": supplier_id, "at": at},
        )
        changed = Counter(dict(cursor.fetchall()))
    if residual_table is None:
        return changed
    return changed + replan(rollout_id, hubs_table=residual_table, supplier_id=supplier_id, skip_sole=True)
