"""Supplier instructions to deploy earlier, through the services (E1-E6, T2, T5, P4, X3, L10).

Expected times come from the requirements: T2 (deadline = automatic time - 1 calendar month,
inclusive), E1 (later than now, earlier than the automatic time), E3 (split: both, the later time).
"""

from __future__ import annotations

import datetime as dt
import threading
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import connection

from rollouts.intake.errors import RowsRejected
from rollouts.models import (
    AuditEvent,
    Batch,
    HubInstruction,
    Instruction,
    Notice,
    Organisation,
    PilotAmendment,
    Rollout,
    RolloutHub,
    Upload,
)
from rollouts.services import counters
from rollouts.services import instructions as service
from rollouts.services.instructions import (
    instruct_early_deployment,
    instructions_for,
    notify_joiners_not_covered,
    withdraw_instruction,
)
from rollouts.services.inventory import load_inventory
from rollouts.services.lifecycle import pause_rollout, suspend_rollout
from rollouts.services.planning import replan
from tests.factories import OrganisationFactory, UserFactory

from .conftest import another_waits_for_a_lock, inventory
from .test_lifecycle import publish

UK = ZoneInfo("Europe/London")
UTC = dt.UTC
NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=UK)
AUTO = dt.datetime(2027, 4, 30, 0, 0, tzinfo=UK)  # automatic time (BST)
DEADLINE = dt.datetime(2027, 3, 30, 0, 0, tzinfo=UK)  # T2: one calendar month earlier
JAN_10 = dt.datetime(2027, 1, 10, 9, 0, tzinfo=UK)
JAN_20 = dt.datetime(2027, 1, 20, 9, 0, tzinfo=UK)
FEB_1 = dt.datetime(2027, 2, 1, 9, 0, tzinfo=UK)
FEB_5 = dt.datetime(2027, 2, 5, 9, 0, tzinfo=UK)

SPLIT = "00DB000000000001"  # Volt (import) + GasCo (gas), north
BOTH_ROLES = "00DB000000000002"  # Volt in both roles
GAS_ONLY = "00DB000000000003"  # GasCo only
OTHERS = "00DB000000000004"  # Other Power only
NOT_ELIGIBLE = "00DB000000000005"  # Volt's, already on the target version


def at_now(monkeypatch, moment: dt.datetime) -> None:
    monkeypatch.setattr("django.utils.timezone.now", lambda: moment.astimezone(UTC))


def set_auto(rollout: Rollout, auto: dt.datetime) -> Rollout:
    """Test setup: a known automatic time, every hub planned at it."""
    rollout.auto_deploy_at = auto
    rollout.save(update_fields=["auto_deploy_at"])
    RolloutHub.objects.filter(rollout=rollout).update(
        planned_activation_at=auto, activation_source="automatic"
    )
    return rollout


@pytest.fixture
def live(draft, dcc, dcc_2, monkeypatch):
    rollout = set_auto(publish(draft, dcc, dcc_2), AUTO)
    at_now(monkeypatch, NOW)
    return rollout


def instruct(user, rollout, guids, at, **kw) -> Instruction:
    return instruct_early_deployment(
        user=user, rollout_id=rollout.pk, guids=list(guids), default_deploy_at=at, **kw
    )


def withdraw(user, rollout, guids) -> dict:
    return withdraw_instruction(user=user, rollout_id=rollout.pk, guids=list(guids))


def instruction_file(*rows: str, header: str = "guid,deploy_at") -> ContentFile:
    return ContentFile((header + "\n" + "".join(r + "\n" for r in rows)).encode(), name="instruction.csv")


def by_file(user, rollout, *rows, default=None, **kw) -> Instruction:
    return instruct_early_deployment(
        user=user, rollout_id=rollout.pk, content=instruction_file(*rows), default_deploy_at=default, **kw
    )


def planned(rollout, guid):
    row = RolloutHub.objects.get(rollout=rollout, hub__guid=guid)
    return row.planned_activation_at, row.activation_source


def pilot_hub_ending(rollout, guid, window_end) -> None:
    """Test setup: the hub in a pilot batch whose window ends at `window_end`, and replanned (T5)."""
    row = RolloutHub.objects.get(rollout=rollout, hub__guid=guid)
    batch = Batch.objects.create(
        rollout=rollout,
        region=row.region,
        group="pilot",
        name="P1",
        window_start=window_end - dt.timedelta(days=10),
        window_end=window_end,
    )
    RolloutHub.objects.filter(pk=row.pk).update(group="pilot", batch=batch)
    replan(rollout.pk)


def codes(excinfo) -> list[tuple[int | None, str]]:
    return [(f.row, f.code) for f in excinfo.value.failures]


def notices(user) -> list[Notice]:
    return list(Notice.objects.filter(organisation=user.organisation).order_by("id"))


def plan_notices(after: int = 0) -> list[tuple[str, str]]:
    """(organisation, body) of each `plan.changed` notice after notice `after`, by organisation."""
    told = Notice.objects.filter(pk__gt=after, kind="plan.changed").select_related("organisation")
    return sorted((n.organisation.name, n.body) for n in told)


def last_notice() -> int:
    return Notice.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


# -- E2, E3 through the service ----------------------------------------------------------------------


@pytest.mark.req("E2")
@pytest.mark.req("T5")
def test_a_single_supplier_and_one_organisation_in_both_roles_each_suffice(
    live, import_supplier, other_supplier
):
    instruct(other_supplier, live, [OTHERS], JAN_10)
    instruct(import_supplier, live, [BOTH_ROLES], JAN_20)
    assert planned(live, OTHERS) == (JAN_10, "instruction")
    assert planned(live, BOTH_ROLES) == (JAN_20, "instruction")


V, G = "volt", "gasco"


@pytest.fixture(params=["upsert", "delete_then_insert"])
def write_path(request, monkeypatch):
    """Both ways the service writes a Supplier's rows (a large instruction replaces by DELETE + INSERT):
    the rules give the same outcome whichever it takes."""
    if request.param == "delete_then_insert":
        monkeypatch.setattr(service, "PLAIN_INSERT_FROM", 1)
    return request.param


