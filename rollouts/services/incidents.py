"""Incidents and decisions (I1-I3, B1): a Supplier raises one, or the System opens one at a failure
threshold; DCC triages it with one outcome (or suspends at once); the Panel's confirmation is recorded.

Each outcome's effect on pending instructions is applied set-based and told to every relevant
Supplier, never naming who raised the incident (P4, I3):
- proceed: nothing changes;
- pause or suspend: nothing is distributed or activated (the status feed refuses it), and
  instructed times that pass during the hold revert to the automatic time (`revert_passed_instructions`,
  a beat job, and at the latest when the hold ends: lifecycle's release), listed to their Supplier, who
  may instruct again before the deadline;
- delay: the automatic time and the deadline move later; instructions stand;
- stop: four-eyes (B4, L8). Triage "stop" is itself the proposal: the outcome is recorded at once and
  the incident says the stop awaits a second DCC user; when it is approved, the pending instructions
  are void (`void_pending_instructions`, called by the stop's apply in lifecycle); when it lapses instead
  (B4), every party is told that nothing is stopped (`tell_triaged_stop_lapsed`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from .. import audit
from ..guid import display_guid
from ..models import (
    AuditEvent,
    HubInstruction,
    Incident,
    IncidentOutcome,
    Organisation,
    OrgKind,
    PanelConfirmation,
    Proposal,
    Rollout,
    Stage,
    Status,
    User,
)
from ..transitions import apply_move
from .notifications import notify, relevant_organisations
from .planning import UNDISTRIBUTED, replan, tell_csps

LIVE_STAGES = (Stage.NOTIFICATION, Stage.PILOTING, Stage.SAFE_LAUNCH)
HOLD_MOVES = ("rollout.pause", "rollout.suspend", "rollout.panel_decision_pause")
RELEASE_MOVES = ("rollout.resume", "rollout.panel_decision_resume")
LISTED = 50  # GUIDs listed in a notice; the rest are counted


def _org_of(user: User | None, kind: OrgKind) -> Organisation:
    org = user.organisation if user is not None and user.organisation_id else None
    if org is None or org.kind != kind:
        raise PermissionDenied(f"Only {OrgKind(kind).label} users can do this.")
    return org


# -- selectors ----------------------------------------------------------------------------------------


def incidents_for(org: Organisation) -> QuerySet[Incident]:
    """I1: DCC sees every incident; a Supplier only those it raised; nobody else any (P3)."""
    incidents = Incident.objects.select_related("rollout")
    if org.kind == OrgKind.DCC:
        return incidents
    if org.kind == OrgKind.SUPPLIER:
        return incidents.filter(raised_by_org=org)
    return incidents.none()


def get_incident_for(org: Organisation, pk: int) -> Incident:
    return get_object_or_404(incidents_for(org), pk=pk)


# -- I1: raising --------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def raise_incident(
    *, user: User, rollout_id: int, description: str, emergency_stop: bool = False
) -> Incident:
    """I1: a Supplier with hubs in the rollout raises a high-priority incident, optionally asking for an
    emergency stop. Visible to it and DCC only; DCC is told."""
    from ..selectors import rollouts_for

    supplier = _org_of(user, OrgKind.SUPPLIER)
    visible = rollouts_for(supplier).filter(pk=rollout_id).values("pk")
    rollout = Rollout.objects.select_for_update().get(pk__in=visible)  # P3: not yours = does not exist
    if not description.strip():
        raise ValidationError(
            {"description": "Describe the incident: what happened, to which hubs, since when."}
        )
    if rollout.is_terminal or rollout.status == Status.DRAFT:
        raise ValidationError(
            f"{rollout.reference} is {rollout.describe_state()}: incidents are for live rollouts."
        )
    incident = Incident.objects.create(
        rollout=rollout,
        raised_by_org=supplier,
        raised_by=user,
        priority="high",
        emergency_stop_requested=emergency_stop,
        description=description.strip(),
    )
    audit.record(user, "incident.raise", incident, rollout=rollout.pk, emergency_stop=emergency_stop)
    notify(
        Organisation.objects.filter(kind=OrgKind.DCC),
        kind="incident.raised",
        rollout=rollout,
        subject=f"{rollout.reference}: incident raised{' - emergency stop requested' if emergency_stop else ''}",
        body=f"{supplier.name} raised a high-priority incident against {rollout}"
        f"{', asking for an emergency stop' if emergency_stop else ''}: {description.strip()} Triage it.",
    )
    return incident


def open_system_incident(rollout: Rollout, *, description: str, figures: dict[str, Any]) -> Incident:
    """B1 (inside the caller's transaction): the System opens an incident for DCC triage."""
    incident = Incident.objects.create(
        rollout=rollout,
        raised_by_org=None,
        raised_by=None,
        priority="high",
        description=description,
        figures=figures,
    )
    audit.record(None, "incident.open", incident, rollout=rollout.pk, **figures)
    notify(
        Organisation.objects.filter(kind=OrgKind.DCC),
        kind="incident.threshold",
        rollout=rollout,
        subject=f"{rollout.reference}: failure threshold passed - triage the incident",
        body=f"{description} The System has opened incident {incident.pk} for triage.",
    )
    return incident


# -- I2: triage ---------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def triage_incident(
    *,
    user: User,
    incident_id: int,
    outcome: str,
    reason: str,
    new_auto_deploy_at: dt.datetime | None = None,
) -> Incident:
    """I2: DCC decides one outcome (proceed, pause, delay, stop, or suspend at once). The Panel's
    confirmation starts as pending. Each outcome's effect on pending instructions is applied and told
    to every relevant Supplier without naming the raiser (I3, P4)."""
    _org_of(user, OrgKind.DCC)
    rollout_id = Incident.objects.values_list("rollout_id", flat=True).get(pk=incident_id)
    rollout = Rollout.objects.select_for_update().get(pk=rollout_id)  # L10
    incident = Incident.objects.select_for_update().get(pk=incident_id)
    if incident.outcome:
        raise ValidationError(
            f"This incident was already triaged ({incident.get_outcome_display().lower()}): reload the page."
        )
    if outcome not in IncidentOutcome.values:
        raise ValidationError({"outcome": "Choose proceed, pause, delay the end date, stop or suspend."})
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for the decision: the Suppliers are told."})
    details: dict[str, Any] = {}
    if outcome == IncidentOutcome.PAUSE and rollout.status != Status.PAUSED:
        apply_move(rollout.pk, "pause", user=user, reason=reason, details={"incident": incident.pk})
    elif outcome == IncidentOutcome.SUSPEND:
        apply_move(rollout.pk, "suspend", user=user, reason=reason, details={"incident": incident.pk})
    elif outcome == IncidentOutcome.DELAY:
        if new_auto_deploy_at is None or (
            rollout.auto_deploy_at and new_auto_deploy_at <= rollout.auto_deploy_at
        ):
            raise ValidationError(
                {
                    "new_auto_deploy_at": "The new automatic deployment time must be later than the current one."
                }
            )
        rollout = apply_move(
            rollout.pk,
            "delay_end_date",
            user=user,
            reason=reason,
            changes={"auto_deploy_at": new_auto_deploy_at, "auto_deploy_override_reason": reason},
            details={"incident": incident.pk},
        )
        replanned = replan(rollout.pk)  # T5: hubs on the automatic time move with it
        tell_csps(rollout, replanned, "DCC delayed the automatic deployment time on an incident (I3)")
        details["replanned"] = replanned.total()
        details["new_auto_deploy_at"] = new_auto_deploy_at.isoformat()
    elif outcome == IncidentOutcome.STOP:
        from .lifecycle import propose

        # Triage "stop" is itself the four-eyes proposal (B4, L8); propose's own checks apply. It is
        # called without its durable wrapper because this service's transaction holds the lock.
        proposal = propose.__wrapped__(user=user, rollout_id=rollout.pk, move="stop", reason=reason)
        details["stop_proposal"] = proposal.pk
    incident.outcome = outcome
    incident.outcome_reason = reason
    incident.decided_by = user
    incident.decided_at = timezone.now()
    incident.panel = PanelConfirmation.PENDING
    incident.figures = {**incident.figures, **{k: v for k, v in details.items() if k == "stop_proposal"}}
    incident.save(update_fields=["outcome", "outcome_reason", "decided_by", "decided_at", "panel", "figures"])
    audit.record(
        user, "incident.triage", incident, rollout=rollout.pk, outcome=outcome, reason=reason, **details
    )
    rollout.refresh_from_db()
    _tell_decision(rollout, outcome, reason)
    return incident


