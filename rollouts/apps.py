from __future__ import annotations

from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "rollouts"
    verbose_name = "CHFW rollouts"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects receivers
