"""Background intake (issue 7): big uploads run in a Celery worker, idempotent, with live progress."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

import pytest
from celery import Celery
from django.core.files.base import ContentFile
from django.db import connection
from django.urls import reverse

from rollouts import tasks
from rollouts.intake.pipeline import (
    Layout,
    check_guids_visible,
    process_upload_in_worker,
    queue_waiting_uploads,
    receive_upload,
    set_progress,
    submit_upload,
)
from rollouts.models import AuditEvent, Notice, Organisation, Upload, UploadKind, UploadState
from tests.rollouts.test_inventory_load import csv as inventory_csv
from tests.rollouts.test_inventory_load import smi  # noqa: F401 - fixture

from .conftest import celery_worker, database_url_for_children, sign_in

ROOT = Path(__file__).resolve().parent.parent
BROKER = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
HANDLER = "tests.test_background_intake.GuidListHandler"
CRASHING = "tests.test_background_intake.CrashingHandler"
OVERLAP = "tests.test_background_intake.OverlapHandler"


class GuidListHandler:
    """A GUID list checked against the uploader's hubs; `apply` records which process applied it."""

    layout = Layout(kind=UploadKind.VULNERABLE_FLAGS, columns={"guid": True, "vulnerable": False})

    def __init__(self, org_id: int, pause: float = 0.0):
        self.org = Organisation.objects.get(pk=org_id)
        self.pause = pause

    def check(self, staging, upload):
        check_guids_visible(staging, self.org)

    def apply(self, staging, upload):
        time.sleep(self.pause)
        return {"rows": staging.row_count, "pid": os.getpid()}


class CrashingHandler(GuidListHandler):
    """Kills the process that applies it, as an out-of-memory kill would."""

    def apply(self, staging, upload):
        os._exit(1)


def guid_file(n: int, start: int = 0x1000) -> bytes:
    return ("guid\n" + "".join(f"00DB12345678{i:04X}\n" for i in range(start, start + n))).encode()


@pytest.fixture
def volt(smi, import_supplier):  # noqa: F811
    """Alice's Supplier holds 600 hubs (00DB123456781000…), enough for a file over the threshold."""
    from rollouts.services.inventory import load_inventory

    smi["volt"].users.add(import_supplier)
    rows = [f"00DB12345678{i:04X},010A030B,0002012F,north,volt-energy,," for i in range(0x1000, 0x1000 + 600)]
    load_inventory(user=None, content=inventory_csv(*rows))
    return smi["volt"]


def receive(user, content: bytes, name: str = "list.csv") -> Upload:
    return receive_upload(
        user=user,
        organisation=user.organisation,
        kind=UploadKind.VULNERABLE_FLAGS,
        content=ContentFile(content, name=name),
    )


# -- in process (eager tasks) ------------------------------------------------------------------------


def test_a_small_file_is_processed_at_once(volt, import_supplier, settings):
    settings.INTAKE_BACKGROUND_BYTES = 1024
    upload = submit_upload(receive(import_supplier, guid_file(3)), HANDLER, {"org_id": volt.pk})
    assert upload.state == UploadState.APPLIED and upload.summary["rows"] == 3


def test_a_big_file_is_queued_after_commit(
    volt, import_supplier, settings, django_capture_on_commit_callbacks
):
    settings.INTAKE_BACKGROUND_BYTES = 1024
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        upload = submit_upload(receive(import_supplier, guid_file(200)), HANDLER, {"org_id": volt.pk})
    assert upload.state == UploadState.RECEIVED and len(callbacks) == 1  # nothing sent before commit
    callbacks[0]()  # the commit: the task runs (eagerly in tests)
    upload.refresh_from_db()
    assert upload.state == UploadState.APPLIED and upload.summary["rows"] == 200
    assert upload.queued_at is not None  # the broker had it: the beat job leaves it alone


def test_an_upload_that_crashed_its_worker_too_often_is_rejected_with_a_clear_reason(
    volt, import_supplier, settings
):
    settings.PORTAL_UPLOAD_MAX_ATTEMPTS = 3
    upload = receive(import_supplier, guid_file(5))
    Upload.objects.filter(pk=upload.pk).update(state=UploadState.VALIDATING, summary={"attempts": 3})
    upload = process_upload_in_worker(upload.pk, HANDLER, {"org_id": volt.pk})
    assert upload.state == UploadState.REJECTED
    (error,) = upload.errors.all()
    assert error.code == "processing_failed" and "failed 3 times" in error.message
    assert "send it again" in error.message
    assert AuditEvent.objects.filter(action="upload.rejected", object_id=str(upload.pk)).count() == 1
    (notice,) = Notice.objects.filter(organisation=volt, kind="upload.rejected")  # the sender may have left
    assert "rejected with 1 error(s) and changed nothing" in notice.body
    assert process_upload_in_worker(upload.pk, HANDLER, {"org_id": volt.pk}).errors.count() == 1  # stays
    assert Notice.objects.filter(organisation=volt, kind="upload.rejected").count() == 1  # told once


