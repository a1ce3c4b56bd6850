"""Scheduled jobs (run by Celery beat as the System): stale proposals, deadline reminders (T4)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import audit
from ..models import TERMINAL, Notice, Organisation, OrgKind, Proposal, ProposalState, Rollout
from .incidents import tell_triaged_stop_lapsed
from .notifications import notify, relevant_organisations

# Who owes what by when (T2, T3, T4): the rollout's date field, the kind of party, what to do.
DUE_DATES = [
    ("default_pilot_due", OrgKind.CSP, "upload the Default Pilot List and Schedule"),
    ("preferred_pilot_due", OrgKind.SUPPLIER, "submit your Preferred Pilot List and schedule requests"),
    ("schedule_answers_due", OrgKind.CSP, "answer the Suppliers' schedule requests"),
    ("contribution_deadline", OrgKind.SUPPLIER, "contribute your minimum number of pilot hubs"),
    ("instruction_deadline", OrgKind.SUPPLIER, "send any instruction to deploy earlier"),
]
REMIND_DAYS_BEFORE = (1, 7)  # nearest first


@transaction.atomic
def lapse_stale_proposals(now: dt.datetime | None = None) -> int:
    """Pending proposals older than PORTAL_PROPOSAL_MAX_AGE_DAYS lapse: nobody decided in time (B4)."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.PORTAL_PROPOSAL_MAX_AGE_DAYS)
    lapsed = 0
    for proposal in Proposal.objects.select_for_update().filter(
        state=ProposalState.PENDING, proposed_at__lt=cutoff
    ):
        proposal.state = ProposalState.LAPSED
        proposal.decided_at = now or timezone.now()
        proposal.comment = (
            f"Lapsed: no second DCC user decided within {settings.PORTAL_PROPOSAL_MAX_AGE_DAYS} days."
        )
        proposal.save(update_fields=["state", "decided_at", "comment"])
        audit.record(None, "proposal.lapsed", proposal, rollout=proposal.rollout_id, move=proposal.move)
        tell_triaged_stop_lapsed(
            proposal, f"no second DCC user decided within {settings.PORTAL_PROPOSAL_MAX_AGE_DAYS} days"
        )
        lapsed += 1
    return lapsed


@transaction.atomic
def send_deadline_reminders(now: dt.datetime | None = None) -> int:
    """A notice 7 days and 1 day before each party's due date; each reminder is sent once."""
    now = now or timezone.now()
    sent = 0
    for rollout in Rollout.objects.exclude(status__in=[*TERMINAL, "DRAFT", "STOPPED"]).exclude(
        published_at=None
    ):
        for field, kind, task in DUE_DATES:
            due = getattr(rollout, field)
            if due is None or due <= now:
                continue
            for days in REMIND_DAYS_BEFORE:
                if not (due - dt.timedelta(days=days) <= now):
                    continue
                notice_kind = f"reminder.{field}.{days}d"
                parties = [o for o in relevant_organisations(rollout, include_dcc=False) if o.kind == kind]
                already = set(
                    Notice.objects.filter(rollout=rollout, kind=notice_kind).values_list(
                        "organisation_id", flat=True
                    )
                )
                due_uk = timezone.localtime(due)
                todo: list[Organisation] = [o for o in parties if o.pk not in already]
                notify(
                    todo,
                    kind=notice_kind,
                    rollout=rollout,
                    subject=f"{rollout.reference}: {days} day{'s' if days > 1 else ''} left to {task}",
                    body=f"For {rollout}, {task} by {due_uk:%d %B %Y %H:%M} UK time.",
                )
                sent += len(todo)
                break  # the nearest reminder only: a late run does not send the 7-day one after the 1-day one
    return sent
