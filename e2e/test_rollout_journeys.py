"""Journeys over the demo estate: a second DCC user approves a publication; a Supplier sees it (B4, U1, P4)."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from .conftest import assert_accessible, sign_in


@pytest.fixture
def estate(db, settings):
    settings.PORTAL_REQUIRE_MFA = False
    call_command("seed_demo", force=True, hubs=400, verbosity=0)


@pytest.mark.e2e
@pytest.mark.req("B4")
@pytest.mark.req("U1")
def test_a_second_dcc_user_approves_a_publication_and_a_supplier_sees_it(page, live_server, estate):
    sign_in(page, live_server, "dcc-2@demo.chfw")
    expect(page).to_have_url(f"{live_server.url}/ssmi/")
    assert_accessible(page)
    page.get_by_role("link", name=re.compile(r"Decide: publish of")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Publish?")
    reference = page.locator(".govuk-caption-l").inner_text().split(" · ")[0]
    assert_accessible(page)
    page.get_by_label("Comment").fill("Release note and build checked")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_text("Approved: Publish of")).to_be_visible()
    expect(page.locator(".govuk-summary-list").get_by_text("Active")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, live_server, "northern-lights-energy@demo.chfw")
    expect(page.get_by_role("table", name="Rollouts in flight")).to_be_visible()
    page.get_by_role("table", name="Rollouts in flight").get_by_role(
        "link", name=reference, exact=True
    ).click()
    expect(page.get_by_role("table", name=re.compile(r"^Hubs"))).to_be_visible()
    assert_accessible(page)
    for other in ("Brightwater Power", "Copperfield Gas", "Dunmore Utilities"):
        expect(page.get_by_text(other)).to_have_count(0)  # P4: never the partner
