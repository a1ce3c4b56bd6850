"""The Supplier's estate report (U2) and its per-rollout exports, its own hubs only (P3, P4, PL3, SL3)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from chfw_portal.uploads import download_response
from rollouts import selectors
from rollouts.services import exports

from ..access import supplier_required


@supplier_required
@require_GET
def estate(request: HttpRequest) -> HttpResponse:
    context = {"hubs": exports.estate_size(request.org), "columns": exports.ESTATE_COLUMNS}
    return render(request, "ssi/estate.html", context)


@supplier_required
@require_GET
def estate_download(request: HttpRequest, fmt: exports.Format) -> HttpResponse:
    return download_response(exports.download_estate_report(user=request.user, fmt=fmt))


@supplier_required
@require_GET
def rollout_eligibility(request: HttpRequest, rollout_id: int) -> HttpResponse:
    rollout = selectors.get_rollout_for(request.org, rollout_id)
    return download_response(exports.download_eligibility(user=request.user, rollout=rollout))


@supplier_required
@require_GET
def rollout_export(
    request: HttpRequest,
    rollout_id: int,
    service: Callable[..., exports.Download],
    fmt: exports.Format = "csv",
) -> HttpResponse:
    """One export of a rollout; `service` (a download_* of rollouts.services.exports) comes from the URL conf."""
    rollout = selectors.get_rollout_for(request.org, rollout_id)
    return download_response(service(user=request.user, rollout=rollout, fmt=fmt))
