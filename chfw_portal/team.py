"""Organisation users, the same on both faces (P1): members list them, admins invite and deactivate.

ssi/urls.py and ssmi/urls.py wrap these views in their own face guard.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from rollouts import selectors
from rollouts.services.parties import deactivate_user, invite_user

from .forms import InviteForm


def _face(request: HttpRequest) -> str:
    return request.resolver_match.namespace


def _context(request: HttpRequest, **extra) -> dict:
    face = _face(request)
    return {"face": face, "face_base": f"{face}/base.html", **extra}


@require_GET
def team(request: HttpRequest) -> HttpResponse:
    users = selectors.users_of(request.org)
    return render(request, "team/users.html", _context(request, users=users))


@require_http_methods(["GET", "POST"])
def team_invite(request: HttpRequest) -> HttpResponse:
    if not request.user.is_org_admin:
        raise PermissionDenied("Only an admin of your organisation can invite users.")
    form = InviteForm(request.POST or None)
    if form.is_valid():
        try:
            invitee = invite_user(user=request.user, **form.cleaned_data)
        except ValidationError as e:
            if hasattr(e, "error_dict"):
                for field, errors in e.error_dict.items():
                    form.add_error(field, errors)
            else:
                form.add_error(None, e)
        else:
            messages.success(
                request, f"Invitation sent to {invitee.email}. They choose a password from the link in it."
            )
            return redirect(f"{_face(request)}:team")
    return render(request, "team/invite.html", _context(request, form=form))


@require_http_methods(["GET", "POST"])
def team_deactivate(request: HttpRequest, user_id: int) -> HttpResponse:
    if not request.user.is_org_admin:
        raise PermissionDenied("Only an admin of your organisation can deactivate users.")
    target = selectors.get_user_for(request.org, user_id)
    error = None
    if request.method == "POST":
        try:
            deactivate_user(user=request.user, target_id=target.pk)
        except ValidationError as e:
            error = " ".join(e.messages)
        else:
            messages.success(request, f"{target.email} is deactivated and signed out everywhere.")
            return redirect(f"{_face(request)}:team")
    return render(request, "team/deactivate.html", _context(request, target=target, error=error))
