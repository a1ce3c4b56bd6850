"""An upload's page, its kept file and its error report: the same on both faces (X2, X3).

ssi/urls.py and ssmi/urls.py wrap these views in their own face guard.
"""

from __future__ import annotations

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from rollouts import selectors
from rollouts.services.files import error_report, open_kept_file


@require_GET
def upload_detail(request: HttpRequest, upload_id: int) -> HttpResponse:
    upload = selectors.get_upload_for(request.org, upload_id)
    face = request.resolver_match.namespace
    context = {
        "face": face,
        "face_base": f"{face}/base.html",
        "upload": upload,
        "summary": selectors.error_summary_of(upload) if upload.error_count else None,
    }
    return render(request, "uploads/detail.html", context)


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
