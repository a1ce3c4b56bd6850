"""Receivers for allauth's signals: sign-ins, sign-in failures and second factors are audited."""

from __future__ import annotations

from allauth.account.internal.flows.login import record_authentication
from allauth.account.signals import user_logged_in, user_logged_out
from allauth.mfa.signals import authenticator_added, authenticator_removed
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver

from . import audit


@receiver(user_logged_in)
def audit_sign_in(sender, request, user, **kwargs) -> None:
    audit.record(user, "user.sign_in", user)


@receiver(user_logged_out)
def audit_sign_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        audit.record(user, "user.sign_out", user)


@receiver(user_login_failed)
def audit_sign_in_failed(sender, credentials, request=None, **kwargs) -> None:
    # Never store the password; the email typed is kept for investigation.
    audit.record(None, "user.sign_in_failed", email=str(credentials.get("email", ""))[:254])


@receiver(authenticator_added)
def second_factor_added(sender, request, user, authenticator, **kwargs) -> None:
    # Setting up TOTP means typing a valid code: the factor has been used in this session (P5).
    if authenticator.type == authenticator.Type.TOTP:
        record_authentication(request, user, "mfa", id=authenticator.pk, type=authenticator.type)
    audit.record(user, "user.mfa_added", user, type=authenticator.type)


@receiver(authenticator_removed)
def second_factor_removed(sender, request, user, authenticator, **kwargs) -> None:
    audit.record(user, "user.mfa_removed", user, type=authenticator.type)
