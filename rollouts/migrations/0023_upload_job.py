from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    """Upload: a background upload's task (`job`) and when it reached the broker (`queued_at`), so that the
    beat job `queue_waiting_uploads` sends again a task the broker never had; a partial index finds those
    uploads. Nullable columns are added without a rewrite; the index is built CONCURRENTLY, so this is not
    atomic: should the build fail it leaves an INVALID upload_not_queued index: drop it and migrate again."""

    atomic = False

    dependencies = [
        ("rollouts", "0022_notice_not_emailed"),
    ]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="job",
            field=models.JSONField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="upload",
            name="queued_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        AddIndexConcurrently(
            "upload",
            models.Index(
                fields=["received_at"],
                name="upload_not_queued",
                condition=models.Q(state="received", job__isnull=False, queued_at__isnull=True),
            ),
        ),
    ]
