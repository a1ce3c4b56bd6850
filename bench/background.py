"""Background intake against django-import-export (issue 7, part 4): figures printed, never asserted.

    python -m bench.background [--rows N] [--import-export-rows N]

Needs DATABASE_URL (migrated) and Redis (REDIS_URL, or 127.0.0.1:6379), as `make bench` provides.
Reuses bench.schedules' estate (5C4E… hubs, N per region). For one published functional rollout with a
pilot cap above N, it measures the same N-GUID Default Pilot List (A02) of the north CSP:

a. through the background path: `upload_default_pilot_list` (file kept and hashed, a task sent after
   commit) until a real Celery worker, another process on Redis, has staged, checked and applied it
   (pilot group recomputed, counters, notices): wall time from the call to the applied state seen by
   polling, so it includes the queue and the worker's pick-up;
b. the same service under the size setting (applied in this process, no queue), for reference;
c. django-import-export's default import of the same rows: a ModelResource on RolloutHub, GUID
   through a ForeignKeyWidget, `import_data(dry_run=False)` with its defaults (one transaction, a
   query and a save per row). It only sets the flag (no pilot group, counters or notices), so it does
   less than (a). It runs on --import-export-rows rows (default all N) and is scaled to N if fewer.

Target (issue 7): (a) at least 60 times faster than (c). Figures also go to bench-results/background.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.schedules import _estate, _north_guids, _parties, _publish, _say

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results" / "background.json"
TARGET_RATIO = 60


def _django(broker: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chfw_portal.settings")
    os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="bench-background-"))
    import django

    django.setup()
    from chfw_portal.celery import app

    app.conf.task_always_eager, app.conf.broker_url = False, broker  # send to Redis, run nothing here


def _file(guids: list[str], name: str) -> Any:
    from django.core.files.base import ContentFile

    return ContentFile(("guid\n" + "".join(f"{g}\n" for g in guids)).encode(), name=name)


def _start_worker(broker: str) -> subprocess.Popen:
    env = {**os.environ, "CELERY_BROKER_URL": broker}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "chfw_portal",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc


def _wait_applied(upload: Any, worker: subprocess.Popen, timeout: float = 600) -> Any:
    from rollouts.models import UploadState

    deadline = time.monotonic() + timeout
    while upload.state not in (UploadState.APPLIED, UploadState.REJECTED):
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.terminate()
            raise SystemExit(f"the worker did not finish the upload:\n{worker.communicate(timeout=10)[0]}")
        time.sleep(0.02)
        upload.refresh_from_db()
    return upload


def _warm_up(broker: str, worker: subprocess.Popen) -> float:
    """Wait until the worker answers a task (its start-up is not part of an upload's time)."""
    from celery import Celery

    client = Celery(broker=broker, backend=broker)
    start = perf_counter()
    client.send_task("rollouts.tasks.lapse_stale_proposals").get(timeout=120)
    return perf_counter() - start


def _import_export(rollout: Any, guids: list[str]) -> float:
    import tablib
    from import_export import fields, resources
    from import_export.widgets import ForeignKeyWidget

    from rollouts.models import Hub, RolloutHub

    class DefaultPilotResource(resources.ModelResource):
        hub = fields.Field(attribute="hub", column_name="guid", widget=ForeignKeyWidget(Hub, field="guid"))

        class Meta:
            model = RolloutHub
            fields = ("hub", "in_default_pilot")
            import_id_fields = ("hub",)

        def get_queryset(self) -> Any:
            return RolloutHub.objects.filter(rollout=rollout)

    dataset = tablib.Dataset(headers=["guid", "in_default_pilot"])
    for guid in guids:
        dataset.append([guid, "1"])
    start = perf_counter()
    result = DefaultPilotResource().import_data(dataset, dry_run=False, raise_errors=True)
    seconds = perf_counter() - start
    if result.has_errors() or result.totals["update"] != len(guids):
        raise SystemExit(f"import-export: {result.totals}")
    return seconds


def run(rows: int, ie_rows: int, broker: str) -> dict[str, Any]:
    from django.conf import settings

    from rollouts.models import Rollout, RolloutHub, UploadState
    from rollouts.services.piloting import upload_default_pilot_list

    parties = _parties()
    _model, v1, v2 = _estate(max(rows, 60_000), parties["supplier"].pk)
    figures: dict[str, Any] = {"rows": rows}
    # With a pilot (functional), so the Default Pilot List applies; its cap above the list.
    rollout = _publish(parties, v1, v2, title="Bench background", impact="functional", pilot_max=rows + 1000)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rollouts_rollouthub")  # what autovacuum does soon after a publication
    guids = _north_guids(rollout, rows)
    size = len(_file(guids, "x.csv"))
    _say(f"rollout {rollout.reference}: {len(guids):,} north GUIDs in the list ({size / 1024:.0f} KiB)")

    worker = _start_worker(broker)
    try:
        figures["worker_start_s"] = round(_warm_up(broker, worker), 2)
        settings.INTAKE_BACKGROUND_BYTES = 256 * 1024
        for n, name in enumerate(("background, first list", "background, second list (one hub fewer)")):
            # Change a byte so the second file is not recognised as the same file (X2 would skip it).
            start = perf_counter()
            upload = upload_default_pilot_list(
                user=parties["csp"], rollout_id=rollout.pk, content=_file(guids[n:], f"list-{n}.csv")
            )
            assert upload.state == UploadState.RECEIVED, "not sent to the worker: raise --rows"
            upload = _wait_applied(upload, worker)
            seconds = perf_counter() - start
            if upload.state != UploadState.APPLIED:
                raise SystemExit(f"{name}: {upload.state} ({upload.error_count} errors)")
            figures[name] = round(seconds, 3)
            _say(f"  a. {name}: {seconds:.2f} s from the call to applied in the worker")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    settings.INTAKE_BACKGROUND_BYTES = 10 * size
    start = perf_counter()
    upload = upload_default_pilot_list(
        user=parties["csp"], rollout_id=rollout.pk, content=_file(guids, "inline.csv")
    )
    figures["inline"] = round(perf_counter() - start, 3)
    _say(f"  b. the same service in this process: {figures['inline']:.2f} s ({upload.state})")

    RolloutHub.objects.filter(rollout=rollout).update(in_default_pilot=False)
    sample = guids[:ie_rows]
    _say(f"  c. django-import-export, default import of {len(sample):,} rows...")
    seconds = _import_export(rollout, sample)
    figures["import_export"] = round(seconds, 2)
    figures["import_export_rows"] = len(sample)
    scaled = seconds * len(guids) / len(sample)
    figures["import_export_scaled"] = round(scaled, 1)
    _say(
        f"  c. django-import-export: {seconds:.1f} s for {len(sample):,} rows"
        + (f" (~{scaled:.0f} s for {len(guids):,})" if len(sample) < len(guids) else "")
    )
    best = min(figures["background, first list"], figures["background, second list (one hub fewer)"])
    figures["ratio"] = round(scaled / best, 1)
    Rollout.objects.filter(pk=rollout.pk).update(title="Bench background (done)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--import-export-rows", type=int, default=None)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("Set DATABASE_URL (a migrated database), e.g. through `make bench`.")
    redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    # its own database: no other run's tasks (BENCH_BROKER_URL: another one, for runs side by side)
    broker = os.environ.get("BENCH_BROKER_URL") or redis.rsplit("/", 1)[0] + "/13"
    _django(broker)
    from celery import Celery

    Celery(broker=broker).control.purge()
    started = time.time()
    figures = run(args.rows, args.import_export_rows or args.rows, broker)
    figures["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    best = min(figures["background, first list"], figures["background, second list (one hub fewer)"])
    _say(
        f"\nBackground intake, {args.rows:,} GUIDs: {best:.2f} s through a worker; django-import-export "
        f"{figures['import_export_scaled']:.1f} s: {figures['ratio']:.0f}x faster [target >= {TARGET_RATIO}x]"
    )
    _say(f"Total {time.time() - started:.0f} s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
