"""Personas, in the style of healthchecks' Alice/Bob/Charlie (STYLE.md section 8)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from allauth.account.internal.flows.login import (
    _AUTHENTICATION_METHODS_USER_SESSION_KEY,
    AUTHENTICATION_METHODS_SESSION_KEY,
)
from allauth.account.internal.userkit import user_id_to_str
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP

from rollouts.models import OrgKind, Region, Role, User

from .factories import OrganisationFactory, UserFactory

PASSWORD = "correct-horse-battery"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def dcc(db) -> User:
    return UserFactory(
        email="dee@dcc.test", organisation=OrganisationFactory(name="DCC", kind=OrgKind.DCC), role=Role.ADMIN
    )


@pytest.fixture
def dcc_2(db, dcc) -> User:
    return UserFactory(email="dev@dcc.test", organisation=dcc.organisation)


@pytest.fixture
def csp_north(db) -> User:
    org = OrganisationFactory(name="CSP North", kind=OrgKind.CSP, region=Region.NORTH)
    return UserFactory(email="nora@csp-north.test", organisation=org, role=Role.ADMIN)


@pytest.fixture
def csp_south(db) -> User:
    org = OrganisationFactory(name="CSP South", kind=OrgKind.CSP, region=Region.SOUTH)
    return UserFactory(email="sam@csp-south.test", organisation=org)


@pytest.fixture
def import_supplier(db) -> User:
    """Alice, admin at Volt Energy, an Import (electricity) Supplier."""
    return UserFactory(
        email="alice@volt.test", organisation=OrganisationFactory(name="Volt Energy"), role=Role.ADMIN
    )


@pytest.fixture
def import_supplier_member(db, import_supplier) -> User:
    return UserFactory(email="bob@volt.test", organisation=import_supplier.organisation)


@pytest.fixture
def gas_supplier(db) -> User:
    return UserFactory(
        email="gina@gasco.test", organisation=OrganisationFactory(name="GasCo"), role=Role.ADMIN
    )


@pytest.fixture
def other_supplier(db) -> User:
    """Oscar, at a Supplier that must see nothing of the others (P3)."""
    return UserFactory(
        email="oscar@other.test", organisation=OrganisationFactory(name="Other Power"), role=Role.ADMIN
    )


@pytest.fixture
def staff(db) -> User:
    return UserFactory(email="stella@staff.test", organisation=None, is_staff=True, is_superuser=True)


def give_totp(user: User) -> Authenticator:
    existing = Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()
    return existing or TOTP.activate(user, TOTP_SECRET).instance


def sign_in(client, user: User, *, with_mfa: bool = True):
    """Sign in through the test client. DCC and CSP users also get a second factor used in the session (P5)."""
    client.force_login(user)
    if with_mfa and user.organisation and user.organisation.kind != OrgKind.SUPPLIER:
        authenticator = give_totp(user)
        session = client.session
        session[AUTHENTICATION_METHODS_SESSION_KEY] = [
            {"method": "password", "at": time.time(), "email": user.email},
            {"method": "mfa", "at": time.time(), "id": authenticator.pk, "type": "totp"},
        ]
        session[_AUTHENTICATION_METHODS_USER_SESSION_KEY] = user_id_to_str(user)
        session.save()
    return client


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def database_url_for_children() -> str:
    """The URL of the test database, for a subprocess (worker, measured child) that must see its rows."""
    from django.db import connection

    s = connection.settings_dict
    return f"postgresql://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@contextmanager
def celery_worker(tmp_path, *, broker: str, pool: str = "solo", env: dict | None = None):
    """A real Celery worker in another process on `broker` (ARCHITECTURE: slow work runs in Celery)."""
    pidfile = tmp_path / "worker.pid"
    pidfile.unlink(missing_ok=True)  # a killed worker leaves its pidfile behind
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "chfw_portal",
            "worker",
            f"--pool={pool}",
            "--concurrency=1",
            "--loglevel=WARNING",
            f"--pidfile={pidfile}",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "CELERY_BROKER_URL": broker, "PORTAL_TESTING": "true", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
