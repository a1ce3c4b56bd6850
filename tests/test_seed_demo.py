from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db.models import F

from rollouts.models import (
    AuditEvent,
    Hub,
    HubEvent,
    Incident,
    Organisation,
    OrgKind,
    Proposal,
    Role,
    Rollout,
    Upload,
    User,
)
from rollouts.services.counters import counter_mismatches

# From the issue: the demo organisations and their sign-ins.
DEMO_USERS = {
    "dcc@demo.chfw": ("DCC", OrgKind.DCC, ""),
    "dcc-2@demo.chfw": ("DCC", OrgKind.DCC, ""),
    "csp-north@demo.chfw": ("CSP North", OrgKind.CSP, "north"),
    "csp-central@demo.chfw": ("CSP Central", OrgKind.CSP, "central"),
    "csp-south@demo.chfw": ("CSP South", OrgKind.CSP, "south"),
    "northern-lights-energy@demo.chfw": ("Northern Lights Energy", OrgKind.SUPPLIER, ""),
    "brightwater-power@demo.chfw": ("Brightwater Power", OrgKind.SUPPLIER, ""),
    "copperfield-gas@demo.chfw": ("Copperfield Gas", OrgKind.SUPPLIER, ""),
    "dunmore-utilities@demo.chfw": ("Dunmore Utilities", OrgKind.SUPPLIER, ""),
}


def test_seed_demo_creates_every_demo_sign_in_and_is_idempotent(db, settings):
    settings.DEBUG = True
    call_command("seed_demo", password="a-demo-password", hubs=0)
    call_command("seed_demo", password="a-demo-password", hubs=0)
    assert Organisation.objects.count() == 8
    assert User.objects.count() == len(DEMO_USERS)
    for email, (org_name, kind, region) in DEMO_USERS.items():
        user = User.objects.get(email=email)
        assert (user.organisation.name, user.organisation.kind, user.organisation.region) == (
            org_name,
            kind,
            region,
        )
        assert user.role == Role.ADMIN and user.check_password("a-demo-password")


def test_seed_demo_refuses_to_run_with_debug_off(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="refuses to run with DEBUG off"):
        call_command("seed_demo", hubs=0)
    assert not User.objects.exists()
    call_command("seed_demo", force=True, hubs=0)
    assert User.objects.filter(email="dcc@demo.chfw").exists()


@pytest.mark.req("L1")
@pytest.mark.req("L9")
@pytest.mark.req("U1")
def test_seed_demo_reaches_lifecycle_states_through_real_moves(db, settings):
    settings.DEBUG = True
    call_command("seed_demo", hubs=600)
    call_command("seed_demo", hubs=600)  # idempotent
    states = sorted((r.stage, r.status) for r in Rollout.objects.all())
    assert states == sorted(
        [
            ("CLOSURE", "SUPERSEDED"),
            ("NOTIFICATION", "ACTIVE"),
            ("SAFE_LAUNCH", "ACTIVE"),
            ("NOTIFICATION", "REVOKED"),
            ("NOTIFICATION", "DRAFT"),
            ("PILOTING", "ACTIVE"),
            ("PILOTING", "PAUSED"),
            ("PILOTING", "SUSPENDED"),
            ("PILOTING", "STOPPED"),
            ("CLOSURE", "CLOSED"),
        ]
    )
    assert Hub.objects.count() == 600
    assert Proposal.objects.filter(state="pending", move="publish").count() == 1
    moves = set(AuditEvent.objects.filter(action__startswith="rollout.").values_list("action", flat=True))
    assert {
        "rollout.publish",
        "rollout.supersede",
        "rollout.revoke",
        "rollout.start_safe_launch_without_pilot",
        "rollout.start_pilot",
        "rollout.pause",
        "rollout.suspend",
        "rollout.post_pilot_success",
        "rollout.post_pilot_failure",
        "rollout.stop",
        "rollout.close_stopped",
    } <= moves
    paused = Rollout.objects.get(status="PAUSED")
    assert AuditEvent.objects.filter(
        action="rollout.pause", actor="system", object_id=str(paused.pk)
    ).exists()
    assert Incident.objects.filter(rollout=paused, raised_by_org=None).exists()  # B1
    suspended = Rollout.objects.get(status="SUSPENDED")
    assert Incident.objects.get(rollout=suspended).panel == "pending"
    assert HubEvent.objects.exists() and Upload.objects.filter(kind="status_feed", state="applied").exists()
    assert counter_mismatches() == []
    split = (
        Hub.objects.exclude(import_supplier=None)
        .exclude(gas_supplier=None)
        .exclude(import_supplier=F("gas_supplier"))
        .count()
    )
    assert 30 <= split <= 90  # about 10% split hubs
