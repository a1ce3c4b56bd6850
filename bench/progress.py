"""Status feed benchmark (PL9, SL4, U3, B1): figures printed, never asserted.

    python -m bench.progress [--records N] [--repeat N]

Needs DATABASE_URL (migrated), as `make bench` provides. Reuses the schedules bench's estate (model
5C4ED001, hubs created once with a bare COPY). Each run publishes a fresh operational rollout (the
previous one is superseded), starts safe launch, puts --records north hubs (default 50,000) in one
safe launch batch (A08, through the service), then measures submit_status_feed through the whole
service (file kept and hashed, read, COPY to staging, checks, one UPDATE … FROM with exact counter
deltas, timeline events, SMI versions, aggregated notices, the B1 check):

a. a feed of N records: 97% activated on the target version, 3% failed with a reason;
b. the same feed again (every record already in the timeline: nothing moves);
c. an all-rejected feed of N records (each `distributed` after `activated`: status_invalid).
Afterwards the bench hubs go back to the replaced version (bench setup), so the next run finds them eligible.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
from time import perf_counter

from bench.schedules import REGIONS, _django, _estate, _file, _north_guids, _parties, _publish, _say


def _feed(guids: list[str], status_for, at: str):
    from django.core.files.base import ContentFile

    lines = ["guid,status,at,reason,firmware_version"]
    for n, g in enumerate(guids):
        status, reason, version = status_for(n)
        lines.append(f"{g},{status},{at},{reason},{version}")
    return ContentFile(("\n".join(lines) + "\n").encode(), name="feed.csv")


def run(records: int, repeat: int) -> dict[str, list[float]]:
    from django.db import connection
    from django.utils import timezone

    from rollouts.models import RolloutCounter
    from rollouts.services.counters import counter_mismatches
    from rollouts.services.lifecycle import start_safe_launch_without_pilot
    from rollouts.services.progress import submit_status_feed
    from rollouts.services.schedules import upload_safe_launch_schedule

    parties = _parties()
    model, v1, v2 = _estate(max(records, 1), parties["supplier"].pk)
    times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    for _ in range(repeat):
        rollout = _publish(parties, v1, v2)
        start_safe_launch_without_pilot(user=parties["dcc"], rollout_id=rollout.pk)
        guids = _north_guids(rollout, records)
        now = timezone.now()
        upload = upload_safe_launch_schedule(
            user=parties["csp"],
            rollout_id=rollout.pk,
            content=_file(guids, "BENCH", now.isoformat(), (now + dt.timedelta(days=3)).isoformat()),
        )
        assert upload.state == "applied", upload.state
        at = timezone.now().isoformat()  # after publication: older records never move a hub

        def outcome(n: int):
            return ("failed", "HAN join timeout", "") if n % 33 == 0 else ("activated", "", v2.version)

        for key, content in (
            ("a", _feed(guids, outcome, at)),
            ("b", _feed(guids, outcome, at)),
            ("c", _feed(guids, lambda n: ("distributed", "", ""), timezone.now().isoformat())),
        ):
            start = perf_counter()
            upload = submit_status_feed(
                user=parties["csp"], rollout_id=rollout.pk, content=content, name="feed.csv"
            )
            times[key].append(perf_counter() - start)
            _say(f"  {key}: {times[key][-1]:.2f} s ({upload.state}, {upload.summary or upload.error_count})")
        mismatches = counter_mismatches([rollout.pk])
        activated = sum(
            RolloutCounter.objects.filter(
                rollout=rollout, organisation__kind="csp", status="activated"
            ).values_list("hubs", flat=True)
        )
        _say(f"  counters equal to a recount: {not mismatches}; activated (CSP counters): {activated:,}")
        with connection.cursor() as cursor:  # bench setup: hubs back on the replaced version for the next run
            cursor.execute(
                "UPDATE rollouts_hub SET firmware_version_id = %s WHERE device_model_id = %s AND firmware_version_id = %s",
                [v1.pk, model.pk, v2.pk],
            )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args()
    _django()
    _say(
        f"Status feed bench: {options.records:,} records, {options.repeat} run(s), regions {', '.join(REGIONS)}"
    )
    times = run(options.records, options.repeat)
    labels = {
        "a": f"feed of {options.records:,} records (97% activated, 3% failed)",
        "b": "the same feed again (nothing moves)",
        "c": f"rejected feed of {options.records:,} records (status_invalid)",
    }
    for key, label in labels.items():
        _say(f"{label}: median {statistics.median(times[key]):.2f} s")


if __name__ == "__main__":
    main()
