"""The Celery app. Tasks are thin wrappers over services (rollouts/tasks.py)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chfw_portal.settings")

app = Celery("chfw_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Periodic jobs live here, one place (later issues add deadlines and automatic moves).
app.conf.beat_schedule = {}
