"""Piloting, safe launch batches, scheduling constraints and Supplier instructions (PL, SL, E, T5)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .rollouts import Group


class Batch(models.Model):
    """A CSP's batch of hubs with one distribution window (A03 pilot, A08 safe launch); DCC may hold it (SL3)."""

    rollout = models.ForeignKey("rollouts.Rollout", on_delete=models.PROTECT, related_name="batches")
    region = models.CharField(max_length=10)
    group = models.CharField(max_length=12, choices=Group.choices)
    name = models.CharField(max_length=100)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    held = models.BooleanField(default=False)
    retry_of = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )  # B2
    upload = models.ForeignKey(
        "rollouts.Upload", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # B1's figures, maintained (U1's rule): the batch's hubs now `activated` and now `failed`, moved by the
    # exact deltas of every path that changes a hub's status or batch (rollouts.services.counters), so a
    # feed checks its threshold without counting the batch's hubs; `counter_mismatches` recounts them.
    # db_default: the schedule upload inserts batches in SQL.
    activated_hubs = models.PositiveIntegerField(db_default=0, editable=False)
    failed_hubs = models.PositiveIntegerField(db_default=0, editable=False)
    # Its hubs (rollout rows that point at it, whatever their status), maintained the same way: a status
    # feed reads the rows of its live batches whole when they are few next to its records (progress.py).
    hubs = models.PositiveIntegerField(db_default=0, editable=False)

    class Meta:
        ordering = ["rollout", "group", "region", "window_start", "name"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "region", "group", "name"], name="batch_name_unique"),
            models.CheckConstraint(
                condition=Q(window_end__gt=models.F("window_start")), name="batch_window_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_group_display().lower()}, {self.region})"


class PilotReason(models.TextChoices):
    """Why a hub is in the effective pilot group (FILE_FORMATS: Effective pilot group `why`)."""

    DEFAULT = "default", "Default pilot list"
    ADDED = "added", "Added by every Supplier"
    FRIENDLY = "friendly", "Friendly customer (DCC)"
    PRODUCTION_PROVING = "production_proving", "Production proving (DCC)"
    SELECTED_ON_BEHALF = "selected_on_behalf", "Selected for a Supplier's shortfall"


class PilotAction(models.TextChoices):
    ADD = "add", "Add"
    REMOVE = "remove", "Remove"


class PilotAmendment(models.Model):
    """PL4, PL6, PL7, PL8: one party's add or remove of one hub for a rollout's pilot.

    A Supplier's removal is a standing veto; its addition counts when every Supplier of the hub
    added it. `reason` is blank for a Supplier's own amendment; DCC's additions (supplier = the DCC
    organisation) say `friendly` or `production_proving`; the System's shortfall selection for a
    Supplier (PL7) says `selected_on_behalf`.
    """

    rollout = models.ForeignKey("rollouts.Rollout", on_delete=models.PROTECT, related_name="+")
    hub = models.ForeignKey("rollouts.Hub", on_delete=models.PROTECT, related_name="+")
    supplier = models.ForeignKey("rollouts.Organisation", on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=6, choices=PilotAction.choices)
    reason = models.CharField(max_length=20, choices=PilotReason.choices, blank=True)
    upload = models.ForeignKey(
        "rollouts.Upload", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rollout", "hub", "supplier"], name="amendment_once")]

    def __str__(self) -> str:
        return f"{self.supplier_id} {self.action} {self.hub_id}"


class VulnerableFlag(models.Model):
    """A Supplier's own flag on a premises (PL4): visible only to that Supplier and DCC."""

    hub = models.ForeignKey("rollouts.Hub", on_delete=models.PROTECT, related_name="+")
    supplier = models.ForeignKey("rollouts.Organisation", on_delete=models.PROTECT, related_name="+")
    vulnerable = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hub", "supplier"], name="vulnerable_flag_once")]

    def __str__(self) -> str:
        return f"{self.hub_id}/{self.supplier_id}: {self.vulnerable}"


class ConstraintKind(models.TextChoices):
    BLACKOUT_DATES = "blackout_dates", "Blackout dates"
    TIME_BAND = "time_band", "Time-of-day band"
    WITHIN_BATCH = "within_batch", "Only within a given default batch"


class SchedulingConstraint(models.Model):
    """PL5: a constraint DCC declares valid for a rollout's preferred schedules."""

    rollout = models.ForeignKey("rollouts.Rollout", on_delete=models.PROTECT, related_name="constraints")
    kind = models.CharField(max_length=20, choices=ConstraintKind.choices)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rollout", "kind"], name="constraint_kind_once")]

    def __str__(self) -> str:
        return self.get_kind_display()


class RequestState(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class ScheduleRequest(models.Model):
    """A05: a Supplier asks for a declared constraint on a set of its pilot hubs; the CSP answers."""

    rollout = models.ForeignKey("rollouts.Rollout", on_delete=models.PROTECT, related_name="+")
    supplier = models.ForeignKey("rollouts.Organisation", on_delete=models.PROTECT, related_name="+")
    region = models.CharField(max_length=10)  # the answering CSP's region
    constraint = models.ForeignKey(SchedulingConstraint, on_delete=models.PROTECT, related_name="requests")
    value = models.JSONField()  # typed by constraint kind: dates, a band, a batch name
    hubs = models.ManyToManyField("rollouts.Hub", related_name="+")
    state = models.CharField(max_length=10, choices=RequestState.choices, default=RequestState.PENDING)
    answer_reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(default=timezone.now)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    answered_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.constraint} request {self.pk} ({self.state})"


class InstructionKind(models.TextChoices):
    FILE = "file", "File"
    SELECTION = "selection", "Selection"
    ALL_ELIGIBLE = "all_eligible", "All my eligible hubs"


class Instruction(models.Model):
    """E1-E5: a Supplier's instruction to activate some of its hubs earlier; the receipt (E5)."""

    rollout = models.ForeignKey("rollouts.Rollout", on_delete=models.PROTECT, related_name="instructions")
    supplier = models.ForeignKey("rollouts.Organisation", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=14, choices=InstructionKind.choices)
    default_deploy_at = models.DateTimeField(null=True, blank=True)
    upload = models.ForeignKey(
        "rollouts.Upload", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    hub_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Instruction {self.pk} ({self.hub_count} hubs)"


class HubInstruction(models.Model):
    """The standing instruction of one Supplier for one hub of one rollout (E1-E3). A new instruction
    replaces it; a withdrawal, a stop (I3) or a Supplier change (E6) removes it."""

    # Written 50,000 to 1,000,000 rows at a time under the rollout lock. The ids come from the locked
    # rollout, the caller's organisation, joins on rollout hubs and the Instruction created in the same
    # transaction, so no database FK constraint (deferred checks cost 15 s per million rows at commit,
    # bench/instructions.py); PROTECT still applies through the ORM. One index: the primary key
    # (rollout, hub, Supplier), which also serves lookups by rollout (a bare rollout index lured replan
    # into scanning every row). No surrogate id (migration 0015): its sequence and index were a third of
    # a 1,000,000-hub insert (6.7-8.0 s -> 4.5-5.1 s, 0.29 -> 0.20 GB WAL). Every query names the
    # rollout, so `hub` has no index of its own either: it cost 45% of the time of a 1,000,000-hub
    # insert (8.5 s -> 4.8 s without it) and lured replan into merging through it.
    pk = models.CompositePrimaryKey("rollout", "hub", "supplier")
    rollout = models.ForeignKey(
        "rollouts.Rollout", on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    hub = models.ForeignKey(
        "rollouts.Hub", on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    supplier = models.ForeignKey(
        "rollouts.Organisation",
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    instruction = models.ForeignKey(
        Instruction, on_delete=models.PROTECT, related_name="hubs", db_index=False, db_constraint=False
    )
    deploy_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.supplier_id} {self.hub_id} at {self.deploy_at}"


class HubEvent(models.Model):
    """PL9: one device status record of a pilot hub as reported (its enhanced-monitoring timeline,
    MP24-AD11; safe launch hubs have none, services/progress.py).

    Written by the thousand per feed: no FK constraints (the feed checks every GUID against the
    rollout first) and one index, the timeline's (rollout, hub, at).
    """

    rollout = models.ForeignKey(
        "rollouts.Rollout", on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    hub = models.ForeignKey(
        "rollouts.Hub", on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    status = models.CharField(max_length=12)  # scheduled, distributed, activated, failed
    at = models.DateTimeField()
    reason = models.TextField(blank=True)
    firmware_version = models.CharField(max_length=8, blank=True)
    upload = models.ForeignKey(
        "rollouts.Upload",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["rollout", "hub", "at"], name="hubevent_timeline")]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.status} at {self.at}"


class IncidentOutcome(models.TextChoices):
    PROCEED = "proceed", "Proceed"
    PAUSE = "pause", "Pause"
    DELAY = "delay", "Delay the end date"
    STOP = "stop", "Stop"
    SUSPEND = "suspend", "Suspend at once"


class PanelConfirmation(models.TextChoices):
    PENDING = "pending", "Pending"
    CONFIRMED = "confirmed", "Confirmed"
    OVERTURNED = "overturned", "Overturned"


class Incident(models.Model):
    """I1-I3, B1: raised by a Supplier (visible to it and DCC only) or opened by the System at a threshold."""

    rollout = models.ForeignKey("rollouts.Rollout", on_delete=models.PROTECT, related_name="incidents")
    raised_by_org = models.ForeignKey(
        "rollouts.Organisation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )  # None: opened by the System (B1)
    raised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    raised_at = models.DateTimeField(default=timezone.now)
    priority = models.CharField(max_length=10, default="high")
    emergency_stop_requested = models.BooleanField(default=False)
    description = models.TextField()
    figures = models.JSONField(default=dict, blank=True)  # B1: failed share, reported, threshold, batch
    outcome = models.CharField(max_length=10, choices=IncidentOutcome.choices, blank=True)
    outcome_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    panel = models.CharField(max_length=10, choices=PanelConfirmation.choices, blank=True)
    panel_recorded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]

    def __str__(self) -> str:
        return f"Incident {self.pk} on {self.rollout_id}"
