from __future__ import annotations

from django.apps import AppConfig


class SsiConfig(AppConfig):
    name = "ssi"
    verbose_name = "SSI (Supplier face)"
