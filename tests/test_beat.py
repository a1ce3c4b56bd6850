"""Every periodic job names a task that exists (a typo would fail silently in production)."""

from __future__ import annotations

from chfw_portal.celery import app


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()
    names = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert names == {
        "rollouts.tasks.lapse_stale_proposals",
        "rollouts.tasks.send_deadline_reminders",
        "rollouts.tasks.start_due_safe_launches",
        "rollouts.tasks.revert_passed_instructions",
        "rollouts.tasks.apply_smi_versions",
        "rollouts.tasks.email_unsent_notices",
        "rollouts.tasks.queue_waiting_uploads",
        "rollouts.tasks.send_unsent_invitations",
    }
    assert names <= set(app.tasks)