MEANING = {
    IncidentOutcome.PROCEED: "The rollout proceeds as planned. Your pending instructions are not affected.",
    IncidentOutcome.PAUSE: (
        "The rollout is paused: nothing is distributed or activated. Instructed times that pass during the "
        "pause revert to the automatic time; you will be told which, and may instruct them again before "
        "the instruction deadline."
    ),
    IncidentOutcome.SUSPEND: (
        "The rollout is suspended pending the Panel: nothing is distributed or activated. Instructed times "
        "that pass during the suspension revert to the automatic time; you will be told which, and may "
        "instruct them again before the instruction deadline."
    ),
    IncidentOutcome.DELAY: (
        "The automatic deployment time moves to {auto}, and the instruction deadline to {deadline}. Your "
        "instructions stand."
    ),
    IncidentOutcome.STOP: (
        "DCC has decided to stop the rollout; the stop takes effect when a second DCC user approves it. Then "
        "your pending instructions are void."
    ),
}


def _pending_instructions_by_supplier(rollout_id: int) -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT hi.supplier_id, count(*) FROM rollouts_hubinstruction hi
                JOIN rollouts_rollouthub rh ON rh.rollout_id = hi.rollout_id AND rh.hub_id = hi.hub_id
                WHERE hi.rollout_id = %s AND rh.status IN {UNDISTRIBUTED} GROUP BY 1""",
            [rollout_id],
        )
        return dict(cursor.fetchall())


def _tell_decision(rollout: Rollout, outcome: str, reason: str) -> None:
    """I3, P4: every party is told the decision; each Supplier what it means for its own pending
    instructions. The raiser is never named."""
    meaning = MEANING[IncidentOutcome(outcome)]
    if outcome == IncidentOutcome.DELAY:
        meaning = meaning.format(
            auto=f"{timezone.localtime(rollout.auto_deploy_at):%d %B %Y %H:%M}",
            deadline=f"{timezone.localtime(rollout.instruction_deadline):%d %B %Y %H:%M}",
        )
    pending = _pending_instructions_by_supplier(rollout.pk)
    label = IncidentOutcome(outcome).label.lower()
    for org in relevant_organisations(rollout):
        own = ""
        if org.kind == OrgKind.SUPPLIER:
            own = f" You have pending instructions for {pending.get(org.pk, 0):,} hubs."
        notify(
            [org],
            kind="incident.decision",
            rollout=rollout,
            subject=f"{rollout.reference}: decision on an incident - {label}",
            body=f"DCC has triaged an incident against {rollout}: {label}. Reason: {reason} {meaning}{own}",
        )


def tell_triaged_stop_lapsed(proposal: Proposal, why: str) -> None:
    """I3 (inside the lapse's transaction): a stop decided on an incident was told to every party as
    awaiting a second DCC user; when its proposal lapses instead (B4), they are told that nothing is
    stopped and their pending instructions stand. A rollout stopped by another decision (the Panel's) is
    told by that decision."""
    triaged = Incident.objects.filter(rollout_id=proposal.rollout_id, figures__stop_proposal=proposal.pk)
    if proposal.move != "stop" or not triaged.exists():
        return
    rollout = Rollout.objects.get(pk=proposal.rollout_id)
    if rollout.status == Status.STOPPED:
        return
    notify(
        relevant_organisations(rollout),
        kind="incident.stop_lapsed",
        rollout=rollout,
        subject=f"{rollout.reference}: the decision to stop lapsed",
        body=f"DCC's decision on an incident to stop {rollout} lapsed before a second DCC user approved it: "
        f"{why}. {rollout} is not stopped, and pending instructions stand.",
    )


@transaction.atomic(durable=True)
def record_panel_confirmation(*, user: User, incident_id: int, confirmation: str) -> Incident:
    """I2: the Panel's confirmation of a triage outcome (pending, confirmed, overturned), as DCC records it."""
    _org_of(user, OrgKind.DCC)
    incident = Incident.objects.select_for_update().get(pk=incident_id)
    if confirmation not in PanelConfirmation.values:
        raise ValidationError(
            {"confirmation": "The Panel's confirmation is pending, confirmed or overturned."}
        )
    if not incident.outcome:
        raise ValidationError("Triage the incident before recording the Panel's confirmation.")
    before = incident.panel
    incident.panel = confirmation
    incident.panel_recorded_at = timezone.now()
    incident.save(update_fields=["panel", "panel_recorded_at"])
    audit.record(
        user,
        "incident.panel",
        incident,
        rollout=incident.rollout_id,
        before=before,
        confirmation=confirmation,
    )
    notify(
        Organisation.objects.filter(kind=OrgKind.DCC),
        kind="incident.panel",
        rollout=incident.rollout,
        subject=f"{incident.rollout.reference}: the Panel {PanelConfirmation(confirmation).label.lower()} "
        f"the decision ({incident.get_outcome_display().lower()})",
        body=f"Recorded by {user}.",
    )
    return incident


# -- I3: effects on instructions ----------------------------------------------------------------------


def _notify_per_supplier(
    rollout: Rollout, by_supplier: dict[int, list[str]], *, kind: str, subject: str, body: str
) -> None:
    """One notice per Supplier with its own count and (the first) GUIDs; `body` takes {count} and {guids}."""
    orgs = Organisation.objects.in_bulk(list(by_supplier))
    for supplier_id, guids in sorted(by_supplier.items()):
        listed = ", ".join(display_guid(g) for g in guids[:LISTED])
        more = f" and {len(guids) - LISTED:,} more" if len(guids) > LISTED else ""
        notify(
            [orgs[supplier_id]],
            kind=kind,
            rollout=rollout,
            subject=subject,
            body=body.format(count=f"{len(guids):,}", guids=listed + more),
        )


def void_pending_instructions(rollout: Rollout) -> int:
    """I3 stop (inside the stop's transaction): the pending instructions of undistributed hubs are void
    (deleted, set-based); each Supplier is told how many. Planned times are not replanned: nothing more
    is deployed."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH gone AS (
                    DELETE FROM rollouts_hubinstruction hi USING rollouts_rollouthub rh, rollouts_hub h
                    WHERE hi.rollout_id = %(rollout)s AND rh.rollout_id = hi.rollout_id AND rh.hub_id = hi.hub_id
                      AND rh.status IN {UNDISTRIBUTED} AND h.id = hi.hub_id
                    RETURNING hi.supplier_id, h.guid)
                SELECT supplier_id, array_agg(guid ORDER BY guid) FROM gone GROUP BY 1""",
            {"rollout": rollout.pk},
        )
        by_supplier = dict(cursor.fetchall())
    voided = sum(len(g) for g in by_supplier.values())
    if voided:
        audit.record(
            None, "instructions.void", rollout, rollout=rollout.pk, hubs=voided, suppliers=len(by_supplier)
        )
        _notify_per_supplier(
            rollout,
            by_supplier,
            kind="instructions.void",
            subject=f"{rollout.reference} is stopped: your pending instructions are void",
            body=f"{rollout} is stopped, so your pending instructions for {{count}} hubs are void (I3): {{guids}}.",
        )
    return voided


def held_since(rollout: Rollout) -> dt.datetime | None:
    """When the current hold began: the first pause or suspension after the last resumption."""
    events = AuditEvent.objects.filter(object_type="rollouts.rollout", object_id=str(rollout.pk))
    resumed = (
        events.filter(action__in=RELEASE_MOVES).order_by("-at", "-id").values_list("at", flat=True).first()
    )
    holds = events.filter(action__in=HOLD_MOVES)
    if resumed is not None:
        holds = holds.filter(at__gt=resumed)
    return holds.order_by("at", "id").values_list("at", flat=True).first()


def revert_passed_instructions(now: dt.datetime | None = None) -> int:
    """I3 beat job (System): for each paused or suspended rollout, instructions whose time passed during
    the hold are deleted (the hub reverts to the automatic time), the hubs replanned, and each Supplier
    told how many and which, to instruct again before the deadline. Returns instructions reverted."""
    now = now or timezone.now()
    total = 0
    held = Rollout.objects.filter(stage__in=LIVE_STAGES, status__in=(Status.PAUSED, Status.SUSPENDED))
    for rollout_id in list(held.values_list("pk", flat=True)):
        with transaction.atomic(durable=True):
            rollout = Rollout.objects.select_for_update().get(pk=rollout_id)
            if rollout.status not in (Status.PAUSED, Status.SUSPENDED):
                continue
            since = held_since(rollout)
            if since is None:
                continue
            total += revert_passed(rollout, since, now)
    return total


def revert_passed(rollout: Rollout, since: dt.datetime, now: dt.datetime) -> int:
    """I3 (inside the caller's transaction, the rollout locked): instructions of undistributed hubs whose
    time passed between the hold's start and `now` are deleted, the hubs replanned and each Supplier told.
    Run by the beat job during a hold, and by the release that ends it (resume, or the Panel's resume)."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS reverted_hubs")
        cursor.execute(
            f"""CREATE TEMP TABLE reverted_hubs ON COMMIT DROP AS
                WITH gone AS (
                    DELETE FROM rollouts_hubinstruction hi USING rollouts_rollouthub rh
                    WHERE hi.rollout_id = %(rollout)s AND rh.rollout_id = hi.rollout_id AND rh.hub_id = hi.hub_id
                      AND rh.status IN {UNDISTRIBUTED} AND hi.deploy_at > %(since)s AND hi.deploy_at <= %(now)s
                    RETURNING hi.hub_id, hi.supplier_id)
                SELECT g.hub_id, g.supplier_id, h.guid FROM gone g JOIN rollouts_hub h ON h.id = g.hub_id""",
            {"rollout": rollout.pk, "since": since, "now": now},
        )
        reverted = cursor.rowcount
        if not reverted:
            return 0
        replanned = replan(rollout.pk, hubs_table="reverted_hubs")
        cursor.execute("SELECT supplier_id, array_agg(guid ORDER BY guid) FROM reverted_hubs GROUP BY 1")
        by_supplier = dict(cursor.fetchall())
    audit.record(
        None, "instructions.reverted", rollout, rollout=rollout.pk, hubs=reverted, since=since.isoformat()
    )
    held = rollout.status in (Status.PAUSED, Status.SUSPENDED)
    state = f"is {rollout.get_status_display().lower()}" if held else "has resumed"
    deadline = rollout.instruction_deadline
    again = (
        f"You may instruct them again until {timezone.localtime(deadline):%d %B %Y %H:%M}."
        if deadline and deadline > now
        else "The instruction deadline has passed."
    )
    _notify_per_supplier(
        rollout,
        by_supplier,
        kind="instructions.reverted",
        subject=f"{rollout.reference}: instructed times passed during the hold",
        body=f"{rollout} {state}, and the instructed time of {{count}} of your hubs passed during the hold, so they "
        f"revert to the automatic time (I3): {{guids}}. {again}",
    )
    tell_csps(rollout, replanned, "instructed times passed while the rollout was held, so they revert (I3)")
    return reverted


def held_instructions_for(org: Organisation, rollout: Rollout) -> QuerySet[HubInstruction]:
    """An organisation's own standing instructions in a rollout (a Supplier's; DCC all)."""
    rows = HubInstruction.objects.filter(rollout=rollout)
    if org.kind == OrgKind.DCC:
        return rows
    if org.kind == OrgKind.SUPPLIER:
        return rows.filter(supplier=org)
    return rows.none()