@pytest.mark.req("E3")
@pytest.mark.req("T5")
@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([(V, JAN_10)], AUTO),  # one of two is not enough
        ([(G, JAN_20)], AUTO),
        ([(V, JAN_10), (G, JAN_20)], JAN_20),  # the later of the two
        ([(G, JAN_20), (V, JAN_10)], JAN_20),  # in either order
        ([(V, JAN_20), (G, JAN_10)], JAN_20),
        ([(V, JAN_10), (G, JAN_20), (V, None)], AUTO),  # a withdrawal restores the automatic time
        ([(V, JAN_10), (G, JAN_20), (G, None)], AUTO),
        ([(V, JAN_10), (G, JAN_20), (V, FEB_5)], FEB_5),  # a replacement moves it (the later wins)
        ([(V, JAN_10), (G, JAN_20), (G, FEB_1)], FEB_1),
        ([(V, JAN_10), (G, JAN_20), (G, JAN_10)], JAN_10),  # replaced by an earlier one: both now Jan 10
        ([(V, JAN_10), (V, None), (G, JAN_20)], AUTO),  # withdrawn before the partner came
        ([(V, JAN_10), (G, JAN_20), (V, None), (V, JAN_10)], JAN_20),  # instructed again
        ([(V, FEB_5), (G, JAN_20), (G, None), (G, FEB_1)], FEB_5),
    ],
)
def test_split_hub_decision_table(live, import_supplier, gas_supplier, steps, expected, write_path):
    users = {V: import_supplier, G: gas_supplier}
    for who, at in steps:
        if at is None:
            withdraw(users[who], live, [SPLIT])
        else:
            instruct(users[who], live, [SPLIT], at)
    assert planned(live, SPLIT) == (expected, "automatic" if expected == AUTO else "instruction")


# -- T2: deadline edges ------------------------------------------------------------------------------


@pytest.mark.req("T2")
@pytest.mark.req("E1")
@pytest.mark.parametrize(
    ("auto", "now", "accepted"),
    [
        # deadline 30 March 2027 00:00 BST (= 29 March 23:00 UTC)
        (AUTO, dt.datetime(2027, 3, 29, 23, 59, tzinfo=UK), True),  # the minute before
        (AUTO, dt.datetime(2027, 3, 30, 0, 0, tzinfo=UK), True),  # exactly at the deadline: inclusive
        (AUTO, dt.datetime(2027, 3, 30, 0, 0, 0, 1, tzinfo=UK), False),  # one microsecond after
        (AUTO, dt.datetime(2027, 3, 30, 0, 1, tzinfo=UK), False),  # the minute after
        # a deadline at a month end: 31 March -> 28 February 00:00 GMT
        (dt.datetime(2027, 3, 31, tzinfo=UK), dt.datetime(2027, 2, 27, 23, 59, tzinfo=UTC), True),
        (dt.datetime(2027, 3, 31, tzinfo=UK), dt.datetime(2027, 2, 28, 0, 0, tzinfo=UTC), True),
        (dt.datetime(2027, 3, 31, tzinfo=UK), dt.datetime(2027, 2, 28, 0, 0, 0, 1, tzinfo=UTC), False),
        (dt.datetime(2027, 3, 31, tzinfo=UK), dt.datetime(2027, 2, 28, 0, 1, tzinfo=UTC), False),
        # a deadline on a clock-change day: 25 November 2026 -> 25 October 2026 00:00 BST = 24 Oct 23:00 UTC
        (dt.datetime(2026, 11, 25, tzinfo=UK), dt.datetime(2026, 10, 24, 22, 59, tzinfo=UTC), True),
        (dt.datetime(2026, 11, 25, tzinfo=UK), dt.datetime(2026, 10, 24, 23, 0, tzinfo=UTC), True),
        (dt.datetime(2026, 11, 25, tzinfo=UK), dt.datetime(2026, 10, 24, 23, 0, 0, 1, tzinfo=UTC), False),
        (dt.datetime(2026, 11, 25, tzinfo=UK), dt.datetime(2026, 10, 24, 23, 1, tzinfo=UTC), False),
    ],
)
def test_instructions_are_received_up_to_the_deadline_inclusive(
    live, import_supplier, monkeypatch, auto, now, accepted
):
    set_auto(live, auto)
    at_now(monkeypatch, now)
    at = now + dt.timedelta(days=1)
    if accepted:
        assert instruct(import_supplier, live, [BOTH_ROLES], at).hub_count == 1
        assert planned(live, BOTH_ROLES) == (at, "instruction")
    else:
        with pytest.raises(RowsRejected) as excinfo:
            instruct(import_supplier, live, [BOTH_ROLES], at)
        assert codes(excinfo) == [(None, "deadline_passed")]
        assert not HubInstruction.objects.exists()


@pytest.mark.req("E1")
@pytest.mark.req("T2")
def test_withdrawal_closes_at_the_deadline_too(live, import_supplier, monkeypatch):
    instruct(import_supplier, live, [BOTH_ROLES], JAN_10)
    at_now(monkeypatch, DEADLINE + dt.timedelta(microseconds=1))
    with pytest.raises(RowsRejected) as excinfo:
        withdraw(import_supplier, live, [BOTH_ROLES])
    assert codes(excinfo) == [(None, "deadline_passed")]
    at_now(monkeypatch, DEADLINE)
    assert withdraw(import_supplier, live, [BOTH_ROLES])["withdrawn"] == 1


# -- every reason code, and the valid list of the same shape ----------------------------------------


