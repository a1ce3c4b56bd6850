"""Incidents and decisions (I1-I3): raising, triage outcomes and their effect on pending instructions,
the Panel's confirmation, visibility (P3) and anonymity of the raiser (P4)."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.utils import timezone

from rollouts.models import HubInstruction, Notice, Proposal, Rollout, RolloutHub, Stage, Status
from rollouts.services.counters import counter_mismatches
from rollouts.services.incidents import (
    incidents_for,
    raise_incident,
    record_panel_confirmation,
    revert_passed_instructions,
    triage_incident,
)
from rollouts.services.instructions import instruct_early_deployment
from rollouts.services.lifecycle import approve_proposal, record_panel_decision, resume_rollout

from .test_lifecycle import publish

BOTH = "00DB000000000002"  # north, Volt both roles
GAS_SOUTH = "00DB000000000003"  # south, GasCo only


@pytest.fixture
def live(draft, dcc, dcc_2) -> Rollout:
    return publish(draft, dcc, dcc_2)


@pytest.fixture
def instructed(live, import_supplier, gas_supplier):
    """Volt instructs BOTH two days from now; GasCo instructs GAS_SOUTH ten days from now."""
    soon = timezone.now() + dt.timedelta(days=2)
    later = timezone.now() + dt.timedelta(days=10)
    instruct_early_deployment(user=import_supplier, rollout_id=live.pk, guids=[BOTH], default_deploy_at=soon)
    instruct_early_deployment(
        user=gas_supplier, rollout_id=live.pk, guids=[GAS_SOUTH], default_deploy_at=later
    )
    return {"soon": soon, "later": later}


def planned(rollout, guid) -> tuple[dt.datetime, str]:
    row = RolloutHub.objects.get(rollout=rollout, hub__guid=guid)
    return row.planned_activation_at, row.activation_source


def state(rollout) -> tuple[str, str]:
    rollout.refresh_from_db()
    return rollout.stage, rollout.status


def volts_time_reverted(rollout, volt) -> Notice:
    """Volt's instruction for BOTH reverted: GasCo's stands, BOTH is on the automatic time, and Volt, and
    only Volt, is told; its notice."""
    assert list(HubInstruction.objects.filter(rollout=rollout).values_list("hub__guid", flat=True)) == [
        GAS_SOUTH
    ]
    assert planned(rollout, BOTH) == (rollout.auto_deploy_at, "automatic")
    reverted = Notice.objects.get(kind="instructions.reverted")
    assert reverted.organisation == volt.organisation
    # T5: BOTH (north) moved back: the North CSP is told, the South CSP is not (GAS_ONLY did not move).
    told = Notice.objects.filter(kind="plan.changed", body__contains="(I3)")
    assert [(n.organisation.name, "changed for 1 hub:" in n.body) for n in told] == [("CSP North", True)]
    return reverted


def decision_notices():
    return Notice.objects.filter(kind="incident.decision")


@pytest.mark.req("I1")
@pytest.mark.req("P3")
def test_an_incident_is_visible_to_its_raiser_and_dcc_only(
    live, import_supplier, gas_supplier, csp_north, dcc
):
    incident = raise_incident(
        user=import_supplier, rollout_id=live.pk, description="Hubs drop off the HAN", emergency_stop=True
    )
    assert (incident.priority, incident.emergency_stop_requested) == ("high", True)
    assert list(incidents_for(import_supplier.organisation)) == [incident]
    assert list(incidents_for(dcc.organisation)) == [incident]
    assert not incidents_for(gas_supplier.organisation).exists()
    assert not incidents_for(csp_north.organisation).exists()
    assert Notice.objects.filter(kind="incident.raised", organisation=dcc.organisation).count() == 1
    assert not Notice.objects.filter(kind="incident.raised").exclude(organisation=dcc.organisation).exists()


@pytest.mark.req("I1")
@pytest.mark.req("P3")
def test_only_a_supplier_with_hubs_in_the_rollout_raises_an_incident(live, draft, csp_north, dcc, estate):
    from tests.factories import OrganisationFactory, UserFactory

    stranger = UserFactory(organisation=OrganisationFactory(name="No Hubs Energy"))
    with pytest.raises(ObjectDoesNotExist):
        raise_incident(user=stranger, rollout_id=live.pk, description="x")
    for user in (csp_north, dcc):
        with pytest.raises(PermissionDenied):
            raise_incident(user=user, rollout_id=live.pk, description="x")


@pytest.mark.req("I2")
@pytest.mark.req("I3")
@pytest.mark.req("P4")
def test_proceed_changes_nothing_and_never_names_the_raiser(
    live, instructed, import_supplier, dcc, gas_supplier
):
    incident = raise_incident(user=import_supplier, rollout_id=live.pk, description="Odd LED pattern")
    triage_incident(user=dcc, incident_id=incident.pk, outcome="proceed", reason="Cosmetic only")
    assert state(live) == (Stage.NOTIFICATION, Status.ACTIVE)
    assert HubInstruction.objects.filter(rollout=live).count() == 2
    gasco = decision_notices().get(organisation=gas_supplier.organisation)
    assert "Your pending instructions are not affected" in gasco.body
    assert "pending instructions for 1 hubs" in gasco.body
    for notice in decision_notices():
        assert "Volt" not in notice.body and "Volt" not in notice.subject
    incident.refresh_from_db()
    assert (incident.outcome, incident.panel) == ("proceed", "pending")
    with pytest.raises(ValidationError, match="already triaged"):
        triage_incident(user=dcc, incident_id=incident.pk, outcome="pause", reason="second thoughts")


@pytest.mark.req("I2")
@pytest.mark.req("I3")
@pytest.mark.req("L6")
def test_pause_holds_and_instructed_times_passing_during_it_revert_to_automatic(
    live, instructed, import_supplier, gas_supplier, dcc
):
    incident = raise_incident(user=gas_supplier, rollout_id=live.pk, description="Gas meters lose pairing")
    triage_incident(user=dcc, incident_id=incident.pk, outcome="pause", reason="Investigating")
    assert state(live) == (Stage.NOTIFICATION, Status.PAUSED)
    assert HubInstruction.objects.filter(rollout=live).count() == 2  # nothing reverts until a time passes
    # Three days on: Volt's time (two days) has passed during the pause; GasCo's (ten days) has not.
    assert revert_passed_instructions(now=timezone.now() + dt.timedelta(days=3)) == 1
    reverted = volts_time_reverted(live, import_supplier)
    assert "1 of your hubs" in reverted.body and "00-DB-00-00-00-00-00-02" in reverted.body
    assert "GasCo" not in reverted.body
    assert revert_passed_instructions(now=timezone.now() + dt.timedelta(days=3)) == 0  # idempotent
    assert counter_mismatches() == []


@pytest.mark.req("I2")
@pytest.mark.req("I3")
@pytest.mark.req("L7")
def test_delay_moves_the_automatic_time_and_deadline_and_instructions_stand(
    live, instructed, import_supplier, dcc
):
    incident = raise_incident(user=import_supplier, rollout_id=live.pk, description="Need more time")
    new_auto = live.auto_deploy_at + dt.timedelta(days=30)
    with pytest.raises(ValidationError):
        triage_incident(
            user=dcc, incident_id=incident.pk, outcome="delay", reason="x", new_auto_deploy_at=None
        )
    triage_incident(
        user=dcc, incident_id=incident.pk, outcome="delay", reason="Firmware fix", new_auto_deploy_at=new_auto
    )
    live.refresh_from_db()
    assert live.auto_deploy_at == new_auto
    assert live.status == Status.ACTIVE
    assert HubInstruction.objects.filter(rollout=live).count() == 2
    assert planned(live, BOTH) == (instructed["soon"], "instruction")
    other = RolloutHub.objects.get(rollout=live, hub__guid="00DB000000000004")
    assert other.planned_activation_at == new_auto
    notice = decision_notices().get(organisation=import_supplier.organisation)
    assert "Your instructions stand" in notice.body


@pytest.mark.req("I2")
@pytest.mark.req("I3")
@pytest.mark.req("B4")
@pytest.mark.req("L8")
def test_stop_is_a_four_eyes_proposal_and_voids_pending_instructions_when_approved(
    live, instructed, import_supplier, gas_supplier, dcc, dcc_2
):
    incident = raise_incident(
        user=import_supplier, rollout_id=live.pk, description="Bricked hubs", emergency_stop=True
    )
    triage_incident(user=dcc, incident_id=incident.pk, outcome="stop", reason="Bricking confirmed")
    assert state(live) == (Stage.NOTIFICATION, Status.ACTIVE)  # not until a second DCC user approves
    assert HubInstruction.objects.filter(rollout=live).count() == 2
    proposal = Proposal.objects.get(rollout=live, move="stop", state="pending")
    incident.refresh_from_db()
    assert incident.figures["stop_proposal"] == proposal.pk
    with pytest.raises(PermissionDenied):
        approve_proposal(user=dcc, proposal_id=proposal.pk)
    approve_proposal(user=dcc_2, proposal_id=proposal.pk)
    assert state(live) == (Stage.NOTIFICATION, Status.STOPPED)
    assert not HubInstruction.objects.filter(rollout=live).exists()
    void = Notice.objects.filter(kind="instructions.void")
    assert {n.organisation for n in void} == {import_supplier.organisation, gas_supplier.organisation}
    assert all("Volt" not in n.body for n in void.filter(organisation=gas_supplier.organisation))
    assert counter_mismatches() == []


@pytest.mark.req("I2")
@pytest.mark.req("L6")
def test_suspend_is_immediate_and_the_panel_confirmation_is_recorded(
    live, instructed, gas_supplier, dcc, import_supplier
):
    incident = raise_incident(user=gas_supplier, rollout_id=live.pk, description="Safety concern")
    triage_incident(user=dcc, incident_id=incident.pk, outcome="suspend", reason="Pending the Panel")
    assert state(live) == (Stage.NOTIFICATION, Status.SUSPENDED)
    assert revert_passed_instructions(now=timezone.now() + dt.timedelta(days=3)) == 1
    with pytest.raises(PermissionDenied):
        record_panel_confirmation(user=import_supplier, incident_id=incident.pk, confirmation="confirmed")
    record_panel_confirmation(user=dcc, incident_id=incident.pk, confirmation="confirmed")
    incident.refresh_from_db()
    assert incident.panel == "confirmed" and incident.panel_recorded_at is not None
    notice = decision_notices().get(organisation=import_supplier.organisation)
    assert "suspended" in notice.body and "GasCo" not in notice.body


@pytest.mark.req("I2")
def test_only_dcc_triages(live, import_supplier):
    incident = raise_incident(user=import_supplier, rollout_id=live.pk, description="x")
    with pytest.raises(PermissionDenied):
        triage_incident(user=import_supplier, incident_id=incident.pk, outcome="proceed", reason="mine")


@pytest.mark.req("I3")
@pytest.mark.req("L6")
def test_the_panels_decision_to_stop_voids_pending_instructions_too(live, instructed, import_supplier, dcc):
    incident = raise_incident(user=import_supplier, rollout_id=live.pk, description="Safety concern")
    triage_incident(user=dcc, incident_id=incident.pk, outcome="suspend", reason="Pending the Panel")
    assert HubInstruction.objects.filter(rollout=live).count() == 2
    record_panel_decision(user=dcc, rollout_id=live.pk, outcome=Status.STOPPED, reason="Panel: stop")
    assert state(live) == (Stage.NOTIFICATION, Status.STOPPED)
    assert not HubInstruction.objects.filter(rollout=live).exists()
    assert Notice.objects.filter(kind="instructions.void", organisation=import_supplier.organisation).exists()


@pytest.mark.req("I3")
@pytest.mark.req("L6")
@pytest.mark.parametrize("release", ["resume", "panel"])
def test_a_time_that_passed_during_the_hold_reverts_when_it_ends_though_no_job_ran(
    live, instructed, import_supplier, gas_supplier, dcc, release
):
    incident = raise_incident(user=gas_supplier, rollout_id=live.pk, description="Gas meters lose pairing")
    outcome = "pause" if release == "resume" else "suspend"
    triage_incident(user=dcc, incident_id=incident.pk, outcome=outcome, reason="Investigating")
    # Three days on, before the beat job has run: Volt's time (two days) passed during the hold.
    three_days_on = timezone.now() + dt.timedelta(days=3)
    with mock.patch("django.utils.timezone.now", return_value=three_days_on):
        if release == "resume":
            resume_rollout(user=dcc, rollout_id=live.pk)
        else:
            record_panel_decision(user=dcc, rollout_id=live.pk, outcome=Status.ACTIVE, reason="Panel: go on")
    assert state(live) == (Stage.NOTIFICATION, Status.ACTIVE)
    reverted = volts_time_reverted(live, import_supplier)
    assert "has resumed" in reverted.body and "1 of your hubs passed during the hold" in reverted.body
    assert counter_mismatches() == []


@pytest.mark.req("I3")
@pytest.mark.req("B4")
@pytest.mark.req("P4")
def test_a_stop_decided_on_an_incident_that_lapses_is_told_to_every_party(
    live, instructed, import_supplier, gas_supplier, other_supplier, dcc
):
    from rollouts.services.lifecycle import propose
    from rollouts.services.schedule import lapse_stale_proposals

    incident = raise_incident(user=gas_supplier, rollout_id=live.pk, description="Bricked hubs")
    triage_incident(user=dcc, incident_id=incident.pk, outcome="stop", reason="Bricking confirmed")
    # Nobody approves it within PORTAL_PROPOSAL_MAX_AGE_DAYS (14): it lapses, and whoever was told of the
    # stop is told that nothing is stopped.
    assert lapse_stale_proposals(now=timezone.now() + dt.timedelta(days=15)) == 1
    lapsed = Notice.objects.filter(kind="incident.stop_lapsed")
    told = {n.organisation for n in decision_notices()}
    assert {n.organisation for n in lapsed} == told
    assert {import_supplier.organisation, gas_supplier.organisation, other_supplier.organisation} <= told
    for notice in lapsed:
        assert "no second DCC user decided within 14 days" in notice.body
        assert "is not stopped, and pending instructions stand" in notice.body
        assert "GasCo" not in notice.body + notice.subject
    assert state(live) == (Stage.NOTIFICATION, Status.ACTIVE)
    assert HubInstruction.objects.filter(rollout=live).count() == 2
    # A stop DCC proposed on its own was told to DCC only: its lapse tells nobody else.
    propose(user=dcc, rollout_id=live.pk, move="stop", reason="Our own call")
    assert lapse_stale_proposals(now=timezone.now() + dt.timedelta(days=15)) == 1
    assert Notice.objects.filter(kind="incident.stop_lapsed").count() == len(told)  # (a fresh count)


@pytest.mark.req("L7")
@pytest.mark.req("T1")
@pytest.mark.req("T5")
def test_delaying_the_automatic_time_without_an_incident_replans_and_tells_every_party(
    live, instructed, import_supplier, gas_supplier, csp_north, dcc
):
    from rollouts.services.lifecycle import delay_end_date

    new_auto = live.auto_deploy_at + dt.timedelta(days=30)
    with pytest.raises(ValidationError):  # earlier than the current one: refused, nothing changes
        delay_end_date(user=dcc, rollout_id=live.pk, new_auto_deploy_at=live.auto_deploy_at, reason="x")
    delay_end_date(user=dcc, rollout_id=live.pk, new_auto_deploy_at=new_auto, reason="Firmware fix.")
    live.refresh_from_db()
    assert (live.auto_deploy_at, live.status) == (new_auto, Status.ACTIVE)
    other = RolloutHub.objects.get(rollout=live, hub__guid="00DB000000000004")  # on the automatic time
    assert (other.planned_activation_at, other.activation_source) == (new_auto, "automatic")
    assert planned(live, BOTH) == (instructed["soon"], "instruction")  # instructions stand
    told = Notice.objects.filter(kind="rollout.delayed")
    parties = {
        import_supplier.organisation,
        gas_supplier.organisation,
        csp_north.organisation,
        dcc.organisation,
    }
    assert parties <= {n.organisation for n in told}
    uk = timezone.localtime(new_auto)
    assert all(f"{uk:%d %B %Y %H:%M} UK time" in n.body and "Firmware fix." in n.body for n in told)
    # T5: one hub on the automatic time moved on each side (01 north, 04 south); each CSP is told its own
    moved = Notice.objects.filter(kind="plan.changed", body__contains="(L7)").select_related("organisation")
    assert sorted((n.organisation.name, "changed for 1 hub:" in n.body) for n in moved) == [
        ("CSP North", True),
        ("CSP South", True),
    ]
