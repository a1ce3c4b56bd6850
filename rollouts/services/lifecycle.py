"""A rollout from draft to closure (sections N, L, T, C, B4): what DCC and the System do.

Every stage or status change goes through `transitions.apply_move`. Four-eyes moves (B4) start as
a proposal (`propose`) that a second DCC user approves (`approve_proposal`, which applies the move)
or rejects (`reject_proposal`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from .. import audit
from ..models import (
    TERMINAL,
    FirmwareVersion,
    Organisation,
    OrgKind,
    Outcome,
    Proposal,
    ProposalState,
    Rollout,
    Stage,
    Status,
    User,
)
from ..models.rollouts import automatic_deployment_time, months_after
from ..transitions import MOVES, allowed_from, apply_move
from . import counters
from .membership import lock_estate
from .notifications import notify, notify_parties
from .piloting import void_pilot
from .planning import replan, tell_csps
from .smi import apply_smi_versions

LIVE = (Status.ACTIVE, Status.PAUSED, Status.SUSPENDED)


def _require_dcc(user: User) -> None:
    if user is None or user.organisation_id is None or user.organisation.kind != OrgKind.DCC:
        raise PermissionDenied("Only DCC users can do this.")


def _next_reference() -> str:
    year = timezone.localdate().year
    count = Rollout.objects.filter(reference__startswith=f"R-{year}-").count() + 1
    return f"R-{year}-{count:03d}"


# -- N1: initiation --------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def create_rollout(
    *,
    user: User,
    title: str,
    target_version: FirmwareVersion,
    replaced_versions: list[FirmwareVersion],
    release_note_url: str,
    severity: str,
    priority: str,
    release_type: str,
    impact: str,
    pilot_max: int = 300,
    contribution_minimum: int = 0,
    contribution_threshold: int = 0,
    pilot_start: dt.datetime | None = None,
    pilot_end: dt.datetime | None = None,
    auto_deploy_at: dt.datetime | None = None,
    auto_deploy_reason: str = "",
    **due_dates: dt.datetime | None,
) -> Rollout:
    """N1: DCC initiates a rollout (a draft until `publish` is approved)."""
    _require_dcc(user)
    model = target_version.device_model
    errors: dict[str, str] = {}
    if not replaced_versions:
        errors["replaced_versions"] = (
            "Choose the current firmware versions this release replaces (the upgrade path)."
        )
    elif any(v.device_model_id != model.pk for v in replaced_versions):
        errors["replaced_versions"] = (
            "Every replaced version must belong to the same device model as the target."
        )
    elif any(v.pk == target_version.pk for v in replaced_versions):
        errors["replaced_versions"] = "The target version cannot also be a replaced version."
    if target_version.withdrawn_at:
        errors["target_version"] = "This firmware version has been withdrawn from the CPL."
    if pilot_start and pilot_end and pilot_end <= pilot_start:
        errors["pilot_end"] = "The pilot must end after it starts."
    elif pilot_start and pilot_end and pilot_end > pilot_start + relativedelta(months=6):
        errors["pilot_end"] = "The pilot lasts at most 6 months (T4)."
    if auto_deploy_at and not auto_deploy_reason.strip():
        errors["auto_deploy_reason"] = (
            "Give the reason for another automatic deployment time: Suppliers see it (T1)."
        )
    if errors:
        raise ValidationError(errors)
    rollout = Rollout(
        auto_deploy_at=auto_deploy_at,
        auto_deploy_override_reason=auto_deploy_reason.strip() if auto_deploy_at else "",
        reference=_next_reference(),
        title=title,
        device_model=model,
        target_version=target_version,
        release_note_url=release_note_url,
        severity=severity,
        priority=priority,
        release_type=release_type,
        impact=impact,
        pilot_max=pilot_max,
        contribution_minimum=contribution_minimum,
        contribution_threshold=contribution_threshold,
        pilot_start=pilot_start,
        pilot_end=pilot_end,
        created_by=user,
        **due_dates,
    )
    rollout.full_clean(exclude=["replaced_versions"])
    rollout.save()
    rollout.replaced_versions.set(replaced_versions)
    audit.record(
        user,
        "rollout.create",
        rollout,
        target=target_version.version,
        replaces=[v.version for v in replaced_versions],
        impact=impact,
    )
    return rollout


# -- B4: proposals -----------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def propose(*, user: User, rollout_id: int, move: str, reason: str = "", **changes: Any) -> Proposal:
    """A DCC user proposes a four-eyes decision (B4); a second DCC user approves or rejects it."""
    _require_dcc(user)
    if move not in MOVES or not MOVES[move].four_eyes:
        raise ValidationError(f"{move} is not a decision that needs a second DCC user.")
    rollout = Rollout.objects.select_for_update().get(pk=rollout_id)
    if not allowed_from(MOVES[move], rollout):
        raise ValidationError(f"Cannot propose this: the rollout is {rollout.describe_state()}.")
    if Proposal.objects.filter(rollout=rollout, move=move, state=ProposalState.PENDING).exists():
        raise ValidationError("This decision is already awaiting a second DCC user's approval.")
    if move == "post_pilot_failure" and not changes.get("commentary"):
        raise ValidationError({"commentary": "Explain the pilot failure: Suppliers see this commentary."})
    details: dict[str, Any] = {key: value for key, value in changes.items() if value not in (None, "")}
    if move == "publish":
        details["supersedes"] = [r.reference for r in rollouts_superseded_by(rollout)]
        details["eligible"] = count_eligible(rollout)
    proposal = Proposal.objects.create(
        rollout=rollout,
        move=move,
        reason=reason,
        at_stage=rollout.stage,
        at_status=rollout.status,
        details=details,
        proposed_by=user,
    )
    audit.record(user, "proposal.create", proposal, rollout=rollout.pk, move=move, reason=reason, **details)
    notify(
        Organisation.objects.filter(kind=OrgKind.DCC),
        kind="proposal.awaiting",
        rollout=rollout,
        subject=f"{rollout.reference}: {MOVES[move].label} awaits a second DCC user",
        body=f"{user} proposed to {MOVES[move].label.lower()} {rollout}. Reason: {reason or '(none given)'}.",
    )
    return proposal


@transaction.atomic(durable=True)
def approve_proposal(*, user: User, proposal_id: int, comment: str = "") -> Rollout:
    """A second DCC user approves: the move is applied at once, under the rollout's lock (L10, B4)."""
    _require_dcc(user)
    proposal = Proposal.objects.select_for_update().select_related("proposed_by").get(pk=proposal_id)
    if proposal.state != ProposalState.PENDING:
        raise ValidationError(f"This proposal is already {proposal.get_state_display().lower()}.")
    if proposal.proposed_by_id == user.pk:
        raise PermissionDenied("You proposed this decision: another DCC user must approve it.")
    max_age = settings.PORTAL_PROPOSAL_MAX_AGE_DAYS
    if proposal.proposed_at < timezone.now() - dt.timedelta(days=max_age):
        # B4: past its age it has lapsed, whether or not the hourly job (services.schedule) has marked it yet.
        raise ValidationError(
            f"This proposal has lapsed: nobody decided it within {max_age} days. Nothing was changed; "
            "propose the decision again if it still stands.",
            code="proposal_lapsed",
        )
    proposal.state = ProposalState.APPROVED
    proposal.decided_by = user
    proposal.decided_at = timezone.now()
    proposal.comment = comment
    proposal.save(update_fields=["state", "decided_by", "decided_at", "comment"])
    audit.record(
        user, "proposal.approve", proposal, rollout=proposal.rollout_id, move=proposal.move, comment=comment
    )
    return _APPLY[proposal.move](proposal)