@pytest.mark.req("E1")
@pytest.mark.req("X3")
@pytest.mark.parametrize(
    ("bad_row", "good_row", "code"),
    [
        (f"{OTHERS},2027-01-10T09:00", f"{BOTH_ROLES},2027-01-10T09:00", "guid_not_yours"),  # another's hub
        ("00DB0000000000FF,2027-01-10T09:00", f"{BOTH_ROLES},2027-01-10T09:00", "guid_not_yours"),  # unknown
        (f"{NOT_ELIGIBLE},2027-01-10T09:00", f"{BOTH_ROLES},2027-01-10T09:00", "guid_not_eligible"),
        ("00DB00000000000Z,2027-01-10T09:00", f"{BOTH_ROLES},2027-01-10T09:00", "guid_format"),
        (f"{BOTH_ROLES},2026-12-01T09:59", f"{BOTH_ROLES},2026-12-01T10:01", "time_in_past"),
        (
            f"{BOTH_ROLES},2026-12-01T10:00",
            f"{BOTH_ROLES},2026-12-01T10:01",
            "time_in_past",
        ),  # now is not later
        (f"{BOTH_ROLES},2027-04-30T00:00", f"{BOTH_ROLES},2027-04-29T23:59", "deploy_at_not_earlier"),
        (f"{BOTH_ROLES},2027-04-29T23:00Z", f"{BOTH_ROLES},2027-04-29T22:59Z", "deploy_at_not_earlier"),
        (
            f"{BOTH_ROLES},2027-03-28T01:30",
            f"{BOTH_ROLES},2027-03-28T01:30+00:00",
            "time_ambiguous",
        ),  # no 01:30
        (f"{BOTH_ROLES},2027-03-28T01:30", f"{BOTH_ROLES},2027-03-28T02:30", "time_ambiguous"),
        (f"{BOTH_ROLES},2026-10-25T01:30", f"{BOTH_ROLES},2027-01-10", "time_ambiguous"),  # 01:30 twice
        (f"{BOTH_ROLES},next tuesday", f"{BOTH_ROLES},2027-01-10T09:00:00+00:00", "value_invalid"),
        (f"{BOTH_ROLES},", f"{BOTH_ROLES},2027-01-10T09:00", "value_invalid"),  # no time and none in the form
    ],
)
def test_each_reason_code_refuses_and_the_same_shape_valid_is_accepted(
    live, import_supplier, bad_row, good_row, code
):
    with pytest.raises(RowsRejected) as excinfo:
        by_file(import_supplier, live, bad_row)
    assert codes(excinfo) == [(2, code)]
    assert not HubInstruction.objects.exists() and not Instruction.objects.exists()
    upload = Upload.objects.get(kind="instruction")
    assert upload.state == "rejected" and list(upload.errors.values_list("code", flat=True)) == [
        code
    ]  # X3 kept
    instruction = by_file(import_supplier, live, good_row)
    assert instruction.hub_count == 1 and instruction.kind == "file"


@pytest.mark.req("E1")
def test_a_hub_already_distributed_is_refused_and_a_pending_one_accepted(live, import_supplier):
    RolloutHub.objects.filter(rollout=live, hub__guid=BOTH_ROLES).update(status="distributed")
    with pytest.raises(RowsRejected) as excinfo:
        instruct(import_supplier, live, [BOTH_ROLES], JAN_10)
    assert codes(excinfo) == [(2, "already_distributed")]
    RolloutHub.objects.filter(rollout=live, hub__guid=BOTH_ROLES).update(status="scheduled")
    assert instruct(import_supplier, live, [BOTH_ROLES], JAN_10).hub_count == 1


@pytest.mark.req("E1")
@pytest.mark.req("B3")
def test_a_hub_that_left_the_rollout_is_not_eligible_and_a_distributed_one_is_named_as_such(
    live, import_supplier
):
    RolloutHub.objects.filter(rollout=live, hub__guid=SPLIT).update(status="left")
    RolloutHub.objects.filter(rollout=live, hub__guid=BOTH_ROLES).update(status="activated")
    with pytest.raises(RowsRejected) as excinfo:
        instruct(import_supplier, live, [SPLIT, BOTH_ROLES, OTHERS], JAN_10)
    assert codes(excinfo) == [(2, "guid_not_eligible"), (3, "already_distributed"), (4, "guid_not_yours")]
    assert not HubInstruction.objects.exists()


@pytest.mark.req("E1")
@pytest.mark.req("I3")
def test_suspended_refuses_with_rollout_on_hold_but_paused_accepts(live, dcc, import_supplier, monkeypatch):
    at_now(monkeypatch, NOW)
    pause_rollout(user=dcc, rollout_id=live.pk, reason="threshold")
    assert (
        instruct(import_supplier, live, [BOTH_ROLES], JAN_10).hub_count == 1
    )  # recorded; nothing distributed
    suspend_rollout(user=dcc, rollout_id=live.pk, reason="incident")
    with pytest.raises(RowsRejected) as excinfo:
        instruct(import_supplier, live, [BOTH_ROLES], JAN_20)
    assert codes(excinfo) == [(None, "rollout_on_hold")]
    assert planned(live, BOTH_ROLES) == (JAN_10, "instruction")


@pytest.mark.req("E1")
@pytest.mark.req("P3")
def test_only_suppliers_that_touch_the_rollout_may_instruct(live, dcc, csp_north, import_supplier):
    for user in (dcc, csp_north):
        with pytest.raises(PermissionDenied):
            instruct(user, live, [BOTH_ROLES], JAN_10)
    stranger = UserFactory(organisation=OrganisationFactory(name="No Hubs Ltd"))
    with pytest.raises(Rollout.DoesNotExist):  # like a missing rollout (404)
        instruct(stranger, live, [BOTH_ROLES], JAN_10)


@pytest.mark.req("X3")
@pytest.mark.req("E5")
def test_a_list_with_several_invalid_rows_is_refused_whole_with_every_failure(live, import_supplier):
    with pytest.raises(RowsRejected) as excinfo:
        by_file(
            import_supplier,
            live,
            f"{BOTH_ROLES},2027-01-10T09:00",
            f"{OTHERS},2027-01-10T09:00",
            f"{SPLIT},2030-01-01T00:00",
            "nonsense,",
            f"{NOT_ELIGIBLE},2027-01-10T09:00",
            default=JAN_20,
        )
    assert codes(excinfo) == [
        (3, "guid_not_yours"),
        (4, "deploy_at_not_earlier"),
        (5, "guid_format"),
        (6, "guid_not_eligible"),
    ]
    assert not HubInstruction.objects.exists()
    assert AuditEvent.objects.filter(action="upload.rejected").count() == 1


# -- E5: receipt, and submitting only the valid hubs as a second step ---------------------------------


@pytest.mark.req("E5")
def test_only_the_valid_hubs_as_an_explicit_second_step(live, import_supplier):
    guids = [BOTH_ROLES, OTHERS, "not-a-guid", SPLIT]
    with pytest.raises(RowsRejected) as excinfo:
        instruct(import_supplier, live, guids, JAN_10)
    assert codes(excinfo) == [(3, "guid_not_yours"), (4, "guid_format")]
    instruction = instruct(import_supplier, live, guids, JAN_10, only_valid=True)
    assert instruction.hub_count == 2
    assert set(HubInstruction.objects.values_list("hub__guid", flat=True)) == {BOTH_ROLES, SPLIT}
    receipt = notices(import_supplier)[-1]
    assert receipt.kind == "instruction.received"
    assert "2 rows with invalid GUIDs were left out" in receipt.body


