"""The Smart Metering Inventory (SMI): device models (CPL entries), firmware versions, hubs."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from ..guid import GuidField, display_guid
from .parties import Region


class DeviceModel(models.Model):
    """A CPL entry: one Communications Hub model."""

    cpl_code = models.CharField("CPL model code", max_length=16, unique=True, help_text="e.g. 010A030B")
    manufacturer = models.CharField(max_length=100)
    model = models.CharField(max_length=100)
    hardware_version = models.CharField(max_length=32)

    class Meta:
        ordering = ["manufacturer", "model", "hardware_version"]

    def __str__(self) -> str:
        return f"{self.manufacturer} {self.model} (HW {self.hardware_version}, {self.cpl_code})"


class FirmwareVersion(models.Model):
    """A firmware version registered for one device model (CPL: 4 octets of hex, e.g. 0002012F)."""

    device_model = models.ForeignKey(DeviceModel, on_delete=models.PROTECT, related_name="firmware_versions")
    version = models.CharField(max_length=8, help_text="4 octets of hex as in the CPL, e.g. 0002012F")
    release_note_url = models.URLField(blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)  # N4: withdrawn from the CPL
    withdrawn_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["device_model", "version"]
        constraints = [
            models.UniqueConstraint(fields=["device_model", "version"], name="firmware_unique_per_model"),
            models.CheckConstraint(
                condition=Q(version__regex=r"^[0-9A-F]{8}$"), name="firmware_version_hex8"
            ),
            models.CheckConstraint(
                condition=Q(withdrawn_at__isnull=True) | ~Q(withdrawn_reason=""),
                name="firmware_withdrawal_has_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.device_model.cpl_code})"


class HubStatus(models.TextChoices):
    IN_SMI = "in_smi", "In the SMI"
    LEFT = "left", "Left the SMI"


class Hub(models.Model):
    """A Communications Hub. Never deleted: a hub that leaves the SMI is marked `left` (B3)."""

    guid = GuidField(unique=True)
    device_model = models.ForeignKey(DeviceModel, on_delete=models.PROTECT, related_name="+")
    firmware_version = models.ForeignKey(FirmwareVersion, on_delete=models.PROTECT, related_name="+")
    region = models.CharField(max_length=10, choices=Region.choices)
    import_supplier = models.ForeignKey(
        "rollouts.Organisation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    gas_supplier = models.ForeignKey(
        "rollouts.Organisation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    friendly = models.BooleanField(default=False)  # DCC's flag (PL8)
    production_proving = models.BooleanField(default=False)  # DCC's flag (PL8)
    status = models.CharField(max_length=10, choices=HubStatus.choices, default=HubStatus.IN_SMI)
    # The as-of time of the inventory load that last confirmed its firmware version: an older load
    # never undoes a newer confirmed version.
    firmware_as_of = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["guid"]
        indexes = [
            models.Index(fields=["import_supplier"], name="hub_import_supplier"),
            models.Index(fields=["gas_supplier"], name="hub_gas_supplier"),
            models.Index(fields=["device_model", "firmware_version"], name="hub_model_version"),
            models.Index(fields=["region"], name="hub_region"),
        ]

    def __str__(self) -> str:
        return display_guid(self.guid)

    @property
    def is_split(self) -> bool:
        return (
            self.import_supplier_id is not None
            and self.gas_supplier_id is not None
            and self.import_supplier_id != self.gas_supplier_id
        )


class InventoryChange(models.Model):
    """What one inventory load changed for one hub, so the rollouts can react (B3, E6).

    Written set-based by `load_inventory`; one row per hub that was new, changed or left.
    """

    upload = models.ForeignKey("rollouts.Upload", on_delete=models.PROTECT, related_name="inventory_changes")
    hub = models.ForeignKey(Hub, on_delete=models.PROTECT, related_name="+")
    is_new = models.BooleanField(default=False)
    supplier_changed = models.BooleanField(default=False)
    model_changed = models.BooleanField(default=False)
    version_changed = models.BooleanField(default=False)
    left = models.BooleanField(default=False)
    returned = models.BooleanField(default=False)  # was `left`, is in the SMI again
    old_import_supplier = models.ForeignKey(
        "rollouts.Organisation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    old_gas_supplier = models.ForeignKey(
        "rollouts.Organisation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    old_device_model = models.ForeignKey(
        DeviceModel, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    old_firmware_version = models.ForeignKey(
        FirmwareVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["upload", "hub"], name="inventory_change_once_per_load")
        ]

    def __str__(self) -> str:
        return f"{self.hub} in upload {self.upload_id}"
