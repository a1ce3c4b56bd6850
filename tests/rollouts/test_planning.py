"""T5 and E2/E3 as a decision table: the planned activation time of one hub."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from rollouts.models import Batch, HubInstruction, Instruction, RolloutHub
from rollouts.services.planning import replan

from .test_lifecycle import publish

UK = ZoneInfo("Europe/London")
MAY_1 = dt.datetime(2026, 5, 1, 9, 0, tzinfo=UK)
MAY_9 = dt.datetime(2026, 5, 9, 9, 0, tzinfo=UK)
APRIL_20 = dt.datetime(2026, 4, 20, 18, 0, tzinfo=UK)


@pytest.fixture
def live(draft, dcc, dcc_2):
    rollout = publish(draft, dcc, dcc_2)
    rollout.auto_deploy_at = dt.datetime(2026, 6, 1, 0, 0, tzinfo=UK)
    rollout.save(update_fields=["auto_deploy_at"])  # test setup: a known automatic time
    return rollout


def instruct(rollout, user, guid, at):
    row = RolloutHub.objects.get(rollout=rollout, hub__guid=guid)
    instruction = Instruction.objects.create(
        rollout=rollout, supplier=user.organisation, kind="selection", hub_count=1, created_by=user
    )
    HubInstruction.objects.update_or_create(
        rollout=rollout,
        hub=row.hub,
        supplier=user.organisation,
        defaults={"instruction": instruction, "deploy_at": at},
    )


def planned(rollout, guid):
    row = RolloutHub.objects.get(rollout=rollout, hub__guid=guid)
    return row.planned_activation_at, row.activation_source


def replan_listed(rollout, *guids):
    """replan over a list of hubs, as the services call it: a temp table of hub_id, here with a repeat and a
    NULL as a delta table may hold."""
    ids = [RolloutHub.objects.get(rollout=rollout, hub__guid=g).hub_id for g in guids]
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS listed_hubs")
        cursor.execute("CREATE TEMP TABLE listed_hubs (hub_id bigint)")
        cursor.executemany("INSERT INTO listed_hubs VALUES (%s)", [(i,) for i in [*ids, *ids, None]])
    return replan(rollout.pk, hubs_table="listed_hubs")


SPLIT = "00DB000000000001"  # Volt (import) + GasCo (gas)
BOTH_ROLES = "00DB000000000002"  # Volt in both roles
SINGLE = "00DB000000000004"  # Other Power only


@pytest.mark.req("E2")
@pytest.mark.req("T5")
def test_one_organisation_in_both_roles_suffices(live, import_supplier):
    instruct(live, import_supplier, BOTH_ROLES, MAY_1)
    replan(live.pk)
    assert planned(live, BOTH_ROLES) == (MAY_1, "instruction")


@pytest.mark.req("E2")
def test_a_single_supplier_suffices(live, other_supplier):
    instruct(live, other_supplier, SINGLE, MAY_9)
    replan(live.pk)
    assert planned(live, SINGLE) == (MAY_9, "instruction")


@pytest.mark.req("E3")
@pytest.mark.parametrize(
    ("volt", "gasco", "expected"),
    [
        (None, None, "automatic"),
        (MAY_1, None, "automatic"),  # one of two is not enough
        (None, MAY_9, "automatic"),
        (MAY_1, MAY_9, MAY_9),  # the later of the two
        (MAY_9, MAY_1, MAY_9),
    ],
)
@pytest.mark.parametrize("listed", [False, True], ids=["whole rollout", "listed hubs"])
def test_a_split_hub_needs_both_and_takes_the_later_time(
    live, import_supplier, gas_supplier, volt, gasco, expected, listed
):
    if volt:
        instruct(live, import_supplier, SPLIT, volt)
    if gasco:
        instruct(live, gas_supplier, SPLIT, gasco)
    replan_listed(live, SPLIT) if listed else replan(live.pk)
    if expected == "automatic":
        assert planned(live, SPLIT) == (live.auto_deploy_at, "automatic")
    else:
        assert planned(live, SPLIT) == (expected, "instruction")


@pytest.mark.req("E3")
def test_a_withdrawal_by_one_partner_restores_the_automatic_time(live, import_supplier, gas_supplier):
    instruct(live, import_supplier, SPLIT, MAY_1)
    instruct(live, gas_supplier, SPLIT, MAY_9)
    replan(live.pk)
    HubInstruction.objects.filter(supplier=gas_supplier.organisation).delete()
    assert replan(live.pk) == {"north": 1}  # T5: per region
    assert planned(live, SPLIT) == (live.auto_deploy_at, "automatic")


@pytest.mark.req("T5")
def test_a_pilot_hub_activates_at_its_window_end_unless_an_earlier_instruction_wins(
    live, other_supplier, csp_south
):
    batch = Batch.objects.create(
        rollout=live,
        region="south",
        group="pilot",
        name="P1",
        window_start=APRIL_20 - dt.timedelta(days=5),
        window_end=APRIL_20,
    )
    RolloutHub.objects.filter(rollout=live, hub__guid=SINGLE).update(group="pilot", batch=batch)
    replan(live.pk)
    assert planned(live, SINGLE) == (APRIL_20, "pilot_window")
    instruct(live, other_supplier, SINGLE, APRIL_20 - dt.timedelta(days=1))
    replan(live.pk)
    assert planned(live, SINGLE) == (APRIL_20 - dt.timedelta(days=1), "instruction")
    instruct(live, other_supplier, SINGLE, MAY_1)  # later than the window: the window stands
    replan(live.pk)
    assert planned(live, SINGLE) == (APRIL_20, "pilot_window")


@pytest.mark.req("T5")
def test_replan_writes_only_what_changed(draft, dcc, dcc_2, other_supplier):
    rollout = publish(draft, dcc, dcc_2)
    assert replan(rollout.pk) == {}  # publication already planned every hub at the automatic time
    instruct(rollout, other_supplier, SINGLE, rollout.auto_deploy_at - dt.timedelta(days=40))
    assert replan(rollout.pk) == {"south": 1}
    assert replan(rollout.pk) == {}


@pytest.mark.req("T5")
def test_a_listed_replan_plans_only_the_listed_hubs_and_keeps_the_transactions_settings(
    live, import_supplier, other_supplier
):
    instruct(live, import_supplier, BOTH_ROLES, MAY_1)
    instruct(live, other_supplier, SINGLE, MAY_9)
    unlisted = planned(live, BOTH_ROLES)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL random_page_cost = 3.5")
        assert replan_listed(live, SINGLE) == {"south": 1}  # each hub once, although listed twice
        cursor.execute("SHOW random_page_cost")
        assert cursor.fetchone()[0] == "3.5"  # the lookups' 1.1 was for the replan's statement only
    assert planned(live, SINGLE) == (MAY_9, "instruction")
    assert planned(live, BOTH_ROLES) == unlisted != (MAY_1, "instruction")  # not listed: not replanned yet
