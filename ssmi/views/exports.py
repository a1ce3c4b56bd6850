"""Downloads for DCC and CSPs: device status of a rollout (a CSP's region, or all for DCC)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from chfw_portal.uploads import download_response
from rollouts import selectors
from rollouts.services import exports

from ..access import dcc_or_csp_required


@dcc_or_csp_required
@require_GET
def rollout_device_status(request: HttpRequest, rollout_id: int, fmt: exports.Format) -> HttpResponse:
    rollout = selectors.get_rollout_for(request.org, rollout_id)
    return download_response(exports.download_device_status(user=request.user, rollout=rollout, fmt=fmt))