@pytest.mark.req("E5")
def test_only_valid_still_refuses_time_problems_whole(live, import_supplier):
    with pytest.raises(RowsRejected) as excinfo:
        by_file(
            import_supplier,
            live,
            f"{BOTH_ROLES},2020-01-01T00:00",
            f"{OTHERS},2027-01-10T09:00",
            only_valid=True,
        )
    assert codes(excinfo) == [(2, "time_in_past"), (3, "guid_not_yours")]  # every failure still listed
    with pytest.raises(RowsRejected) as excinfo:
        instruct(import_supplier, live, [OTHERS], JAN_10, only_valid=True)
    assert codes(excinfo) == [(None, "file_empty")]  # nothing valid left
    assert not HubInstruction.objects.exists()


@pytest.mark.req("E5")
@pytest.mark.req("X1")
def test_receipt_counts_and_one_audit_event_with_the_file_hash(live, import_supplier, gas_supplier):
    instruct(gas_supplier, live, [SPLIT], JAN_20)
    instruction = by_file(
        import_supplier, live, f"{SPLIT},", f"{BOTH_ROLES},2027-01-12T09:00", default=JAN_10
    )
    events = AuditEvent.objects.filter(user=import_supplier)
    assert [e.action for e in events] == ["upload.applied.instruction"]
    details = events[0].details
    assert details["upload_id"] == instruction.upload_id and len(details["sha256"]) == 64
    assert (details["hubs"], details["split_hubs"], details["split_hubs_partner_instructed"]) == (2, 1, 1)
    receipt = notices(import_supplier)[-1]
    assert receipt.subject.endswith("instruction received for 2 hubs")
    assert "1 of them are split hubs" in receipt.body and "has instructed 1 of them" in receipt.body
    assert planned(live, SPLIT) == (JAN_20, "instruction")  # later of Jan 10 (file default) and Jan 20
    assert planned(live, BOTH_ROLES) == (dt.datetime(2027, 1, 12, 9, 0, tzinfo=UK), "instruction")


@pytest.mark.req("E5")
@pytest.mark.req("E1")
def test_a_new_instruction_replaces_the_earlier_one_hub_by_hub_and_the_receipt_counts_them(
    live, import_supplier, write_path
):
    first = instruct(import_supplier, live, [SPLIT, BOTH_ROLES], JAN_10)
    instruction = instruct(import_supplier, live, [BOTH_ROLES], FEB_1)
    receipt = notices(import_supplier)[-1]
    assert "It replaces your earlier instruction for 1 of these hubs." in receipt.body
    rows = HubInstruction.objects.filter(supplier=import_supplier.organisation)
    assert sorted(rows.values_list("hub__guid", "deploy_at", "instruction_id")) == [
        (SPLIT, JAN_10, first.pk),
        (BOTH_ROLES, FEB_1, instruction.pk),
    ]
    assert planned(live, BOTH_ROLES) == (FEB_1, "instruction")


@pytest.mark.req("E1")
def test_the_same_file_applies_again_after_a_withdrawal(live, import_supplier):
    by_file(import_supplier, live, f"{BOTH_ROLES},2027-01-10T09:00")
    withdraw(import_supplier, live, [BOTH_ROLES])
    by_file(import_supplier, live, f"{BOTH_ROLES},2027-01-10T09:00")
    assert planned(live, BOTH_ROLES) == (JAN_10, "instruction")


# -- E4: all my eligible hubs ------------------------------------------------------------------------


@pytest.mark.req("E4")
def test_all_my_eligible_hubs_is_expanded_at_receipt_with_its_count(live, import_supplier, gas_supplier):
    RolloutHub.objects.filter(rollout=live, hub__guid=GAS_ONLY).update(status="distributed")
    instruction = instruct_early_deployment(
        user=gas_supplier, rollout_id=live.pk, all_eligible=True, default_deploy_at=JAN_20
    )
    assert (instruction.kind, instruction.hub_count) == ("all_eligible", 1)  # 01 only: 03 is distributed
    receipt = notices(gas_supplier)[-1]
    assert "It covers all your eligible hubs not yet distributed at receipt: 1 hubs." in receipt.body
    assert "Hubs that join this rollout later are not covered" in receipt.body
    assert AuditEvent.objects.get(action="instruction.received").details["hubs"] == 1


@pytest.mark.req("E4")
@pytest.mark.req("B3")
def test_hubs_joining_after_an_all_hubs_instruction_are_told_they_have_the_automatic_time(
    live, estate, import_supplier, gas_supplier, other_supplier
):
    instruct_early_deployment(
        user=import_supplier, rollout_id=live.pk, all_eligible=True, default_deploy_at=JAN_10
    )
    instruct(other_supplier, live, [OTHERS], JAN_10)  # a selection, not "all"
    volt, oscar = import_supplier.organisation.slug, other_supplier.organisation.slug
    load_inventory(
        user=None,
        content=inventory(
            f"00DB000000000011,010A030B,0002012F,north,{volt},,",
            f"00DB000000000012,010A030B,0002012F,south,{oscar},,",
        ),
    )
    joined = list(
        RolloutHub.objects.filter(rollout=live, hub__guid__in=["00DB000000000011", "00DB000000000012"])
    )
    assert len(joined) == 2
    assert notify_joiners_not_covered(live.pk, [r.hub_id for r in joined]) == 1
    told = notices(import_supplier)[-1]
    assert told.kind == "instruction.joiners_not_covered"
    assert "1 of your hubs joined" in told.body and "automatic deployment time" in told.body
    assert not Notice.objects.filter(
        organisation=other_supplier.organisation, kind="instruction.joiners_not_covered"
    )
    assert planned(live, "00DB000000000011")[1] == "automatic"


