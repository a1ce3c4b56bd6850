from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from rollouts.models import Organisation, OrgKind, Role, User

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
    call_command("seed_demo", password="a-demo-password")
    call_command("seed_demo", password="a-demo-password")
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
        call_command("seed_demo")
    assert not User.objects.exists()
    call_command("seed_demo", force=True)
    assert User.objects.filter(email="dcc@demo.chfw").exists()
