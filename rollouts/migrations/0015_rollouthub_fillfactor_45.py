from django.db import migrations


class Migration(migrations.Migration):
    """RolloutHub: fillfactor 80 -> 45, so one statement can rewrite every row of a page as a HOT update.

    Within one UPDATE the old versions cannot be pruned, so a page whose rows all change (a Supplier's
    "all my eligible hubs", its withdrawal, a big status feed) needs room for a second copy of each row;
    at 80 most of them moved to other pages and wrote all five indexes (1,000,000 hubs: 16-39 s, 0.6-0.7 GB
    WAL; at 45: 5-7 s, 0.24 GB WAL, every update HOT; bench/instructions.py). Only the storage parameter
    changes (no rewrite, fine on a 30M-row table): new and moved rows take the new layout."""

    dependencies = [
        ("rollouts", "0014_uploaderror_no_fk_check"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE rollouts_rollouthub SET (fillfactor = 45)",
            "ALTER TABLE rollouts_rollouthub SET (fillfactor = 80)",
        ),
    ]
