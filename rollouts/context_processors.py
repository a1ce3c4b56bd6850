from __future__ import annotations

from django.http import HttpRequest


def portal(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    org = user.organisation if user is not None and user.is_authenticated and user.organisation_id else None
    return {"service_name": "CHFW Portal", "current_org": org}
