"""Scheduled jobs: stale proposals lapse (B4), reminders before due dates (T4), counter check (U1)."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from rollouts.models import AuditEvent, Batch, Notice, ProposalState, Rollout, RolloutCounter
from rollouts.services.lifecycle import approve_proposal, propose
from rollouts.services.schedule import lapse_stale_proposals, send_deadline_reminders

from .test_lifecycle import publish


@pytest.mark.req("B4")
def test_an_undecided_proposal_lapses_after_the_configured_age(draft, dcc, settings):
    settings.PORTAL_PROPOSAL_MAX_AGE_DAYS = 14
    proposal = propose(user=dcc, rollout_id=draft.pk, move="publish")
    assert lapse_stale_proposals(now=proposal.proposed_at + dt.timedelta(days=13, hours=23)) == 0
    assert lapse_stale_proposals(now=proposal.proposed_at + dt.timedelta(days=14, minutes=1)) == 1
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.LAPSED
    assert AuditEvent.objects.get(action="proposal.lapsed").actor == "system"


@pytest.mark.req("B4")
def test_a_proposal_past_its_age_is_not_approved_though_the_job_has_not_run(draft, dcc, dcc_2, settings):
    settings.PORTAL_PROPOSAL_MAX_AGE_DAYS = 14
    proposal = propose(user=dcc, rollout_id=draft.pk, move="publish")
    late = proposal.proposed_at + dt.timedelta(days=14, minutes=1)
    with (
        mock.patch("django.utils.timezone.now", return_value=late),
        pytest.raises(ValidationError, match="lapsed: nobody decided it within 14 days") as refused,
    ):
        approve_proposal(user=dcc_2, proposal_id=proposal.pk)
    assert refused.value.code == "proposal_lapsed"
    proposal.refresh_from_db()
    draft.refresh_from_db()
    assert (proposal.state, draft.status) == (
        ProposalState.PENDING,
        "DRAFT",
    )  # nothing changed; the job lapses it
    in_time = proposal.proposed_at + dt.timedelta(days=13, hours=23)
    with mock.patch("django.utils.timezone.now", return_value=in_time):
        approve_proposal(user=dcc_2, proposal_id=proposal.pk)
    draft.refresh_from_db()
    assert draft.status == "ACTIVE"


@pytest.mark.req("T4")
def test_reminders_go_7_days_and_1_day_before_a_due_date_once_each(
    draft, dcc, dcc_2, csp_north, csp_south, import_supplier
):
    rollout = publish(draft, dcc, dcc_2)
    due = rollout.published_at + dt.timedelta(days=30)
    Rollout.objects.filter(pk=rollout.pk).update(default_pilot_due=due)
    assert send_deadline_reminders(now=due - dt.timedelta(days=8)) == 0
    assert send_deadline_reminders(now=due - dt.timedelta(days=7)) == 2  # the two CSPs with hubs in it
    assert send_deadline_reminders(now=due - dt.timedelta(days=6)) == 0  # once
    assert send_deadline_reminders(now=due - dt.timedelta(hours=20)) == 2
    reminders = Notice.objects.filter(kind__startswith="reminder.default_pilot_due")
    assert sorted({n.organisation.name for n in reminders}) == ["CSP North", "CSP South"]
    assert not reminders.filter(organisation=import_supplier.organisation).exists()


@pytest.mark.req("U1")
def test_check_counters_command_reports_a_drift(draft, dcc, dcc_2, capsys):
    rollout = publish(draft, dcc, dcc_2)
    call_command("check_counters")
    assert "agree" in capsys.readouterr().out
    RolloutCounter.objects.filter(rollout=rollout).update(hubs=99)
    with pytest.raises(CommandError, match="differ from a recount"):
        call_command("check_counters", "--rollout", str(rollout.pk))


@pytest.mark.req("U1")
@pytest.mark.req("B1")
def test_check_counters_command_reports_a_batchs_outcome_figures_that_drifted(draft, dcc, dcc_2, capsys):
    rollout = publish(draft, dcc, dcc_2)
    now = timezone.now()
    batch = Batch.objects.create(
        rollout=rollout,
        region="north",
        group="pilot",
        name="PN",
        window_start=now,
        window_end=now + dt.timedelta(days=1),
    )
    call_command("check_counters", "--rollout", str(rollout.pk))
    assert "agree" in capsys.readouterr().out
    Batch.objects.filter(pk=batch.pk).update(failed_hubs=3)  # no hub of it has failed
    with pytest.raises(CommandError, match="1 counter"):
        call_command("check_counters", "--rollout", str(rollout.pk))
    assert (
        f"rollout {rollout.pk} batch {batch.pk}/failed: counted 0, counter says 3" in capsys.readouterr().err
    )
