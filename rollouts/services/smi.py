"""The SMI versions that status feeds confirmed (U3), written to the hubs right after each feed commits.

A feed records its activations on the rollout's hubs and, in the same transaction, one `SmiVersionUpdate`
row: the hubs it activated on the target and each record's time. `apply_smi_versions` writes those
versions to the hubs and deletes the rows, set-based:

- a worker runs it as soon as the feed commits (`tasks.apply_smi_versions`, queued on commit);
- a publication and an inventory load run it first, in their own transaction and under the estate lock,
  so eligibility (N2) and a load's comparison with the SMI (B3, E6) always read every confirmed version;
- a beat job runs it every minute, for a task the broker lost.

Why not in the feed's transaction: the hub rows' update was 0.18 s of a 50,000-record feed's 1.0 s, under
the rollout lock (bench.progress); here it runs beside the next feed instead of inside it. What waits is
never lost: the row is in the feed's transaction, and applying it twice writes the same versions.

The rule is the feed's own: the hub takes the rollout's target version when it is on another one, and
its `firmware_as_of` becomes the record's time if that is later (an inventory load older than it never
undoes it, `load_inventory`). Two waiting activations of the same hub: the later record wins.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from .membership import lock_estate


def apply_smi_versions() -> int:
    """Write the waiting SMI versions to their hubs; returns how many hubs changed version. In the caller's
    transaction when there is one (publication, inventory load), else in its own."""
    with transaction.atomic(), connection.cursor() as cursor:
        # Estate lock first, as a load and a publication take it: the three never write the same hub rows
        # in two orders (no deadlock), and a load's reconciliation never overlaps these writes.
        cursor.execute("SELECT EXISTS (SELECT 1 FROM rollouts_smiversionupdate)")
        if not cursor.fetchone()[0]:
            return 0
        lock_estate(cursor)
        cursor.execute(
            """WITH taken AS (
                   DELETE FROM rollouts_smiversionupdate RETURNING id, version_id, hub_ids, ats
               ), latest AS (
                   SELECT DISTINCT ON (u.hub_id) u.hub_id, t.version_id, u.at
                   FROM taken t CROSS JOIN LATERAL unnest(t.hub_ids, t.ats) AS u (hub_id, at)
                   ORDER BY u.hub_id, u.at DESC, t.id DESC
               )
               UPDATE rollouts_hub h
               SET firmware_version_id = l.version_id, firmware_as_of = greatest(h.firmware_as_of, l.at),
                   updated_at = %(now)s
               FROM latest l
               WHERE h.id = l.hub_id AND h.firmware_version_id IS DISTINCT FROM l.version_id""",
            {"now": timezone.now()},
        )
        return cursor.rowcount
