"""Organisations and their users (P1, P5): created by staff, an organisation admin or seed_demo."""

from __future__ import annotations

import datetime as dt
from functools import partial

from allauth.account.forms import default_token_generator
from allauth.account.utils import user_pk_to_url_str
from allauth.usersessions.models import UserSession
from django.conf import settings
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from .. import audit, tasks
from ..models import Invitation, Organisation, OrgKind, Region, Role, User
from .notifications import UNSENT_AFTER  # each invitation's own task first, as each notice's


@transaction.atomic
def create_organisation(
    *, user: User | None, name: str, kind: OrgKind, region: Region | str = ""
) -> Organisation:
    """Register an organisation (staff or seed_demo). Idempotent on its name."""
    org, created = Organisation.objects.get_or_create(
        name=name, defaults={"slug": slugify(name), "kind": kind, "region": region}
    )
    if not created and (org.kind != kind or org.region != region):
        raise ValidationError(f"{name} already exists as {org.get_kind_display()} {org.region}.".strip())
    if created:
        org.full_clean()
        audit.record(user, "organisation.create", org, kind=kind, region=region)
    return org


def set_password_link(user: User) -> str:
    """A one-time link to choose a password (allauth's reset-from-key flow)."""
    path = reverse(
        "account_reset_password_from_key",
        kwargs={"uidb36": user_pk_to_url_str(user), "key": default_token_generator.make_token(user)},
    )
    return f"{settings.PORTAL_BASE_URL}{path}"


def send_invitation(user_id: int, invited_by_id: int | None = None) -> bool:
    """E-mail the invitee the link to choose a password, once: the invitation is claimed under a row lock
    and marked in the same transaction, so a failed send rolls the mark back for the next try. False when
    it has gone already (or is going now). An account invited before invitations were recorded has no
    row: its e-mail is sent as it was then."""
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("user__organisation", "invited_by")
            .filter(user_id=user_id, emailed_at__isnull=True)
            .first()
        )
        if invitation is None:
            if Invitation.objects.filter(user_id=user_id).exists():
                return False
            user = User.objects.select_related("organisation").get(pk=user_id)
            _email_invitation(user, User.objects.filter(pk=invited_by_id).first())
            return True
        invitation.emailed_at = timezone.now()
        invitation.save(update_fields=["emailed_at"])
        _email_invitation(invitation.user, invitation.invited_by)
    return True


def _email_invitation(user: User, inviter: User | None) -> None:
    context = {"user": user, "inviter": inviter, "link": set_password_link(user)}
    send_mail(
        subject=f"You have been invited to CHFW Portal for {user.organisation}",
        message=render_to_string("emails/invitation.txt", context),
        from_email=None,
        recipient_list=[user.email],
    )


# Not later: an account a week old is known to its admin, who can tell the invitee to use "Forgotten your
# password?" on the sign-in page rather than receive an unexpected e-mail.
UNSENT_WITHIN = dt.timedelta(days=7)


def send_unsent_invitations(now: dt.datetime | None = None) -> int:
    """The beat job: e-mail the invitations whose task was lost (the broker down at the commit): those not
    e-mailed yet, made between a week and two minutes ago, of active accounts still without a password.
    Returns how many were sent."""
    now = now or timezone.now()
    waiting = (
        Invitation.objects.filter(
            emailed_at__isnull=True,
            created_at__lt=now - UNSENT_AFTER,
            created_at__gte=now - UNSENT_WITHIN,
            user__is_active=True,
            user__password__startswith=UNUSABLE_PASSWORD_PREFIX,
        )
        .order_by("created_at", "pk")
        .values_list("user_id", flat=True)
    )
    return sum(send_invitation(user_id) for user_id in list(waiting))


@transaction.atomic(durable=True)
def invite_user(
    *,
    user: User,
    email: str,
    full_name: str,
    role: Role = Role.MEMBER,
    organisation: Organisation | None = None,
) -> User:
    """An organisation admin (or staff) creates an account; the invitee sets a password by email (P1, P5)."""
    org = organisation or user.organisation
    if not (user.is_staff or (user.is_org_admin and user.organisation_id == getattr(org, "pk", None))):
        raise PermissionDenied("Only an admin of the organisation can invite its users.")
    email = User.objects.normalize_email(email).strip().lower()
    if User.objects.filter(email__iexact=email).exists():
        raise ValidationError(
            {
                "email": "An account with this email address already exists. Ask staff if it should move organisation."
            }
        )
    invitee = User.objects.create_user(email, full_name=full_name.strip(), organisation=org, role=role)
    Invitation.objects.create(user=invitee, invited_by=user)
    audit.record(user, "user.invite", invitee, role=role, organisation=org.slug)
    # Robust: the account has committed, so a broker that is down is logged, not an error page; the beat job
    # `send_unsent_invitations` sends the e-mail once it is back.
    transaction.on_commit(partial(tasks.send_invitation.delay, invitee.pk, user.pk), robust=True)
    return invitee


@transaction.atomic(durable=True)
def deactivate_user(*, user: User, target_id: int) -> User:
    """Deactivate (never delete) a user and end every session it has (P1, X1)."""
    target = User.objects.select_for_update().get(pk=target_id)
    if not (user.is_staff or (user.is_org_admin and target.organisation_id == user.organisation_id)):
        raise PermissionDenied("Only an admin of the organisation can deactivate its users.")
    if target.pk == user.pk:
        raise ValidationError(
            "You cannot deactivate your own account. Ask another admin of your organisation."
        )
    if not target.is_active:
        raise ValidationError(f"{target.email} is already deactivated.")
    target.is_active = False
    target.deactivated_at = timezone.now()
    target.save(update_fields=["is_active", "deactivated_at"])
    ended = 0
    for session in UserSession.objects.filter(user=target):
        session.end()
        ended += 1
    audit.record(user, "user.deactivate", target, sessions_ended=ended)
    return target


@transaction.atomic
def ensure_user(
    *,
    email: str,
    organisation: Organisation | None,
    role: Role,
    password: str,
    full_name: str = "",
    is_staff: bool = False,
    acting: User | None = None,
) -> tuple[User, bool]:
    """Create a user with a known password unless it exists (seed_demo and staff tooling). Idempotent."""
    existing = User.objects.filter(email__iexact=email).first()
    if existing:
        return existing, False
    user = User.objects.create_user(
        email, password, full_name=full_name, organisation=organisation, role=role, is_staff=is_staff
    )
    audit.record(
        acting, "user.create", user, role=role, organisation=organisation.slug if organisation else ""
    )
    return user, True
