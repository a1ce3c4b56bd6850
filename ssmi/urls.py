from __future__ import annotations

from django.urls import path

from chfw_portal import notices, team, uploads
from rollouts.services import exports as export_services

from .access import dcc_or_csp_required
from .views import dashboard, exports

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
    path("rollouts/<int:rollout_id>/", dashboard.rollout_detail, name="rollout-detail"),
    path(
        "rollouts/<int:rollout_id>/device-status.csv",
        exports.rollout_device_status,
        {"fmt": "csv"},
        name="rollout-device-status",
    ),
    path(
        "rollouts/<int:rollout_id>/device-status.xlsx",
        exports.rollout_device_status,
        {"fmt": "xlsx"},
        name="rollout-device-status-xlsx",
    ),
    # PL3, SL3, T5, PL5: a CSP's region, everything for DCC; XLSX for the layouts a CSP edits and uploads
    *(
        path(
            f"rollouts/<int:rollout_id>/{slug}.{fmt}",
            exports.rollout_export,
            {"service": service, "fmt": fmt},
            name=f"rollout-{slug}" + ("-xlsx" if fmt == "xlsx" else ""),
        )
        for slug, service, formats in (
            ("default-pilot-list", export_services.download_default_pilot_list, ("csv", "xlsx")),
            ("default-pilot-schedule", export_services.download_default_pilot_schedule, ("csv", "xlsx")),
            ("safe-launch-schedule", export_services.download_safe_launch_schedule, ("csv", "xlsx")),
            ("effective-pilot-group", export_services.download_effective_pilot_group, ("csv",)),
            ("deployment-plan", export_services.download_deployment_plan, ("csv",)),
            ("schedule-requests", export_services.download_schedule_requests, ("csv",)),
        )
        for fmt in formats
    ),
    path("rollouts/<int:rollout_id>/evidence.zip", exports.rollout_evidence, name="rollout-evidence"),
    path("notices/read/", dcc_or_csp_required(notices.notices_read), name="notices-read"),
    path("proposals/<int:proposal_id>/", dashboard.proposal_decide, name="proposal-decide"),
]
