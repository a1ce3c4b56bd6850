from __future__ import annotations

from django.apps import AppConfig


class SsmiConfig(AppConfig):
    name = "ssmi"
    verbose_name = "SSMI (DCC and CSP face)"
