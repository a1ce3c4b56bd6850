from __future__ import annotations

from chfw_portal.access import face_required
from rollouts.models import OrgKind

# P2: SSMI serves DCC and CSP users only, signed in with a second factor when required (P5).
dcc_or_csp_required = face_required(OrgKind.DCC, OrgKind.CSP, require_mfa=True)
dcc_required = face_required(OrgKind.DCC, require_mfa=True)
