from __future__ import annotations

from django.urls import path

from chfw_portal import notices, team, uploads
from rollouts.services import exports as export_services

from .access import supplier_required
from .views import dashboard, estate

app_name = "ssi"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("organisation/users/", supplier_required(team.team), name="team"),
    path("organisation/users/invite/", supplier_required(team.team_invite), name="team-invite"),
    path(
        "organisation/users/<int:user_id>/deactivate/",
        supplier_required(team.team_deactivate),
        name="team-deactivate",
    ),
    path("uploads/<int:upload_id>/", supplier_required(uploads.upload_detail), name="upload-detail"),
    path("uploads/<int:upload_id>/file/", supplier_required(uploads.upload_file), name="upload-file"),
    path(
        "uploads/<int:upload_id>/errors.csv", supplier_required(uploads.upload_errors), name="upload-errors"
    ),
    path("rollouts/<int:rollout_id>/", dashboard.rollout_detail, name="rollout-detail"),
    path("estate/", estate.estate, name="estate"),
    path("estate/estate.csv", estate.estate_download, {"fmt": "csv"}, name="estate-csv"),
    path("estate/estate.xlsx", estate.estate_download, {"fmt": "xlsx"}, name="estate-xlsx"),
    path("rollouts/<int:rollout_id>/eligibility.csv", estate.rollout_eligibility, name="rollout-eligibility"),
    # PL3, SL3, PL5: the rollout's lists and schedules, the Supplier's own hubs and requests only
    *(
        path(
            f"rollouts/<int:rollout_id>/{slug}.csv",
            estate.rollout_export,
            {"service": service},
            name=f"rollout-{slug}",
        )
        for slug, service in (
            ("default-pilot-list", export_services.download_default_pilot_list),
            ("default-pilot-schedule", export_services.download_default_pilot_schedule),
            ("effective-pilot-group", export_services.download_effective_pilot_group),
            ("safe-launch-schedule", export_services.download_safe_launch_schedule),
            ("schedule-requests", export_services.download_schedule_requests),
        )
    ),
    path("notices/read/", supplier_required(notices.notices_read), name="notices-read"),
]
