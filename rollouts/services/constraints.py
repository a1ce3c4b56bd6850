"""Scheduling constraints for the pilot (PL5, A05).

DCC declares which constraints are valid for a rollout; a Supplier asks for one of them on a set
of its pilot hubs (one request per CSP region the hubs span); the CSP of that region accepts or
rejects each request with a reason and has the final say. For a split hub the CSP sees both
Suppliers' requests, with a `conflict` flag where they asked different values of the same kind;
a Supplier sees only its own requests, never its partner's (P4).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import BooleanField, Count, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .. import audit
from ..guid import GuidFormatError, display_guid, parse_guid
from ..intake.errors import Failure, RowsRejected, failure
from ..models import (
    Batch,
    ConstraintKind,
    Group,
    Organisation,
    OrgKind,
    RequestState,
    Rollout,
    RolloutHub,
    ScheduleRequest,
    SchedulingConstraint,
    Stage,
    Status,
    User,
)
from .notifications import notify

_HH_MM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _require(user: User, kind: OrgKind) -> Organisation:
    org = user.organisation if user is not None and user.organisation_id else None
    if org is None or org.kind != kind:
        raise PermissionDenied(f"Only {OrgKind(kind).label} users can do this.")
    return org


def _lock_visible_rollout(org: Organisation, rollout_id: int) -> Rollout:
    from ..selectors import rollouts_for

    visible = rollouts_for(org).filter(pk=rollout_id)
    return Rollout.objects.select_for_update().get(pk__in=visible.values("pk"))  # L10; P3: DoesNotExist


def _before_pilot(rollout: Rollout, what: str) -> None:
    if not rollout.has_pilot:
        raise ValidationError(f"{rollout.reference} has no pilot, so it has no scheduling constraints.")
    if rollout.stage != Stage.NOTIFICATION or rollout.status not in (Status.DRAFT, Status.ACTIVE):
        raise ValidationError(
            f"{what} only before the pilot starts; {rollout.reference} is {rollout.describe_state()}."
        )


# -- DCC declares ---------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def declare_constraints(
    *, user: User, rollout_id: int, kinds: Iterable[str] | Mapping[str, str]
) -> list[SchedulingConstraint]:
    """PL5, N1: DCC sets the constraints Suppliers may ask for (a list of kinds, or kind -> description).
    Kinds left out are removed, unless a Supplier already asked for them."""
    dcc = _require(user, OrgKind.DCC)
    rollout = _lock_visible_rollout(dcc, rollout_id)
    _before_pilot(rollout, "Scheduling constraints can be declared")
    wanted = dict(kinds) if isinstance(kinds, Mapping) else dict.fromkeys(kinds, "")
    unknown = sorted(set(wanted) - set(ConstraintKind.values))
    if unknown:
        raise ValidationError(
            {
                "kinds": f"Unknown constraint kind {', '.join(unknown)}: choose from {', '.join(ConstraintKind.values)}."
            }
        )
    existing = {c.kind: c for c in SchedulingConstraint.objects.filter(rollout=rollout)}
    dropped = [c for kind, c in existing.items() if kind not in wanted]
    asked = [c.get_kind_display() for c in dropped if c.requests.exists()]
    if asked:
        raise ValidationError(
            f"Suppliers have already asked for {', '.join(asked)}: it stays declared for this rollout."
        )
    SchedulingConstraint.objects.filter(pk__in=[c.pk for c in dropped]).delete()
    for kind, description in wanted.items():
        if kind in existing:
            if description and existing[kind].description != description:
                existing[kind].description = description
                existing[kind].save(update_fields=["description"])
        else:
            SchedulingConstraint.objects.create(rollout=rollout, kind=kind, description=description)
    audit.record(
        user,
        "constraints.declare",
        rollout,
        kinds=sorted(wanted),
        removed=sorted(c.kind for c in dropped),
    )
    declared = list(SchedulingConstraint.objects.filter(rollout=rollout).order_by("kind"))
    if rollout.status == Status.ACTIVE:
        from .notifications import relevant_organisations

        notify(
            [o for o in relevant_organisations(rollout, include_dcc=False) if o.kind == OrgKind.SUPPLIER],
            kind="constraints.declared",
            rollout=rollout,
            subject=f"{rollout.reference}: scheduling constraints you may ask for",
            body=f"For the pilot of {rollout} you may ask the CSP for: "
            + (", ".join(c.get_kind_display().lower() for c in declared) or "no constraints")
            + ".",
        )
    return declared


# -- A Supplier asks -------------------------------------------------------------------------------------


def clean_constraint_value(kind: str, value: Any) -> Any:
    """The value of a request, typed by kind (PL5): blackout_dates = ISO dates; time_band = {"from":
    "HH:MM", "to": "HH:MM"}; within_batch = a default pilot batch name. Raises ValidationError."""
    if kind == ConstraintKind.BLACKOUT_DATES:
        if isinstance(value, str) or not isinstance(value, Iterable) or not list(value):
            raise ValidationError({"value": "Give one or more blackout dates, such as 2026-12-24."})
        days = set()
        for item in value:
            text = item.isoformat() if isinstance(item, dt.date) else str(item).strip()
            try:
                if not _ISO_DATE.fullmatch(text):
                    raise ValueError(text)
                days.add(dt.date.fromisoformat(text))
            except ValueError:
                raise ValidationError(
                    {"value": f"{item!r} is not a date: write it as YYYY-MM-DD, such as 2026-12-24."}
                ) from None
        return [d.isoformat() for d in sorted(days)]
    if kind == ConstraintKind.TIME_BAND:
        if not isinstance(value, Mapping) or set(value) != {"from", "to"}:
            raise ValidationError({"value": 'Give the band as {"from": "HH:MM", "to": "HH:MM"}.'})
        band = {key: str(value[key]).strip() for key in ("from", "to")}
        if not all(_HH_MM.fullmatch(t) for t in band.values()):
            raise ValidationError(
                {"value": "Write each end of the band as HH:MM on the 24-hour clock, such as 22:00."}
            )
        if band["from"] == band["to"]:
            raise ValidationError({"value": "The band must not start and end at the same time."})
        return band
    if kind == ConstraintKind.WITHIN_BATCH:
        name = str(value or "").strip()
        if not name:
            raise ValidationError({"value": "Give the name of a batch of the Default Pilot Schedule."})
        return name
    raise ValidationError({"constraint_kind": f"Unknown constraint kind {kind}."})


@transaction.atomic(durable=True)
def request_constraint(
    *, user: User, rollout_id: int, constraint_kind: str, value: Any, hub_guids: Iterable[str]
) -> list[ScheduleRequest]:
    """PL5 (A05): a Supplier asks for a declared constraint on a set of its pilot hubs. Hubs in two
    regions make one request per region (each CSP answers its own). Any invalid GUID refuses the
    whole request with every failure (X3)."""
    supplier = _require(user, OrgKind.SUPPLIER)
    rollout = _lock_visible_rollout(supplier, rollout_id)
    _before_pilot(rollout, "Scheduling constraints can be asked for")
    if rollout.preferred_pilot_due and timezone.now() > rollout.preferred_pilot_due:
        raise ValidationError(
            f"Requests closed on {timezone.localtime(rollout.preferred_pilot_due):%d %B %Y %H:%M}.",
            code="deadline_passed",
        )
    constraint = SchedulingConstraint.objects.filter(rollout=rollout, kind=constraint_kind).first()
    if constraint is None:
        raise ValidationError(
            {
                "constraint_kind": "DCC has not declared this constraint for this rollout: choose a declared one."
            }
        )
    cleaned = clean_constraint_value(constraint_kind, value)

    failures: list[Failure] = []
    wanted: dict[str, int] = {}  # hex -> position in the list (row)
    for position, text in enumerate(hub_guids, start=1):
        try:
            wanted.setdefault(parse_guid(text), position)
        except GuidFormatError:
            failures.append(failure("guid_format", row=position, column="guid", value=str(text)))
    mine = {
        row["hub__guid"]: row
        for row in RolloutHub.objects.filter(rollout=rollout, hub__guid__in=list(wanted))
        .filter(Q(import_supplier=supplier) | Q(gas_supplier=supplier))
        .exclude(status="left")
        .values("hub_id", "hub__guid", "region", "group")
    }
    for hex16, position in wanted.items():
        row = mine.get(hex16)
        if row is None:  # unknown and another Supplier's hub get the same answer (P3)
            failures.append(failure("guid_not_yours", row=position, column="guid", value=display_guid(hex16)))
        elif row["group"] != Group.PILOT:
            failures.append(
                failure(
                    "guid_not_eligible",
                    row=position,
                    column="guid",
                    value=display_guid(hex16),
                    message="This Communications Hub is not in the pilot group: constraints apply to pilot hubs only.",
                )
            )
    if not wanted and not failures:
        raise ValidationError({"hub_guids": "Choose at least one of your pilot hubs."})
    regions = sorted({row["region"] for row in mine.values()})
    if constraint_kind == ConstraintKind.WITHIN_BATCH and not failures:
        known = set(
            Batch.objects.filter(
                rollout=rollout, group=Group.PILOT, name=cleaned, region__in=regions
            ).values_list("region", flat=True)
        )
        for region in regions:
            if region not in known:
                failures.append(
                    failure(
                        "batch_unknown",
                        column="value",
                        value=cleaned,
                        message=f"There is no default pilot batch {cleaned!r} in the {region} region. Choose a "
                        "batch of the Default Pilot Schedule of that region.",
                    )
                )
    if failures:
        raise RowsRejected(failures)

    created = []
    for region in regions:
        request = ScheduleRequest.objects.create(
            rollout=rollout,
            supplier=supplier,
            region=region,
            constraint=constraint,
            value=cleaned,
            requested_by=user,
        )
        request.hubs.add(*[row["hub_id"] for row in mine.values() if row["region"] == region])
        created.append(request)
    audit.record(
        user,
        "schedule_request.create",
        rollout,
        requests=[r.pk for r in created],
        constraint=constraint_kind,
        value=cleaned,
        hubs=len(mine),
        regions=regions,
    )
    for request in created:
        notify(
            Organisation.objects.filter(kind=OrgKind.CSP, region=request.region),
            kind="schedule_request.received",
            rollout=rollout,
            subject=f"{rollout.reference}: a schedule request to answer",
            body=f"{supplier.name} asks for {constraint.get_kind_display().lower()} ({_describe(cleaned)}) on "
            f"{request.hubs.count()} pilot hubs of your region in {rollout}. Accept or reject it with a reason.",
        )
    return created


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"{value.get('from')} to {value.get('to')}"
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


# -- The CSP answers --------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def answer_request(*, user: User, request_id: int, accept: bool, reason: str = "") -> ScheduleRequest:
    """PL5: the CSP of the request's region accepts or rejects it (a reason is required to reject);
    the CSP has the final say. Another region's request answers like a missing one (P3)."""
    csp = _require(user, OrgKind.CSP)
    rollout_id = ScheduleRequest.objects.values_list("rollout_id", flat=True).get(
        pk=request_id, region=csp.region
    )
    rollout = Rollout.objects.select_for_update().get(pk=rollout_id)  # L10
    request = ScheduleRequest.objects.select_for_update().select_related("constraint").get(pk=request_id)
    if rollout.status not in (Status.ACTIVE, Status.PAUSED) or rollout.stage == Stage.CLOSURE:
        raise ValidationError(
            f"Requests cannot be answered: {rollout.reference} is {rollout.describe_state()}."
        )
    if request.state != RequestState.PENDING:
        raise ValidationError(
            f"This request is already {request.get_state_display().lower()}: someone may have answered it. "
            "Reload the page to see the answer."
        )
    if not accept and not reason.strip():
        raise ValidationError({"reason": "Give the reason for rejecting the request: the Supplier sees it."})
    request.state = RequestState.ACCEPTED if accept else RequestState.REJECTED
    request.answer_reason = reason.strip()
    request.answered_by = user
    request.answered_at = timezone.now()
    request.save(update_fields=["state", "answer_reason", "answered_by", "answered_at"])
    audit.record(
        user,
        "schedule_request.answer",
        request,
        rollout=rollout.pk,
        state=request.state,
        reason=request.answer_reason,
    )
    verb = "accepted" if accept else "rejected"
    notify(
        [request.supplier],
        kind="schedule_request.answered",
        rollout=rollout,
        subject=f"{rollout.reference}: your schedule request was {verb}",
        body=f"The CSP for the {request.region} region {verb} your request for "
        f"{request.constraint.get_kind_display().lower()} ({_describe(request.value)}) in {rollout}."
        + (f" Reason: {request.answer_reason}" if request.answer_reason else ""),
    )
    return request


