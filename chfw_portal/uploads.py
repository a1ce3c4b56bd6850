"""An upload's page, its kept file and its error report: the same on both faces (X2, X3).

ssi/urls.py and ssmi/urls.py wrap these views in their own face guard.
"""

from __future__ import annotations

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from rollouts import selectors
from rollouts.intake.pipeline import get_progress
from rollouts.models import UploadState
from rollouts.services.exports import Download
from rollouts.services.files import error_report, open_kept_file


def download_response(download: Download) -> HttpResponse:
    """A CSV streams as PostgreSQL writes it; an XLSX is sent from its temporary file (deleted after)."""
    if download.file is not None:
        return FileResponse(
            download.file, as_attachment=True, filename=download.filename, content_type=download.content_type
        )
    response = StreamingHttpResponse(download.chunks, content_type=download.content_type)
    response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    return response


@require_GET
def upload_detail(request: HttpRequest, upload_id: int) -> HttpResponse:
    """The upload's page; an htmx poll gets only its status (progress while running, then the result)."""
    upload = selectors.get_upload_for(request.org, upload_id)
    face = request.resolver_match.namespace
    finished = upload.state in (UploadState.APPLIED, UploadState.REJECTED)
    context = {
        "face": face,
        "face_base": f"{face}/base.html",
        "upload": upload,
        "finished": finished,
        "progress": None if finished else get_progress(upload.pk),
        "summary": selectors.error_summary_of(upload) if upload.error_count else None,
    }
    template = "uploads/detail.html"
    if request.htmx:
        template += "#upload-status"
    return render(request, template, context)


@require_GET
def upload_file(request: HttpRequest, upload_id: int) -> FileResponse:
    upload = selectors.get_upload_for(request.org, upload_id)
    return FileResponse(
        open_kept_file(user=request.user, upload=upload),
        as_attachment=True,
        filename=upload.name,
        content_type="application/octet-stream",
    )


@require_GET
def upload_errors(request: HttpRequest, upload_id: int) -> StreamingHttpResponse:
    upload = selectors.get_upload_for(request.org, upload_id)
    response = StreamingHttpResponse(
        error_report(user=request.user, upload=upload), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="upload-{upload.pk}-errors.csv"'
    return response
