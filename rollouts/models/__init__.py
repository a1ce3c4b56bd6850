from __future__ import annotations

from .audit import Actor, AuditEvent
from .parties import Organisation, OrgKind, Region, Role, User

__all__ = ["Actor", "AuditEvent", "OrgKind", "Organisation", "Region", "Role", "User"]
