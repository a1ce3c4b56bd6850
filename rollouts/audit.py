"""One way to write the audit trail (X1)."""

from __future__ import annotations

from typing import Any

from django.db import models

from .models import Actor, AuditEvent, OrgKind, User

ACTOR_FOR_KIND = {OrgKind.DCC: Actor.DCC, OrgKind.CSP: Actor.CSP, OrgKind.SUPPLIER: Actor.SUPPLIER}


def actor_for(user: User | None) -> Actor:
    """The actor a user acts as: its organisation's kind, staff, or the System when there is no user."""
    if user is None:
        return Actor.SYSTEM
    if user.organisation_id is None:
        return Actor.STAFF
    return ACTOR_FOR_KIND[OrgKind(user.organisation.kind)]


def record(
    user: User | None,
    action: str,
    obj: models.Model | None = None,
    *,
    actor: Actor | None = None,
    **details: Any,
) -> AuditEvent:
    """Append one event. `user=None` means the System (scheduled jobs, thresholds)."""
    return AuditEvent.objects.create(
        actor=actor or actor_for(user),
        user=user,
        organisation_id=user.organisation_id if user else None,
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        details=details,
    )