@pytest.mark.req("E4")
@pytest.mark.req("E3")
@pytest.mark.req("T5")
def test_all_my_eligible_hubs_and_withdrawing_all_replan_each_hub_of_the_supplier(
    live, import_supplier, gas_supplier, monkeypatch
):
    instruct(gas_supplier, live, [SPLIT], JAN_20)
    assert planned(live, SPLIT) == (AUTO, "automatic")  # E3: the import Supplier has not instructed yet
    instruction = instruct_early_deployment(
        user=import_supplier, rollout_id=live.pk, all_eligible=True, default_deploy_at=JAN_10
    )
    assert instruction.hub_count == 2  # 01 (split) and 02 (both roles)
    assert planned(live, SPLIT) == (JAN_20, "instruction")  # both instructed: the later time
    assert planned(live, BOTH_ROLES) == (JAN_10, "instruction")  # E2: one organisation in both roles
    assert planned(live, GAS_ONLY) == (AUTO, "automatic")  # not Volt's
    assert replan(live.pk) == {}  # the Supplier-wide replan wrote exactly what the rule gives every hub
    # A large withdrawal of all is replanned by Supplier rather than hub by hub: the same plan either way.
    monkeypatch.setattr(service, "BY_SUPPLIER_FROM", 1)
    result = withdraw_instruction(user=import_supplier, rollout_id=live.pk, all=True)
    assert (result["withdrawn"], result["planned_changed"]) == (2, 2)
    assert planned(live, SPLIT) == planned(live, BOTH_ROLES) == (AUTO, "automatic")
    assert replan(live.pk) == {}
    assert list(HubInstruction.objects.values_list("hub__guid", "supplier__name")) == [(SPLIT, "GasCo")]


@pytest.mark.req("E4")
@pytest.mark.req("E3")
@pytest.mark.req("T5")
@pytest.mark.req("P4")
def test_all_my_eligible_hubs_and_withdrawing_all_plan_split_and_pilot_hubs_and_count_partners(
    live, import_supplier, gas_supplier, monkeypatch
):
    """The Supplier's split and pilot hubs are planned by the full rule (not the sole-hub shortcut), and
    the receipt and partner notices count the split hubs, as for a list."""
    pilot_hub_ending(live, BOTH_ROLES, FEB_1)
    assert planned(live, BOTH_ROLES) == (FEB_1, "pilot_window")
    instruct(gas_supplier, live, [SPLIT], JAN_20)

    instruction = instruct_early_deployment(
        user=import_supplier, rollout_id=live.pk, all_eligible=True, default_deploy_at=JAN_10
    )
    assert instruction.hub_count == 2
    assert planned(live, SPLIT) == (JAN_20, "instruction")  # E3: both instructed, the later time
    assert planned(live, BOTH_ROLES) == (JAN_10, "instruction")  # T5: earlier than its window end
    details = AuditEvent.objects.get(action="instruction.received", user=import_supplier).details
    assert (details["split_hubs"], details["split_hubs_partner_instructed"]) == (1, 1)
    assert "1 of them are split hubs" in notices(import_supplier)[-1].body
    told = notices(gas_supplier)[-1]
    assert told.kind == "instruction.partner_instructed"
    assert "The other Supplier of 1 of your split hubs" in told.body
    assert "You have instructed 1 of these hubs" in told.body
    assert replan(live.pk) == {}

    monkeypatch.setattr(service, "BY_SUPPLIER_FROM", 1)  # withdrawn by Supplier
    result = withdraw_instruction(user=import_supplier, rollout_id=live.pk, all=True)
    assert (result["withdrawn"], result["planned_changed"], result["split_hubs"]) == (2, 2, 1)
    assert planned(live, SPLIT) == (AUTO, "automatic")  # E3: one withdrew
    assert planned(live, BOTH_ROLES) == (FEB_1, "pilot_window")
    told = notices(gas_supplier)[-1]
    assert told.kind == "instruction.partner_withdrew" and "1 of your split hubs" in told.body
    assert "Your own instructions for 1 of them stand" in told.body
    assert replan(live.pk) == {}


@pytest.mark.req("E2")
@pytest.mark.req("E3")
@pytest.mark.req("T5")
def test_a_list_of_sole_split_and_pilot_hubs_is_planned_by_the_rule(live, import_supplier, gas_supplier):
    """A list is replanned knowing the time the Supplier has just given (a split hub looks up only its
    partner's instruction), its pilot hubs by the full rule. Each step's plan is the rule's, and a full replan
    afterwards changes nothing."""
    by_file(import_supplier, live, f"{SPLIT},2027-01-10T09:00", f"{BOTH_ROLES},2027-02-01T09:00")
    assert planned(live, SPLIT) == (AUTO, "automatic")  # E3: GasCo has not instructed
    assert planned(live, BOTH_ROLES) == (FEB_1, "instruction")  # E2: one organisation in both roles
    assert replan(live.pk) == {}
    instruct(gas_supplier, live, [SPLIT], JAN_20)
    assert planned(live, SPLIT) == (JAN_20, "instruction")  # E3: both instructed, the later time
    instruct(import_supplier, live, [SPLIT], FEB_5)
    assert planned(live, SPLIT) == (FEB_5, "instruction")  # Volt's is now the later one
    assert replan(live.pk) == {}

    result = withdraw(import_supplier, live, [SPLIT, BOTH_ROLES])
    assert (result["withdrawn"], result["planned_changed"]) == (2, 2)
    assert planned(live, SPLIT) == planned(live, BOTH_ROLES) == (AUTO, "automatic")
    assert replan(live.pk) == {}

    pilot_hub_ending(live, BOTH_ROLES, FEB_1)
    instruct(import_supplier, live, [BOTH_ROLES], FEB_5)
    # T5: the earlier of the pilot window's end and the instruction
    assert planned(live, BOTH_ROLES) == (FEB_1, "pilot_window")
    instruct(import_supplier, live, [BOTH_ROLES], JAN_10)
    assert planned(live, BOTH_ROLES) == (JAN_10, "instruction")
    assert replan(live.pk) == {}


@pytest.mark.req("E4")
@pytest.mark.req("E2")
@pytest.mark.req("T5")
def test_all_my_eligible_hubs_of_a_single_supplier_and_its_withdrawal(live, other_supplier, monkeypatch):
    instruct_early_deployment(
        user=other_supplier, rollout_id=live.pk, all_eligible=True, default_deploy_at=FEB_1
    )
    assert planned(live, OTHERS) == (FEB_1, "instruction")  # E2: its only Supplier's instruction suffices
    assert planned(live, SPLIT) == (AUTO, "automatic")  # not Other Power's
    assert replan(live.pk) == {}
    monkeypatch.setattr(service, "BY_SUPPLIER_FROM", 1)
    assert withdraw_instruction(user=other_supplier, rollout_id=live.pk, all=True)["planned_changed"] == 1
    assert planned(live, OTHERS) == (AUTO, "automatic")
    assert replan(live.pk) == {}


