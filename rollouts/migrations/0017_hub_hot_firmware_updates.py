from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    """Hub: an activation's SMI version update (U3) becomes a HOT update.

    A status feed writes the activated hubs' firmware_version, firmware_as_of and updated_at. With the
    version in the (device_model, firmware_version) index and full pages (the estate is loaded by COPY at
    fillfactor 100), every such update wrote a new row version on another page and an entry in each of
    the six indexes: 48,484 activations took 0.69-0.76 s of a 1.6 s feed (bench/progress.py). With no
    index on the version and room on each page, the same update is HOT: 0.14 s on a copy of the table.
    On a 3M-hub estate a 50,000-record feed went from 4.02 s to 2.84 s (medians of 3, hubs spread).

    - The index on the device model alone serves what the old one served (eligibility at publication
      reads every hub of the model whatever its version; the version is a filter on the same rows).
    - fillfactor 90 applies to rows written from now on (loads, moved rows); an estate loaded before this
      migration gets its free space from `VACUUM FULL rollouts_hub` in a maintenance window (README).
    - Built CONCURRENTLY, so not atomic: should the build fail it leaves an INVALID hub_device_model
      index: drop it and migrate again.
    """

    atomic = False

    dependencies = [
        ("rollouts", "0016_hubinstruction_composite_pk"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE rollouts_hub SET (fillfactor = 90)",
            "ALTER TABLE rollouts_hub RESET (fillfactor)",
        ),
        AddIndexConcurrently("hub", models.Index(fields=["device_model"], name="hub_device_model")),
        RemoveIndexConcurrently("hub", "hub_model_version"),
    ]
