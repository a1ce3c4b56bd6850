from __future__ import annotations

from django.urls import path

from chfw_portal import team

from .access import dcc_or_csp_required
from .views import dashboard

app_name = "ssmi"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("organisation/users/", dcc_or_csp_required(team.team), name="team"),
    path("organisation/users/invite/", dcc_or_csp_required(team.team_invite), name="team-invite"),
    path(
        "organisation/users/<int:user_id>/deactivate/",
        dcc_or_csp_required(team.team_deactivate),
        name="team-deactivate",
    ),
]
