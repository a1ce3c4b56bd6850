"""Notices by e-mail survive a lost task (N2: each relevant party sees the notice and gets an email).

The e-mail of a notice is sent by a Celery task after the action commits. When that task cannot be sent
(the broker is down) the action still stands, and the beat job `email_unsent_notices` sends the e-mail
later: notices not e-mailed yet, created between a day and two minutes before it runs.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.utils import timezone

from rollouts import tasks
from rollouts.models import Notice, Status
from rollouts.services.lifecycle import approve_proposal, propose
from rollouts.services.notifications import email_unsent_notices, notify


def broker_down(*args, **kwargs):
    raise ConnectionRefusedError("the broker is down")


@pytest.mark.req("N2")
def test_a_publication_whose_email_task_cannot_be_sent_stands_and_the_beat_job_emails_its_notices(
    draft, dcc, dcc_2, import_supplier, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(tasks.email_notices, "delay", broker_down)
    proposal = propose(user=dcc, rollout_id=draft.pk, move="publish")
    with django_capture_on_commit_callbacks(execute=True):
        rollout = approve_proposal(user=dcc_2, proposal_id=proposal.pk)  # no error after the commit
    assert rollout.status == Status.ACTIVE
    published = Notice.objects.filter(rollout=rollout, kind="rollout.published")
    assert published.exists() and mail.outbox == []
    monkeypatch.undo()
    # Waiting: the publication's notices, and the proposal's (whose task this test never ran).
    waiting = set(Notice.objects.filter(emailed_at__isnull=True).values_list("pk", flat=True))
    assert set(published.values_list("pk", flat=True)) < waiting

    assert email_unsent_notices(now=timezone.now() + dt.timedelta(minutes=3)) == len(waiting)
    assert import_supplier.email in {address for message in mail.outbox for address in message.to}
    assert not published.filter(emailed_at__isnull=True).exists()
    assert email_unsent_notices(now=timezone.now() + dt.timedelta(minutes=3)) == 0  # each e-mail once


@pytest.mark.req("N2")
def test_the_beat_job_leaves_a_notice_to_its_own_task_for_two_minutes_and_news_older_than_a_day(
    import_supplier, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(tasks.email_notices, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        (notice,) = notify([import_supplier.organisation], kind="test", subject="Hello", body="Body")
    now = notice.created_at
    assert email_unsent_notices(now=now + dt.timedelta(minutes=2)) == 0  # its own task may still run
    assert email_unsent_notices(now=now + dt.timedelta(days=1, seconds=1)) == 0  # too old to send now
    assert email_unsent_notices(now=now + dt.timedelta(minutes=2, seconds=1)) == 1
    assert [message.subject for message in mail.outbox] == ["[CHFW Portal] Hello"]
