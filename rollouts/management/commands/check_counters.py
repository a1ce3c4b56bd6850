"""python manage.py check_counters [--rollout ID ...]: recount hubs and compare with the counters (U1)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from rollouts.services.counters import counter_mismatches


class Command(BaseCommand):
    help = (
        "Recount every rollout's hubs and compare with the maintained counter table (U1) and the batches'"
        " outcome figures (B1). Exit 1 on a mismatch."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rollout", type=int, action="append", help="Only this rollout (repeatable).")

    def handle(self, *args, rollout: list[int] | None, **options) -> None:
        mismatches = counter_mismatches(rollout)
        for rollout_id, org_id, group, status, counted, kept in mismatches:
            scope = group if org_id is None else f"organisation {org_id} {group}"  # "batch 12": B1's figures
            self.stderr.write(
                f"rollout {rollout_id} {scope}/{status}: counted {counted or 0}, counter says {kept or 0}"
            )
        if mismatches:
            raise CommandError(f"{len(mismatches)} counter(s) differ from a recount.")
        self.stdout.write(self.style.SUCCESS("Counters agree with a recount."))
