from __future__ import annotations

import io
import zipfile
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from import_export import fields, resources, widgets
from import_export.admin import ImportExportModelAdmin
from import_export.formats.base_formats import CSV, XLSX
from import_export.results import Result

from . import audit
from .exports import escape_cell
from .intake.errors import FileRejected
from .intake.readers import _check_zip_directory, sniff, unescape
from .models import AuditEvent, DeviceModel, FirmwareVersion, Organisation, User


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "region", "slug"]
    list_filter = ["kind", "region"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "organisation", "role", "is_active", "is_staff"]
    list_filter = ["organisation__kind", "role", "is_active", "is_staff"]
    search_fields = ["email", "full_name"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Organisation", {"fields": ["full_name", "organisation", "role"]}),
        ("Access", {"fields": ["is_active", "deactivated_at", "is_staff", "is_superuser", "groups"]}),
    ]
    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["email", "organisation", "role", "password1", "password2"]})
    ]
    readonly_fields = ["deactivated_at"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # users are deactivated, never deleted (X1)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "user", "organisation", "action", "object_repr"]
    list_filter = ["actor", "action"]
    search_fields = ["action", "object_repr", "object_id"]
    date_hierarchy = "at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# -- Reference data import and export (django-import-export, admin only; STYLE.md 6) -----------------------


class EscapedResource(resources.ModelResource):
    """Exports every cell through the project's formula escaper (import-export's own strips one `=` only),
    and strips that apostrophe again on import, so an exported file imports back unchanged."""

    def export_field(self, field: fields.Field, instance: Any, **kwargs: Any) -> str:
        return escape_cell(super().export_field(field, instance, **kwargs))

    def before_import_row(self, row: Any, **kwargs: Any) -> None:
        for key, value in row.items():
            if isinstance(value, str):
                row[key] = unescape(value)


class DeviceModelResource(EscapedResource):
    class Meta:
        model = DeviceModel
        fields = ("cpl_code", "manufacturer", "model", "hardware_version")
        import_id_fields = ("cpl_code",)
        clean_model_instances = True  # full_clean: a blank or too long value is a validation error
        skip_unchanged = True
        report_skipped = True


class FirmwareVersionResource(EscapedResource):
    # The device model by its CPL code, as in the inventory load; withdrawal (N4) is a service, not a column.
    device_model = fields.Field(
        attribute="device_model",
        column_name="device_model",
        widget=widgets.ForeignKeyWidget(DeviceModel, field="cpl_code"),
    )

    class Meta:
        model = FirmwareVersion
        fields = ("device_model", "version", "release_note_url")
        import_id_fields = ("device_model", "version")
        clean_model_instances = True  # full_clean checks the 8-hex-digit version constraint
        skip_unchanged = True
        report_skipped = True


class SafeXLSX(XLSX):
    """XLSX with the intake's zip checks first: openpyxl has no decompression limit (TOOLCHAIN "Traps")."""

    def create_dataset(self, in_stream: bytes) -> Any:
        buffer = io.BytesIO(in_stream)
        try:
            if sniff(buffer) != "xlsx":
                raise ValueError("This file is not an Excel workbook (.xlsx).")
            with zipfile.ZipFile(buffer) as archive:
                _check_zip_directory(archive.infolist())
        except FileRejected as rejected:
            raise ValueError("; ".join(f.message for f in rejected.failures)) from None
        return super().create_dataset(in_stream)


class ReferenceDataAdmin(ImportExportModelAdmin):
    """Import with a preview and a confirmation; a file with any invalid row imports nothing; each
    confirmed import and each export is audited with its counts (X1, X2)."""

    formats = [CSV, SafeXLSX]

    def get_import_data_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        # Without this the confirmed import commits the valid rows of a file with invalid ones (TOOLCHAIN).
        return {**super().get_import_data_kwargs(**kwargs), "rollback_on_validation_errors": True}

    def process_result(self, result: Result, request: HttpRequest) -> HttpResponse:
        label = self.model._meta.label_lower
        counts = {key: value for key, value in result.totals.items() if value}
        if result.has_errors() or result.has_validation_errors():
            # The data changed between preview and confirmation: nothing was imported.
            counts = {key: counts[key] for key in ("invalid", "error") if key in counts}
            audit.record(
                request.user, "admin.import_rejected", None, model=label, rows=result.total_rows, **counts
            )
            messages.error(
                request, "Nothing was imported: the file has invalid rows. Import it again to see them."
            )
            return self.changelist_redirect()
        audit.record(request.user, "admin.import", None, model=label, rows=result.total_rows, **counts)
        return super().process_result(result, request)

    def changelist_redirect(self) -> HttpResponse:
        opts = self.model._meta
        return redirect(f"admin:{opts.app_label}_{opts.model_name}_changelist")

    def get_export_data(self, file_format: Any, request: HttpRequest, queryset: Any, **kwargs: Any) -> Any:
        data = super().get_export_data(file_format, request, queryset, **kwargs)
        audit.record(
            request.user,
            "admin.export",
            None,
            model=self.model._meta.label_lower,
            rows=queryset.count(),
            format=file_format.get_title(),
        )
        return data


@admin.register(DeviceModel)
class DeviceModelAdmin(ReferenceDataAdmin):
    resource_classes = [DeviceModelResource]
    list_display = ["cpl_code", "manufacturer", "model", "hardware_version"]
    search_fields = ["cpl_code", "manufacturer", "model"]


@admin.register(FirmwareVersion)
class FirmwareVersionAdmin(ReferenceDataAdmin):
    resource_classes = [FirmwareVersionResource]
    list_display = ["version", "device_model", "withdrawn_at"]
    list_filter = ["device_model"]
    search_fields = ["version", "device_model__cpl_code"]
    readonly_fields = ["withdrawn_at", "withdrawn_reason"]  # N4: withdrawn through the service, with a reason
