"""Sign-in (P1, P2, P5): email and password, no sign-up, landing on the right face, MFA, sessions."""

from __future__ import annotations

import time

import pytest
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY as TOTP_SECRET_SESSION_KEY
from allauth.mfa.totp.internal.auth import hotp_value
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from rollouts.models import AuditEvent
from rollouts.services.parties import deactivate_user

from .conftest import PASSWORD, TOTP_SECRET, give_totp, sign_in


def post_login(client, email: str, password: str = PASSWORD):
    return client.post(reverse("account_login"), {"login": email, "password": password})


def totp_code(secret: str = TOTP_SECRET) -> str:
    return f"{hotp_value(secret, int(time.time()) // 30):06d}"


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()


@pytest.mark.req("P2")
def test_supplier_lands_on_ssi(client, import_supplier):
    response = post_login(client, import_supplier.email)
    assert response.status_code == 302 and response.url == "/ssi/"


@pytest.mark.req("P2")
def test_csp_lands_on_ssmi(client, csp_north, settings):
    settings.PORTAL_REQUIRE_MFA = False
    response = post_login(client, csp_north.email)
    assert response.status_code == 302 and response.url == "/ssmi/"


@pytest.mark.req("P5")
def test_there_is_no_public_sign_up(client, db):
    response = client.post(reverse("account_signup"), {"email": "new@example.test", "password1": "x" * 20})
    assert "Sign Up Closed" in response.text or response.status_code in (403, 404)
    from rollouts.models import User

    assert not User.objects.filter(email="new@example.test").exists()


@pytest.mark.req("P5")
def test_session_id_rotates_at_sign_in(client, import_supplier):
    client.get(reverse("account_login"))
    client.session.save()
    before = client.session.session_key
    post_login(client, import_supplier.email)
    assert client.session.session_key != before


@pytest.mark.req("P5")
def test_sign_in_failures_are_rate_limited(client, import_supplier):
    for _ in range(5):
        assert "Too many failed login attempts" not in post_login(client, import_supplier.email, "wrong").text
    # the sixth try within five minutes is refused, even with the right password (limits live in the cache)
    response = post_login(client, import_supplier.email)
    assert response.status_code == 200
    assert "Too many failed login attempts" in response.text


@pytest.mark.req("P5")
def test_dcc_user_without_second_factor_is_sent_to_set_one_up(client, dcc, settings):
    settings.PORTAL_REQUIRE_MFA = True
    post_login(client, dcc.email)
    response = client.get(reverse("ssmi:dashboard"))
    assert response.status_code == 302 and response.url == reverse("mfa_activate_totp")


@pytest.mark.req("P5")
def test_dcc_user_with_totp_must_use_it_to_sign_in(client, dcc, settings):
    settings.PORTAL_REQUIRE_MFA = True
    give_totp(dcc)
    response = post_login(client, dcc.email)
    assert response.url == reverse("mfa_authenticate")  # the password alone signs nobody in
    assert client.get(reverse("ssmi:dashboard")).status_code == 302
    response = client.post(reverse("mfa_authenticate"), {"code": totp_code()})
    assert response.status_code == 302 and response.url == "/ssmi/"
    assert client.get(reverse("ssmi:dashboard")).status_code == 200


@pytest.mark.req("P5")
def test_mfa_not_required_lets_csp_in_with_a_password(client, csp_north, settings):
    settings.PORTAL_REQUIRE_MFA = False
    post_login(client, csp_north.email)
    assert client.get(reverse("ssmi:dashboard")).status_code == 200


@pytest.mark.req("P5")
@pytest.mark.django_db(transaction=True)  # allauth signals the new authenticator on commit, as in production
def test_setting_up_totp_counts_as_using_it(client, csp_north, settings):
    settings.PORTAL_REQUIRE_MFA = True
    post_login(client, csp_north.email)
    assert client.get(reverse("mfa_activate_totp")).status_code == 200
    secret = client.session[TOTP_SECRET_SESSION_KEY]
    response = client.post(reverse("mfa_activate_totp"), {"code": totp_code(secret)})
    assert response.status_code == 302
    assert client.get(reverse("ssmi:dashboard")).status_code == 200


@pytest.mark.req("P1")
def test_deactivating_a_user_ends_its_sessions(client, import_supplier, import_supplier_member):
    post_login(client, import_supplier_member.email)
    assert client.get(reverse("ssi:dashboard")).status_code == 200
    deactivate_user(user=import_supplier, target_id=import_supplier_member.pk)
    response = client.get(reverse("ssi:dashboard"))
    assert response.status_code == 302 and response.url.startswith(reverse("account_login"))
    response = post_login(client, import_supplier_member.email)  # cannot sign in again
    assert response.url == reverse("account_inactive")
    assert client.get(reverse("ssi:dashboard")).status_code == 302


@pytest.mark.req("P2")
def test_staff_without_organisation_gets_403_on_both_faces(client, staff):
    sign_in(client, staff)
    assert client.get(reverse("ssi:dashboard")).status_code == 403
    assert client.get(reverse("ssmi:dashboard")).status_code == 403
    assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.req("X1")
def test_sign_in_and_failures_are_audited(client, import_supplier):
    post_login(client, import_supplier.email, "wrong-password")
    post_login(client, import_supplier.email)
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["user.sign_in_failed", "user.sign_in"]


@pytest.mark.req("X1")
def test_database_refuses_to_change_or_delete_audit_rows(import_supplier):
    from rollouts import audit

    event = audit.record(import_supplier, "test.event", import_supplier)
    for statement in (
        "UPDATE rollouts_auditevent SET action = 'x' WHERE id = %s",
        "DELETE FROM rollouts_auditevent WHERE id = %s",
    ):
        with (
            pytest.raises(Exception, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [event.pk])
    event.refresh_from_db()
    assert event.action == "test.event"
    assert IntegrityError  # imported for readers: the refusal is a database error, not an ORM check
