from __future__ import annotations

from .audit import Actor, AuditEvent
from .files import Upload, UploadError, UploadKind, UploadState
from .inventory import DeviceModel, FirmwareVersion, Hub, HubStatus, InventoryChange
from .parties import Organisation, OrgKind, Region, Role, User

__all__ = [
    "Actor",
    "AuditEvent",
    "DeviceModel",
    "FirmwareVersion",
    "Hub",
    "HubStatus",
    "InventoryChange",
    "Upload",
    "UploadError",
    "UploadKind",
    "UploadState",
    "OrgKind",
    "Organisation",
    "Region",
    "Role",
    "User",
]
