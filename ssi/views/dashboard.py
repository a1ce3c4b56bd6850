from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from rollouts import selectors
from rollouts.outstanding import next_dates_of_others, outstanding_actions_for

from ..access import supplier_required


@supplier_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    notices = list(selectors.notices_for(request.user)[:10])
    return render(
        request,
        "ssi/dashboard.html",
        {
            "summaries": selectors.rollout_summaries_for(request.org),
            "actions": outstanding_actions_for(request.org),
            "others": next_dates_of_others(request.org),
            "notices": notices,
            "has_unread": any(not n.is_read for n in notices),
        },
    )


@supplier_required
@require_GET
def rollout_detail(request: HttpRequest, rollout_id: int) -> HttpResponse:
    rollout = selectors.get_rollout_for(request.org, rollout_id)
    summary = selectors.rollout_summary_for(request.org, rollout)
    hubs = Paginator(selectors.rollout_hubs_for(request.org, rollout), 50).get_page(request.GET.get("page"))
    template = "ssi/rollout_detail.html"
    if request.htmx:
        template += "#hub-table"
    return render(request, template, {"rollout": rollout, "summary": summary, "hubs": hubs})
