"""Face guards (P2, P5). ssi/access.py and ssmi/access.py name them for their face."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from allauth.account.authentication import get_authentication_records
from allauth.mfa.utils import is_mfa_enabled
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from rollouts.models import OrgKind

View = Callable[..., HttpResponse]


def mfa_used_in_session(request: HttpRequest) -> bool:
    return any(r.get("method") == "mfa" for r in get_authentication_records(request, request.user))


def face_required(*kinds: OrgKind, require_mfa: bool = False) -> Callable[[View], View]:
    """Let in signed-in users of these organisation kinds; anyone else signed in gets 403 (P2).

    With `require_mfa` and PORTAL_REQUIRE_MFA on, a user without a second factor is sent to set one
    up, and a session not signed in with it is ended (P5).
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if user.organisation_id is None or user.organisation.kind not in kinds:
                raise PermissionDenied("This part of the portal is for another kind of organisation.")
            if require_mfa and settings.PORTAL_REQUIRE_MFA:
                if not is_mfa_enabled(user):
                    messages.info(
                        request,
                        "Set up an authenticator app before you continue: DCC and CSP users "
                        "must sign in with a second factor.",
                    )
                    return redirect("mfa_activate_totp")
                if not mfa_used_in_session(request):
                    logout(request)
                    messages.info(request, "Sign in again with your authenticator code.")
                    return redirect_to_login(request.get_full_path())
            request.org = user.organisation
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
