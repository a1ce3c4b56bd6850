from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def run_settings(**env) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "PORTAL_TESTING", "SECRET_KEY", "PORTAL_REQUIRE_MFA"}
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='chfw_portal.settings'; "
            "django.setup(); from django.conf import settings; print(settings.PORTAL_REQUIRE_MFA)",
        ],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_refuses_to_start_with_the_development_secret_when_debug_is_off():
    result = run_settings(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY is the development key" in result.stderr


@pytest.mark.req("P5")
def test_mfa_is_required_by_default_when_debug_is_off():
    result = run_settings(DEBUG="false", SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


@pytest.mark.req("P5")
def test_mfa_requirement_is_read_explicitly_from_the_environment():
    assert run_settings(DEBUG="true").stdout.strip() == "False"
    assert run_settings(DEBUG="true", PORTAL_REQUIRE_MFA="true").stdout.strip() == "True"
    bad = run_settings(DEBUG="true", PORTAL_REQUIRE_MFA="maybe")
    assert bad.returncode != 0 and "PORTAL_REQUIRE_MFA='maybe' is not a boolean" in bad.stderr


def test_services_own_their_transactions():
    assert settings.DATABASES["default"]["ATOMIC_REQUESTS"] is False


def test_pages_carry_a_content_security_policy_with_a_nonce(client, db):
    # the 404 page renders the base layout, whose scripts carry the nonce
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in policy
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'nonce="{nonce}"' in response.text  # every script we serve carries it
    assert "unsafe-inline" not in policy
