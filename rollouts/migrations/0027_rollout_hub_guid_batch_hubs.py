from django.db import migrations, models

import rollouts.guid


class Migration(migrations.Migration):
    """RolloutHub.guid, the hub's GUID copied onto its rollout rows, and Batch.hubs, the rollout rows that
    point at each batch: with both, a status feed finds the rows of its live batches by GUID in one hash
    join instead of two index lookups per record (rollouts.services.progress; README "Figures").

    Both are filled here from what is already stored. On a national estate the first is one UPDATE of
    every rollout row (HOT where the page has room: no index holds the column), the second one count of
    the batch index."""

    dependencies = [
        ("rollouts", "0026_hub_autovacuum_scale"),
    ]

    operations = [
        migrations.AddField(
            model_name="rollouthub",
            name="guid",
            field=rollouts.guid.GuidField(db_collation="C", default="", max_length=16),
            preserve_default=False,
        ),
        migrations.RunSQL(
            """UPDATE rollouts_rollouthub rh SET guid = h.guid FROM rollouts_hub h
               WHERE h.id = rh.hub_id AND rh.guid <> h.guid""",
            migrations.RunSQL.noop,
        ),
        migrations.AddConstraint(
            model_name="rollouthub",
            constraint=models.CheckConstraint(condition=~models.Q(guid=""), name="rollouthub_guid_given"),
        ),
        migrations.AddField(
            model_name="batch",
            name="hubs",
            field=models.PositiveIntegerField(db_default=0, editable=False),
        ),
        migrations.RunSQL(
            """UPDATE rollouts_batch b SET hubs = c.n
               FROM (SELECT batch_id, count(*) AS n FROM rollouts_rollouthub WHERE batch_id IS NOT NULL
                     GROUP BY batch_id) c
               WHERE b.id = c.batch_id""",
            migrations.RunSQL.noop,
        ),
    ]
