"""Reads scoped by the actor's organisation (P3). Views start here, never from Model.objects."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.http import Http404
from django.shortcuts import get_object_or_404

from .models import (
    Group,
    Notice,
    NoticeRead,
    Organisation,
    OrgKind,
    Proposal,
    ProposalState,
    Rollout,
    RolloutCounter,
    RolloutHub,
    Status,
    Upload,
    UploadError,
    User,
)


def users_of(org: Organisation) -> QuerySet[User]:
    """The users of one organisation: what its members may list (P1)."""
    return User.objects.filter(organisation=org).order_by("-is_active", "email")


def get_user_for(org: Organisation, pk: int) -> User:
    # Same 404 for "does not exist" and "another organisation's" (P3).
    return get_object_or_404(users_of(org), pk=pk)


def uploads_for(org: Organisation) -> QuerySet[Upload]:
    """Uploads an organisation may see: its own; DCC sees every one (PL3, X2)."""
    uploads = Upload.objects.select_related("user", "organisation")
    return uploads if org.kind == OrgKind.DCC else uploads.filter(organisation=org)


def get_upload_for(org: Organisation, pk: int) -> Upload:
    return get_object_or_404(uploads_for(org), pk=pk)


@dataclass(frozen=True)
class ErrorSummary:
    total: int
    by_code: list[tuple[str, int]]  # reason code, how many, most frequent first
    first: list[UploadError]  # the first errors in row order


def error_summary_of(upload: Upload, limit: int = 100) -> ErrorSummary:
    """What the GOV.UK error summary shows: counts by reason, and the first `limit` errors (X3)."""
    by_code = list(
        upload.errors.values_list("code")
        .annotate(n=Count("id"))
        .order_by("-n", "code")
        .values_list("code", "n")
    )
    first = list(upload.errors.order_by("row", "id")[:limit])
    return ErrorSummary(total=sum(n for _, n in by_code), by_code=by_code, first=first)


def rollouts_for(org: Organisation) -> QuerySet[Rollout]:
    """DCC sees every rollout; a CSP or Supplier only published rollouts touching its hubs (P3)."""
    rollouts = Rollout.objects.select_related("device_model", "target_version")
    if org.kind == OrgKind.DCC:
        return rollouts
    touching = RolloutCounter.objects.filter(rollout=OuterRef("pk"), organisation=org, hubs__gt=0)
    return rollouts.filter(Exists(touching))


def get_rollout_for(org: Organisation, pk: int) -> Rollout:
    return get_object_or_404(rollouts_for(org), pk=pk)


def rollout_hubs_for(org: Organisation, rollout: Rollout) -> QuerySet[dict]:
    """The rollout's hubs this organisation may see, as rows with `role` and `split` (P3, P4).

    A Supplier's rows say whether it is Import, Gas or both, and whether the hub has a second
    Supplier; the partner's identity is never selected.
    """
    rows = RolloutHub.objects.filter(rollout=rollout)
    if org.kind == OrgKind.CSP:
        rows = rows.filter(region=org.region)
    elif org.kind == OrgKind.SUPPLIER:
        rows = rows.filter(Q(import_supplier=org) | Q(gas_supplier=org))
    split = Q(import_supplier__isnull=False, gas_supplier__isnull=False) & ~Q(
        import_supplier=F("gas_supplier")
    )
    is_import = Q(import_supplier=org) if org.kind == OrgKind.SUPPLIER else Q(import_supplier__isnull=False)
    is_gas = Q(gas_supplier=org) if org.kind == OrgKind.SUPPLIER else Q(gas_supplier__isnull=False)
    rows = rows.annotate(
        split=ExpressionWrapper(split, output_field=BooleanField()),
        role=Case(
            When(is_import & is_gas, then=Value("import+gas")),
            When(is_import, then=Value("import")),
            When(is_gas, then=Value("gas")),
            default=Value(""),
        ),
    )
    # Plain rows with named fields: the Suppliers' ids never leave the selector (P4).
    return rows.order_by("guid").values(*HUB_ROW_FIELDS)


HUB_ROW_FIELDS = (
    "guid",
    "region",
    "group",
    "status",
    "status_at",
    "planned_activation_at",
    "activation_source",
    "failure_reason",
    "role",
    "split",
)


def notices_for(user: User) -> QuerySet[Notice]:
    """The notices of the user's organisation, newest first, each with `is_read` for this user (U1)."""
    read = NoticeRead.objects.filter(notice=OuterRef("pk"), user=user)
    return (
        Notice.objects.filter(organisation_id=user.organisation_id)
        .select_related("rollout")
        .annotate(is_read=Exists(read))
        .order_by("-created_at", "-id")
    )


@dataclass(frozen=True)
class RolloutSummary:
    rollout: Rollout
    total: int
    by_status: dict[str, int]  # deployment status -> hubs (this organisation's view)
    pilot: int


def rollout_summaries_for(
    org: Organisation, *, in_flight_only: bool = True, rollout_id: int | None = None
) -> list[RolloutSummary]:
    """U1: each rollout the organisation sees (or just `rollout_id`), with its hub counts from the
    maintained counters. A Supplier or CSP counts its own rows; DCC counts the CSP rows, which hold
    every hub once.
    """
    rollouts = rollouts_for(org)
    if rollout_id is not None:
        rollouts = rollouts.filter(pk=rollout_id)
    elif in_flight_only:
        rollouts = rollouts.exclude(status__in=[Status.REVOKED, Status.CLOSED, Status.SUPERSEDED])
    rollouts = list(rollouts.order_by("-published_at", "-created_at"))
    counts = RolloutCounter.objects.filter(rollout__in=rollouts, hubs__gt=0)
    counts = (
        counts.filter(organisation__kind=OrgKind.CSP)
        if org.kind == OrgKind.DCC
        else counts.filter(organisation=org)
    )
    by_rollout: dict[int, dict[str, int]] = {}
    pilots: dict[int, int] = {}
    for rollout_id, group, status, hubs in counts.values_list("rollout_id", "group", "status", "hubs"):
        statuses = by_rollout.setdefault(rollout_id, {})
        statuses[status] = statuses.get(status, 0) + hubs
        if group == Group.PILOT:
            pilots[rollout_id] = pilots.get(rollout_id, 0) + hubs
    return [
        RolloutSummary(
            r, sum(by_rollout.get(r.pk, {}).values()), by_rollout.get(r.pk, {}), pilots.get(r.pk, 0)
        )
        for r in rollouts
    ]


def pending_proposals_for(org: Organisation) -> QuerySet[Proposal]:
    """B4: decisions awaiting a second DCC user (DCC only; nobody else sees proposals)."""
    if org.kind != OrgKind.DCC:
        return Proposal.objects.none()
    return Proposal.objects.filter(state=ProposalState.PENDING).select_related("rollout", "proposed_by")


def get_proposal_for(org: Organisation, pk: int) -> Proposal:
    if org.kind != OrgKind.DCC:
        raise Http404
    return get_object_or_404(Proposal.objects.select_related("rollout", "proposed_by", "decided_by"), pk=pk)


def rollout_summary_for(org: Organisation, rollout: Rollout) -> RolloutSummary:
    """One rollout's summary (its page), counting only its own counters."""
    return rollout_summaries_for(org, rollout_id=rollout.pk)[0]
