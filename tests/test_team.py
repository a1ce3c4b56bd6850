"""Organisation settings (P1): admins invite and deactivate their own users; members see the list."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.urls import reverse

from rollouts import tasks
from rollouts.models import AuditEvent, Role, User
from rollouts.services.parties import send_unsent_invitations

from .conftest import sign_in
from .factories import UserFactory


@pytest.mark.req("P1")
def test_members_see_their_organisation_and_no_other(client, import_supplier_member, other_supplier):
    sign_in(client, import_supplier_member)
    page = client.get(reverse("ssi:team")).text
    assert import_supplier_member.email in page
    assert import_supplier_member.organisation.users.get(role=Role.ADMIN).email in page
    assert other_supplier.email not in page
    assert "Invite a user" not in page


@pytest.mark.req("P1")
def test_a_member_cannot_invite(client, import_supplier_member):
    sign_in(client, import_supplier_member)
    response = client.post(
        reverse("ssi:team-invite"), {"full_name": "X", "email": "x@volt.test", "role": "member"}
    )
    assert response.status_code == 403
    assert not User.objects.filter(email="x@volt.test").exists()


@pytest.mark.req("P1")
@pytest.mark.req("P5")
def test_admin_invites_a_user_who_sets_a_password_by_email(
    client, import_supplier, django_capture_on_commit_callbacks
):
    sign_in(client, import_supplier)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("ssi:team-invite"), {"full_name": "Nina New", "email": "Nina@Volt.test", "role": "member"}
        )
    assert response.status_code == 302
    invitee = User.objects.get(email="nina@volt.test")
    assert invitee.organisation == import_supplier.organisation and invitee.role == Role.MEMBER
    assert not invitee.has_usable_password()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["nina@volt.test"]
    link = next(line for line in mail.outbox[0].body.splitlines() if "/accounts/password/reset/key/" in line)
    assert AuditEvent.objects.filter(
        action="user.invite", object_id=str(invitee.pk), user=import_supplier
    ).exists()

    client.logout()
    form = client.get(link.strip().removeprefix("http://127.0.0.1:8000"), follow=True)
    assert form.status_code == 200
    client.post(
        form.request["PATH_INFO"],
        {"password1": "a-long-new-passphrase", "password2": "a-long-new-passphrase"},
    )
    invitee.refresh_from_db()
    assert invitee.check_password("a-long-new-passphrase")


@pytest.mark.req("P1")
@pytest.mark.req("P5")
def test_an_invitation_whose_email_task_cannot_be_sent_is_emailed_by_the_beat_job(
    client, import_supplier, monkeypatch, django_capture_on_commit_callbacks
):
    """The broker is down when the invitation commits: the admin gets the team page, not an error, and the
    account stands; the beat job leaves the invitation two minutes to its own task, then e-mails it once."""

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("the broker is down")

    monkeypatch.setattr(tasks.send_invitation, "delay", broker_down)
    sign_in(client, import_supplier)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("ssi:team-invite"), {"full_name": "Nina New", "email": "nina@volt.test", "role": "member"}
        )
    assert response.status_code == 302
    invitee = User.objects.get(email="nina@volt.test", organisation=import_supplier.organisation)
    assert mail.outbox == []
    made = invitee.invitation.created_at
    assert send_unsent_invitations(now=made + dt.timedelta(minutes=2)) == 0  # its own task may still run
    assert send_unsent_invitations(now=made + dt.timedelta(minutes=3)) == 1
    assert [message.to for message in mail.outbox] == [["nina@volt.test"]]
    assert "/accounts/password/reset/key/" in mail.outbox[0].body
    assert f"{import_supplier} has given you an account" in mail.outbox[0].body  # who invited them
    assert send_unsent_invitations(now=made + dt.timedelta(minutes=8)) == 0  # once
    assert len(mail.outbox) == 1


@pytest.mark.req("P5")
def test_the_beat_job_sends_no_invitation_that_went_is_old_or_no_longer_needed(
    client, import_supplier, django_capture_on_commit_callbacks
):
    """Sent by its task; older than a week; the invitee already chose a password; the account deactivated."""
    sign_in(client, import_supplier)
    for n in range(4):
        with django_capture_on_commit_callbacks(execute=n == 0):  # only the first one's task runs
            client.post(
                reverse("ssi:team-invite"),
                {"full_name": f"New {n}", "email": f"new{n}@volt.test", "role": "member"},
            )
    sent, old, chose, gone = (User.objects.get(email=f"new{n}@volt.test") for n in range(4))
    assert sent.invitation.emailed_at is not None and len(mail.outbox) == 1
    made = sent.invitation.created_at
    old.invitation.created_at = made - dt.timedelta(days=7)
    old.invitation.save(update_fields=["created_at"])
    chose.set_password("a-long-new-passphrase")
    chose.save(update_fields=["password"])
    User.objects.filter(pk=gone.pk).update(is_active=False)
    assert send_unsent_invitations(now=made + dt.timedelta(minutes=3)) == 0
    assert len(mail.outbox) == 1


def test_inviting_an_existing_address_is_refused_clearly(client, import_supplier, other_supplier):
    sign_in(client, import_supplier)
    response = client.post(
        reverse("ssi:team-invite"), {"full_name": "O", "email": other_supplier.email, "role": "member"}
    )
    assert response.status_code == 200
    assert "An account with this email address already exists" in response.text
    assert User.objects.get(email=other_supplier.email).organisation == other_supplier.organisation


@pytest.mark.req("P1")
def test_admin_deactivates_after_confirming(client, import_supplier, import_supplier_member):
    sign_in(client, import_supplier)
    url = reverse("ssi:team-deactivate", args=[import_supplier_member.pk])
    assert "Deactivate bob@volt.test?" in client.get(url).text  # a confirmation before the irreversible step
    import_supplier_member.refresh_from_db()
    assert import_supplier_member.is_active
    assert client.post(url).status_code == 302
    import_supplier_member.refresh_from_db()
    assert not import_supplier_member.is_active and import_supplier_member.deactivated_at is not None
    assert User.objects.filter(pk=import_supplier_member.pk).exists()  # never deleted


@pytest.mark.req("P3")
def test_another_organisations_user_is_not_found(client, import_supplier, other_supplier):
    sign_in(client, import_supplier)
    assert client.post(reverse("ssi:team-deactivate", args=[other_supplier.pk])).status_code == 404
    assert client.post(reverse("ssi:team-deactivate", args=[999999])).status_code == 404
    other_supplier.refresh_from_db()
    assert other_supplier.is_active


def test_an_admin_cannot_deactivate_themselves(client, import_supplier):
    sign_in(client, import_supplier)
    response = client.post(reverse("ssi:team-deactivate", args=[import_supplier.pk]))
    assert "You cannot deactivate your own account" in response.text
    import_supplier.refresh_from_db()
    assert import_supplier.is_active


@pytest.mark.req("P1")
def test_csp_admin_manages_users_on_ssmi(client, csp_north):
    member = UserFactory(organisation=csp_north.organisation)
    sign_in(client, csp_north)
    assert member.email in client.get(reverse("ssmi:team")).text
    assert client.post(reverse("ssmi:team-deactivate", args=[member.pk])).status_code == 302
