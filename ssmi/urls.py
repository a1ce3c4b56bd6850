from __future__ import annotations

from django.urls import path

from chfw_portal import team, uploads

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
    path("uploads/<int:upload_id>/", dcc_or_csp_required(uploads.upload_detail), name="upload-detail"),
    path("uploads/<int:upload_id>/file/", dcc_or_csp_required(uploads.upload_file), name="upload-file"),
    path(
        "uploads/<int:upload_id>/errors.csv", dcc_or_csp_required(uploads.upload_errors), name="upload-errors"
    ),
]
