"""Kept files (X2): every file exchanged, with its SHA-256, sender and time, and its errors (X3)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class UploadKind(models.TextChoices):
    INVENTORY = "inventory", "Inventory load (SMI)"
    DEFAULT_PILOT_LIST = "default_pilot_list", "Default Pilot List (A02)"
    DEFAULT_PILOT_SCHEDULE = "default_pilot_schedule", "Default Pilot Schedule (A03)"
    PREFERRED_PILOT_LIST = "preferred_pilot_list", "Preferred Pilot List (A04)"
    SAFE_LAUNCH_SCHEDULE = "safe_launch_schedule", "Safe Launch Schedule (A08)"
    INSTRUCTION = "instruction", "Deployment instruction"
    VULNERABLE_FLAGS = "vulnerable_flags", "Vulnerable premises flags"
    STATUS_FEED = "status_feed", "Device status feed"


class UploadState(models.TextChoices):
    RECEIVED = "received", "Received"
    VALIDATING = "validating", "Validating"
    REJECTED = "rejected", "Rejected"
    APPLIED = "applied", "Applied"


def kept_file_name(instance: Upload, filename: str) -> str:
    # A generated name: the sender's file name is kept in the row, never used as a path.
    return f"uploads/{timezone.now():%Y/%m}/{uuid.uuid4().hex}"


class Upload(models.Model):
    kind = models.CharField(max_length=30, choices=UploadKind.choices)
    organisation = models.ForeignKey(
        "rollouts.Organisation", on_delete=models.PROTECT, related_name="uploads"
    )
    # The rollout a list belongs to; None for the inventory and a Supplier's own flags.
    rollout = models.ForeignKey(
        "rollouts.Rollout", on_delete=models.PROTECT, null=True, blank=True, related_name="uploads"
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    name = models.CharField("file name as sent", max_length=255)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    file = models.FileField(upload_to=kept_file_name, max_length=200)
    state = models.CharField(max_length=12, choices=UploadState.choices, default=UploadState.RECEIVED)
    row_count = models.IntegerField(null=True, blank=True)
    error_count = models.IntegerField(default=0)
    summary = models.JSONField(default=dict, blank=True)  # what applying changed (counts)
    received_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A big file is applied by a worker (rollouts.intake.pipeline.submit_upload): its task (handler path,
    # keyword arguments, dedupe), and when that task reached the broker. A task that never did (the broker
    # was down at the commit) is sent again by the beat job `queue_waiting_uploads`.
    job = models.JSONField(null=True, blank=True, editable=False)
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["organisation", "kind", "state"], name="upload_org_kind_state"),
            models.Index(
                fields=["received_at"],
                name="upload_not_queued",
                condition=models.Q(state="received", job__isnull=False, queued_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name} ({self.get_state_display().lower()})"


class UploadError(models.Model):
    """One failure of a rejected upload: (row, column, value as given, reason code, message)."""

    # Written in bulk by the pipeline (up to a rejected file's every row, in the upload's own transaction):
    # no database FK constraint, whose deferred check cost ~0.4 s per 50,000 errors at commit; the ORM
    # still cascades a deletion of the upload.
    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="errors", db_constraint=False)
    row = models.IntegerField(null=True, blank=True)
    column = models.CharField(max_length=100, blank=True)
    value = models.TextField(blank=True)
    code = models.CharField(max_length=40)
    message = models.TextField()

    class Meta:
        ordering = ["upload", "row", "id"]

    def __str__(self) -> str:
        return f"row {self.row} {self.column}: {self.code}"