@transaction.atomic(durable=True)
def reject_proposal(*, user: User, proposal_id: int, comment: str) -> Proposal:
    _require_dcc(user)
    if not comment.strip():
        raise ValidationError({"comment": "Say why you reject the proposal: the proposer sees it."})
    proposal = Proposal.objects.select_for_update().get(pk=proposal_id)
    if proposal.state != ProposalState.PENDING:
        raise ValidationError(f"This proposal is already {proposal.get_state_display().lower()}.")
    if proposal.proposed_by_id == user.pk:
        raise PermissionDenied("You proposed this decision: withdraw it, or let another DCC user decide.")
    proposal.state = ProposalState.REJECTED
    proposal.decided_by = user
    proposal.decided_at = timezone.now()
    proposal.comment = comment
    proposal.save(update_fields=["state", "decided_by", "decided_at", "comment"])
    audit.record(
        user, "proposal.reject", proposal, rollout=proposal.rollout_id, move=proposal.move, comment=comment
    )
    return proposal


# -- N2: publication and eligibility -------------------------------------------------------------------

ELIGIBLE = """
    FROM rollouts_hub h
    WHERE h.device_model_id = %(model)s AND h.status = 'in_smi'
      AND h.firmware_version_id IN (SELECT firmwareversion_id FROM rollouts_rollout_replaced_versions
                                    WHERE rollout_id = %(rollout)s)
"""


