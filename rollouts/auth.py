"""allauth wiring: no public sign-up (P5), and each kind of user lands on its own face (P2)."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
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
