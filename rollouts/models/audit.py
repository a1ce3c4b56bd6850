"""The append-only audit trail (X1). The database refuses UPDATE and DELETE of its rows."""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class Actor(models.TextChoices):
    DCC = "dcc", "DCC"
    CSP = "csp", "CSP"
    SUPPLIER = "supplier", "Supplier"
    STAFF = "staff", "Staff"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=10, choices=Actor.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    organisation = models.ForeignKey("rollouts.Organisation", on_delete=models.PROTECT, null=True, blank=True)
    action = models.CharField(max_length=80, db_index=True)
    object_type = models.CharField(max_length=80, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        who = self.user or self.get_actor_display()
        return f"{self.at:%Y-%m-%d %H:%M} {who} {self.action} {self.object_repr}"
