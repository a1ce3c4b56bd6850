from __future__ import annotations

from chfw_portal.access import face_required
from rollouts.models import OrgKind

# P2: SSI serves Supplier users only. Suppliers may enable a second factor but are not forced to (P5).
supplier_required = face_required(OrgKind.SUPPLIER)