# -- withdrawals -------------------------------------------------------------------------------------


@pytest.mark.req("E1")
def test_withdrawal_not_once_distributed_and_all_withdraws_only_what_can_be(live, import_supplier):
    instruct(import_supplier, live, [SPLIT, BOTH_ROLES], JAN_10)
    RolloutHub.objects.filter(rollout=live, hub__guid=BOTH_ROLES).update(status="distributed")
    with pytest.raises(RowsRejected) as excinfo:
        withdraw(import_supplier, live, [BOTH_ROLES, OTHERS])
    assert codes(excinfo) == [(1, "already_distributed"), (2, "guid_not_yours")]
    result = withdraw_instruction(user=import_supplier, rollout_id=live.pk, all=True)
    assert result["withdrawn"] == 1
    assert list(HubInstruction.objects.values_list("hub__guid", flat=True)) == [BOTH_ROLES]  # history stays
    assert AuditEvent.objects.filter(action="instruction.withdrawn").count() == 1


# -- E6: a hub changes Supplier ----------------------------------------------------------------------


@pytest.mark.req("E6")
@pytest.mark.req("T5")
def test_a_supplier_change_lapses_the_old_suppliers_instructions_and_amendments(
    live, dcc, import_supplier, gas_supplier, other_supplier
):
    instruct(import_supplier, live, [SPLIT], JAN_10)
    instruct(gas_supplier, live, [SPLIT, GAS_ONLY], JAN_20)
    RolloutHub.objects.filter(rollout=live, hub__guid=GAS_ONLY).update(status="distributed")
    counters.recount([live.pk])  # test setup: as a status feed would have left them
    split_hub = RolloutHub.objects.get(rollout=live, hub__guid=SPLIT).hub
    gas_hub = RolloutHub.objects.get(rollout=live, hub__guid=GAS_ONLY).hub
    for org in (gas_supplier.organisation, dcc.organisation):
        PilotAmendment.objects.create(rollout=live, hub=split_hub, supplier=org, action="add")
    assert planned(live, SPLIT) == (JAN_20, "instruction")
    before = last_notice()
    volt, oscar = import_supplier.organisation.slug, other_supplier.organisation.slug
    # GasCo loses the gas role of 01 to Other Power, and 03 (distributed) to Other Power.
    upload = load_inventory(
        user=None,
        content=inventory(
            f"00DB000000000001,010A030B,0002012F,north,{volt},{oscar},",
            f"00DB000000000003,010A030B,0002012F,south,,{oscar},",
        ),
    )
    # the load itself lapses them (E6), in its transaction: two hubs marked, GasCo's one pending
    # instruction (03 is distributed: kept) and its amendment of 01 (DCC's stays)
    assert upload.summary["supplier_changed_in_rollouts"] == 2
    assert (upload.summary["instructions_lapsed"], upload.summary["amendments_lapsed"]) == (1, 1)
    assert not RolloutHub.objects.filter(rollout=live, supplier_changed=True).exists()
    assert set(HubInstruction.objects.values_list("hub__guid", "supplier__name")) == {
        (SPLIT, "Volt Energy"),  # the partner's stands
        (GAS_ONLY, "GasCo"),  # already distributed: kept
    }
    assert list(PilotAmendment.objects.values_list("supplier__name", flat=True)) == ["DCC"]
    assert planned(live, SPLIT) == (AUTO, "automatic")  # the new gas Supplier has not instructed
    assert gas_hub.pk  # 03 unchanged in plan: distributed
    new = Notice.objects.filter(pk__gt=before, kind="instruction.supplier_changed")
    assert [(n.organisation.name, n.subject) for n in new.order_by("organisation__name")] == [
        ("Other Power", f"{live.reference}: 1 hubs became yours"),
        ("Volt Energy", f"{live.reference}: the other Supplier of 1 of your hubs changed"),
    ]
    assert AuditEvent.objects.filter(action="instruction.lapsed", actor="system").count() == 1
    # T5: SPLIT (north) moved back to the automatic time; 03 is distributed and did not move.
    assert [(csp, "changed for 1 hub:" in body, "(E6)" in body) for csp, body in plan_notices(before)] == [
        ("CSP North", True, True)
    ]


# -- T5: each CSP is told when its region's plan changes ---------------------------------------------


@pytest.mark.req("T5")
@pytest.mark.req("P4")
def test_each_csp_is_told_how_many_of_its_hubs_an_instruction_or_withdrawal_replanned(
    live, import_supplier, gas_supplier, other_supplier
):
    # GasCo instructs all its hubs: GAS_ONLY (south) moves; SPLIT (north) waits for Volt (E3), so the North
    # CSP's plan is unchanged and it is not told.
    instruct_early_deployment(
        user=gas_supplier, rollout_id=live.pk, all_eligible=True, default_deploy_at=JAN_20
    )
    assert [(csp, "changed for 1 hub:" in body) for csp, body in plan_notices()] == [("CSP South", True)]
    # Volt's list: SPLIT moves to the later time (JAN_20), BOTH_ROLES to JAN_10: two northern hubs.
    mark = last_notice()
    instruct(import_supplier, live, [SPLIT, BOTH_ROLES], JAN_10)
    assert [(csp, "changed for 2 hubs:" in body) for csp, body in plan_notices(mark)] == [("CSP North", True)]
    # The same instruction again changes no planned time: nobody is told.
    mark = last_notice()
    instruct(import_supplier, live, [SPLIT, BOTH_ROLES], JAN_10)
    assert plan_notices(mark) == []
    # GasCo withdraws all: GAS_ONLY (south) and SPLIT (north) return to the automatic time; each CSP is
    # told its own region's count.
    mark = last_notice()
    withdraw_instruction(user=gas_supplier, rollout_id=live.pk, all=True)
    assert [(csp, "changed for 1 hub:" in body) for csp, body in plan_notices(mark)] == [
        ("CSP North", True),
        ("CSP South", True),
    ]
    assert planned(live, SPLIT) == planned(live, GAS_ONLY) == (AUTO, "automatic")
    everything = Notice.objects.filter(kind="plan.changed")
    assert {n.organisation.kind for n in everything} == {"csp"}  # Suppliers have their own receipts
    for notice in everything:  # P4: the CSP learns that a Supplier acted, never which
        for supplier in (import_supplier, gas_supplier, other_supplier):
            org = supplier.organisation
            assert org.name not in notice.subject + notice.body and org.slug not in notice.body


