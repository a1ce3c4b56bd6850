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
from django.shortcuts import get_object_or_404

from .models import (
    Notice,
    NoticeRead,
    Organisation,
    OrgKind,
    Rollout,
    RolloutCounter,
    RolloutHub,
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
        guid=F("hub__guid"),
        split=ExpressionWrapper(split, output_field=BooleanField()),
        role=Case(
            When(is_import & is_gas, then=Value("import+gas")),
            When(is_import, then=Value("import")),
            When(is_gas, then=Value("gas")),
            default=Value(""),
        ),
    )
    # Plain rows with named fields: the Suppliers' ids never leave the selector (P4).
    return rows.order_by("hub__guid").values(*HUB_ROW_FIELDS)


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
