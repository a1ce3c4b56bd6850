"""Rollouts: one firmware version deployed to the hubs of one device model (sections N, L, T, B4)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from ..guid import GUID_COLLATION, GuidField

UK = ZoneInfo("Europe/London")


class Stage(models.TextChoices):
    NOTIFICATION = "NOTIFICATION", "Notification"
    PILOTING = "PILOTING", "Piloting"
    SAFE_LAUNCH = "SAFE_LAUNCH", "Safe launch"
    CLOSURE = "CLOSURE", "Closure"


class Status(models.TextChoices):
    DRAFT = "DRAFT", "Draft"
    ACTIVE = "ACTIVE", "Active"
    PAUSED = "PAUSED", "Paused"
    SUSPENDED = "SUSPENDED", "Suspended"
    STOPPED = "STOPPED", "Stopped"
    REVOKED = "REVOKED", "Revoked"
    CLOSED = "CLOSED", "Closed"
    SUPERSEDED = "SUPERSEDED", "Superseded"


TERMINAL = frozenset({Status.REVOKED, Status.CLOSED, Status.SUPERSEDED})


class ReleaseType(models.TextChoices):
    SEC_RELEASE = "sec_release", "SEC release"
    PLANNED = "planned_maintenance", "Planned maintenance"
    UNPLANNED = "unplanned_maintenance", "Unplanned maintenance"


class Impact(models.TextChoices):
    FUNCTIONAL = "functional", "Functional"
    OPERATIONAL = "operational", "Operational"  # no pilot (N1)
    SECURITY = "security", "Security"  # no pilot (N1)


class Level(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


def uk_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0, 0), tzinfo=UK)


def automatic_deployment_time(published_at: dt.datetime) -> dt.datetime:
    """T1: 00:00 UK on the publication date + 6 calendar months (31 Aug -> end of Feb)."""
    day = timezone.localtime(published_at, UK).date() + relativedelta(months=6)  # clamps to month end
    return uk_midnight(day)


def months_after(moment: dt.datetime, months: int) -> dt.datetime:
    """Calendar months later (negative: earlier), on the UK wall clock, clamped to month end."""
    local = timezone.localtime(moment, UK).replace(tzinfo=None) + relativedelta(months=months)
    return local.replace(tzinfo=UK)


def months_before(moment: dt.datetime, months: int) -> dt.datetime:
    return months_after(moment, -months)


class Rollout(models.Model):
    """N1: what DCC initiates. Stage and status change only through rollouts.transitions."""

    reference = models.CharField(max_length=20, unique=True)
    title = models.CharField(max_length=200)
    device_model = models.ForeignKey(
        "rollouts.DeviceModel", on_delete=models.PROTECT, related_name="rollouts"
    )
    target_version = models.ForeignKey("rollouts.FirmwareVersion", on_delete=models.PROTECT, related_name="+")
    replaced_versions = models.ManyToManyField(
        "rollouts.FirmwareVersion", related_name="replaced_by_rollouts"
    )
    release_note_url = models.URLField()
    severity = models.CharField(max_length=10, choices=Level.choices)
    priority = models.CharField(max_length=10, choices=Level.choices)
    release_type = models.CharField(max_length=30, choices=ReleaseType.choices)
    impact = models.CharField(max_length=12, choices=Impact.choices)

    stage = models.CharField(max_length=12, choices=Stage.choices, default=Stage.NOTIFICATION)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)

    # Timeline (section T), stored in UTC. Fixed at publication unless DCC sets another with a reason.
    published_at = models.DateTimeField(null=True, blank=True)
    auto_deploy_at = models.DateTimeField(null=True, blank=True)
    auto_deploy_override_reason = models.TextField(blank=True)  # shown to Suppliers (T1)
    contribution_deadline = models.DateTimeField(null=True, blank=True)  # T3, editable
    pilot_start = models.DateTimeField(null=True, blank=True)  # T4
    pilot_end = models.DateTimeField(null=True, blank=True)  # T4: at most 6 months after pilot_start
    default_pilot_due = models.DateTimeField(null=True, blank=True)  # T4: CSP
    preferred_pilot_due = models.DateTimeField(null=True, blank=True)  # T4: Supplier
    schedule_answers_due = models.DateTimeField(null=True, blank=True)  # T4: CSP

    pilot_max = models.PositiveIntegerField(default=300)  # PL1
    contribution_minimum = models.PositiveIntegerField(default=0)  # PL7: pilot hubs per Supplier
    contribution_threshold = models.PositiveIntegerField(default=0)  # PL7: eligible hubs that oblige it

    pilot_outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)  # A06/A07
    pilot_commentary = models.TextField(blank=True)
    safe_launch_outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)  # A09/A10
    safe_launch_commentary = models.TextField(blank=True)
    superseded_by = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    eligible_count = models.PositiveIntegerField(default=0)
    # B1: the System pauses the rollout when the failed share of a batch (or of the pilot) passes this,
    # once at least `failure_threshold_min_reported` hubs of it have reported.
    failure_threshold_pct = models.DecimalField(max_digits=5, decimal_places=2, default=5)
    failure_threshold_min_reported = models.PositiveIntegerField(default=20)

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(pilot_end__isnull=True)
                | Q(pilot_start__isnull=True)
                | Q(pilot_end__gt=models.F("pilot_start")),
                name="rollout_pilot_window_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reference} {self.title}"

    @property
    def has_pilot(self) -> bool:
        """N1: operational and security releases have no pilot."""
        return self.impact == Impact.FUNCTIONAL

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def instruction_deadline(self) -> dt.datetime | None:
        """T2: the automatic time less one calendar month; instructions received up to it count."""
        return months_before(self.auto_deploy_at, 1) if self.auto_deploy_at else None

    def describe_state(self) -> str:
        return f"{self.get_stage_display().lower()}, {self.get_status_display().lower()}"


class ProposalState(models.TextChoices):
    PENDING = "pending", "Awaiting approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    LAPSED = "lapsed", "Lapsed"


class Proposal(models.Model):
    """B4: a four-eyes decision, proposed by one DCC user and approved or rejected by another."""

    rollout = models.ForeignKey(Rollout, on_delete=models.PROTECT, related_name="proposals")
    move = models.CharField(max_length=40)
    reason = models.TextField(blank=True)
    # The rollout's state when proposed: a proposal lapses if the rollout changes state first.
    at_stage = models.CharField(max_length=12, choices=Stage.choices)
    at_status = models.CharField(max_length=12, choices=Status.choices)
    details = models.JSONField(default=dict, blank=True)  # e.g. what a publication will supersede
    state = models.CharField(max_length=10, choices=ProposalState.choices, default=ProposalState.PENDING)
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    proposed_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["-proposed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "move"], condition=Q(state="pending"), name="proposal_one_pending_per_move"
            ),
            models.CheckConstraint(
                condition=~Q(decided_by=models.F("proposed_by")), name="proposal_four_eyes"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.move.replace('_', ' ')} of {self.rollout.reference} ({self.get_state_display().lower()})"
        )


class Group(models.TextChoices):
    PILOT = "pilot", "Pilot"
    SAFE_LAUNCH = "safe_launch", "Safe launch"


class DeploymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SCHEDULED = "scheduled", "Scheduled"
    DISTRIBUTED = "distributed", "Distributed"
    ACTIVATED = "activated", "Activated"
    FAILED = "failed", "Failed"
    LEFT = "left", "Left"


class ActivationSource(models.TextChoices):
    AUTOMATIC = "automatic", "Automatic"
    INSTRUCTION = "instruction", "Instruction"
    PILOT_WINDOW = "pilot_window", "Pilot window"


class RolloutHub(models.Model):
    """One eligible hub of one rollout (N2), with its Suppliers and region copied at publication.

    The table takes most bulk writes: fillfactor 45 (migration 0015), so one statement can rewrite every
    row of a page as a HOT update, and no index on often-changed columns such as `status`; dashboards
    read RolloutCounter instead.
    """

    # At publication this table takes 1-10 million rows in one INSERT … SELECT. Hub and Supplier ids
    # are copied from rollouts_hub (whose rows, like organisations, are never deleted), so they carry
    # no foreign-key constraint: deferred FK checks cost 22 µs a row at commit (4.4 s per 200,000 hubs
    # measured), more than the insert itself. Nor do `rollout` and `batch` (migration 0018): the rollout's
    # check alone was 5.7 s of a 12.1 s insert of 1,025,000 rows (bench/lifecycle.py), and every batch
    # assignment queued one. A published rollout is never deleted and the ORM PROTECTs both; the one
    # DELETE of batches (a replaced default schedule) skips any batch that still holds a hub. The unique
    # (rollout, hub) index serves lookups by rollout, so neither FK gets an index of its own.
    rollout = models.ForeignKey(
        Rollout, on_delete=models.PROTECT, related_name="hubs", db_index=False, db_constraint=False
    )
    hub = models.ForeignKey(
        "rollouts.Hub",
        on_delete=models.DO_NOTHING,
        related_name="rollout_rows",
        db_index=False,
        db_constraint=False,
    )
    import_supplier = models.ForeignKey(
        "rollouts.Organisation",
        on_delete=models.DO_NOTHING,
        null=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    gas_supplier = models.ForeignKey(
        "rollouts.Organisation",
        on_delete=models.DO_NOTHING,
        null=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    # The hub's GUID, copied at publication (a GUID never changes): a status feed finds the rows of its
    # live batches by it in one hash join, instead of two index lookups per record (rollouts.services.progress).
    guid = GuidField(db_collation=GUID_COLLATION)
    region = models.CharField(max_length=10)
    group = models.CharField(max_length=12, choices=Group.choices, default=Group.SAFE_LAUNCH)
    status = models.CharField(
        max_length=12, choices=DeploymentStatus.choices, default=DeploymentStatus.PENDING
    )
    status_at = models.DateTimeField(default=timezone.now)
    failure_reason = models.TextField(blank=True)
    planned_activation_at = models.DateTimeField(null=True, blank=True)
    activation_source = models.CharField(
        max_length=12, choices=ActivationSource.choices, default=ActivationSource.AUTOMATIC
    )
    supplier_changed = models.BooleanField(default=False)  # E6: marked on inventory change, completed later
    batch = models.ForeignKey(
        "rollouts.Batch",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    in_default_pilot = models.BooleanField(
        default=False, db_default=False
    )  # PL1: on its CSP's Default Pilot List
    pilot_reason = models.CharField(
        max_length=20, blank=True, db_default=""
    )  # PilotReason when group is pilot

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rollout", "hub"], name="rollout_hub_once"),
            models.CheckConstraint(condition=~Q(guid=""), name="rollouthub_guid_given"),
        ]
        indexes = [
            models.Index(fields=["rollout", "import_supplier"], name="rollouthub_import"),
            models.Index(fields=["rollout", "gas_supplier"], name="rollouthub_gas"),
            models.Index(fields=["hub"], name="rollouthub_hub"),
            models.Index(fields=["batch"], name="rollouthub_batch", condition=Q(batch__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.hub} in {self.rollout.reference}"


class RolloutCounter(models.Model):
    """U1: hubs per (rollout, organisation, group, deployment status), maintained, never scanned.

    Each hub counts under each of its Suppliers (once if one organisation holds both roles) and
    once under its CSP, so totals per CSP never double-count split hubs.
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="counters")
    organisation = models.ForeignKey("rollouts.Organisation", on_delete=models.PROTECT, related_name="+")
    group = models.CharField(max_length=12, choices=Group.choices)
    status = models.CharField(max_length=12, choices=DeploymentStatus.choices)
    hubs = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "organisation", "group", "status"], name="counter_key"
            ),
            models.CheckConstraint(condition=Q(hubs__gte=0), name="counter_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.rollout_id}/{self.organisation_id}/{self.group}/{self.status}: {self.hubs}"


class Notice(models.Model):
    """A notice on an organisation's dashboard (and by email). Never names a Supplier to another (P4)."""

    organisation = models.ForeignKey(
        "rollouts.Organisation", on_delete=models.PROTECT, related_name="notices"
    )
    rollout = models.ForeignKey(
        Rollout, on_delete=models.PROTECT, null=True, blank=True, related_name="notices"
    )
    kind = models.CharField(max_length=40)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organisation", "-created_at"], name="notice_org_recent"),
            # The few notices whose e-mail is not sent yet, for the beat job that sends any a lost task left.
            models.Index(
                fields=["created_at"], name="notice_not_emailed", condition=Q(emailed_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return self.subject


class NoticeRead(models.Model):
    notice = models.ForeignKey(Notice, on_delete=models.CASCADE, related_name="reads")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notice", "user"], name="notice_read_once")]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.notice_id}"