@pytest.mark.req("E6")
@pytest.mark.req("P4")
def test_when_the_import_role_moves_the_new_import_supplier_and_the_gas_supplier_that_stays_are_told(
    live, import_supplier, gas_supplier, other_supplier
):
    instruct(import_supplier, live, [SPLIT], JAN_10)
    instruct(gas_supplier, live, [SPLIT], JAN_20)
    before = last_notice()
    oscar, gasco = other_supplier.organisation.slug, gas_supplier.organisation.slug
    load_inventory(user=None, content=inventory(f"{SPLIT},010A030B,0002012F,north,{oscar},{gasco},"))
    assert set(HubInstruction.objects.values_list("hub__guid", "supplier__name")) == {(SPLIT, "GasCo")}
    assert planned(live, SPLIT) == (AUTO, "automatic")  # Other Power has not instructed
    told = Notice.objects.filter(pk__gt=before, kind="instruction.supplier_changed")
    assert sorted((n.organisation.name, n.subject) for n in told) == [
        ("GasCo", f"{live.reference}: the other Supplier of 1 of your hubs changed"),
        ("Other Power", f"{live.reference}: 1 hubs became yours"),
    ]  # Volt, which left, is not told; nobody is told who


# -- P4: split anonymity -----------------------------------------------------------------------------


@pytest.mark.req("P4")
def test_partner_notices_and_the_selector_never_name_the_other_supplier(live, import_supplier, gas_supplier):
    instruct(import_supplier, live, [SPLIT, BOTH_ROLES], JAN_10)
    rows = list(instructions_for(import_supplier.organisation, live))
    assert [(r["guid"], r["split"], r["second_supplier_instructed"]) for r in rows] == [
        (SPLIT, True, False),
        (BOTH_ROLES, False, None),
    ]
    instruct(gas_supplier, live, [SPLIT], JAN_20)
    withdraw(import_supplier, live, [SPLIT])
    instruct(import_supplier, live, [SPLIT], FEB_1)
    rows = list(instructions_for(import_supplier.organisation, live))
    assert rows[0]["second_supplier_instructed"] is True
    assert all(
        set(r) >= {"guid", "deploy_at"} and not any("supplier" in k and "second" not in k for k in r)
        for r in rows
    )
    for user, partner in ((import_supplier, gas_supplier), (gas_supplier, import_supplier)):
        texts = [n.subject + n.body for n in notices(user)]
        assert any("other Supplier" in t for t in texts)
        name = partner.organisation.name
        assert not any(name in t or partner.organisation.slug in t for t in texts)
    partner_kinds = {n.kind for n in notices(gas_supplier)}
    assert {"instruction.partner_instructed", "instruction.partner_withdrew"} <= partner_kinds


# -- L10: two Suppliers of the same split hubs at the same moment --------------------------------------


def _run_both(import_supplier, gas_supplier, rollout_id, volt_at, gas_at, *, first_name=None, on_start=None):
    errors: list[BaseException] = []

    def run(user, at):
        try:
            instruct_early_deployment(user=user, rollout_id=rollout_id, guids=[SPLIT], default_deploy_at=at)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)
        finally:
            connection.close()

    first = threading.Thread(target=run, args=(import_supplier, volt_at), name="volt")
    second = threading.Thread(target=run, args=(gas_supplier, gas_at), name="gasco")
    first.start()
    if on_start:
        on_start()
    second.start()
    first.join(30)
    second.join(30)
    assert not errors, errors
    return errors


@pytest.mark.req("L10")
@pytest.mark.req("E3")
@pytest.mark.django_db(transaction=True)
def test_two_suppliers_instructing_at_once_lose_no_update(live, import_supplier, gas_supplier, monkeypatch):
    """The first transaction holds the rollout lock (it waits inside, before its replan, until PostgreSQL
    shows another backend waiting for a lock) while the second starts and blocks on the lock."""
    real_replan = service.replan_given
    holding = threading.Event()
    saw_waiter: list[bool] = []

    def replan_holding_the_lock(rollout_id, automatic, touched):
        if threading.current_thread().name == "volt":
            holding.set()
            if another_waits_for_a_lock():
                saw_waiter.append(True)
        return real_replan(rollout_id, automatic, touched)

    monkeypatch.setattr(service, "replan_given", replan_holding_the_lock)
    for round_ in range(3):
        holding.clear()
        volt_at, gas_at = JAN_10 + dt.timedelta(days=round_), JAN_20 + dt.timedelta(days=round_)
        _run_both(import_supplier, gas_supplier, live.pk, volt_at, gas_at, on_start=lambda: holding.wait(10))
        assert set(
            HubInstruction.objects.filter(hub__guid=SPLIT).values_list("supplier__name", "deploy_at")
        ) == {
            ("Volt Energy", volt_at),
            ("GasCo", gas_at),
        }
        assert planned(live, SPLIT) == (gas_at, "instruction")  # the later one
    assert saw_waiter == [True, True, True]  # the second really waited on the lock each time


@pytest.mark.req("L10")
@pytest.mark.django_db(transaction=True)
def test_without_the_rollout_lock_the_race_loses_the_update(live, import_supplier, gas_supplier, monkeypatch):
    """The same race with the lock taken away. Deterministic: both transactions have upserted their
    HubInstruction before either replans (first barrier), and both have replanned before either
    commits (second barrier), so each replan sees only its own instruction."""
    monkeypatch.setattr(service, "_lock_rollout", lambda pk: Rollout.objects.get(pk=pk))
    real_replan = service.replan_given
    before, after = threading.Barrier(2, timeout=10), threading.Barrier(2, timeout=10)

    def replan_in_step(rollout_id, automatic, touched):
        before.wait()
        changed = real_replan(rollout_id, automatic, touched)
        after.wait()
        return changed

    monkeypatch.setattr(service, "replan_given", replan_in_step)
    for round_ in range(3):
        before.reset()
        after.reset()
        volt_at, gas_at = JAN_10 + dt.timedelta(days=round_), JAN_20 + dt.timedelta(days=round_)
        _run_both(import_supplier, gas_supplier, live.pk, volt_at, gas_at)
        assert HubInstruction.objects.filter(hub__guid=SPLIT).count() == 2  # both instructed...
        assert planned(live, SPLIT)[0] != gas_at  # ...yet the plan misses the later time: a lost update
        HubInstruction.objects.all().delete()
        RolloutHub.objects.filter(rollout=live).update(
            planned_activation_at=AUTO, activation_source="automatic"
        )


