"""Reads scoped by the actor's organisation (P3). Views start here, never from Model.objects."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, QuerySet
from django.shortcuts import get_object_or_404

from .models import Organisation, OrgKind, Upload, UploadError, User


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
