"""The Celery app. Tasks are thin wrappers over services (rollouts/tasks.py)."""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chfw_portal.settings")

app = Celery("chfw_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Periodic jobs live here, in one place. They act as the System actor.
app.conf.beat_schedule = {
    "lapse-stale-proposals": {  # hourly, at minute 5
        "task": "rollouts.tasks.lapse_stale_proposals",
        "schedule": crontab(minute=5),
    },
    "deadline-reminders": {  # daily at 06:00 UK time (CELERY_TIMEZONE)
        "task": "rollouts.tasks.send_deadline_reminders",
        "schedule": crontab(hour=6, minute=0),
    },
    "start-due-safe-launches": {  # every minute (L5: at the end of the pilot window)
        "task": "rollouts.tasks.start_due_safe_launches",
        "schedule": crontab(),
    },
    "apply-smi-versions": {  # every minute (U3: each feed queues its own run; this picks up a lost one)
        "task": "rollouts.tasks.apply_smi_versions",
        "schedule": crontab(),
    },
    "queue-waiting-uploads": {  # every minute (a big upload whose task was never sent: broker down at commit)
        "task": "rollouts.tasks.queue_waiting_uploads",
        "schedule": crontab(),
    },
    "email-unsent-notices": {  # every 5 minutes (a notice whose e-mail task was lost: broker down at commit)
        "task": "rollouts.tasks.email_unsent_notices",
        "schedule": crontab(minute="*/5"),
    },
    "send-unsent-invitations": {  # every 5 minutes (an invitation whose e-mail task was lost)
        "task": "rollouts.tasks.send_unsent_invitations",
        "schedule": crontab(minute="*/5"),
    },
    "revert-passed-instructions": {  # every 5 minutes (I3: instructed times passing during a hold)
        "task": "rollouts.tasks.revert_passed_instructions",
        "schedule": crontab(minute="*/5"),
    },
}
