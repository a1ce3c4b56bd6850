"""Big pilot lists go the background path (issue 7 with PL1, PL4, X3): a file over the size setting
comes back `received`, a Celery worker applies it in a later transaction, and a notice carries the
result. The worker locks the rollout again and refuses the file if the pilot has moved on meanwhile.

The estate is tests/rollouts/conftest.py: 01 split north, 02 one Supplier in both roles north,
03 gas only south, 04 import only south.
"""

from __future__ import annotations

import os
import time

import pytest
from celery import Celery

from rollouts.intake import pipeline
from rollouts.intake.pipeline import applied_here, process_upload_in_worker
from rollouts.models import (
    Batch,
    Hub,
    Notice,
    PilotAmendment,
    Rollout,
    RolloutHub,
    SmiVersionUpdate,
    Status,
    UploadState,
    VulnerableFlag,
)
from rollouts.services import smi
from rollouts.services.piloting import (
    upload_default_pilot_list,
    upload_preferred_pilot_list,
    upload_vulnerable_flags,
)
from rollouts.services.schedules import upload_safe_launch_schedule
from tests.conftest import celery_worker, database_url_for_children

from .test_piloting import BOTH_ROLES, SINGLE, SPLIT, csv_file, live  # noqa: F401 - fixture
from .test_progress import ago, feed
from .test_safe_launch_progress import launching  # noqa: F401 - fixture
from .test_schedules import AUTO, W1

BROKER = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")


def listed(rollout: Rollout) -> set[str]:
    return set(
        RolloutHub.objects.filter(rollout=rollout, in_default_pilot=True).values_list("hub__guid", flat=True)
    )


@pytest.mark.req("PL1")
def test_a_small_default_list_is_still_applied_at_once(live, csp_north, settings):  # noqa: F811
    settings.INTAKE_BACKGROUND_BYTES = 1024
    upload = upload_default_pilot_list(user=csp_north, rollout_id=live.pk, content=csv_file(SPLIT))
    assert upload.state == UploadState.APPLIED and listed(live) == {SPLIT}
    assert not Notice.objects.filter(kind__startswith="upload.").exists()  # the sender saw it on its page


@pytest.mark.req("PL1")
@pytest.mark.req("X3")
def test_a_big_default_list_waits_for_the_worker_and_then_applies_with_its_notices(
    live,  # noqa: F811
    csp_north,
    import_supplier,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.INTAKE_BACKGROUND_BYTES = 10  # every file is "big"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = upload_default_pilot_list(
            user=csp_north, rollout_id=live.pk, content=csv_file(SPLIT, BOTH_ROLES), name="north.csv"
        )
    assert upload.state == UploadState.RECEIVED and listed(live) == set()  # nothing applied yet
    (send_task,) = callbacks
    send_task()  # the commit sends the task; tests run tasks eagerly
    upload.refresh_from_db()
    assert upload.state == UploadState.APPLIED and listed(live) == {SPLIT, BOTH_ROLES}
    (result,) = Notice.objects.filter(organisation=csp_north.organisation, kind="upload.applied")
    assert result.subject == "Your file north.csv was applied" and "2 row(s)" in result.body
    assert Notice.objects.filter(
        organisation=import_supplier.organisation, kind="pilot.default_list"
    ).exists()


