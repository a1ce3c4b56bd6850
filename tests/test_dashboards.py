"""Dashboards and rollout pages on both faces (U1, P3, P4, B4), through the test client."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django.urls import reverse

from rollouts.models import Rollout, Status
from rollouts.services.lifecycle import propose
from tests.rollouts.conftest import estate, new_draft  # noqa: F401 - fixtures
from tests.rollouts.test_lifecycle import publish

from .conftest import sign_in


@pytest.fixture
def rollout(estate, dcc, dcc_2):  # noqa: F811
    return publish(new_draft(dcc, estate["v2"], [estate["v1"]]), dcc, dcc_2)


@pytest.mark.req("U1")
@pytest.mark.req("P3")
def test_a_supplier_dashboard_shows_rollouts_touching_its_hubs_with_its_own_counts(
    client, rollout, import_supplier
):
    sign_in(client, import_supplier)
    page = client.get(reverse("ssi:dashboard")).text
    assert rollout.reference in page
    assert '<td class="govuk-table__cell govuk-table__cell--numeric">2' in page  # hubs 01 and 02 are Volt's
    assert f"Firmware notice {rollout.reference}" in page  # the A01 notice


@pytest.mark.req("P3")
def test_a_supplier_with_no_hub_in_a_rollout_gets_404(client, rollout, estate, dcc, other_supplier):  # noqa: F811
    sign_in(client, other_supplier)
    assert (
        client.get(reverse("ssi:rollout-detail", args=[rollout.pk])).status_code == 200
    )  # hub 04 is Oscar's
    draft = new_draft(dcc, estate["v3"], [estate["v2"]])
    assert client.get(reverse("ssi:rollout-detail", args=[draft.pk])).status_code == 404


@pytest.mark.req("P4")
def test_the_rollout_page_shows_role_and_split_never_the_partner(client, rollout, import_supplier):
    sign_in(client, import_supplier)
    page = client.get(reverse("ssi:rollout-detail", args=[rollout.pk])).text
    assert "00-DB-00-00-00-00-00-01" in page and "Yes: a second Supplier" in page
    assert "GasCo" not in page
    assert "00-DB-00-00-00-00-00-03" not in page  # GasCo's hub


def test_htmx_request_gets_only_the_hub_table(client, rollout, import_supplier):
    sign_in(client, import_supplier)
    r = client.get(reverse("ssi:rollout-detail", args=[rollout.pk]), headers={"HX-Request": "true"})
    assert b"<html" not in r.content and b'id="hub-table"' in r.content


@pytest.mark.req("B4")
def test_a_second_dcc_user_approves_on_the_page_and_the_proposer_cannot(client, estate, dcc, dcc_2):  # noqa: F811
    draft = new_draft(dcc, estate["v2"], [estate["v1"]])
    proposal = propose(user=dcc, rollout_id=draft.pk, move="publish", reason="Ready")
    url = reverse("ssmi:proposal-decide", args=[proposal.pk])
    sign_in(client, dcc)
    page = client.get(url).text
    assert "another DCC user must approve" in page and 'value="approve"' not in page
    response = client.post(url, {"decision": "approve"})
    assert "another DCC user must approve" in response.text
    assert Rollout.objects.get(pk=draft.pk).status == Status.DRAFT
    sign_in(client, dcc_2)
    page = client.get(url).text
    assert "Will supersede" in page and "Eligible hubs now" in page
    assert client.post(url, {"decision": "approve", "comment": "Checked"}).status_code == 302
    assert Rollout.objects.get(pk=draft.pk).status == Status.ACTIVE


@pytest.mark.req("B4")
def test_a_rejection_without_a_comment_is_refused_with_a_message(client, estate, dcc, dcc_2):  # noqa: F811
    proposal = propose(user=dcc, rollout_id=new_draft(dcc, estate["v2"], [estate["v1"]]).pk, move="publish")
    sign_in(client, dcc_2)
    response = client.post(reverse("ssmi:proposal-decide", args=[proposal.pk]), {"decision": "reject"})
    assert "Say why you reject the proposal" in response.text


@pytest.mark.req("U1")
def test_marking_notices_read(client, rollout, import_supplier):
    sign_in(client, import_supplier)
    assert "Mark all as read" in client.get(reverse("ssi:dashboard")).text
    client.post(reverse("ssi:notices-read"))
    assert "Mark all as read" not in client.get(reverse("ssi:dashboard")).text


def test_dcc_sees_pending_decisions_on_its_dashboard(client, rollout, dcc, dcc_2):
    propose(user=dcc, rollout_id=rollout.pk, move="stop", reason="Field reports")
    sign_in(client, dcc_2)
    page = client.get(reverse("ssmi:dashboard")).text
    assert "Decide: stop of" in page


@pytest.mark.req("L10")
@pytest.mark.req("B4")
@pytest.mark.django_db(transaction=True)
def test_a_request_that_waits_too_long_for_the_rollouts_lock_answers_busy_and_changes_nothing(
    client,
    estate,  # noqa: F811
    dcc,
    dcc_2,
    settings,
):
    """Another transaction holds the rollout's lock (as an inventory load or a worker applying a big file
    does) while a second DCC user approves its publication: after PORTAL_LOCK_WAIT_SECONDS the page answers
    503 "busy", the proposal is still pending; once the lock is gone the same request succeeds."""
    settings.PORTAL_LOCK_WAIT_SECONDS = 1
    draft = new_draft(dcc, estate["v2"], [estate["v1"]])
    proposal = propose(user=dcc, rollout_id=draft.pk, move="publish", reason="Ready")
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        try:
            with transaction.atomic():
                Rollout.objects.select_for_update().get(pk=draft.pk)
                holding.set()
                release.wait(20)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert holding.wait(10)
        sign_in(client, dcc_2)
        url = reverse("ssmi:proposal-decide", args=[proposal.pk])
        started = time.monotonic()
        response = client.post(url, {"decision": "approve", "comment": "Checked"})
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join(10)
    assert response.status_code == 503 and response["Retry-After"] == "60"
    assert "This rollout is busy" in response.text and "Nothing was changed" in response.text
    assert 1 <= waited < 5  # it waited the configured second, not for the lock's holder
    proposal.refresh_from_db()
    assert proposal.state == "pending" and Rollout.objects.get(pk=draft.pk).status == Status.DRAFT
    assert client.post(url, {"decision": "approve", "comment": "Checked"}).status_code == 302
    assert Rollout.objects.get(pk=draft.pk).status == Status.ACTIVE
