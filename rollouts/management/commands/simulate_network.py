"""Play the CSPs: status feeds for the hubs in live batches, through the service a CSP upload uses."""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from rollouts.demo import simulate_network
from rollouts.models import Rollout


class Command(BaseCommand):
    help = (
        "Submit one device status feed per CSP region for ROLLOUT (id or reference): every pending or "
        "scheduled hub in a live, unheld batch activates on the target version or fails with a realistic "
        "reason. Deterministic for a seed. Each feed is submitted as the region's first active CSP user."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("rollout", help="Rollout id or reference, e.g. R-2026-004.")
        parser.add_argument("--fail-rate", type=float, default=0.03, help="Share of hubs that fail (0-1).")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--now", default="", help="ISO 8601 time of the reports (default now; not future)."
        )

    def handle(self, *args, rollout: str, fail_rate: float, seed: int, now: str, **options) -> None:
        found = Rollout.objects.filter(reference=rollout).first()
        if found is None and rollout.isdigit():
            found = Rollout.objects.filter(pk=int(rollout)).first()
        if found is None:
            raise CommandError(f"No rollout {rollout!r}.")
        if not 0 <= fail_rate <= 1:
            raise CommandError("--fail-rate is a share between 0 and 1.")
        at: dt.datetime | None = None
        if now:
            at = parse_datetime(now)
            if at is None or at.tzinfo is None:
                raise CommandError("--now is an ISO 8601 time with an offset, e.g. 2026-05-01T09:00+01:00.")
        try:
            uploads = simulate_network(found.pk, fail_rate=fail_rate, seed=seed, now=at)
        except ValueError as error:
            raise CommandError(str(error)) from error
        if not uploads:
            self.stdout.write(f"{found.reference}: no pending or scheduled hub is in a live, unheld batch.")
        for region, upload in uploads.items():
            summary = upload.summary or {}
            self.stdout.write(
                f"{found.reference} {region}: {upload.state} ({upload.row_count or 0:,} records; "
                f"{summary.get('activated', 0):,} activated, {summary.get('failed', 0):,} failed"
                f"{'; errors: ' + str(upload.error_count) if upload.error_count else ''})"
            )
        found.refresh_from_db()
        self.stdout.write(f"{found.reference} is now {found.describe_state()}.")
