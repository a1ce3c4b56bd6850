"""Scheduling constraints of the pilot (PL5, A05): DCC declares, Suppliers ask, the CSP answers."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError

from rollouts.intake.errors import RowsRejected
from rollouts.models import (
    AuditEvent,
    Batch,
    Notice,
    RequestState,
    Rollout,
    RolloutHub,
    ScheduleRequest,
    SchedulingConstraint,
    Stage,
)
from rollouts.services.constraints import (
    answer_request,
    declare_constraints,
    request_constraint,
    schedule_requests_for,
)

from .test_lifecycle import publish

UK = ZoneInfo("Europe/London")
SPLIT = "00DB000000000001"  # north, Volt (import) + GasCo (gas)
BOTH = "00DB000000000002"  # north, Volt both roles
GAS_SOUTH = "00DB000000000003"  # south, GasCo only
OTHER_SOUTH = "00DB000000000004"  # south, Other Power only
NIGHT = {"from": "22:00", "to": "06:00"}
EARLY = {"from": "01:00", "to": "05:00"}
ALL_KINDS = ["blackout_dates", "time_band", "within_batch"]


@pytest.fixture
def live(draft, dcc, dcc_2):
    rollout = publish(draft, dcc, dcc_2)
    RolloutHub.objects.filter(rollout=rollout).update(
        group="pilot", in_default_pilot=True
    )  # setup: all pilot
    declare_constraints(user=dcc, rollout_id=rollout.pk, kinds=ALL_KINDS)
    return rollout


def ask(user, rollout, kind, value, *guids):
    return request_constraint(
        user=user, rollout_id=rollout.pk, constraint_kind=kind, value=value, hub_guids=guids
    )


def codes(caught) -> list[tuple[int | None, str]]:
    return [(f.row, f.code) for f in caught.value.failures]


# -- DCC declares -------------------------------------------------------------------------------------------


@pytest.mark.req("PL5")
@pytest.mark.req("X1")
def test_dcc_declares_the_valid_constraints(draft, dcc, dcc_2, csp_north):
    rollout = publish(draft, dcc, dcc_2)
    with pytest.raises(PermissionDenied):
        declare_constraints(user=csp_north, rollout_id=rollout.pk, kinds=["time_band"])
    with pytest.raises(ValidationError, match="Unknown constraint kind"):
        declare_constraints(user=dcc, rollout_id=rollout.pk, kinds=["moon_phase"])
    declare_constraints(
        user=dcc, rollout_id=rollout.pk, kinds={"time_band": "Night only", "blackout_dates": ""}
    )
    assert set(SchedulingConstraint.objects.filter(rollout=rollout).values_list("kind", flat=True)) == {
        "time_band",
        "blackout_dates",
    }
    declare_constraints(user=dcc, rollout_id=rollout.pk, kinds=["time_band"])  # blackout dates removed
    assert list(SchedulingConstraint.objects.filter(rollout=rollout).values_list("kind", flat=True)) == [
        "time_band"
    ]
    assert AuditEvent.objects.filter(action="constraints.declare").count() == 2


@pytest.mark.req("PL5")
def test_a_constraint_already_asked_for_stays_declared(live, dcc, import_supplier):
    ask(import_supplier, live, "time_band", NIGHT, BOTH)
    with pytest.raises(ValidationError, match="already asked"):
        declare_constraints(user=dcc, rollout_id=live.pk, kinds=["blackout_dates"])


# -- A Supplier asks ----------------------------------------------------------------------------------------


@pytest.mark.req("PL5")
@pytest.mark.req("X1")
def test_a_supplier_asks_for_a_declared_constraint_on_its_pilot_hubs(live, import_supplier, csp_north):
    [request] = ask(import_supplier, live, "time_band", NIGHT, SPLIT, "00-db-00-00-00-00-00-02")
    assert (request.region, request.state, request.value) == ("north", "pending", NIGHT)
    assert set(request.hubs.values_list("guid", flat=True)) == {SPLIT, BOTH}
    assert (
        Notice.objects.filter(kind="schedule_request.received", organisation=csp_north.organisation).count()
        == 1
    )
    assert AuditEvent.objects.filter(action="schedule_request.create").count() == 1


@pytest.mark.req("PL5")
def test_a_hub_set_spanning_two_regions_makes_one_request_per_region(live, gas_supplier):
    requests = ask(
        gas_supplier, live, "blackout_dates", ["2026-12-25", "2026-12-24", "2026-12-25"], SPLIT, GAS_SOUTH
    )
    assert sorted(r.region for r in requests) == ["north", "south"]
    assert {r.region: list(r.hubs.values_list("guid", flat=True)) for r in requests} == {
        "north": [SPLIT],
        "south": [GAS_SOUTH],
    }
    assert requests[0].value == ["2026-12-24", "2026-12-25"]  # dates in order, once each


@pytest.mark.req("PL5")
@pytest.mark.req("P3")
@pytest.mark.req("X3")
def test_a_request_with_any_bad_hub_is_refused_whole_with_every_failure(live, import_supplier):
    RolloutHub.objects.filter(rollout=live, hub__guid=BOTH).update(group="safe_launch")
    with pytest.raises(RowsRejected) as caught:
        ask(
            import_supplier,
            live,
            "time_band",
            NIGHT,
            SPLIT,
            OTHER_SOUTH,
            "00DBFFFFFFFFFFFF",
            BOTH,
            "nonsense",
        )
    # Another Supplier's hub and an unknown one get the same code (P3).
    assert sorted(codes(caught)) == [
        (2, "guid_not_yours"),
        (3, "guid_not_yours"),
        (4, "guid_not_eligible"),
        (5, "guid_format"),
    ]
    assert not ScheduleRequest.objects.exists()


@pytest.mark.req("PL5")
@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("time_band", {"from": "22:00"}),
        ("time_band", {"from": "25:00", "to": "06:00"}),
        ("time_band", {"from": "22:00", "to": "22:00"}),
        ("blackout_dates", []),
        ("blackout_dates", ["24/12/2026"]),
        ("blackout_dates", "2026-12-24"),
        ("within_batch", " "),
    ],
)
def test_a_value_must_fit_its_kind(live, import_supplier, kind, value):
    with pytest.raises(ValidationError):
        ask(import_supplier, live, kind, value, BOTH)


@pytest.mark.req("PL5")
def test_only_declared_constraints_can_be_asked_for_by_a_supplier_before_the_pilot(
    live, dcc, import_supplier, csp_north
):
    declare_constraints(user=dcc, rollout_id=live.pk, kinds=["blackout_dates"])
    with pytest.raises(ValidationError, match="not declared"):
        ask(import_supplier, live, "time_band", NIGHT, BOTH)
    with pytest.raises(PermissionDenied):
        ask(csp_north, live, "blackout_dates", ["2026-12-24"], BOTH)
    Rollout.objects.filter(pk=live.pk).update(stage=Stage.PILOTING)
    with pytest.raises(ValidationError, match="before the pilot starts"):
        ask(import_supplier, live, "blackout_dates", ["2026-12-24"], BOTH)


@pytest.mark.req("PL5")
def test_within_batch_names_a_default_pilot_batch_of_the_region(live, import_supplier):
    with pytest.raises(RowsRejected) as caught:
        ask(import_supplier, live, "within_batch", "P1", BOTH)
    assert [f.code for f in caught.value.failures] == ["batch_unknown"]
    Batch.objects.create(
        rollout=live,
        region="north",
        group="pilot",
        name="P1",
        window_start=dt.datetime(2026, 11, 2, 9, 0, tzinfo=UK),
        window_end=dt.datetime(2026, 11, 6, 17, 0, tzinfo=UK),
    )
    [request] = ask(import_supplier, live, "within_batch", " P1 ", BOTH)
    assert request.value == "P1"


# -- The CSP answers ----------------------------------------------------------------------------------------


@pytest.mark.req("PL5")
@pytest.mark.req("X1")
def test_the_csp_of_the_region_answers_and_the_supplier_is_told(live, import_supplier, csp_north, csp_south):
    [request] = ask(import_supplier, live, "time_band", NIGHT, BOTH)
    with pytest.raises(ObjectDoesNotExist):  # another region's request answers like a missing one (P3)
        answer_request(user=csp_south, request_id=request.pk, accept=True)
    with pytest.raises(PermissionDenied):
        answer_request(user=import_supplier, request_id=request.pk, accept=True)
    with pytest.raises(ValidationError, match="reason"):
        answer_request(user=csp_north, request_id=request.pk, accept=False, reason="  ")
    answered = answer_request(
        user=csp_north, request_id=request.pk, accept=False, reason="Network works at night"
    )
    assert (answered.state, answered.answer_reason) == (RequestState.REJECTED, "Network works at night")
    notice = Notice.objects.get(kind="schedule_request.answered")
    assert notice.organisation == import_supplier.organisation
    assert "rejected" in notice.subject and "Network works at night" in notice.body
    with pytest.raises(ValidationError, match="already rejected"):
        answer_request(user=csp_north, request_id=request.pk, accept=True)
    assert AuditEvent.objects.filter(action="schedule_request.answer").count() == 1


@pytest.mark.req("PL5")
def test_accepting_needs_no_reason(live, import_supplier, csp_north):
    [request] = ask(import_supplier, live, "time_band", NIGHT, BOTH)
    assert answer_request(user=csp_north, request_id=request.pk, accept=True).state == RequestState.ACCEPTED


# -- Conflicts on split hubs -------------------------------------------------------------------------------


@pytest.mark.req("PL5")
@pytest.mark.req("P4")
def test_the_csp_sees_both_requests_of_a_split_hub_with_conflicts_flagged(
    live, import_supplier, gas_supplier, other_supplier, csp_north, csp_south, dcc
):
    [volt] = ask(import_supplier, live, "time_band", NIGHT, SPLIT, BOTH)
    [gasco] = ask(gas_supplier, live, "time_band", EARLY, SPLIT)  # a different band for the split hub
    [volt_dates] = ask(import_supplier, live, "blackout_dates", ["2026-12-24"], SPLIT)
    [gasco_dates] = ask(gas_supplier, live, "blackout_dates", ["2026-12-24"], SPLIT)  # the same value
    [other] = ask(other_supplier, live, "time_band", EARLY, OTHER_SOUTH)

    csp = {r.pk: r.conflict for r in schedule_requests_for(csp_north.organisation, live)}
    assert csp == {volt.pk: True, gasco.pk: True, volt_dates.pk: False, gasco_dates.pk: False}
    assert {r.pk: r.conflict for r in schedule_requests_for(csp_south.organisation, live)} == {
        other.pk: False
    }
    assert {r.pk for r in schedule_requests_for(dcc.organisation, live) if r.conflict} == {volt.pk, gasco.pk}

    # A Supplier sees only its own requests, and is never told what its partner asked (P4).
    mine = {r.pk: r.conflict for r in schedule_requests_for(import_supplier.organisation, live)}
    assert mine == {volt.pk: False, volt_dates.pk: False}
    assert {r.pk for r in schedule_requests_for(gas_supplier.organisation, live)} == {
        gasco.pk,
        gasco_dates.pk,
    }
    counts = {r.pk: r.hub_count for r in schedule_requests_for(csp_north.organisation, live)}
    assert counts[volt.pk] == 2 and counts[gasco.pk] == 1
