from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import AuditEvent, Organisation, User


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
