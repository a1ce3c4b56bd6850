from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from rollouts import selectors
from rollouts.outstanding import next_dates_of_others, outstanding_actions_for
from rollouts.services.lifecycle import approve_proposal, reject_proposal
from rollouts.transitions import MOVES

from ..access import dcc_or_csp_required, dcc_required


@dcc_or_csp_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    notices = list(selectors.notices_for(request.user)[:10])
    summaries = selectors.rollout_summaries_for(request.org)
    proposals = list(selectors.pending_proposals_for(request.org))
    actions = outstanding_actions_for(request.org)
    return render(
        request,
        "ssmi/dashboard.html",
        {
            "summaries": summaries,
            "notices": notices,
            "has_unread": any(not n.is_read for n in notices),
            "proposals": proposals,
            "actions": actions,
            "others": next_dates_of_others(request.org),
            "moves": MOVES,
        },
    )


@dcc_or_csp_required
@require_GET
def rollout_detail(request: HttpRequest, rollout_id: int) -> HttpResponse:
    rollout = selectors.get_rollout_for(request.org, rollout_id)
    summary = selectors.rollout_summary_for(request.org, rollout)
    hubs = Paginator(selectors.rollout_hubs_for(request.org, rollout), 50).get_page(request.GET.get("page"))
    proposals = selectors.pending_proposals_for(request.org).filter(rollout=rollout)
    template = "ssmi/rollout_detail.html"
    if request.htmx:
        template += "#hub-table"
    return render(
        request,
        template,
        {"rollout": rollout, "summary": summary, "hubs": hubs, "proposals": proposals, "moves": MOVES},
    )


@dcc_required
@require_http_methods(["GET", "POST"])
def proposal_decide(request: HttpRequest, proposal_id: int) -> HttpResponse:
    """B4: a second DCC user approves or rejects, after seeing what the decision does."""
    proposal = selectors.get_proposal_for(request.org, proposal_id)
    error = None
    if request.method == "POST":
        comment = request.POST.get("comment", "")
        try:
            if request.POST.get("decision") == "approve":
                approve_proposal(user=request.user, proposal_id=proposal.pk, comment=comment)
                messages.success(
                    request, f"Approved: {MOVES[proposal.move].label} of {proposal.rollout.reference}."
                )
            else:
                reject_proposal(user=request.user, proposal_id=proposal.pk, comment=comment)
                messages.success(
                    request, f"Rejected: {MOVES[proposal.move].label} of {proposal.rollout.reference}."
                )
        except (ValidationError, PermissionDenied) as e:
            error = " ".join(e.messages) if isinstance(e, ValidationError) else str(e)
        else:
            return redirect("ssmi:rollout-detail", proposal.rollout_id)
    return render(
        request,
        "ssmi/proposal_decide.html",
        {
            "proposal": proposal,
            "move": MOVES[proposal.move],
            "error": error,
            "own": proposal.proposed_by_id == request.user.pk,
        },
    )