def broker_down(*args, **kwargs):
    raise ConnectionRefusedError("the broker is down")


def test_a_big_upload_whose_task_cannot_be_sent_waits_and_the_beat_job_sends_it(
    volt, import_supplier, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """The broker is down when the upload commits: the sender gets the upload back, `received`, not an
    error; the beat job leaves a new upload a minute for its own send, sends nothing while the broker is
    still down, then sends it once, and the worker applies it."""
    settings.INTAKE_BACKGROUND_BYTES = 1024
    monkeypatch.setattr(tasks.process_upload_task, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        upload = submit_upload(receive(import_supplier, guid_file(200)), HANDLER, {"org_id": volt.pk})
    upload.refresh_from_db()
    assert upload.state == UploadState.RECEIVED and upload.queued_at is None
    assert upload.job == {"handler": HANDLER, "kwargs": {"org_id": volt.pk}, "dedupe": True}
    received = upload.received_at
    assert queue_waiting_uploads(now=received + dt.timedelta(seconds=59)) == 0  # its own send may still come
    assert queue_waiting_uploads(now=received + dt.timedelta(minutes=2)) == 0  # still down: tries next run
    monkeypatch.undo()
    assert queue_waiting_uploads(now=received + dt.timedelta(minutes=2)) == 1  # the task runs (eagerly here)
    upload.refresh_from_db()
    assert upload.state == UploadState.APPLIED and upload.summary["rows"] == 200
    assert upload.queued_at is not None
    assert queue_waiting_uploads(now=received + dt.timedelta(minutes=3)) == 0  # sent once


def test_the_beat_job_leaves_an_upload_whose_task_the_broker_has(
    volt, import_supplier, settings, monkeypatch, django_capture_on_commit_callbacks
):
    """Queued behind other work, not lost: sending it again would only make a second delivery."""
    settings.INTAKE_BACKGROUND_BYTES = 1024
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.process_upload_task, "delay", lambda *args: sent.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        upload = submit_upload(receive(import_supplier, guid_file(200)), HANDLER, {"org_id": volt.pk})
    upload.refresh_from_db()
    assert upload.state == UploadState.RECEIVED and upload.queued_at is not None
    assert sent == [(upload.pk, HANDLER, {"org_id": volt.pk}, True)]
    assert queue_waiting_uploads(now=upload.received_at + dt.timedelta(minutes=10)) == 0
    assert len(sent) == 1


class OverlapHandler(GuidListHandler):
    """Holds the first apply open until the test releases it; records every apply."""

    applying = threading.Event()
    release = threading.Event()
    applies: list[int] = []

    def apply(self, staging, upload):
        OverlapHandler.applies.append(upload.pk)
        if len(OverlapHandler.applies) == 1:
            OverlapHandler.applying.set()
            OverlapHandler.release.wait(10)
        return super().apply(staging, upload)


@pytest.mark.req("X3")
@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_while_a_worker_processes_the_upload_neither_counts_nor_applies_it(
    volt, import_supplier
):
    """A task sent twice (the beat job and a late send) or redelivered: while the first worker is inside
    the apply, the second delivery returns at once; the file is applied once, with one audit event."""
    OverlapHandler.applying.clear()
    OverlapHandler.release.clear()
    OverlapHandler.applies.clear()
    upload = receive(import_supplier, guid_file(5))
    errors: list[BaseException] = []

    def first() -> None:
        try:
            process_upload_in_worker(upload.pk, OVERLAP, {"org_id": volt.pk})
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert OverlapHandler.applying.wait(10)  # the first delivery is applying the file now
        second = process_upload_in_worker(upload.pk, OVERLAP, {"org_id": volt.pk})
        assert second.state == UploadState.VALIDATING  # left to the first
    finally:
        OverlapHandler.release.set()
        thread.join(30)
    assert not errors, errors
    upload.refresh_from_db()
    assert upload.state == UploadState.APPLIED
    assert OverlapHandler.applies == [upload.pk]
    applied = AuditEvent.objects.filter(action__startswith="upload.applied", object_id=str(upload.pk))
    assert applied.count() == 1


# -- the progress partial -----------------------------------------------------------------------------


def test_the_status_partial_shows_the_progress_of_a_running_upload(client, volt, import_supplier):
    upload = receive(import_supplier, guid_file(200))
    Upload.objects.filter(pk=upload.pk).update(state=UploadState.VALIDATING)
    set_progress(upload.pk, "reading", 12_000, 3)
    sign_in(client, import_supplier)
    url = reverse("ssi:upload-detail", args=[upload.pk])
    partial = client.get(url, headers={"HX-Request": "true"}).text
    assert "<html" not in partial and 'id="upload-status"' in partial
    assert f'hx-get="{url}"' in partial and 'hx-trigger="every 1s"' in partial
    assert "Step 1 of 3: reading rows" in partial and "12,000 rows read, 3 errors so far" in partial
    assert '<progress id="upload-progress-' in partial and 'value="1"' in partial
    page = client.get(url).text
    assert "<html" in page and "12,000 rows read" in page  # the user may leave and come back


def test_the_partial_swaps_to_the_result_and_stops_polling(client, volt, import_supplier):
    sign_in(client, import_supplier)
    applied = submit_upload(receive(import_supplier, guid_file(2)), HANDLER, {"org_id": volt.pk})
    partial = client.get(reverse("ssi:upload-detail", args=[applied.pk]), headers={"HX-Request": "true"}).text
    assert "hx-trigger" not in partial and "Applied" in partial and "The file was applied" in partial
    rejected = submit_upload(receive(import_supplier, guid_file(2, 0x9000)), HANDLER, {"org_id": volt.pk})
    partial = client.get(
        reverse("ssi:upload-detail", args=[rejected.pk]), headers={"HX-Request": "true"}
    ).text
    assert "hx-trigger" not in partial and "The file was not accepted: 2 errors" in partial


# -- a real worker on Redis ---------------------------------------------------------------------------


@pytest.fixture
def worker(tmp_path):
    """A prefork worker with one child: a child that dies is replaced, and its task redelivered."""
    env = {"DATABASE_URL": database_url_for_children()}
    Celery(broker=BROKER).control.purge()  # tasks left by an earlier, interrupted run
    with celery_worker(tmp_path, broker=BROKER, pool="prefork", env=env) as proc:
        yield proc


def send(task_args: list, worker) -> dict:
    client = Celery(broker=BROKER, backend=BROKER)
    client.conf.task_always_eager = False
    result = client.send_task("rollouts.tasks.process_upload_task", args=task_args)
    try:
        return result.get(timeout=90, disable_sync_subtasks=False)  # the test is not a task
    except Exception:
        worker.terminate()
        pytest.fail(f"no answer from the worker:\n{worker.communicate(timeout=10)[0]}")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_task_runs_in_the_worker_and_a_redelivery_changes_nothing(worker, volt, import_supplier):
    upload = receive(import_supplier, guid_file(600))
    args = [upload.pk, HANDLER, {"org_id": volt.pk}]
    first = send(args, worker)
    upload.refresh_from_db()
    assert first["state"] == UploadState.APPLIED and upload.state == UploadState.APPLIED
    assert upload.summary["pid"] == first["pid"] != os.getpid()  # applied in the worker, not here
    assert upload.summary["rows"] == 600
    applied = (upload.finished_at, upload.summary)
    second = send(args, worker)  # as if Redis redelivered it
    upload.refresh_from_db()
    assert second["state"] == UploadState.APPLIED and second["pid"] == first["pid"]
    assert (upload.finished_at, upload.summary) == applied  # the second delivery stopped at once
    assert (
        AuditEvent.objects.filter(object_id=str(upload.pk), action__startswith="upload.applied").count() == 1
    )


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_file_that_kills_its_worker_is_rejected_after_the_attempt_limit(worker, volt, import_supplier):
    upload = receive(import_supplier, guid_file(10))
    answer = send([upload.pk, CRASHING, {"org_id": volt.pk}], worker)  # each crash: the task comes back
    upload.refresh_from_db()
    assert answer["state"] == UploadState.REJECTED and upload.state == UploadState.REJECTED
    assert upload.summary["attempts"] == 3  # three started attempts, each one killed its process
    assert [e.code for e in upload.errors.all()] == ["processing_failed"]
