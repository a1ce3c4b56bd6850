from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from rollouts.models import Organisation, OrgKind, Role, User


class OrganisationFactory(DjangoModelFactory):
    class Meta:
        model = Organisation
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Supplier {n}")
    slug = factory.LazyAttribute(lambda o: o.name.lower().replace(" ", "-"))
    kind = OrgKind.SUPPLIER
    region = ""


class UserFactory(DjangoModelFactory):
    """Users are made as the portal makes them (UserManager.create_user), verified address included."""

    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    full_name = factory.Faker("name", locale="en_GB")
    organisation = factory.SubFactory(OrganisationFactory)
    role = Role.MEMBER
    password = "correct-horse-battery"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return model_class.objects.create_user(kwargs.pop("email"), kwargs.pop("password"), **kwargs)
