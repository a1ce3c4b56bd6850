"""U1: each organisation's outstanding actions per rollout in flight, with how long is left, and the next
action date of the other actors. A read (a selector): it never writes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from .models import (
    DeploymentStatus,
    Group,
    Incident,
    Organisation,
    OrgKind,
    RequestState,
    Rollout,
    RolloutHub,
    ScheduleRequest,
    Stage,
    Status,
)
from .selectors import rollouts_for

LIVE = (Status.ACTIVE, Status.PAUSED, Status.SUSPENDED)


@dataclass(frozen=True)
class Action:
    rollout: Rollout
    text: str
    due: dt.datetime | None = None

    @property
    def days_left(self) -> int | None:
        if self.due is None:
            return None
        return (timezone.localdate(self.due) - timezone.localdate()).days


@dataclass(frozen=True)
class NextDate:
    rollout: Rollout
    who: str
    what: str
    due: dt.datetime


def outstanding_actions_for(org: Organisation) -> list[Action]:
    """What this organisation must do next, soonest first (undated last). DCC's pending four-eyes
    decisions are listed apart (selectors.pending_proposals_for), with a link to decide."""
    actions: list[Action] = []
    for rollout in rollouts_for(org).filter(status__in=LIVE).exclude(published_at=None):
        actions.extend(
            _for_dcc(rollout)
            if org.kind == OrgKind.DCC
            else _for_csp(rollout, org)
            if org.kind == OrgKind.CSP
            else _for_supplier(rollout, org)
        )
    return sorted(actions, key=lambda a: (a.due is None, a.due or timezone.now(), a.rollout.reference))


def _for_dcc(rollout: Rollout) -> list[Action]:
    from .services.piloting import pilot_not_ready

    actions = []
    if rollout.target_version.withdrawn_at and rollout.stage in (Stage.NOTIFICATION, Stage.PILOTING):
        actions.append(Action(rollout, "Stop or supersede: the target firmware was withdrawn."))
    untriaged = Incident.objects.filter(rollout=rollout, outcome="").count()
    if untriaged:
        actions.append(Action(rollout, f"Triage {untriaged} incident{'s' if untriaged > 1 else ''}."))
    withdrawn = rollout.target_version.withdrawn_at is not None
    if rollout.stage == Stage.NOTIFICATION and rollout.status == Status.ACTIVE and not withdrawn:
        if rollout.has_pilot and pilot_not_ready(rollout) is None:
            actions.append(
                Action(
                    rollout, "Start the pilot: the pilot group is complete and batched.", rollout.pilot_start
                )
            )
        elif not rollout.has_pilot:
            actions.append(Action(rollout, "Start safe launch (no pilot for this release)."))
    if rollout.stage == Stage.PILOTING and not rollout.pilot_outcome:
        actions.append(Action(rollout, "Post the pilot outcome (A06 or A07).", rollout.pilot_end))
    return actions


def _for_csp(rollout: Rollout, org: Organisation) -> list[Action]:
    actions = []
    hubs = RolloutHub.objects.filter(rollout=rollout, region=org.region).exclude(status=DeploymentStatus.LEFT)
    if rollout.stage == Stage.NOTIFICATION and rollout.has_pilot:
        if not hubs.filter(in_default_pilot=True).exists():
            actions.append(
                Action(
                    rollout, "Upload the Default Pilot List (A02) for your region.", rollout.default_pilot_due
                )
            )
        elif hubs.filter(group=Group.PILOT, batch__isnull=True).exists():
            actions.append(
                Action(
                    rollout,
                    "Upload the Default Pilot Schedule (A03): some pilot hubs have no batch.",
                    rollout.default_pilot_due,
                )
            )
    pending = ScheduleRequest.objects.filter(
        rollout=rollout, region=org.region, state=RequestState.PENDING
    ).count()
    if pending:
        actions.append(
            Action(
                rollout,
                f"Answer {pending} schedule request{'s' if pending > 1 else ''}.",
                rollout.schedule_answers_due,
            )
        )
    if (
        rollout.stage in (Stage.NOTIFICATION, Stage.PILOTING, Stage.SAFE_LAUNCH)
        and hubs.filter(group=Group.SAFE_LAUNCH, batch__isnull=True, status=DeploymentStatus.PENDING).exists()
    ):
        actions.append(
            Action(
                rollout,
                "Upload the Safe Launch Schedule (A08) for the hubs not yet in a batch.",
                rollout.auto_deploy_at,
            )
        )
    return actions


def _for_supplier(rollout: Rollout, org: Organisation) -> list[Action]:
    from .services.piloting import contribution_shortfalls

    actions = []
    now = timezone.now()
    if (
        rollout.stage == Stage.NOTIFICATION
        and rollout.has_pilot
        and rollout.preferred_pilot_due
        and rollout.preferred_pilot_due > now
    ):
        actions.append(
            Action(
                rollout,
                "Review the pilot group: exclude or add your hubs (A04) and ask for "
                "schedule constraints (A05).",
                rollout.preferred_pilot_due,
            )
        )
    if (
        rollout.stage == Stage.NOTIFICATION
        and rollout.contribution_deadline
        and rollout.contribution_deadline > now
    ):
        mine = [s for s in contribution_shortfalls(rollout) if s.supplier_id == org.pk and s.missing]
        if mine:
            actions.append(
                Action(
                    rollout,
                    f"Contribute {mine[0].missing} more pilot hubs, or the System selects them for you.",
                    rollout.contribution_deadline,
                )
            )
    deadline = rollout.instruction_deadline
    if deadline and deadline >= now:
        actions.append(Action(rollout, "Instruct any earlier deployment you want (optional).", deadline))
    return actions


def next_dates_of_others(org: Organisation) -> list[NextDate]:
    """For each rollout in flight, the next due date of the other kinds of party (U1)."""
    owners = [
        ("default_pilot_due", OrgKind.CSP, "CSPs: default pilot list and schedule"),
        ("preferred_pilot_due", OrgKind.SUPPLIER, "Suppliers: preferred pilot list and requests"),
        ("schedule_answers_due", OrgKind.CSP, "CSPs: answers to schedule requests"),
        ("contribution_deadline", OrgKind.SUPPLIER, "Suppliers: pilot contribution"),
        ("pilot_start", OrgKind.DCC, "DCC: pilot start"),
        ("pilot_end", OrgKind.DCC, "DCC: pilot end"),
        ("auto_deploy_at", OrgKind.DCC, "Automatic deployment"),
    ]
    now = timezone.now()
    found = []
    for rollout in rollouts_for(org).filter(status__in=LIVE).exclude(published_at=None):
        upcoming = [
            (getattr(rollout, f), who, what)
            for f, who, what in owners
            if who != org.kind and getattr(rollout, f) and getattr(rollout, f) > now
        ]
        if upcoming:
            due, _who, what = min(upcoming, key=lambda item: item[0])
            found.append(NextDate(rollout, what.split(":")[0], what, due))
    return found
