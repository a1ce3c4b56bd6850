"""Migration 0027 fills what it adds from what is stored (PL9: the feed reads rollout rows by GUID and
chooses its way by Batch.hubs): the state is made by the real services, the migration is undone (both
columns dropped) and done again, and every rollout row must carry its hub's GUID and every batch the
number of its rows."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from rollouts.models import Batch, RolloutHub
from rollouts.services.counters import counter_mismatches

from .test_progress import BOTH, GAS_SOUTH, OTHER_SOUTH, SPLIT, piloting  # noqa: F401 - piloting is a fixture

BEFORE = [("rollouts", "0026_hub_autovacuum_scale")]
AFTER = [("rollouts", "0027_rollout_hub_guid_batch_hubs")]


def migrate(target) -> None:
    with connection.cursor() as cursor:  # the test's transaction: deferred foreign-key checks first
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


@pytest.mark.req("PL9")
def test_migration_0027_copies_each_guid_and_counts_each_batch(piloting):  # noqa: F811
    migrate(BEFORE)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name IN ('rollouts_rollouthub', 'rollouts_batch') AND column_name IN ('guid', 'hubs')"
        )
        assert cursor.fetchall() == []  # undone: the columns are gone
    migrate(AFTER)
    rows = RolloutHub.objects.filter(rollout=piloting).values_list("guid", "hub__guid")
    assert len(rows) == 4 and all(guid == hub_guid for guid, hub_guid in rows)  # hubs 01-04 are eligible
    # The pilot batches of `piloting`: PN holds SPLIT and BOTH, PS GAS_SOUTH and OTHER_SOUTH.
    assert dict(Batch.objects.filter(rollout=piloting).values_list("name", "hubs")) == {"PN": 2, "PS": 2}
    assert set(
        RolloutHub.objects.filter(rollout=piloting, batch__name="PN").values_list("guid", flat=True)
    ) == {
        SPLIT,
        BOTH,
    }
    assert set(
        RolloutHub.objects.filter(rollout=piloting, batch__name="PS").values_list("guid", flat=True)
    ) == {
        GAS_SOUTH,
        OTHER_SOUTH,
    }
    assert counter_mismatches([piloting.pk]) == []
