"""Parties (P1): organisations and their users."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models import Q
from django.utils import timezone


class OrgKind(models.TextChoices):
    DCC = "dcc", "DCC"
    CSP = "csp", "CSP"
    SUPPLIER = "supplier", "Supplier"


class Region(models.TextChoices):
    NORTH = "north", "North"
    CENTRAL = "central", "Central"
    SOUTH = "south", "South"


class Role(models.TextChoices):
    MEMBER = "member", "Member"
    ADMIN = "admin", "Admin"


class Organisation(models.Model):
    """DCC (exactly one), a CSP (one per region) or a Supplier (P1)."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    kind = models.CharField(max_length=10, choices=OrgKind.choices)
    region = models.CharField(max_length=10, choices=Region.choices, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind=OrgKind.CSP) & ~Q(region="")) | (~Q(kind=OrgKind.CSP) & Q(region="")),
                name="org_region_iff_csp",
                violation_error_message="A CSP has exactly one region; other organisations have none.",
            ),
            models.UniqueConstraint(fields=["kind"], condition=Q(kind=OrgKind.DCC), name="org_one_dcc"),
            models.UniqueConstraint(
                fields=["region"], condition=Q(kind=OrgKind.CSP), name="org_one_csp_per_region"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_dcc(self) -> bool:
        return self.kind == OrgKind.DCC

    @property
    def is_csp(self) -> bool:
        return self.kind == OrgKind.CSP

    @property
    def is_supplier(self) -> bool:
        return self.kind == OrgKind.SUPPLIER

    @property
    def face(self) -> str:
        """The namespace of the face this organisation's users work in (P2)."""
        return "ssi" if self.is_supplier else "ssmi"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **fields) -> User:
        if not email:
            raise ValueError("A user needs an email address.")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        # Addresses are entered by staff or an organisation admin, and the invitee proves control of it
        # through the set-password link; allauth needs a verified address before MFA can be set up.
        from allauth.account.models import EmailAddress

        EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=True)
        return user

    def create_superuser(self, email: str, password: str | None = None, **fields) -> User:
        fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in by email. Belongs to one organisation; staff may belong to none (P1)."""

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, null=True, blank=True, related_name="users"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]
        constraints = [
            models.CheckConstraint(
                condition=Q(organisation__isnull=False) | Q(is_staff=True),
                name="user_org_unless_staff",
                violation_error_message="Only staff users may have no organisation.",
            ),
        ]

    def __str__(self) -> str:
        return self.full_name or self.email

    @property
    def is_org_admin(self) -> bool:
        return self.organisation_id is not None and self.role == Role.ADMIN


class Invitation(models.Model):
    """An account an organisation admin or staff created (P1, P5), and the e-mail that lets the invitee
    choose a password: sent by a task once the invitation commits, or, should that task be lost (the
    broker down at the commit), by the beat job `send_unsent_invitations`."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="invitation")
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["created_at"], name="invitation_not_emailed", condition=Q(emailed_at__isnull=True)
            )
        ]

    def __str__(self) -> str:
        return f"Invitation of {self.user}"
