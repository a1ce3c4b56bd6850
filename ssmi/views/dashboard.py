from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from ..access import dcc_or_csp_required


@dcc_or_csp_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "ssmi/dashboard.html")
