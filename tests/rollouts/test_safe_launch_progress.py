"""Safe launch progress (SL4): device-level status as in the pilot (PL9), then DCC's outcome (A09, A10).

A release without pilot (operational: N1) goes straight to safe launch; the north CSP puts its two
hubs in one batch; its status feed moves them, and DCC posts the outcome with commentary.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.utils import timezone

from rollouts.models import Batch, HubEvent, Notice, Outcome, Rollout, RolloutHub, Stage, Status, UploadState
from rollouts.services.counters import counter_mismatches
from rollouts.services.inventory import load_inventory
from rollouts.services.lifecycle import post_safe_launch_outcome, start_safe_launch_without_pilot
from rollouts.services.progress import StatusFeedHandler
from rollouts.services.schedules import upload_safe_launch_schedule

from .conftest import another_waits_for_a_lock, inventory, new_draft
from .test_lifecycle import publish
from .test_progress import BOTH, GAS_SOUTH, SPLIT, ago, codes, csv_file, feed, state, status_of


@pytest.fixture
def launching(estate, dcc, dcc_2, csp_north) -> Rollout:
    rollout = publish(new_draft(dcc, estate["v2"], [estate["v1"]], impact="operational"), dcc, dcc_2)
    # Test setup: published a month ago, so the feeds' times (hours ago) come after publication.
    RolloutHub.objects.filter(rollout=rollout).update(status_at=timezone.now() - dt.timedelta(days=30))
    start_safe_launch_without_pilot(user=dcc, rollout_id=rollout.pk)
    start = timezone.now() - dt.timedelta(days=1)
    window = (start.isoformat(), (start + dt.timedelta(days=4)).isoformat())
    upload = upload_safe_launch_schedule(
        user=csp_north,
        rollout_id=rollout.pk,
        content=csv_file(
            *(f"SL-N1,{g},{window[0]},{window[1]}" for g in (SPLIT, BOTH)),
            header="batch,guid,window_start,window_end",
        ),
    )
    assert upload.state == UploadState.APPLIED, codes(upload)
    return rollout


@pytest.mark.req("SL4")
@pytest.mark.req("U3")
def test_a_safe_launch_batch_moves_hub_by_hub_as_the_csp_reports(launching, csp_north, csp_south):
    assert state(launching) == (Stage.SAFE_LAUNCH, Status.ACTIVE)
    upload = feed(csp_north, launching, (SPLIT, "distributed", ago(3)), (BOTH, "distributed", ago(3)))
    assert upload.state == UploadState.APPLIED, codes(upload)
    upload = feed(
        csp_north,
        launching,
        (SPLIT, "activated", ago(2)),
        (BOTH, "failed", ago(2), "Hub did not answer after the image was sent"),
    )
    assert upload.state == UploadState.APPLIED, codes(upload)
    assert status_of(launching, SPLIT) == ("activated", "")
    assert status_of(launching, BOTH) == ("failed", "Hub did not answer after the image was sent")
    assert counter_mismatches([launching.pk]) == []
    # Enhanced monitoring is for pilot hubs (PL9, MP24-AD11): a safe launch hub's records keep no timeline.
    assert upload.summary["events"] == 0 and not HubEvent.objects.filter(rollout=launching).exists()
    # A hub of another region, or of no batch, cannot be reported.
    refused = feed(csp_south, launching, (GAS_SOUTH, "distributed", ago(1)))
    assert codes(refused) == [(2, "guid", "hub_not_in_live_batch")]


@pytest.mark.req("SL4")
def test_dcc_posts_the_safe_launch_outcome_with_commentary_and_every_party_hears(
    launching, dcc, import_supplier
):
    post_safe_launch_outcome(
        user=dcc, rollout_id=launching.pk, success=True, commentary="All batches activated"
    )
    launching.refresh_from_db()
    assert (launching.safe_launch_outcome, launching.safe_launch_commentary) == (
        Outcome.SUCCESS,
        "All batches activated",
    )
    assert state(launching) == (Stage.SAFE_LAUNCH, Status.ACTIVE)  # recorded; close is DCC's next decision
    assert Notice.objects.filter(organisation=import_supplier.organisation, rollout=launching).exists()


@pytest.mark.req("SL4")
@pytest.mark.req("P2")
def test_only_dcc_posts_the_safe_launch_outcome(launching, csp_north, import_supplier):
    for user in (csp_north, import_supplier):
        with pytest.raises(PermissionDenied):
            post_safe_launch_outcome(user=user, rollout_id=launching.pk, success=False, commentary="No")


@pytest.mark.req("SL4")
@pytest.mark.req("U3")
def test_a_big_feed_is_applied_by_the_worker_with_its_notices(
    launching, csp_north, import_supplier, settings, django_capture_on_commit_callbacks
):
    settings.INTAKE_BACKGROUND_BYTES = 10
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = feed(csp_north, launching, (SPLIT, "activated", ago(2)))
    assert upload.state == UploadState.RECEIVED and status_of(launching, SPLIT)[0] == "pending"
    (send_task,) = callbacks
    send_task()  # the commit sends the task; tests run it eagerly
    upload.refresh_from_db()
    assert upload.state == UploadState.APPLIED and status_of(launching, SPLIT) == ("activated", "")
    (notice,) = Notice.objects.filter(organisation=import_supplier.organisation, kind="progress.outcomes")
    assert "1 of your hubs activated" in notice.body
    assert counter_mismatches([launching.pk]) == []


def outcomes(rollout: Rollout) -> dict[str, tuple[int, int]]:
    """Each batch's maintained B1 figures: name → (activated, failed)."""
    return {b.name: (b.activated_hubs, b.failed_hubs) for b in Batch.objects.filter(rollout=rollout)}


