"""Thin Celery wrappers over services: they take ids, fetch, call one service, and own their retries."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.db import OperationalError


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def send_invitation(user_id: int, invited_by_id: int | None) -> None:
    from rollouts.services.parties import send_invitation

    send_invitation(user_id, invited_by_id)


@shared_task
def ping() -> dict:
    """Which process ran this: /healthz-style proof that a worker is consuming the queue."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def email_notices(notice_ids: list[int]) -> int:
    from rollouts.services.notifications import email_notices

    return email_notices(notice_ids)


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def lapse_stale_proposals() -> int:
    from rollouts.services.schedule import lapse_stale_proposals

    return lapse_stale_proposals()


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def send_deadline_reminders() -> int:
    from rollouts.services.schedule import send_deadline_reminders

    return send_deadline_reminders()


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=10,  # the upload's own attempt count stops it first (PORTAL_UPLOAD_MAX_ATTEMPTS)
)
def process_upload_task(upload_id: int, handler_path: str, handler_kwargs: dict, dedupe: bool = True) -> dict:
    """Validate and apply one big upload in a worker; safe to run twice (a finished upload stops)."""
    from rollouts.intake.pipeline import process_upload_in_worker

    upload = process_upload_in_worker(upload_id, handler_path, handler_kwargs, dedupe)
    return {"upload_id": upload.pk, "state": upload.state, "pid": os.getpid()}


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def start_due_safe_launches() -> int:
    """L5: the System starts safe launch where the pilot window has ended after A06."""
    from rollouts.services.progress import start_due_safe_launches

    return start_due_safe_launches()


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def revert_passed_instructions() -> int:
    """I3: instructed times that passed during a pause or suspension revert to the automatic time."""
    from rollouts.services.incidents import revert_passed_instructions

    return revert_passed_instructions()


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def apply_smi_versions() -> int:
    """U3: the SMI versions that status feeds confirmed, written to the hubs (queued when a feed commits,
    and every minute for any a lost task left)."""
    from rollouts.services.smi import apply_smi_versions

    return apply_smi_versions()


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def send_unsent_invitations() -> int:
    """The invitation e-mails whose task was lost (every 5 minutes)."""
    from rollouts.services.parties import send_unsent_invitations

    return send_unsent_invitations()


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def queue_waiting_uploads() -> int:
    """Background uploads whose task never reached the broker, sent again (every minute)."""
    from rollouts.intake.pipeline import queue_waiting_uploads

    return queue_waiting_uploads()


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def email_unsent_notices() -> int:
    """The e-mails of notices whose task was lost (every 5 minutes)."""
    from rollouts.services.notifications import email_unsent_notices

    return email_unsent_notices()