# -- big files: applied by a worker (issue 7) -------------------------------------------------------

APR_10 = dt.datetime(2027, 4, 10, 9, 0, tzinfo=UK)  # after the deadline, before the automatic time


def queued_file(user, rollout, *rows, default, captured) -> Upload:
    """An instruction file over the size setting: received now, applied by the task sent at commit."""
    with captured(execute=False) as callbacks:
        upload = by_file(user, rollout, *rows, default=default)
    assert isinstance(upload, Upload) and upload.state == "received"
    (send_task,) = callbacks
    return upload, send_task


@pytest.mark.req("E1")
@pytest.mark.req("E5")
@pytest.mark.req("X3")
def test_a_big_instruction_file_waits_for_the_worker_then_plans_and_sends_its_receipt(
    live, import_supplier, settings, django_capture_on_commit_callbacks
):
    settings.INTAKE_BACKGROUND_BYTES = 10  # every file is "big"
    upload, send_task = queued_file(
        import_supplier, live, BOTH_ROLES, default=JAN_20, captured=django_capture_on_commit_callbacks
    )
    assert planned(live, BOTH_ROLES) == (AUTO, "automatic") and not HubInstruction.objects.exists()

    send_task()  # the commit sends the task; tests run tasks eagerly, through process_upload_in_worker

    upload.refresh_from_db()
    assert upload.state == "applied"
    assert planned(live, BOTH_ROLES) == (JAN_20, "instruction")
    instruction = Instruction.objects.get(upload=upload)
    assert (instruction.hub_count, instruction.kind, instruction.created_by) == (1, "file", import_supplier)
    kinds = [n.kind for n in notices(import_supplier)]
    assert kinds.count("instruction.received") == 1  # the receipt is the result: one notice, not two
    assert "upload.applied" not in kinds


@pytest.mark.req("T2")
def test_a_big_instruction_received_on_the_deadline_counts_when_its_worker_runs_after_it(
    live, import_supplier, settings, django_capture_on_commit_callbacks, monkeypatch
):
    settings.INTAKE_BACKGROUND_BYTES = 10
    at_now(monkeypatch, DEADLINE)  # T2 is inclusive: received at the deadline itself
    upload, send_task = queued_file(
        import_supplier, live, BOTH_ROLES, default=APR_10, captured=django_capture_on_commit_callbacks
    )
    at_now(monkeypatch, DEADLINE + dt.timedelta(minutes=1))  # the queue was slow
    send_task()
    upload.refresh_from_db()
    assert upload.state == "applied" and planned(live, BOTH_ROLES) == (APR_10, "instruction")


@pytest.mark.req("I1")
@pytest.mark.req("X3")
@pytest.mark.parametrize(
    ("status", "code", "says"),
    [("SUSPENDED", "rollout_on_hold", "suspended"), ("STOPPED", "deadline_passed", "stopped")],
)
def test_a_big_instruction_is_refused_by_the_worker_once_the_rollout_stops_taking_them(
    live, import_supplier, settings, django_capture_on_commit_callbacks, status, code, says
):
    settings.INTAKE_BACKGROUND_BYTES = 10
    upload, send_task = queued_file(
        import_supplier, live, BOTH_ROLES, default=JAN_20, captured=django_capture_on_commit_callbacks
    )
    Rollout.objects.filter(pk=live.pk).update(status=status)  # DCC acted before the worker ran

    send_task()

    upload.refresh_from_db()
    assert upload.state == "rejected"
    (error,) = upload.errors.all()
    assert error.code == code and says in error.message
    assert planned(live, BOTH_ROLES) == (AUTO, "automatic")
    assert not HubInstruction.objects.exists() and not Instruction.objects.exists()
    kinds = [n.kind for n in notices(import_supplier)]
    assert kinds.count("upload.rejected") == 1 and "instruction.received" not in kinds


# -- E4 scale: one instruction over 50,000 hubs ----------------------------------------------------------


@pytest.mark.req("E4")
def test_one_instruction_covers_50000_hubs(live, estate, other_supplier, settings):
    # applied in this process; the worker path is tested apart
    settings.INTAKE_BACKGROUND_BYTES = 10 * 1024 * 1024
    oscar = other_supplier.organisation
    n = 50_000
    guids = [f"00DC{i:012X}" for i in range(n)]
    with connection.cursor() as cursor:
        with cursor.copy(
            "COPY rollouts_hub (guid, device_model_id, firmware_version_id, region, import_supplier_id, friendly, "
            "production_proving, status, firmware_as_of, updated_at) FROM STDIN"
        ) as copy:
            for guid in guids:
                copy.write_row(
                    [
                        guid,
                        estate["model"].pk,
                        estate["v1"].pk,
                        "south",
                        oscar.pk,
                        False,
                        False,
                        "in_smi",
                        NOW,
                        NOW,
                    ]
                )
        cursor.execute(
            """INSERT INTO rollouts_rollouthub (rollout_id, hub_id, import_supplier_id, region, "group", status,
                   status_at, failure_reason, planned_activation_at, activation_source, supplier_changed,
                   in_default_pilot, pilot_reason, guid)
               SELECT %s, id, import_supplier_id, region, 'safe_launch', 'pending', %s, '', %s, 'automatic',
                      false, false, '', guid
               FROM rollouts_hub WHERE guid LIKE '00DC%%'""",
            [live.pk, NOW, AUTO],
        )
        # as publication does after its bulk insert: the planner must know these tables are not tiny
        cursor.execute("ANALYZE rollouts_hub, rollouts_rollouthub")
    content = ContentFile(("guid\n" + "\n".join(guids) + "\n").encode(), name="big.csv")
    instruction = instruct_early_deployment(
        user=other_supplier, rollout_id=live.pk, content=content, default_deploy_at=FEB_1
    )
    assert instruction.hub_count == n
    assert (
        RolloutHub.objects.filter(
            rollout=live,
            hub__guid__startswith="00DC",
            planned_activation_at=FEB_1,
            activation_source="instruction",
        ).count()
        == n
    )
    assert Organisation.objects.get(
        pk=oscar.pk
    )  # nothing else to check: figures come from bench.instructions
