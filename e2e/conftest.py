"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server."""

from __future__ import annotations

import os
import shutil

import pytest
from axe_playwright_python.sync_playwright import Axe

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # before Django sets up the test database
CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium")
DEMO_PASSWORD = "demo-portal-2026"
BLOCKING_IMPACTS = {"serious", "critical"}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is not installed")  # never let CI pass by skipping
        pytest.skip("Debian chromium is not installed")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    # axe is injected into the page; the portal's strict CSP would otherwise block it
    return {**browser_context_args, "bypass_csp": True, "locale": "en-GB", "timezone_id": "Europe/London"}


@pytest.fixture
def demo(db, settings):
    from django.core.management import call_command

    settings.PORTAL_REQUIRE_MFA = False
    call_command("seed_demo", force=True, hubs=0, verbosity=0)


def assert_accessible(page) -> None:
    """axe-core in the page: no serious or critical violations, and proof that it actually ran."""
    results = Axe().run(page).response
    assert results["passes"], "axe reported no passes: it did not run"
    blocking = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results["violations"]
        if v["impact"] in BLOCKING_IMPACTS
    ]
    assert not blocking, f"{page.url}: " + "; ".join(blocking)


def sign_in(page, live_server, email: str, password: str = DEMO_PASSWORD) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    assert_accessible(page)
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
