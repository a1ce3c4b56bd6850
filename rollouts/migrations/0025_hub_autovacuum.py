from django.db import migrations


class Migration(migrations.Migration):
    """Hub: autovacuum after every 10,000 changed rows, not after a fifth of the table. A status feed finds
    its hubs by GUID in the index alone (migration 0020), but only on pages the visibility map marks
    all-visible; the SMI versions written after each feed (rollouts.services.smi) clear that mark on every
    page they touch, and only a vacuum sets it again. At the default scale factor (0.2) a national estate
    of 30 million hubs waits for 6 million changes, so for weeks every feed fetches each hub's page too.
    Bench (3M hubs, tuned): the same 50,000-record feed right after the SMI write took 0.85-1.23 s (median
    0.92, 6 runs) and wrote 6 MB of WAL; vacuumed first, 0.68-1.14 s (median 0.79) and 3 MB. Vacuuming
    after 50,000 spread changes took 0.43 s here (the table's indexes not scanned: the updates are HOT)."""

    dependencies = [
        ("rollouts", "0024_invitation"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE rollouts_hub SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000)",
            "ALTER TABLE rollouts_hub RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)",
        ),
    ]
