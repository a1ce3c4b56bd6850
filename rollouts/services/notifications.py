"""Notices on dashboards and by email (N2, N3, C1, A12...). Addressed to organisations; never name a
Supplier to another Supplier (P4)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import partial

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from .. import tasks
from ..models import Notice, Organisation, OrgKind, Rollout, RolloutCounter, User


def relevant_organisations(rollout: Rollout, *, include_dcc: bool = True) -> list[Organisation]:
    """Every Supplier and CSP with hubs in the rollout (from the maintained counters), and DCC."""
    ids = set(RolloutCounter.objects.filter(rollout=rollout).values_list("organisation_id", flat=True))
    orgs = Organisation.objects.filter(pk__in=ids)
    if include_dcc:
        orgs = orgs | Organisation.objects.filter(kind=OrgKind.DCC)
    return list(orgs.distinct().order_by("kind", "name"))


def notify(
    organisations: Iterable[Organisation],
    *,
    kind: str,
    subject: str,
    body: str,
    rollout: Rollout | None = None,
) -> list[Notice]:
    """One notice per organisation, emailed to its active users after commit (Celery)."""
    notices = Notice.objects.bulk_create(
        Notice(organisation=org, rollout=rollout, kind=kind, subject=subject, body=body)
        for org in organisations
    )
    ids = [n.pk for n in notices]
    if ids:
        # Robust: the action has committed, so a broker that is down is logged, not turned into an error for
        # the user; `email_unsent_notices` (beat) sends these once it is back.
        transaction.on_commit(partial(tasks.email_notices.delay, ids), robust=True)
    return notices


def notify_parties(rollout: Rollout, *, kind: str, subject: str, body: str) -> list[Notice]:
    """Tell every party of a rollout (its Suppliers, CSPs and DCC)."""
    return notify(relevant_organisations(rollout), kind=kind, subject=subject, body=body, rollout=rollout)


def email_notices(notice_ids: list[int]) -> int:
    """Email each notice not emailed yet to its organisation's active users. Safe to run twice: the
    notice is claimed under a row lock, and a failed send rolls the claim back for the retry."""
    sent = 0
    for notice_id in notice_ids:
        with transaction.atomic():
            notice = (
                Notice.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(pk=notice_id, emailed_at__isnull=True)
                .select_related("organisation")
                .first()
            )
            if notice is None:
                continue
            recipients = list(
                User.objects.filter(organisation=notice.organisation, is_active=True).values_list(
                    "email", flat=True
                )
            )
            notice.emailed_at = timezone.now()
            notice.save(update_fields=["emailed_at"])
            if recipients:
                send_mail(
                    subject=f"[CHFW Portal] {notice.subject}",
                    message=f"{notice.body}\n\nSee your dashboard: {settings.PORTAL_BASE_URL}/",
                    from_email=None,
                    recipient_list=recipients,
                )
                sent += 1
    return sent


# The task sent on commit has normally run by then.
UNSENT_AFTER = dt.timedelta(minutes=2)
# An older notice stays on the dashboard only: news by e-mail, not history.
UNSENT_WITHIN = dt.timedelta(days=1)


def email_unsent_notices(now: dt.datetime | None = None) -> int:
    """E-mail the notices whose task was lost (a broker down at commit, a worker that died): those not
    e-mailed yet, created between a day and two minutes ago. Returns how many were sent."""
    now = now or timezone.now()
    ids = list(
        Notice.objects.filter(
            emailed_at__isnull=True, created_at__lt=now - UNSENT_AFTER, created_at__gte=now - UNSENT_WITHIN
        )
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
    )
    return email_notices(ids)


@transaction.atomic
def mark_notices_read(*, user: User, notice_ids: list[int]) -> int:
    """Read state is per user; a user marks only its own organisation's notices (P3)."""
    from ..models import NoticeRead

    mine = Notice.objects.filter(pk__in=notice_ids, organisation_id=user.organisation_id).values_list(
        "pk", flat=True
    )
    created = NoticeRead.objects.bulk_create(
        [NoticeRead(notice_id=pk, user=user) for pk in mine], ignore_conflicts=True
    )
    return len(created)
