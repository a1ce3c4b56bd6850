"""U1: each party's outstanding actions with how long is left, and the other parties' next dates."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from rollouts.models import Rollout
from rollouts.outstanding import next_dates_of_others, outstanding_actions_for

from .test_lifecycle import publish


@pytest.fixture
def live(draft, dcc, dcc_2):
    rollout = publish(draft, dcc, dcc_2)
    now = timezone.now()
    Rollout.objects.filter(pk=rollout.pk).update(  # test setup: DCC's due dates (T4)
        default_pilot_due=now + dt.timedelta(days=10), preferred_pilot_due=now + dt.timedelta(days=20)
    )
    rollout.refresh_from_db()
    return rollout


@pytest.mark.req("U1")
def test_a_csp_is_asked_for_its_default_pilot_list_by_its_due_date(live, csp_north):
    actions = outstanding_actions_for(csp_north.organisation)
    first = actions[0]
    assert first.text == "Upload the Default Pilot List (A02) for your region."
    assert first.due == live.default_pilot_due and first.days_left == 10


@pytest.mark.req("U1")
def test_a_supplier_sees_its_own_tasks_and_the_csps_next_date(live, import_supplier):
    texts = [a.text for a in outstanding_actions_for(import_supplier.organisation)]
    assert texts[0].startswith("Review the pilot group")
    assert "Instruct any earlier deployment you want (optional)." in texts
    others = next_dates_of_others(import_supplier.organisation)
    assert [(n.rollout, n.due) for n in others] == [
        (live, live.default_pilot_due)
    ]  # the CSPs' date, not its own


@pytest.mark.req("U1")
def test_a_supplier_without_hubs_in_a_rollout_has_nothing_to_do_for_it(live, other_supplier, estate):
    assert all(
        a.rollout == live for a in outstanding_actions_for(other_supplier.organisation)
    )  # hub 04 is Oscar's
    Rollout.objects.filter(pk=live.pk).update(status="STOPPED")
    assert outstanding_actions_for(other_supplier.organisation) == []
