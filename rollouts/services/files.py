"""Kept files and their error reports leave the portal only through here, audited (X2)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from django.core.exceptions import PermissionDenied

from .. import audit
from ..exports import csv_lines
from ..models import OrgKind, Upload, User

ERROR_COLUMNS = ["row", "column", "value", "code", "message"]


def open_kept_file(*, user: User, upload: Upload) -> IO[bytes]:
    """The raw file as sent: only to its sender organisation and to DCC (PL3, X2). Audited."""
    org = user.organisation
    if org is None or not (org.kind == OrgKind.DCC or org.pk == upload.organisation_id):
        raise PermissionDenied("Raw files go only to their sender and to DCC.")
    audit.record(user, "upload.file_downloaded", upload, upload_id=upload.pk, sha256=upload.sha256)
    return upload.file.open("rb")


def error_report(*, user: User, upload: Upload) -> Iterator[str]:
    """Every error of a rejected upload as CSV lines (the Upload errors layout). Audited."""
    audit.record(user, "upload.errors_downloaded", upload, upload_id=upload.pk, errors=upload.error_count)
    rows = upload.errors.order_by("row", "id").values_list(*ERROR_COLUMNS).iterator(chunk_size=5000)
    return csv_lines(ERROR_COLUMNS, rows)
