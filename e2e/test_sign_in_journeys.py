"""Each demo persona signs in, lands on its face, is refused the other, and signs out (P2, P5)."""

from __future__ import annotations

import re
import time

import pytest
from allauth.mfa.totp.internal.auth import hotp_value
from playwright.sync_api import expect

from .conftest import assert_accessible, sign_in

# persona -> (its face, the other face); written from P2
PERSONAS = {
    "dcc@demo.chfw": ("/ssmi/", "/ssi/"),
    "dcc-2@demo.chfw": ("/ssmi/", "/ssi/"),
    "csp-north@demo.chfw": ("/ssmi/", "/ssi/"),
    "csp-central@demo.chfw": ("/ssmi/", "/ssi/"),
    "csp-south@demo.chfw": ("/ssmi/", "/ssi/"),
    "northern-lights-energy@demo.chfw": ("/ssi/", "/ssmi/"),
    "brightwater-power@demo.chfw": ("/ssi/", "/ssmi/"),
    "copperfield-gas@demo.chfw": ("/ssi/", "/ssmi/"),
    "dunmore-utilities@demo.chfw": ("/ssi/", "/ssmi/"),
}


@pytest.mark.e2e
@pytest.mark.req("P2")
@pytest.mark.parametrize("email", PERSONAS)
def test_persona_lands_on_its_face_and_is_refused_the_other(page, live_server, demo, email):
    own, other = PERSONAS[email]
    sign_in(page, live_server, email)
    expect(page).to_have_url(f"{live_server.url}{own}")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    assert_accessible(page)

    response = page.goto(f"{live_server.url}{other}")
    assert response.status == 403
    expect(page.get_by_role("heading", name="You cannot see this page")).to_be_visible()
    assert_accessible(page)

    page.goto(f"{live_server.url}{own}organisation/users/")
    expect(page.get_by_role("cell", name=email)).to_be_visible()
    assert_accessible(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.goto(f"{live_server.url}{own}")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))


SEEDED_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.mark.e2e
@pytest.mark.req("P5")
def test_dcc_user_signs_in_with_a_totp_code_when_mfa_is_required(page, live_server, db, settings):
    from django.core.management import call_command

    call_command("seed_demo", force=True, hubs=0, totp_secret=SEEDED_SECRET, verbosity=0)
    settings.PORTAL_REQUIRE_MFA = True
    sign_in(page, live_server, "dcc@demo.chfw")
    expect(page).to_have_url(re.compile(r"/accounts/2fa/authenticate/"))
    assert_accessible(page)
    page.get_by_label(re.compile(r"code", re.I)).fill(
        f"{hotp_value(SEEDED_SECRET, int(time.time()) // 30):06d}"
    )
    page.get_by_role("button", name=re.compile("Sign in|Continue|Verify", re.I)).click()
    expect(page).to_have_url(f"{live_server.url}/ssmi/")
    expect(page.get_by_role("heading", name="Firmware rollouts")).to_be_visible()