def count_eligible(rollout: Rollout) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) {ELIGIBLE}", {"model": rollout.device_model_id, "rollout": rollout.pk}
        )
        return cursor.fetchone()[0]


def rollouts_superseded_by(rollout: Rollout) -> list[Rollout]:
    """Live rollouts holding any hub this rollout would make eligible (L9, C2): shown before approval."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT DISTINCT rh.rollout_id FROM rollouts_rollouthub rh
                JOIN rollouts_rollout r ON r.id = rh.rollout_id
                WHERE r.id <> %(rollout)s AND r.status = ANY(%(live)s)
                  AND rh.hub_id IN (SELECT h.id {ELIGIBLE})""",
            {"model": rollout.device_model_id, "rollout": rollout.pk, "live": list(LIVE)},
        )
        ids = [row[0] for row in cursor.fetchall()]
    return list(Rollout.objects.filter(pk__in=ids).order_by("reference"))


def _publish(proposal: Proposal) -> Rollout:
    """On approval: timeline fixed (T1-T3), eligibility created set-based, overlaps superseded (N2, L9)."""
    with connection.cursor() as cursor:
        lock_estate(cursor)  # no inventory load changes the hubs while their rows are built (see membership)
    apply_smi_versions()  # U3: every version a feed has confirmed, before eligibility reads the hubs
    rollout = Rollout.objects.select_for_update().get(pk=proposal.rollout_id)
    now = timezone.now()
    changes: dict[str, Any] = {"published_at": now}
    if not rollout.auto_deploy_at:
        changes["auto_deploy_at"] = automatic_deployment_time(now)
    if not rollout.contribution_deadline:
        changes["contribution_deadline"] = months_after(now, 2)  # T3
    rollout = apply_move(rollout.pk, "publish", user=proposal.decided_by, proposal=proposal, changes=changes)
    auto = rollout.auto_deploy_at
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO rollouts_rollouthub (rollout_id, hub_id, import_supplier_id, gas_supplier_id, region,
                                                 "group", status, status_at, failure_reason, planned_activation_at,
                                                 activation_source, supplier_changed, guid)
                SELECT %(rollout)s, h.id, h.import_supplier_id, h.gas_supplier_id, h.region, 'safe_launch',
                       'pending', %(now)s, '', %(auto)s, 'automatic', false, h.guid
                {ELIGIBLE}
                ORDER BY h.id""",
            {"model": rollout.device_model_id, "rollout": rollout.pk, "now": now, "auto": auto},
        )
        eligible = cursor.rowcount
        # Fresh statistics: later joins on this table (inventory changes, schedules) plan on them.
        cursor.execute("ANALYZE rollouts_rollouthub")
    Rollout.objects.filter(pk=rollout.pk).update(eligible_count=eligible)
    rollout.eligible_count = eligible
    counters.recount([rollout.pk])
    superseded = rollouts_superseded_by(rollout)
    for old in superseded:
        was_piloting = old.stage == Stage.PILOTING
        apply_move(
            old.pk,
            "supersede",
            user=None,
            reason=f"Superseded by {rollout.reference}",
            changes={"superseded_by": rollout},
            details={"superseded_by": rollout.reference},
        )
        if was_piloting:
            void_pilot(old)  # C2
        notify_parties(
            old,
            kind="rollout.superseded",
            subject=f"{old.reference} is superseded by {rollout.reference}",
            body=f"{old} is superseded by {rollout} (A12). Its pending instructions no longer apply; "
            f"the newer rollout covers the same hubs.",
        )
    audit.record(
        proposal.decided_by,
        "rollout.eligibility",
        rollout,
        eligible=eligible,
        superseded=[r.reference for r in superseded],
    )
    deadline = timezone.localtime(rollout.instruction_deadline)
    notify_parties(
        rollout,
        kind="rollout.published",
        subject=f"Firmware notice {rollout.reference}: {rollout.title}",
        body=(
            f"DCC has published firmware {rollout.target_version.version} for device model "
            f"{rollout.device_model.cpl_code} (A01). Automatic deployment: "
            f"{timezone.localtime(auto):%d %B %Y %H:%M} UK time; instructions to deploy earlier are "
            f"accepted until {deadline:%d %B %Y %H:%M}. Release note: {rollout.release_note_url}"
        ),
    )
    return rollout


# -- the other moves -----------------------------------------------------------------------------------


def _decide(user: User | None, rollout_id: int, move: str, *, reason: str = "", **changes: Any) -> Rollout:
    if MOVES[move].four_eyes:
        raise PermissionDenied("This decision needs a proposal approved by a second DCC user.")
    return apply_move(rollout_id, move, user=user, reason=reason, changes=changes or None)


@transaction.atomic(durable=True)
def revoke_rollout(*, user: User, rollout_id: int, reason: str) -> Rollout:
    """N3, L2: withdraw a published notice before any hub is distributed; everyone who saw it is told."""
    _require_dcc(user)
    if not reason.strip():
        raise ValidationError(
            {"reason": "Give the reason for revoking: everyone who saw the notice is told."}
        )
    rollout = _decide(user, rollout_id, "revoke", reason=reason)
    notify_parties(
        rollout,
        kind="rollout.revoked",
        subject=f"Firmware notice {rollout.reference} is revoked",
        body=f"DCC has revoked {rollout}: nothing will be deployed. Reason: {reason}",
    )
    return rollout


@transaction.atomic(durable=True)
def start_pilot(*, user: User, rollout_id: int) -> Rollout:
    _require_dcc(user)
    return _decide(user, rollout_id, "start_pilot")


@transaction.atomic(durable=True)
def start_safe_launch_without_pilot(*, user: User, rollout_id: int) -> Rollout:
    _require_dcc(user)
    return _decide(user, rollout_id, "start_safe_launch_without_pilot")


@transaction.atomic(durable=True)
def post_pilot_success(*, user: User, rollout_id: int, commentary: str) -> Rollout:
    """A06 (PL10): the System starts safe launch at the end of the pilot window (progress issue)."""
    _require_dcc(user)
    return _decide(
        user, rollout_id, "post_pilot_success", pilot_outcome=Outcome.SUCCESS, pilot_commentary=commentary
    )


@transaction.atomic(durable=True)
def post_safe_launch_outcome(*, user: User, rollout_id: int, success: bool, commentary: str) -> Rollout:
    """A09 / A10 (SL4)."""
    _require_dcc(user)
    move = "post_safe_launch_success" if success else "post_safe_launch_failure"
    return _decide(
        user,
        rollout_id,
        move,
        safe_launch_outcome=Outcome.SUCCESS if success else Outcome.FAILURE,
        safe_launch_commentary=commentary,
    )


@transaction.atomic(durable=True)
def pause_rollout(*, user: User | None, rollout_id: int, reason: str) -> Rollout:
    """L6: DCC, or the System when a failure threshold is crossed (B1)."""
    if user is not None:
        _require_dcc(user)
    return _decide(user, rollout_id, "pause", reason=reason)


@transaction.atomic(durable=True)
def resume_rollout(*, user: User, rollout_id: int, reason: str = "") -> Rollout:
    _require_dcc(user)
    return _release(user, rollout_id, "resume", reason=reason)


def _release(user: User, rollout_id: int, move: str, *, reason: str) -> Rollout:
    """L6, I3: the hold ends. Instructed times that passed during it revert to the automatic time now, in
    the same transaction, whether or not the beat job (every 5 minutes, or late) saw them pass."""
    from .incidents import held_since, revert_passed  # incidents builds on this module

    rollout = Rollout.objects.select_for_update().get(pk=rollout_id)  # L10: the hold read under the lock
    since = held_since(rollout) if rollout.status in (Status.PAUSED, Status.SUSPENDED) else None
    rollout = _decide(user, rollout_id, move, reason=reason)
    if since is not None:
        revert_passed(rollout, since, timezone.now())
    return rollout


@transaction.atomic(durable=True)
def suspend_rollout(*, user: User, rollout_id: int, reason: str) -> Rollout:
    """L6, I2: immediate, no second user."""
    _require_dcc(user)
    return _decide(user, rollout_id, "suspend", reason=reason)


PANEL_MOVES = {
    Status.ACTIVE: "panel_decision_resume",
    Status.PAUSED: "panel_decision_pause",
    Status.STOPPED: "panel_decision_stop",
}


@transaction.atomic(durable=True)
def record_panel_decision(*, user: User, rollout_id: int, outcome: Status, reason: str) -> Rollout:
    """L6: a suspended rollout resumes, pauses or stops as the Panel decided."""
    _require_dcc(user)
    if outcome not in PANEL_MOVES:
        raise ValidationError("The Panel's decision is to resume, pause or stop the rollout.")
    if outcome == Status.ACTIVE:
        return _release(user, rollout_id, PANEL_MOVES[outcome], reason=reason)
    rollout = _decide(user, rollout_id, PANEL_MOVES[outcome], reason=reason)
    if rollout.status == Status.STOPPED:
        from .incidents import void_pending_instructions  # incidents builds on this module

        void_pending_instructions(rollout)  # I3: stop voids pending instructions, whoever decided it
    return rollout


@transaction.atomic(durable=True)
def delay_end_date(*, user: User, rollout_id: int, new_auto_deploy_at: dt.datetime, reason: str) -> Rollout:
    """L7, T1: move the automatic deployment time later, with a reason every party is told; the hubs on the
    automatic time are replanned (T5). (Triage "delay" does the same on an incident, I3.)"""
    _require_dcc(user)
    rollout = Rollout.objects.get(pk=rollout_id)
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for the new automatic time: Suppliers see it."})
    if rollout.auto_deploy_at and new_auto_deploy_at <= rollout.auto_deploy_at:
        raise ValidationError(
            {"new_auto_deploy_at": "The new automatic deployment time must be later than the current one."}
        )
    rollout = _decide(
        user,
        rollout_id,
        "delay_end_date",
        reason=reason,
        auto_deploy_at=new_auto_deploy_at,
        auto_deploy_override_reason=reason,
    )
    replanned = replan(rollout.pk)  # T5: the hubs on the automatic time move with it; instructions stand
    tell_csps(rollout, replanned, "DCC moved the automatic deployment time later (L7)")
    notify_parties(
        rollout,
        kind="rollout.delayed",
        subject=f"{rollout.reference}: the automatic deployment time moved later",
        body=f"DCC has moved the automatic deployment time of {rollout} to "
        f"{timezone.localtime(rollout.auto_deploy_at):%d %B %Y %H:%M} UK time, and the instruction deadline to "
        f"{timezone.localtime(rollout.instruction_deadline):%d %B %Y %H:%M}. Reason: {reason} Instructions "
        "to deploy earlier stand.",
    )
    return rollout


@transaction.atomic(durable=True)
def supersede_rollout(*, user: User, rollout_id: int, reason: str) -> Rollout:
    """L9: DCC supersedes a rollout with a reason."""
    _require_dcc(user)
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for superseding the rollout."})
    was_piloting = Rollout.objects.get(pk=rollout_id).stage == Stage.PILOTING
    rollout = _decide(user, rollout_id, "supersede", reason=reason)
    if was_piloting:
        void_pilot(rollout)  # C2
    notify_parties(
        rollout,
        kind="rollout.superseded",
        subject=f"{rollout.reference} is superseded",
        body=f"DCC has superseded {rollout} (A12). Reason: {reason}",
    )
    return rollout


@transaction.atomic(durable=True)
def withdraw_firmware(*, user: User, version_id: int, reason: str) -> FirmwareVersion:
    """N4: a version withdrawn from the CPL; its piloting rollouts cannot start safe launch."""
    _require_dcc(user)
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for the withdrawal."})
    version = FirmwareVersion.objects.select_for_update().get(pk=version_id)
    if version.withdrawn_at:
        raise ValidationError(f"Firmware {version.version} was already withdrawn.")
    version.withdrawn_at = timezone.now()
    version.withdrawn_reason = reason
    version.save(update_fields=["withdrawn_at", "withdrawn_reason"])
    audit.record(user, "firmware.withdraw", version, reason=reason)
    for rollout in Rollout.objects.filter(target_version=version).exclude(status__in=TERMINAL):
        notify_parties(
            rollout,
            kind="firmware.withdrawn",
            subject=f"Firmware {version.version} is withdrawn ({rollout.reference})",
            body=f"DCC has withdrawn firmware {version.version} from the CPL. Reason: {reason}. {rollout} "
            "will not start safe launch; DCC will stop or supersede it.",
        )
    return version


def _apply_four_eyes(name: str, notice: str | None = None):
    def apply(proposal: Proposal) -> Rollout:
        details = proposal.details
        changes: dict[str, Any] = {}
        if name == "post_pilot_failure":
            changes = {"pilot_outcome": Outcome.FAILURE, "pilot_commentary": details.get("commentary", "")}
        rollout = apply_move(
            proposal.rollout_id,
            name,
            user=proposal.decided_by,
            proposal=proposal,
            reason=proposal.reason,
            changes=changes or None,
        )
        extra = ""
        if rollout.status == Status.STOPPED:
            from .incidents import void_pending_instructions

            void_pending_instructions(rollout)  # I3: a stop voids the pending instructions
        elif rollout.status == Status.CLOSED:
            from .progress import closure_summary, describe_summary

            extra = " " + describe_summary(closure_summary(rollout))  # C1: the final counts
        if notice:
            notify_parties(
                rollout,
                kind=f"rollout.{name}",
                subject=f"{rollout.reference}: {notice}",
                body=f"{rollout}: {notice}. {proposal.reason}".strip() + extra,
            )
        return rollout

    return apply


_APPLY = {
    "publish": _publish,
    "post_pilot_failure": _apply_four_eyes(
        "post_pilot_failure", "the pilot failed (A07); the rollout is stopped"
    ),
    "stop": _apply_four_eyes("stop", "the rollout is stopped"),
    "close_after_outcome": _apply_four_eyes("close_after_outcome", "the rollout is closed (A11)"),
    "close_stopped": _apply_four_eyes("close_stopped", "the rollout is closed (A11)"),
}
