"""The Smart Metering Inventory (SMI): device models (CPL entries), firmware versions, hubs."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from ..guid import GUID_COLLATION, GuidField, display_guid
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

    # 30 million rows loaded in bulk: references are checked set-based by load_inventory (reason code
    # reference_unknown) and deletion is PROTECTed by the ORM (nothing here is ever deleted), so the
    # columns carry no database FK constraint: deferred FK checks cost 23 s per million new hubs at
    # commit (bench/intake.py). Each lookup column has exactly one index (Meta), none duplicated.
    guid = GuidField(db_collation=GUID_COLLATION)
    device_model = models.ForeignKey(
        DeviceModel, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    firmware_version = models.ForeignKey(
        FirmwareVersion, on_delete=models.PROTECT, related_name="+", db_index=False, db_constraint=False
    )
    region = models.CharField(max_length=10, choices=Region.choices)
    import_supplier = models.ForeignKey(
        "rollouts.Organisation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    gas_supplier = models.ForeignKey(
        "rollouts.Organisation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
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
        constraints = [
            # Covering: the visibility checks of every upload (P3) and the resolution of a list's GUIDs to hub
            # ids (feeds, instructions, schedules) are index-only lookups (migration 0020).
            models.UniqueConstraint(
                fields=["guid"],
                include=["id", "import_supplier", "gas_supplier", "region"],
                name="hub_guid_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["import_supplier"], name="hub_import_supplier"),
            models.Index(fields=["gas_supplier"], name="hub_gas_supplier"),
            # Not the firmware version: an activation's version update (U3) stays HOT (migration 0017).
            models.Index(fields=["device_model"], name="hub_device_model"),
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

    Written set-based by `load_inventory`; one row per hub already in the SMI that changed, came back
    or left. Brand-new hubs are counted in the upload's summary and handed to the live rollouts
    directly (a first load of 1M hubs wrote 1M rows here and checked their upload FK at commit: ~8 s).
    """

    # A log written set-based by each load (one row per changed hub): no FK constraints or indexes beyond
    # the unique (upload, hub) one, for the same reason as Hub's.
    upload = models.ForeignKey(
        "rollouts.Upload", on_delete=models.PROTECT, related_name="inventory_changes", db_index=False
    )
    hub = models.ForeignKey(Hub, on_delete=models.PROTECT, related_name="+", db_constraint=False)
    is_new = models.BooleanField(default=False)  # only on rows of loads before new hubs stopped being logged
    supplier_changed = models.BooleanField(default=False)
    model_changed = models.BooleanField(default=False)
    version_changed = models.BooleanField(default=False)
    left = models.BooleanField(default=False)
    returned = models.BooleanField(default=False)  # was `left`, is in the SMI again
    old_import_supplier = models.ForeignKey(
        "rollouts.Organisation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    old_gas_supplier = models.ForeignKey(
        "rollouts.Organisation",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    old_device_model = models.ForeignKey(
        DeviceModel,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    old_firmware_version = models.ForeignKey(
        FirmwareVersion,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["upload", "hub"], name="inventory_change_once_per_load")
        ]

    def __str__(self) -> str:
        return f"{self.hub} in upload {self.upload_id}"


class SmiVersionUpdate(models.Model):
    """The SMI versions one status feed confirmed (U3): the hubs it activated on the rollout's target, with
    each record's time, waiting to be written to the hubs.

    The feed writes one row in its own transaction (an INSERT of two arrays, 50,000 hubs: a few ms) and its
    hubs' versions are written right after it commits, by a worker (`rollouts.services.smi`); a publication
    and an inventory load apply any that wait before they read the hubs, and a beat job every minute picks up
    any that a lost task left. A row is deleted when it is applied: what remains is what waits.
    """

    # the feed (its rollout)
    upload = models.ForeignKey("rollouts.Upload", on_delete=models.PROTECT, related_name="+")
    # the version it confirmed
    version = models.ForeignKey(FirmwareVersion, on_delete=models.PROTECT, related_name="+")
    hub_ids = ArrayField(models.BigIntegerField())
    ats = ArrayField(models.DateTimeField())  # each hub's record time, in the order of hub_ids
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{len(self.hub_ids)} SMI versions from upload {self.upload_id}"
