from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    """Notice: a partial index on the notices not e-mailed yet, for the beat job that sends those whose
    task was lost (`notifications.email_unsent_notices`). Built CONCURRENTLY, so not atomic: should the
    build fail it leaves an INVALID notice_not_emailed index: drop it and migrate again."""

    atomic = False

    dependencies = [
        ("rollouts", "0021_smi_version_updates"),
    ]

    operations = [
        AddIndexConcurrently(
            "notice",
            models.Index(fields=["created_at"], name="notice_not_emailed", condition=models.Q(emailed_at__isnull=True)),
        ),
    ]