@pytest.mark.req("PL4")
@pytest.mark.req("X3")
def test_a_big_preferred_list_is_refused_by_the_worker_once_the_rollout_is_paused(
    live,  # noqa: F811
    import_supplier,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.INTAKE_BACKGROUND_BYTES = 10
    with django_capture_on_commit_callbacks(execute=False):
        upload = upload_preferred_pilot_list(
            user=import_supplier,
            rollout_id=live.pk,
            content=csv_file(f"{SPLIT},remove", header="guid,action"),
        )
    assert upload.state == UploadState.RECEIVED
    Rollout.objects.filter(pk=live.pk).update(status=Status.PAUSED)  # DCC paused it before the worker ran

    upload = process_upload_in_worker(  # what the worker runs
        upload.pk,
        "rollouts.services.piloting.preferred_pilot_list_handler",
        {"rollout_id": live.pk, "supplier_id": import_supplier.organisation_id},
    )

    assert upload.state == UploadState.REJECTED
    (error,) = upload.errors.all()
    assert error.code == "rollout_on_hold" and "paused" in error.message
    assert not PilotAmendment.objects.filter(rollout=live).exists()
    (result,) = Notice.objects.filter(organisation=import_supplier.organisation, kind="upload.rejected")
    assert "1 error(s) and changed nothing" in result.body


@pytest.mark.req("PL4")
def test_big_vulnerable_flags_wait_for_the_worker(
    import_supplier, estate, settings, django_capture_on_commit_callbacks
):
    settings.INTAKE_BACKGROUND_BYTES = 10
    content = csv_file(f"{SPLIT},yes", f"{BOTH_ROLES},no", header="guid,vulnerable")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = upload_vulnerable_flags(user=import_supplier, content=content)
    assert upload.state == UploadState.RECEIVED and not VulnerableFlag.objects.exists()
    (send_task,) = callbacks
    send_task()
    upload.refresh_from_db()
    assert upload.state == UploadState.APPLIED
    assert dict(VulnerableFlag.objects.values_list("hub__guid", "vulnerable")) == {
        SPLIT: True,
        BOTH_ROLES: False,
    }


def _safe_launch_file():
    return csv_file(f"B1,{SPLIT},{W1[0]},{W1[1]}", header="batch,guid,window_start,window_end")


@pytest.mark.req("SL2")
def test_a_big_safe_launch_schedule_waits_for_the_worker_and_tells_the_suppliers(
    live,  # noqa: F811
    csp_north,
    import_supplier,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.INTAKE_BACKGROUND_BYTES = 10
    Rollout.objects.filter(pk=live.pk).update(auto_deploy_at=AUTO)  # test setup: the windows end before it
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = upload_safe_launch_schedule(user=csp_north, rollout_id=live.pk, content=_safe_launch_file())
    assert upload.state == UploadState.RECEIVED and not Batch.objects.filter(rollout=live).exists()
    (send_task,) = callbacks
    send_task()
    upload.refresh_from_db()
    assert upload.state == UploadState.APPLIED
    assert RolloutHub.objects.get(rollout=live, hub__guid=SPLIT).batch.name == "B1"
    assert Notice.objects.filter(
        organisation=import_supplier.organisation, kind="safe_launch.schedule"
    ).exists()


@pytest.mark.req("SL2")
@pytest.mark.req("X3")
@pytest.mark.parametrize(
    ("status", "code"), [(Status.SUSPENDED, "rollout_on_hold"), (Status.STOPPED, "deadline_passed")]
)
def test_a_big_safe_launch_schedule_is_refused_by_the_worker_when_the_rollout_no_longer_takes_it(
    live,  # noqa: F811
    csp_north,
    settings,
    django_capture_on_commit_callbacks,
    status,
    code,
):
    settings.INTAKE_BACKGROUND_BYTES = 10
    Rollout.objects.filter(pk=live.pk).update(auto_deploy_at=AUTO)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = upload_safe_launch_schedule(user=csp_north, rollout_id=live.pk, content=_safe_launch_file())
    Rollout.objects.filter(pk=live.pk).update(status=status)  # DCC acted before the worker ran
    (send_task,) = callbacks
    send_task()
    upload.refresh_from_db()
    assert upload.state == UploadState.REJECTED
    assert list(upload.errors.values_list("code", flat=True)) == [code]
    assert not Batch.objects.filter(rollout=live).exists()


@pytest.mark.req("PL1")
def test_system_jobs_apply_big_files_at_once(live, csp_north, settings):  # noqa: F811
    settings.INTAKE_BACKGROUND_BYTES = 10
    with applied_here():  # seed_demo, simulate_network and the benchmarks go on with the result
        upload = upload_default_pilot_list(user=csp_north, rollout_id=live.pk, content=csv_file(SPLIT))
    assert upload.state == UploadState.APPLIED and listed(live) == {SPLIT}
    upload = upload_default_pilot_list(user=csp_north, rollout_id=live.pk, content=csv_file(BOTH_ROLES))
    assert upload.state == UploadState.RECEIVED  # outside the block, the worker's path again


# -- a real worker --------------------------------------------------------------------------------------


@pytest.fixture
def broker_app():
    """This process sends tasks to Redis instead of running them (settings make it eager without a broker)."""
    from chfw_portal.celery import app

    saved = (app.conf.task_always_eager, app.conf.broker_url)
    app.conf.task_always_eager, app.conf.broker_url = False, BROKER
    Celery(broker=BROKER).control.purge()  # tasks left by an earlier, interrupted run
    try:
        yield app
    finally:
        app.conf.task_always_eager, app.conf.broker_url = saved


def finished(upload) -> bool:
    upload.refresh_from_db()
    return upload.state in (UploadState.APPLIED, UploadState.REJECTED)


def wait_for_worker(worker, done, failure: str, seconds: float = 90) -> None:
    """Poll until `done()`; after `seconds`, stop the worker and fail with `failure` and its output."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not done():
        worker.terminate()
        pytest.fail(f"{failure}:\n{worker.communicate(timeout=10)[0]}")


@pytest.mark.worker
@pytest.mark.req("PL1")
@pytest.mark.django_db(transaction=True)
def test_a_big_default_list_is_applied_by_a_worker_in_another_process(
    live,  # noqa: F811
    csp_north,
    csp_south,
    broker_app,
    settings,
    tmp_path,
    monkeypatch,
):
    settings.INTAKE_BACKGROUND_BYTES = 10
    here = []
    monkeypatch.setattr(pipeline, "process_upload", lambda *args: here.append(args))  # never in this process
    env = {"DATABASE_URL": database_url_for_children()}
    with celery_worker(tmp_path, broker=BROKER, env=env) as worker:
        upload = upload_default_pilot_list(user=csp_south, rollout_id=live.pk, content=csv_file(SINGLE))
        assert upload.state == UploadState.RECEIVED  # this process only sent the task
        wait_for_worker(worker, lambda: finished(upload), "the worker did not finish the upload")
    assert upload.state == UploadState.APPLIED
    assert listed(live) == {SINGLE}
    assert Notice.objects.filter(organisation=csp_south.organisation, kind="upload.applied").count() == 1
    assert here == []  # applied in the worker's process, not in this one


@pytest.mark.worker
@pytest.mark.req("U3")
@pytest.mark.django_db(transaction=True)
def test_a_feeds_smi_versions_are_written_by_a_worker_in_another_process_after_it_commits(
    launching,  # noqa: F811
    csp_north,
    estate,
    broker_app,
    tmp_path,
    monkeypatch,
):
    here = []
    # Never in this process: only the worker writes the versions.
    monkeypatch.setattr(smi, "apply_smi_versions", lambda: here.append("applied here"))
    env = {"DATABASE_URL": database_url_for_children()}
    with celery_worker(tmp_path, broker=BROKER, env=env) as worker:
        upload = feed(csp_north, launching, (SPLIT, "activated", ago(2)))
        assert upload.state == UploadState.APPLIED  # a small feed: applied here; its SMI versions wait
        wait_for_worker(
            worker, lambda: not SmiVersionUpdate.objects.exists(), "the worker did not write the SMI versions"
        )
    assert Hub.objects.get(guid=SPLIT).firmware_version == estate["v2"]
    assert here == []