@pytest.mark.req("B1")
@pytest.mark.req("B3")
@pytest.mark.req("U1")
def test_a_hub_with_an_outcome_that_leaves_the_smi_leaves_its_batchs_figures(
    launching, csp_north, import_supplier
):
    feed(csp_north, launching, (SPLIT, "activated", ago(2)), (BOTH, "failed", ago(2), "HAN join timeout"))
    volt = import_supplier.organisation.slug
    load_inventory(
        user=None, content=inventory(f"{BOTH},020B0001,00010001,north,{volt},{volt},")
    )  # new model
    assert RolloutHub.objects.get(rollout=launching, hub__guid=BOTH).status == "left"
    assert outcomes(launching) == {"SL-N1": (1, 0)}
    assert counter_mismatches([launching.pk]) == []


@pytest.mark.req("L10")
@pytest.mark.req("B3")
@pytest.mark.req("PL9")
@pytest.mark.req("U1")
@pytest.mark.django_db(transaction=True)
def test_an_inventory_load_waits_for_a_feed_in_flight_and_the_hub_that_left_stays_left(
    launching, csp_north, import_supplier, monkeypatch
):
    """A feed has checked its records (the hub is `scheduled`, so `activated` moves it) when an inventory
    load says the hub left the SMI. The feed holds the rollout lock; it goes on applying only once the load
    is either waiting for a lock or done. With the rollout lock the load waits before writing anything, then
    marks the activated hub `left`. Without it the two collide: seen as a deadlock (the load had written the
    hub's rollout row and then waited on the rollout row for a foreign-key check; the feed then needed the
    hub's row), or, had the load committed first, `activated` written over `left` with counter deltas from
    the status the feed had read."""
    real_apply = StatusFeedHandler.apply
    load_done = threading.Event()
    load_waited: list[bool] = []

    def apply_after_the_load_moved(self, staging, upload):
        if another_waits_for_a_lock(load_done):
            load_waited.append(True)
        return real_apply(self, staging, upload)

    monkeypatch.setattr(StatusFeedHandler, "apply", apply_after_the_load_moved)
    volt = import_supplier.organisation.slug
    errors: list[BaseException] = []

    def load() -> None:
        try:
            load_inventory(user=None, content=inventory(f"{BOTH},020B0001,00010001,north,{volt},{volt},"))
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            load_done.set()
            connection.close()

    def report() -> None:
        try:
            upload = feed(csp_north, launching, (BOTH, "activated", ago(1)))
            assert upload.state == UploadState.APPLIED, codes(upload)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            connection.close()

    csp = threading.Thread(target=report)
    csp.start()
    time.sleep(0.3)  # the feed has taken the rollout lock and is checking (or waiting in apply)
    dcc = threading.Thread(target=load)
    dcc.start()
    csp.join(30)
    dcc.join(30)
    assert not errors, errors
    assert status_of(launching, BOTH)[0] == "left"
    assert counter_mismatches([launching.pk]) == []
    assert outcomes(launching) == {"SL-N1": (0, 0)}  # the activation left with the hub
    assert load_waited == [True]  # the load really waited for the feed's lock