# -- Reads -----------------------------------------------------------------------------------------------

_CONFLICT_SQL = """EXISTS (
    SELECT 1 FROM {through} a
    JOIN {through} b ON b.hub_id = a.hub_id AND b.schedulerequest_id <> a.schedulerequest_id
    JOIN rollouts_schedulerequest o ON o.id = b.schedulerequest_id
    WHERE a.schedulerequest_id = rollouts_schedulerequest.id
      AND o.constraint_id = rollouts_schedulerequest.constraint_id
      AND o.supplier_id <> rollouts_schedulerequest.supplier_id
      AND o.value <> rollouts_schedulerequest.value)"""


def schedule_requests_for(org: Organisation, rollout: Rollout) -> QuerySet[ScheduleRequest]:
    """PL5: requests this organisation may see, each with `hub_count` and `conflict`.

    A CSP sees every request of its region (both of a split hub's Suppliers), with `conflict` true
    where another Supplier asked a different value of the same constraint for a hub of the request;
    DCC sees all. A Supplier sees only its own requests, and `conflict` is always false for it: it
    is never told what its partner asked (P4).
    """
    requests = ScheduleRequest.objects.filter(rollout=rollout).select_related("constraint")
    if org.kind == OrgKind.CSP:
        requests = requests.filter(region=org.region)
    elif org.kind == OrgKind.SUPPLIER:
        requests = requests.filter(supplier=org)
    if org.kind == OrgKind.SUPPLIER:
        conflict: Any = Value(False, output_field=BooleanField())
    else:
        through = ScheduleRequest.hubs.through._meta.db_table
        conflict = RawSQL(_CONFLICT_SQL.format(through=through), [], output_field=BooleanField())
    return requests.annotate(hub_count=Count("hubs"), conflict=conflict).order_by("requested_at", "id")
