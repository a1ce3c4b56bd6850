"""allauth's pages in GOV.UK Frontend markup (templates/allauth/layouts and elements)."""

from __future__ import annotations

import re

import pytest
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY as TOTP_SECRET_SESSION_KEY
from django.core.cache import cache
from django.urls import reverse

from rollouts.models import Organisation, OrgKind, User

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()


def make_user(email: str = "alice@volt.test") -> User:
    org = Organisation.objects.create(name="Volt Energy", slug="volt-energy", kind=OrgKind.SUPPLIER)
    return User.objects.create_user(email, PASSWORD, organisation=org)


def assert_csp_safe(html: str) -> None:
    """No inline styles, and no script without the CSP nonce."""
    assert " style=" not in html
    for script in re.findall(r"<script\b[^>]*>", html):
        assert "nonce=" in script, script


@pytest.mark.django_db
def test_login_page(client):
    response = client.get(reverse("account_login"))
    assert response.status_code == 200
    html = response.text
    assert '<h1 class="govuk-heading-l">Sign in to CHFW Portal</h1>' in html
    assert '<label class="govuk-label govuk-label--s" for="id_login">Email</label>' in html
    assert re.search(r'<input class="govuk-input [^"]*" id="id_login" name="login" type="email"', html)
    assert '<label class="govuk-label govuk-label--s" for="id_password">Password</label>' in html
    assert 'class="govuk-form-group govuk-password-input" data-module="govuk-password-input"' in html
    assert re.search(
        r'<button type="submit" data-module="govuk-button"\s+class="govuk-button">\s*Sign in', html
    )
    assert (
        f'<a class="govuk-link" href="{reverse("account_reset_password")}">Forgotten your password?</a>'
        in html
    )
    assert "govuk-error-summary" not in html
    assert "signup" not in html and "Sign Up" not in html  # accounts are made by an admin, not by sign-up
    assert_csp_safe(html)


@pytest.mark.django_db
def test_password_reset_page(client):
    response = client.get(reverse("account_reset_password"))
    assert response.status_code == 200
    html = response.text
    assert 'class="govuk-heading-l"' in html
    assert '<label class="govuk-label govuk-label--s" for="id_email">Email</label>' in html
    assert re.search(r'<input class="govuk-input [^"]*" id="id_email" name="email" type="email"', html)
    assert 'class="govuk-button"' in html
    assert_csp_safe(html)


@pytest.mark.django_db
def test_wrong_password_shows_error_summary_linked_to_the_field(client):
    user = make_user()
    response = client.post(reverse("account_login"), {"login": user.email, "password": "not-the-password"})
    assert response.status_code == 200
    html = response.text
    assert re.search(r"<title>Error: ", html)
    assert '<div class="govuk-error-summary" data-module="govuk-error-summary">' in html
    summary = html[html.index("govuk-error-summary__list") :]
    assert re.search(r'<li><a href="#id_login">[^<]+</a></li>', summary)
    assert html.index("govuk-error-summary") < html.index('<h1 class="govuk-heading-l">')
    assert 'class="govuk-form-group govuk-form-group--error"' in html
    assert re.search(r'<input class="govuk-input [^"]*govuk-input--error" id="id_login"', html)
    assert '<p id="id_login-error" class="govuk-error-message">' in html
    assert 'aria-describedby="id_login-error"' in html
    assert 'value="not-the-password"' not in html  # a password is never sent back


@pytest.mark.django_db
def test_totp_activation_page(client):
    user = make_user()
    response = client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302
    response = client.get(reverse("mfa_activate_totp"))
    assert response.status_code == 200
    html = response.text
    assert 'class="govuk-heading-l"' in html
    assert re.search(r'<img src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]+" alt="QR code[^"]*"', html)
    secret = client.session[TOTP_SECRET_SESSION_KEY]
    assert 'id="authenticator_secret"' in html and secret in html  # for apps that cannot scan
    assert '<label class="govuk-label govuk-label--s" for="id_code">Authenticator code</label>' in html
    assert re.search(r'<input class="govuk-input govuk-input--width-10" id="id_code" name="code"', html)
    assert 'autocomplete="one-time-code"' in html
    assert_csp_safe(html)


@pytest.mark.django_db
def test_wrong_totp_code_marks_the_field(client):
    user = make_user()
    client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    response = client.post(reverse("mfa_activate_totp"), {"code": "000000"})
    assert response.status_code == 200
    html = response.text
    assert '<li><a href="#id_code">' in html
    assert re.search(
        r'<input class="govuk-input govuk-input--width-10 govuk-input--error" id="id_code"', html
    )
