"""allauth wiring: no public sign-up (P5), and each kind of user lands on its own face (P2)."""

from __future__ import annotations

import time

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.authentication import get_authentication_records
from allauth.core import context
from django.http import HttpRequest
from django.urls import reverse


def home_url_for(user) -> str:
    if user.organisation_id is None:
        return reverse("admin:index") if user.is_staff else reverse("account_logout")
    return reverse(f"{user.organisation.face}:dashboard")


class PortalAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False  # accounts are created by an organisation admin or staff

    def get_login_redirect_url(self, request: HttpRequest) -> str:
        return home_url_for(request.user)

    def is_reauthentication_required(self, *, app: str, **kwargs) -> bool:
        # Right after signing in (5 minutes), setting up a second factor needs no second password prompt.
        request = context.request
        records = get_authentication_records(request, request.user) if request is not None else []
        if any(time.time() - record.get("at", 0) < 300 for record in records):
            return False
        return super().is_reauthentication_required(app=app, **kwargs)
