"""Downloads for DCC and CSPs: a rollout's exports (a CSP's region, or all for DCC) and DCC's evidence pack."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from chfw_portal.uploads import download_response
from rollouts import selectors
from rollouts.services import exports

from ..access import dcc_or_csp_required, dcc_required


@dcc_or_csp_required
@require_GET
def rollout_device_status(request: HttpRequest, rollout_id: int, fmt: exports.Format) -> HttpResponse:
    rollout = selectors.get_rollout_for(request.org, rollout_id)
    return download_response(exports.download_device_status(user=request.user, rollout=rollout, fmt=fmt))


@dcc_or_csp_required
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


@dcc_required
@require_GET
def rollout_evidence(request: HttpRequest, rollout_id: int) -> HttpResponse:
    rollout = selectors.get_rollout_for(request.org, rollout_id)
    return download_response(exports.evidence_pack(user=request.user, rollout=rollout))
