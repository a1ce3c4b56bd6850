"""Notices on both faces (U1): mark as read. ssi/urls.py and ssmi/urls.py wrap it in their face guard."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from rollouts import selectors
from rollouts.services.notifications import mark_notices_read


@require_POST
def notices_read(request: HttpRequest) -> HttpResponse:
    unread = selectors.notices_for(request.user).filter(is_read=False).values_list("pk", flat=True)
    mark_notices_read(user=request.user, notice_ids=list(unread))
    return redirect(f"{request.resolver_match.namespace}:dashboard")
