"""python manage.py load_inventory FILE [--mode delta|full] [--as-of T] [--max-removals N] [--force]"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from rollouts.models import UploadState, User
from rollouts.services.inventory import DEFAULT_MAX_REMOVALS, load_inventory


def parse_as_of(text: str) -> dt.datetime:
    value = parse_datetime(text) or (parse_datetime(f"{text}T00:00") if len(text) == 10 else None)
    if value is None:
        raise CommandError(
            f"--as-of {text!r} is not an ISO 8601 time, e.g. 2026-11-27T06:00 (UK time) or with an offset."
        )
    return value if timezone.is_aware(value) else timezone.make_aware(value)  # UK time without an offset


class Command(BaseCommand):
    help = (
        "Load the Smart Metering Inventory from a CSV or XLSX file in the inventory layout (FILE_FORMATS.md)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--mode",
            choices=["delta", "full"],
            default="delta",
            help="delta: insert and update; full: also mark hubs absent from the file as left.",
        )
        parser.add_argument(
            "--as-of",
            type=parse_as_of,
            default=None,
            help="When the file's data was true (default now). An older load never undoes a newer "
            "confirmed firmware version.",
        )
        parser.add_argument(
            "--max-removals",
            type=int,
            default=DEFAULT_MAX_REMOVALS,
            help="full mode refuses to mark more hubs as left than this, without --force.",
        )
        parser.add_argument("--force", action="store_true")
        parser.add_argument("--user", help="Email of the DCC or staff user loading it (default: the System).")

    def handle(
        self, *args, file: Path, mode: str, as_of, max_removals: int, force: bool, user: str | None, **options
    ) -> None:
        if not file.is_file():
            raise CommandError(f"{file} is not a file.")
        actor = None
        if user:
            actor = User.objects.filter(email__iexact=user, is_active=True).first()
            if actor is None:
                raise CommandError(f"No active user {user}.")
        with file.open("rb") as fh:
            upload = load_inventory(
                user=actor,
                content=File(fh, name=file.name),
                name=file.name,
                mode=mode,
                as_of=as_of,
                max_removals=max_removals,
                force=force,
            )
        if upload.state == UploadState.REJECTED:
            for error in upload.errors.all()[:50]:
                where = f"row {error.row}" if error.row else "file"
                self.stderr.write(f"{where} {error.column} {error.value!r}: {error.code}: {error.message}")
            more = upload.error_count - 50
            raise CommandError(
                f"Inventory file refused with {upload.error_count} error(s)"
                f"{f' ({more} more not shown)' if more > 0 else ''}; nothing was changed (upload {upload.pk})."
            )
        s = upload.summary
        if "same_as_upload" in s:
            self.stdout.write(f"Same file as upload {s['same_as_upload']}, already applied: nothing changed.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Inventory loaded ({upload.row_count:,} rows, upload {upload.pk}): {s['new']:,} new, {s['updated']:,} updated "
                f"({s['supplier_changed']:,} supplier changed, {s['model_changed']:,} model changed, "
                f"{s['version_changed']:,} version changed, {s['returned']:,} back in the SMI), "
                f"{s['unchanged']:,} unchanged, {s['left']:,} left."
            )
        )
