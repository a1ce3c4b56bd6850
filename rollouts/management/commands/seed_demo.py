"""Demo organisations and users (idempotent). Later issues add inventory and rollouts in every state."""

from __future__ import annotations

from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify

from rollouts.demo import seed_estate
from rollouts.models import OrgKind, Region, Role, User
from rollouts.services.parties import create_organisation, ensure_user

ORGANISATIONS = [
    ("DCC", OrgKind.DCC, ""),
    ("CSP North", OrgKind.CSP, Region.NORTH),
    ("CSP Central", OrgKind.CSP, Region.CENTRAL),
    ("CSP South", OrgKind.CSP, Region.SOUTH),
    ("Northern Lights Energy", OrgKind.SUPPLIER, ""),
    ("Brightwater Power", OrgKind.SUPPLIER, ""),
    ("Copperfield Gas", OrgKind.SUPPLIER, ""),
    ("Dunmore Utilities", OrgKind.SUPPLIER, ""),
]
DEMO_DOMAIN = "demo.chfw"
DEFAULT_PASSWORD = "demo-portal-2026"  # noqa: S105 - demo only; refused with DEBUG off unless --force


class Command(BaseCommand):
    help = (
        "Create the demo organisations and one admin user each (<org-slug>@demo.chfw), plus dcc-2@demo.chfw."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--password", default=DEFAULT_PASSWORD, help="Password for every demo user.")
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG off.")
        parser.add_argument(
            "--hubs",
            type=int,
            default=20_000,
            help="Hubs in the demo inventory (0: organisations and users only).",
        )
        parser.add_argument(
            "--totp-secret",
            default="",
            help="Base32 secret: give DCC and CSP demo users this authenticator (for MFA demos).",
        )

    def handle(self, *args, password: str, force: bool, totp_secret: str, hubs: int, **options) -> None:
        if not settings.DEBUG and not force:
            raise CommandError(
                "seed_demo creates users with a known password: it refuses to run with DEBUG off. "
                "Use --force on a test or demo system only."
            )
        created = 0
        with transaction.atomic():
            for name, kind, region in ORGANISATIONS:
                org = create_organisation(user=None, name=name, kind=kind, region=region)
                emails = [f"{org.slug}@{DEMO_DOMAIN}"]
                if kind == OrgKind.DCC:
                    emails.append(f"dcc-2@{DEMO_DOMAIN}")  # four-eyes decisions need a second DCC user
                for email in emails:
                    user, new = ensure_user(
                        email=email,
                        organisation=org,
                        role=Role.ADMIN,
                        password=password,
                        full_name=f"{name} demo admin",
                    )
                    created += new
                    if (
                        totp_secret
                        and kind != OrgKind.SUPPLIER
                        and not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
                    ):
                        TOTP.activate(user, totp_secret)
        if hubs:
            dcc_users = [
                User.objects.get(email=f"dcc@{DEMO_DOMAIN}"),
                User.objects.get(email=f"dcc-2@{DEMO_DOMAIN}"),
            ]
            for line in seed_estate(hubs, dcc_users):
                self.stdout.write(f"  {line}")
        self.stdout.write(self.style.SUCCESS(f"Demo data ready ({created} users created)."))
        self.stdout.write(f"Demo sign-ins (password: {password}):")
        for name, kind, _region in ORGANISATIONS:
            face = "/ssi/" if kind == OrgKind.SUPPLIER else "/ssmi/"
            self.stdout.write(f"  {slugify(name) + '@' + DEMO_DOMAIN:<34} {name} -> {face}")
        self.stdout.write(
            f"  {'dcc-2@' + DEMO_DOMAIN:<34} DCC, second user for four-eyes decisions -> /ssmi/"
        )
