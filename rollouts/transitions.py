"""Every move of REQUIREMENTS.md section L, in one table. Nothing else assigns stage or status.

`apply_move` checks the move against the table under a row lock on the rollout (L10), refuses a
four-eyes move without an approved proposal by a second DCC user (B4), checks its guard, writes
the audit event and lapses proposals made for the state the rollout has just left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from . import audit
from .models import (
    Actor,
    DeploymentStatus,
    OrgKind,
    Outcome,
    Proposal,
    ProposalState,
    Rollout,
    RolloutCounter,
    Stage,
    Status,
    User,
)

Guard = Callable[[Rollout], str | None]

LIVE_STAGES = frozenset({Stage.NOTIFICATION, Stage.PILOTING, Stage.SAFE_LAUNCH})
ALL_STAGES = frozenset(Stage)
HELD = frozenset({Status.ACTIVE, Status.PAUSED, Status.SUSPENDED})  # a live rollout, moving or held
DCC = frozenset({Actor.DCC})


def no_guard(rollout: Rollout) -> str | None:
    return None


def nothing_distributed(rollout: Rollout) -> str | None:
    """L2: revocation only before any hub is distributed; later, `stop` applies."""
    distributed = RolloutCounter.objects.filter(
        rollout=rollout,
        status__in=[DeploymentStatus.DISTRIBUTED, DeploymentStatus.ACTIVATED],
        hubs__gt=0,
        organisation__kind=OrgKind.CSP,
    ).exists()
    return (
        "Firmware has already been distributed to some hubs: stop the rollout instead."
        if distributed
        else None
    )


def pilot_ready(rollout: Rollout) -> str | None:
    """L3: a pilot, a non-empty effective pilot group, every pilot hub in a batch (completed in piloting)."""
    if not rollout.has_pilot:
        return f"A {rollout.get_impact_display().lower()} release has no pilot: start safe launch instead."
    from .services.piloting import pilot_not_ready

    return pilot_not_ready(rollout)


def firmware_available(rollout: Rollout) -> str | None:
    if rollout.target_version.withdrawn_at is not None:
        return (
            f"Firmware {rollout.target_version.version} was withdrawn on "
            f"{timezone.localtime(rollout.target_version.withdrawn_at):%d %B %Y}: stop or supersede the rollout."
        )
    return None


def pilot_succeeded(rollout: Rollout) -> str | None:
    """L5: safe launch follows the pilot only after A06, and while the firmware is not withdrawn."""
    if rollout.pilot_outcome != Outcome.SUCCESS:
        return "Safe launch starts only after Pilot Success (A06) has been posted."
    return firmware_available(rollout)


def without_pilot(rollout: Rollout) -> str | None:
    if rollout.has_pilot:
        return "This rollout has a pilot: safe launch starts after Pilot Success (A06)."
    return firmware_available(rollout)


def pilot_outcome_open(rollout: Rollout) -> str | None:
    return (
        f"The pilot outcome was already posted ({rollout.pilot_outcome})." if rollout.pilot_outcome else None
    )


def safe_launch_outcome_open(rollout: Rollout) -> str | None:
    if rollout.safe_launch_outcome:
        return f"The safe launch outcome was already posted ({rollout.safe_launch_outcome})."
    return None


def safe_launch_outcome_posted(rollout: Rollout) -> str | None:
    """L8: close from safe launch only after A09 or A10 was posted."""
    return None if rollout.safe_launch_outcome else "Post Safe Launch Success (A09) or Failure (A10) first."


@dataclass(frozen=True)
class Move:
    from_stages: frozenset[Stage]
    from_statuses: frozenset[Status]
    to_stage: Stage | None  # None: stage unchanged
    to_status: Status | None  # None: status unchanged (an outcome or a date is only recorded)
    actors: frozenset[Actor]
    four_eyes: bool = False  # B4: needs an approved proposal by a second DCC user
    guard: Guard = no_guard
    label: str = ""


MOVES: dict[str, Move] = {
    # L1
    "publish": Move(
        {Stage.NOTIFICATION}, {Status.DRAFT}, None, Status.ACTIVE, DCC, four_eyes=True, label="Publish"
    ),
    # L2
    "revoke": Move(
        {Stage.NOTIFICATION},
        {Status.ACTIVE},
        None,
        Status.REVOKED,
        DCC,
        guard=nothing_distributed,
        label="Revoke",
    ),
    # L3
    "start_pilot": Move(
        {Stage.NOTIFICATION},
        {Status.ACTIVE},
        Stage.PILOTING,
        None,
        DCC,
        guard=pilot_ready,
        label="Start the pilot",
    ),
    # L4
    "post_pilot_success": Move(
        {Stage.PILOTING},
        {Status.ACTIVE, Status.PAUSED},
        None,
        None,
        DCC,
        guard=pilot_outcome_open,
        label="Post Pilot Success (A06)",
    ),
    "post_pilot_failure": Move(
        {Stage.PILOTING},
        {Status.ACTIVE, Status.PAUSED},
        None,
        Status.STOPPED,
        DCC,
        four_eyes=True,
        guard=pilot_outcome_open,
        label="Post Pilot Failure (A07)",
    ),
    # L5
    "start_safe_launch": Move(
        {Stage.PILOTING},
        {Status.ACTIVE},
        Stage.SAFE_LAUNCH,
        None,
        frozenset({Actor.SYSTEM}),
        guard=pilot_succeeded,
        label="Start safe launch",
    ),
    "start_safe_launch_without_pilot": Move(
        {Stage.NOTIFICATION},
        {Status.ACTIVE},
        Stage.SAFE_LAUNCH,
        None,
        DCC,
        guard=without_pilot,
        label="Start safe launch (no pilot)",
    ),
    # L6
    "pause": Move(
        LIVE_STAGES, {Status.ACTIVE}, None, Status.PAUSED, frozenset({Actor.DCC, Actor.SYSTEM}), label="Pause"
    ),
    "resume": Move(LIVE_STAGES, {Status.PAUSED}, None, Status.ACTIVE, DCC, label="Resume"),
    "suspend": Move(
        LIVE_STAGES, {Status.ACTIVE, Status.PAUSED}, None, Status.SUSPENDED, DCC, label="Suspend"
    ),
    "panel_decision_resume": Move(
        LIVE_STAGES, {Status.SUSPENDED}, None, Status.ACTIVE, DCC, label="Record the Panel's decision: resume"
    ),
    "panel_decision_pause": Move(
        LIVE_STAGES, {Status.SUSPENDED}, None, Status.PAUSED, DCC, label="Record the Panel's decision: pause"
    ),
    "panel_decision_stop": Move(
        LIVE_STAGES, {Status.SUSPENDED}, None, Status.STOPPED, DCC, label="Record the Panel's decision: stop"
    ),
    # L7
    "delay_end_date": Move(LIVE_STAGES, HELD, None, None, DCC, label="Delay the automatic deployment time"),
    # L8
    "stop": Move(LIVE_STAGES, HELD, None, Status.STOPPED, DCC, four_eyes=True, label="Stop"),
    "post_safe_launch_success": Move(
        {Stage.SAFE_LAUNCH},
        {Status.ACTIVE, Status.PAUSED},
        None,
        None,
        DCC,
        guard=safe_launch_outcome_open,
        label="Post Safe Launch Success (A09)",
    ),
    "post_safe_launch_failure": Move(
        {Stage.SAFE_LAUNCH},
        {Status.ACTIVE, Status.PAUSED},
        None,
        None,
        DCC,
        guard=safe_launch_outcome_open,
        label="Post Safe Launch Failure (A10)",
    ),
    "close_after_outcome": Move(
        {Stage.SAFE_LAUNCH},
        {Status.ACTIVE},
        Stage.CLOSURE,
        Status.CLOSED,
        DCC,
        four_eyes=True,
        guard=safe_launch_outcome_posted,
        label="Close",
    ),
    "close_stopped": Move(
        LIVE_STAGES, {Status.STOPPED}, Stage.CLOSURE, Status.CLOSED, DCC, four_eyes=True, label="Close"
    ),
    # L9: any non-terminal state; a stopped rollout can only be closed (L8).
    "supersede": Move(
        LIVE_STAGES,
        {Status.DRAFT, *HELD},
        Stage.CLOSURE,
        Status.SUPERSEDED,
        frozenset({Actor.DCC, Actor.SYSTEM}),
        label="Supersede",
    ),
}

FOUR_EYES = frozenset(name for name, move in MOVES.items() if move.four_eyes)


def allowed_from(move: Move, rollout: Rollout) -> bool:
    return rollout.stage in move.from_stages and rollout.status in move.from_statuses


def moves_available(rollout: Rollout, actor: Actor) -> list[str]:
    """The moves this actor could try now (guards not checked): for buttons and outstanding actions."""
    return [name for name, move in MOVES.items() if actor in move.actors and allowed_from(move, rollout)]


def apply_move(
    rollout_id: int,
    name: str,
    *,
    user: User | None,
    proposal: Proposal | None = None,
    reason: str = "",
    changes: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> Rollout:
    """Apply one move of the table (call inside the service's transaction). `user=None` is the System.

    `changes` are the other fields the move records with it (an outcome and its commentary, a new
    automatic time): set in the same save, after every check.
    """
    move = MOVES[name]
    actor = audit.actor_for(user)
    rollout = Rollout.objects.select_for_update().select_related("target_version").get(pk=rollout_id)  # L10
    if actor not in move.actors:
        raise PermissionDenied(f"{move.label or name} is not something {actor.label} can do.")
    if not allowed_from(move, rollout):
        raise ValidationError(
            f"Cannot {(move.label or name).lower()}: the rollout is {rollout.describe_state()}. "
            "Someone may have decided it already: reload the page to see its current state.",
            code="state_changed",
        )
    if move.four_eyes:
        _check_four_eyes(rollout, name, proposal)
    if why_not := move.guard(rollout):
        raise ValidationError(why_not, code="guard")
    before = (rollout.stage, rollout.status)
    rollout.stage = move.to_stage or rollout.stage
    rollout.status = move.to_status or rollout.status
    fields = ["stage", "status"]
    for field, value in (changes or {}).items():
        setattr(rollout, field, value)
        fields.append(field)
    rollout.save(update_fields=fields)
    audit.record(
        user,
        f"rollout.{name}",
        rollout,
        actor=actor,
        before=list(before),
        after=[rollout.stage, rollout.status],
        reason=reason,
        proposal=proposal.pk if proposal else None,
        proposed_by=proposal.proposed_by.email if proposal else None,
        approved_by=proposal.decided_by.email if proposal and proposal.decided_by else None,
        **(details or {}),
    )
    if (rollout.stage, rollout.status) != before:
        lapse_stale_proposals(rollout)
    return rollout


def _check_four_eyes(rollout: Rollout, name: str, proposal: Proposal | None) -> None:
    """B4: refused without a proposal for this move on this rollout, approved by a second DCC user."""
    if (
        proposal is None
        or proposal.rollout_id != rollout.pk
        or proposal.move != name
        or proposal.state != ProposalState.APPROVED
        or proposal.decided_by_id is None
        or proposal.decided_by_id == proposal.proposed_by_id
        or (proposal.at_stage, proposal.at_status) != (rollout.stage, rollout.status)
    ):
        raise PermissionDenied("This decision needs a proposal approved by a second DCC user.")


def lapse_stale_proposals(rollout: Rollout) -> int:
    """A pending proposal lapses when the rollout changes state before it is decided (B4)."""
    # The services build on this module: imported here, for the one lapse that tells the parties.
    from .services.incidents import tell_triaged_stop_lapsed

    stale = Proposal.objects.filter(rollout=rollout, state=ProposalState.PENDING).exclude(
        at_stage=rollout.stage, at_status=rollout.status
    )
    lapsed = 0
    for proposal in stale.select_for_update():
        proposal.state = ProposalState.LAPSED
        proposal.decided_at = timezone.now()
        proposal.comment = f"Lapsed: the rollout became {rollout.describe_state()} before a decision."
        proposal.save(update_fields=["state", "decided_at", "comment"])
        audit.record(None, "proposal.lapsed", proposal, rollout=rollout.pk, move=proposal.move)
        same_stage = proposal.at_stage == rollout.stage
        became = rollout.get_status_display().lower() if same_stage else rollout.describe_state()
        tell_triaged_stop_lapsed(proposal, f"the rollout became {became}")
        lapsed += 1
    return lapsed
