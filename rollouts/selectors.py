"""Reads scoped by the actor's organisation (P3). Views start here, never from Model.objects."""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from .models import Organisation, User


def users_of(org: Organisation) -> QuerySet[User]:
    """The users of one organisation: what its members may list (P1)."""
    return User.objects.filter(organisation=org).order_by("-is_active", "email")


def get_user_for(org: Organisation, pk: int) -> User:
    # Same 404 for "does not exist" and "another organisation's" (P3).
    return get_object_or_404(users_of(org), pk=pk)
