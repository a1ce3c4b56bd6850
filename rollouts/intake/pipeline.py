"""The one intake pipeline every upload goes through (X2, X3; FILE_FORMATS.md).

    upload = receive_upload(user=..., organisation=..., kind=..., content=...)   # kept, hashed
    upload = process_upload(upload.pk, handler)                                 # staged, checked, applied

Rows stream from the reader into a temporary staging table with PostgreSQL COPY; the checks are
a few set-based statements that write each bad row, with its reason code, into a temporary
failures table; only if that table stays empty does the handler apply the rows, in the same
transaction. A rejected upload keeps its file, its errors and one audit event, and nothing else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import psycopg
from django.conf import settings
from django.core.cache import cache
from django.core.files import File
from django.db import DataError, connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import audit
from ..guid import GUID_SQL_TYPE, GuidFormatError, guid_sql, parse_guid
from ..models import Organisation, OrgKind, Upload, UploadError, UploadKind, UploadState, User
from .errors import CODES, Failure, RowsRejected
from .readers import NotPlain, PlainCsv, plain_csv, plain_rows, read_rows

log = logging.getLogger(__name__)

ROWS = "intake_rows"
PYTHON_SPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())  # what str.strip() removes
FAILURES = "intake_failures"
PROGRESS_EVERY = 10_000
PROGRESS_TTL = 24 * 60 * 60


@dataclass(frozen=True)
class Layout:
    """A file layout of FILE_FORMATS.md: column name -> required, and which columns hold GUIDs."""

    kind: UploadKind
    columns: dict[str, bool]
    guid_columns: tuple[str, ...] = ("guid",)
    # Let PostgreSQL parse a plain CSV file itself (COPY ... FORMAT csv, GUIDs normalised in SQL)
    # instead of the Python reader: 1M inventory rows stage in ~1 s instead of ~7 s. Same rows, same
    # row numbers, same errors: any file that is not plain goes through the reader (see _stage_rows).
    copy_csv: bool = False
    # The staged columns whose statistics the layout's checks need (ANALYZE of those only); empty: all.
    # A layout whose statements join on the GUID alone skips the other text columns' sorts (~0.1 s per file).
    analyze_columns: tuple[str, ...] = ()
    # Their statistics target (PostgreSQL samples 300 rows per unit); 0: the server's (100: 30,000 rows).
    # A layout whose joins meet unique keys needs only the number of distinct values, which a small
    # sample gives (50,000 rows: ANALYZE 4 ms at 10 against 23 ms at 100).
    analyze_target: int = 0

    @property
    def names(self) -> list[str]:
        return list(self.columns)


@dataclass
class Staging:
    """The staging and failures tables of one upload, inside the applying transaction.

    `intake_rows` has `row_no`, one text column per layout column (as given; NULL where the
    reader already failed the cell) and `<guid column>_hex` with the canonical GUID (NULL when
    it is not one). Checks add failures with `fail(...)`.
    """

    layout: Layout
    cursor: Any
    row_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, select_sql: str, params: Iterable[Any] = ()) -> int:
        """Add failures: `select_sql` yields (row_no, column, value, code, message or NULL)."""
        self.cursor.execute(
            f"INSERT INTO {FAILURES} (row_no, col, value, code, message) {select_sql}", list(params)
        )
        return self.cursor.rowcount

    def create_temp(self, name: str, select_sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> None:
        """A temporary table for the rest of this transaction (dropped first: savepoints can nest)."""
        self.cursor.execute(f"DROP TABLE IF EXISTS {name}")
        self.cursor.execute(
            f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {select_sql}",
            params if isinstance(params, dict) else list(params),
        )

    def failure_count(self) -> int:
        self.cursor.execute(f"SELECT count(*) FROM {FAILURES}")
        return self.cursor.fetchone()[0]


class Handler(Protocol):
    """What one kind of upload adds to the pipeline: its layout, its checks, and how it applies.

    Two optional methods make a handler fit for the background path, where the worker applies the
    file in a later transaction than the one that received it: `begin()` runs first in the applying
    transaction (lock the rollout, check that it still accepts the file, raising `reject_file` if
    not), and `finish(upload)` runs after an applied upload in the same transaction (its notices).
    A handler whose `finish` tells the sender the result sets `notifies_applied = True`: the background
    path then sends no "your file was applied" notice of its own.
    """

    layout: Layout

    def check(self, staging: Staging, upload: Upload) -> None: ...

    def apply(self, staging: Staging, upload: Upload) -> dict[str, Any]: ...


# -- receiving -----------------------------------------------------------------------------------


def receive_upload(
    *,
    user: User | None,
    organisation: Organisation,
    kind: UploadKind,
    content: File,
    name: str | None = None,
    rollout_id: int | None = None,
) -> Upload:
    """Keep the file under a generated name with its size and SHA-256 (X2). Nothing is read yet."""
    digest = hashlib.sha256()
    size = 0
    content.seek(0)
    for chunk in content.chunks():
        digest.update(chunk)
        size += len(chunk)
    content.seek(0)
    upload = Upload(
        kind=kind,
        rollout_id=rollout_id,
        organisation=organisation,
        user=user,
        name=(name or content.name or "upload")[-255:],
        size=size,
        sha256=digest.hexdigest(),
    )
    upload.file.save("upload", content, save=False)
    upload.save()
    return upload


# -- progress (outside the applying transaction, so a poll sees it move) ----------------------------


def progress_key(upload_id: int) -> str:
    return f"upload-progress:{upload_id}"


def set_progress(upload_id: int, stage: str, rows: int = 0, errors: int = 0) -> None:
    cache.set(progress_key(upload_id), {"stage": stage, "rows": rows, "errors": errors}, PROGRESS_TTL)


def get_progress(upload_id: int) -> dict[str, Any] | None:
    return cache.get(progress_key(upload_id))


# -- processing ----------------------------------------------------------------------------------


def process_upload(upload_id: int, handler: Handler, *, dedupe: bool = True) -> Upload:
    """Validate and apply one upload, all or nothing (X3). Safe to run twice: a finished upload stops."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload_id)
        if upload.state in (UploadState.APPLIED, UploadState.REJECTED):
            return upload
        upload.state = UploadState.VALIDATING
        upload.started_at = timezone.now()
        upload.save(update_fields=["state", "started_at"])
    set_progress(upload.pk, "reading")
    return apply_upload(upload, handler, dedupe=dedupe)


def apply_upload(upload: Upload, handler: Handler, *, dedupe: bool = True) -> Upload:
    """Stage, check and apply one received upload, all or nothing, inside the caller's transaction
    (services that must hold a lock across it call this directly; `process_upload` wraps it).

    With `dedupe`, the same file as the latest applied one of the same kind, rollout and sender is
    recognised and not applied twice (X2); lists whose re-sending means something (an instruction
    sent again after a withdrawal) pass dedupe=False.
    """
    if upload.state != UploadState.VALIDATING:
        upload.state = UploadState.VALIDATING
        upload.started_at = timezone.now()
        upload.save(update_fields=["state", "started_at"])
    if dedupe and (same := _same_as_latest_applied(upload)):
        return _finish_same(upload, same)
    try:
        with transaction.atomic():
            if begin := getattr(handler, "begin", None):
                begin()
            upload = _stage_check_apply(upload, handler)
            if upload.state == UploadState.APPLIED and (finish := getattr(handler, "finish", None)):
                finish(upload)
            return upload
    except RowsRejected as rejected:  # the file itself, its header, or a check that raised
        return _reject(upload, rejected.failures)


def _same_as_latest_applied(upload: Upload) -> Upload | None:
    latest = (
        Upload.objects.filter(
            kind=upload.kind,
            organisation=upload.organisation_id,
            rollout=upload.rollout_id,
            state=UploadState.APPLIED,
        )
        .exclude(pk=upload.pk)
        .order_by("-finished_at", "-id")
        .first()
    )
    return latest if latest is not None and latest.sha256 == upload.sha256 else None


@transaction.atomic
def _finish_same(upload: Upload, same: Upload) -> Upload:
    upload.state = UploadState.APPLIED
    upload.row_count = same.row_count
    upload.summary = {"same_as_upload": same.pk, "changed": 0}
    upload.finished_at = timezone.now()
    upload.save(update_fields=["state", "row_count", "summary", "finished_at"])
    audit.record(
        upload.user,
        "upload.same_as_applied",
        upload,
        upload_id=upload.pk,
        sha256=upload.sha256,
        same_as_upload=same.pk,
    )
    set_progress(upload.pk, "applied", upload.row_count or 0)
    return upload


def _stage_check_apply(upload: Upload, handler: Handler) -> Upload:
    layout = handler.layout
    with connection.cursor() as cursor, upload.file.open("rb") as fileobj:
        staging = Staging(layout=layout, cursor=cursor)
        staging.row_count = _stage_rows(cursor, upload.pk, layout, fileobj)
        set_progress(upload.pk, "checking", staging.row_count)
        only = ", ".join(f'"{name}"' for name in layout.analyze_columns)
        if only and layout.analyze_target:
            targets = ", ".join(
                f'ALTER COLUMN "{name}" SET STATISTICS {int(layout.analyze_target)}'
                for name in layout.analyze_columns
            )
            cursor.execute(f"ALTER TABLE {ROWS} {targets}")
        cursor.execute(f"ANALYZE {ROWS} ({only})" if only else f"ANALYZE {ROWS}")
        _check_guids(staging)
        handler.check(staging, upload)
        errors = staging.failure_count()
        if errors:
            return _record_rejection(upload, cursor, staging.row_count, errors)
        set_progress(upload.pk, "applying", staging.row_count)
        summary = handler.apply(staging, upload)
    upload.state = UploadState.APPLIED
    upload.row_count = staging.row_count
    upload.summary = summary
    upload.finished_at = timezone.now()
    upload.save(update_fields=["state", "row_count", "summary", "finished_at"])
    audit.record(
        upload.user,
        f"upload.applied.{upload.kind}",
        upload,
        **{**summary, "upload_id": upload.pk, "sha256": upload.sha256, "rows": staging.row_count},
    )
    transaction.on_commit(lambda: set_progress(upload.pk, "applied", staging.row_count))
    return upload


def _stage_rows(cursor, upload_id: int, layout: Layout, fileobj) -> int:
    """Fill the staging tables from the file: COPY of a plain CSV when the layout allows, else the reader."""
    plain = None
    if layout.copy_csv:
        plain = plain_csv(fileobj, columns=layout.columns, guid_columns=layout.guid_columns)
    if plain is not None:
        try:
            with transaction.atomic():  # a savepoint: the reader starts again from clean tables
                return _copy_plain(cursor, layout, plain, fileobj)
        except (NotPlain, DataError, psycopg.DataError) as exc:
            log.info("upload %s: not a plain CSV for COPY (%s); reading it in Python", upload_id, exc)
    _create_tables(cursor, layout)
    with read_rows(fileobj, columns=layout.columns, guid_columns=layout.guid_columns) as reader:
        count = _copy_rows(cursor, upload_id, layout, reader)
        _copy_failures(cursor, reader.failures)
    return count


def _copy_plain(cursor, layout: Layout, plain: PlainCsv, fileobj) -> int:
    """COPY a plain CSV file's rows as they are; the same table, rows and numbers as the reader gives.

    row_no counts from 2 (the header is row 1); `<guid>_hex` is computed by guid_sql as COPY writes
    each row. Rows the reader would skip as blank are deleted; a file the reader would refuse as empty
    or with too many rows raises NotPlain, so that the reader refuses it with its own error.
    """
    present = plain.columns
    columns = [f'"{name}" text' for name in present]
    columns += [f"\"{name}\" text NOT NULL DEFAULT ''" for name in layout.names if name not in present]
    columns += [
        f'"{name}_hex" {GUID_SQL_TYPE} GENERATED ALWAYS AS ({guid_sql(f'"{name}"')}) STORED'
        for name in layout.guid_columns
    ]
    cursor.execute(f"DROP TABLE IF EXISTS {ROWS}; DROP TABLE IF EXISTS {FAILURES}")
    cursor.execute(
        f"CREATE TEMP TABLE {ROWS} (row_no integer GENERATED ALWAYS AS IDENTITY (START WITH 2), "
        f"{', '.join(columns)}) ON COMMIT DROP"
    )
    _create_failures(cursor)
    names = ", ".join(f'"{name}"' for name in present)
    with cursor.copy(f"COPY {ROWS} ({names}) FROM STDIN (FORMAT csv, FORCE_NOT_NULL ({names}))") as copy:
        for block in plain_rows(fileobj, plain):
            copy.write(block)
    copied = cursor.rowcount
    # Blank rows (every cell empty or whitespace, as str.strip() sees it: the reader skips them) have no GUID.
    blank = " AND ".join(f"btrim(\"{name}\", %(space)s) = ''" for name in present)
    first = layout.guid_columns[0]
    cursor.execute(f'DELETE FROM {ROWS} WHERE "{first}_hex" IS NULL AND {blank}', {"space": PYTHON_SPACE})
    count = copied - cursor.rowcount
    if not 0 < count <= settings.INTAKE_MAX_CSV_ROWS:
        raise NotPlain("empty, or more rows than the limit")
    return count


def _create_tables(cursor, layout: Layout) -> None:
    columns = ", ".join(f'"{name}" text' for name in layout.names)
    hexes = "".join(f', "{name}_hex" {GUID_SQL_TYPE}' for name in layout.guid_columns)
    cursor.execute(f"DROP TABLE IF EXISTS {ROWS}; DROP TABLE IF EXISTS {FAILURES}")
    cursor.execute(f"CREATE TEMP TABLE {ROWS} (row_no integer NOT NULL, {columns}{hexes}) ON COMMIT DROP")
    _create_failures(cursor)


def _create_failures(cursor) -> None:
    cursor.execute(
        f"CREATE TEMP TABLE {FAILURES} (row_no integer, col text, value text, code text NOT NULL, message text) "
        "ON COMMIT DROP"
    )


def _canonical(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_guid(value)
    except GuidFormatError:
        return None


def _copy_rows(cursor, upload_id: int, layout: Layout, reader) -> int:
    names = layout.names
    guid_columns = layout.guid_columns
    target = ", ".join(["row_no", *(f'"{n}"' for n in names), *(f'"{n}_hex"' for n in guid_columns)])
    count = 0
    with cursor.copy(f"COPY {ROWS} ({target}) FROM STDIN") as copy:
        for row_no, row in reader:
            copy.write_row([row_no, *(row[n] for n in names), *(_canonical(row[n]) for n in guid_columns)])
            count += 1
            if count % PROGRESS_EVERY == 0:
                set_progress(upload_id, "reading", count, reader.failure_count)
    return count


def _copy_failures(cursor, failures: list[Failure]) -> None:
    if not failures:
        return
    with cursor.copy(f"COPY {FAILURES} (row_no, col, value, code, message) FROM STDIN") as copy:
        for f in failures:
            copy.write_row([f.row, f.column, f.value, f.code, f.message])


def _check_guids(staging: Staging) -> None:
    """guid_format and guid_duplicate (both rows named), for every GUID column."""
    for name in staging.layout.guid_columns:
        staging.fail(
            f'SELECT row_no, %s, "{name}", %s, NULL FROM {ROWS} WHERE "{name}" IS NOT NULL AND "{name}_hex" IS NULL',
            [name, "guid_format"],
        )
        # The duplicated GUIDs first, then their row lists: string_agg only for those (1.6 s -> 0.6 s at 1M rows).
        staging.fail(
            f"""WITH d AS (SELECT "{name}_hex" AS hex FROM {ROWS} WHERE "{name}_hex" IS NOT NULL
                           GROUP BY 1 HAVING count(*) > 1),
                     l AS (SELECT r."{name}_hex" AS hex, string_agg(r.row_no::text, ', ' ORDER BY r.row_no) AS rows
                           FROM {ROWS} r JOIN d ON d.hex = r."{name}_hex" GROUP BY 1)
                SELECT r.row_no, %s, r."{name}", %s,
                       format('This GUID appears more than once in the file, in rows %%s. Keep one row.', l.rows)
                FROM {ROWS} r JOIN l ON l.hex = r."{name}_hex\"""",
            [name, "guid_duplicate"],
        )


def rows_by_hub(hub_columns: str, where: str = "", rows: str = ROWS) -> str:
    """The staged rows (all, or those `where` keeps) with their hub's id as `hub_id` and `hub_columns` (of
    alias h; NULL when the GUID is unknown), as a subquery to join the rollout's rows to by hub_id. The
    rows meet the hubs' GUID index in GUID order and leave in hub order, the order in which publication
    wrote each rollout's rows: each index and table page is read once and in order, instead of once per
    row in the file's order, which is what a list spread over a national estate costs (bench.progress).
    `rows`: the staged rows with columns of their own joined on (a subquery), so that no join after this
    one undoes the hub order: join anything else here, or after the rollout's rows."""
    return f"""(SELECT r.*, h.id AS hub_id, {hub_columns}
                FROM (SELECT * FROM {rows} {where} ORDER BY guid_hex OFFSET 0) r
                LEFT JOIN rollouts_hub h ON h.guid = r.guid_hex
                ORDER BY h.id OFFSET 0)"""


def check_guids_visible(staging: Staging, org: Organisation, column: str = "guid") -> int:
    """Refuse GUIDs the uploader may not see, with the code its kind gets (P3).

    A Supplier gets `guid_not_yours` for unknown hubs and other Suppliers' hubs alike, a CSP
    `guid_not_in_region` for unknown hubs and other regions' alike; only DCC is told `guid_unknown`.
    """
    if org.kind == OrgKind.SUPPLIER:
        code, visible = "guid_not_yours", "(h.import_supplier_id = %s OR h.gas_supplier_id = %s)"
        params = [org.pk, org.pk]
    elif org.kind == OrgKind.CSP:
        code, visible, params = "guid_not_in_region", "h.region = %s", [org.region]
    else:
        code, visible, params = "guid_unknown", "true", []
    return staging.fail(
        f"""SELECT r.row_no, %s, r."{column}", %s, NULL FROM {ROWS} r
            WHERE r."{column}_hex" IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM rollouts_hub h WHERE h.guid = r."{column}_hex" AND {visible})""",
        [column, code, *params],
    )


def _record_rejection(upload: Upload, cursor, rows: int, errors: int) -> Upload:
    cursor.execute(
        f"""INSERT INTO {UploadError._meta.db_table} (upload_id, "row", "column", value, code, message)
            SELECT %s, row_no, coalesce(col, ''), coalesce(value, ''), code,
                   coalesce(message, %s::jsonb ->> code, code)
            FROM {FAILURES} ORDER BY row_no NULLS FIRST, col""",
        [upload.pk, json.dumps(CODES)],
    )
    cursor.execute(f"SELECT code, count(*) FROM {FAILURES} GROUP BY 1 ORDER BY 1")  # the rows just copied
    codes = dict(cursor.fetchall())
    upload.state = UploadState.REJECTED
    upload.row_count = rows
    upload.error_count = errors
    upload.finished_at = timezone.now()
    upload.save(update_fields=["state", "row_count", "error_count", "finished_at"])
    audit.record(
        upload.user,
        "upload.rejected",
        upload,
        upload_id=upload.pk,
        sha256=upload.sha256,
        rows=rows,
        errors=errors,
        codes=codes,
    )
    transaction.on_commit(lambda: set_progress(upload.pk, "rejected", rows, errors))
    return upload


def _codes_of(upload: Upload) -> dict[str, int]:
    from django.db.models import Count

    return dict(upload.errors.values_list("code").annotate(n=Count("id")).values_list("code", "n"))


@transaction.atomic
def _reject(upload: Upload, failures: list[Failure]) -> Upload:
    """A file refused before its rows could be checked: keep the upload, its errors and one event."""
    UploadError.objects.bulk_create(
        UploadError(upload=upload, row=f.row, column=f.column, value=f.value, code=f.code, message=f.message)
        for f in failures
    )
    upload.state = UploadState.REJECTED
    upload.error_count = len(failures)
    upload.finished_at = timezone.now()
    upload.save(update_fields=["state", "error_count", "finished_at"])
    audit.record(
        upload.user,
        "upload.rejected",
        upload,
        upload_id=upload.pk,
        sha256=upload.sha256,
        errors=len(failures),
        codes=_codes_of(upload),
    )
    transaction.on_commit(lambda: set_progress(upload.pk, "rejected", 0, len(failures)))
    return upload


def failures_of(upload: Upload, limit: int | None = None) -> list[Failure]:
    errors = upload.errors.order_by("row", "id")
    if limit is not None:
        errors = errors[:limit]
    return [Failure(e.row, e.column, e.value, e.code, e.message) for e in errors]


def raise_if_rejected(upload: Upload) -> Upload:
    """For services: a rejected upload becomes RowsRejected with every failure (X3)."""
    if upload.state == UploadState.REJECTED:
        raise RowsRejected(failures_of(upload))
    return upload


# -- the background path (big files run in a Celery worker) ------------------------------------------


def background_bytes() -> int:
    """Files larger than this are processed by a worker (the lead adds INTAKE_BACKGROUND_BYTES to settings)."""
    return settings.INTAKE_BACKGROUND_BYTES


def max_attempts() -> int:
    return settings.PORTAL_UPLOAD_MAX_ATTEMPTS


def resolve_handler(handler_path: str, handler_kwargs: dict[str, Any]) -> Handler:
    """A handler from its import path and JSON-able keyword arguments, so tasks carry only ids."""
    return import_string(handler_path)(**handler_kwargs)


_here = threading.local()


@contextmanager
def applied_here() -> Iterator[None]:
    """Uploads submitted inside this block are applied in this process whatever their size: for the
    System's own jobs that go on with the result at once (seed_demo, simulate_network, benchmarks)."""
    before = getattr(_here, "on", False)
    _here.on = True
    try:
        yield
    finally:
        _here.on = before


def submit_upload(
    upload: Upload, handler_path: str, handler_kwargs: dict[str, Any] | None = None, *, dedupe: bool = True
) -> Upload:
    """Process a received upload now, or (over the size setting) in a worker once this transaction commits.

    The background upload stays `received` until the worker starts; its page polls the progress.
    `dedupe` as for `apply_upload`.
    """
    kwargs = handler_kwargs or {}
    if upload.size <= background_bytes() or getattr(_here, "on", False):
        return process_upload(upload.pk, resolve_handler(handler_path, kwargs), dedupe=dedupe)
    upload.job = {"handler": handler_path, "kwargs": kwargs, "dedupe": dedupe}
    upload.save(update_fields=["job"])
    set_progress(upload.pk, "queued")
    # Robust: the upload has committed, so a broker that is down is logged, not turned into an error page;
    # the upload waits, `received`, and `queue_waiting_uploads` sends its task once the broker is back.
    transaction.on_commit(partial(queue_upload, upload.pk, upload.job), robust=True)
    return upload


def queue_upload(upload_id: int, job: dict[str, Any]) -> None:
    """Hand a background upload's task to the broker, then record that it did (`queued_at`)."""
    from ..tasks import process_upload_task  # tasks import services; avoid the cycle at import time

    process_upload_task.delay(upload_id, job["handler"], job["kwargs"], job["dedupe"])
    Upload.objects.filter(pk=upload_id, queued_at__isnull=True).update(queued_at=timezone.now())


QUEUE_GRACE = dt.timedelta(minutes=1)


def queue_waiting_uploads(now: dt.datetime | None = None) -> int:
    """The beat job: send again the task of every background upload still `received` whose task never
    reached the broker (it was down at the commit), oldest first; returns how many were sent. An upload
    received in the last minute is left to its own send. Should the broker still be down, the rest wait
    for the next run. A task sent twice is harmless: a worker finds the upload taken or finished."""
    now = now or timezone.now()
    waiting = Upload.objects.filter(
        state=UploadState.RECEIVED,
        job__isnull=False,
        queued_at__isnull=True,
        received_at__lte=now - QUEUE_GRACE,
    ).order_by("received_at", "pk")
    sent = 0
    for upload_id, job in waiting.values_list("pk", "job"):
        try:
            queue_upload(upload_id, job)
        except Exception:  # noqa: BLE001 - the broker (kombu raises several kinds): try again next run
            log.warning(
                "upload %s: its task could not be sent again; the next run tries", upload_id, exc_info=True
            )
            break
        sent += 1
    return sent


def process_upload_in_worker(
    upload_id: int, handler_path: str, handler_kwargs: dict[str, Any], dedupe: bool = True
) -> Upload:
    """What the worker runs: count the attempt (committed first), give up after too many, else process.

    A task is acknowledged late, so a worker that dies mid-file gets the same upload again: after
    PORTAL_UPLOAD_MAX_ATTEMPTS started attempts the next delivery rejects it with `processing_failed`
    instead of crashing the next worker. A finished upload stops at once (idempotent), and so does a
    delivery of an upload that another worker is processing now (`_upload_taken`).
    """
    with _upload_taken(upload_id) as taken:
        if not taken:  # another worker has it now (its task was sent twice): that one finishes it
            log.info("upload %s: another worker is processing it", upload_id)
            return Upload.objects.get(pk=upload_id)
        return _process_in_worker(upload_id, handler_path, handler_kwargs, dedupe)


UPLOAD_LOCK = 0x55504C44  # "UPLD": with the upload's id, the session-level advisory lock of one upload


@contextmanager
def _upload_taken(upload_id: int) -> Iterator[bool]:
    """Whether this worker may process the upload: a session-level advisory lock, held until it is done
    (or its process dies: PostgreSQL releases the lock with the connection). A second delivery of the same
    upload (sent twice, or redelivered while the first is still running) neither counts an attempt nor
    applies the file again."""
    key = (UPLOAD_LOCK << 32) + upload_id  # upload ids stay below 2**32
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        taken = cursor.fetchone()[0]
    try:
        yield taken
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _process_in_worker(
    upload_id: int, handler_path: str, handler_kwargs: dict[str, Any], dedupe: bool
) -> Upload:
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload_id)
        if upload.state in (UploadState.APPLIED, UploadState.REJECTED):
            return upload
        attempts = int(upload.summary.get("attempts", 0))
        if attempts >= max_attempts():
            upload = _reject(
                upload,
                [
                    Failure(
                        None,
                        "",
                        "",
                        "processing_failed",
                        f"Processing this file failed {attempts} times. The file changed nothing; "
                        "please send it again, or contact the DCC service desk if it fails again.",
                    )
                ],
            )
            _notify_result(upload)
            return upload
        upload.summary = {**upload.summary, "attempts": attempts + 1}
        upload.save(update_fields=["summary"])
    handler = resolve_handler(handler_path, handler_kwargs)
    upload = process_upload(upload_id, handler, dedupe=dedupe)
    _notify_result(upload, handler)
    return upload


def _notify_result(upload: Upload, handler: Handler | None = None) -> None:
    """Issue 7: the sender of a background upload may have left its page; a notice carries the result.

    A handler whose `finish` already told the sender what it applied (`notifies_applied`: an
    instruction's receipt, E5) gets no second notice for the same file."""
    from ..services.notifications import notify  # services import the pipeline

    name = upload.name if len(upload.name) <= 120 else f"{upload.name[:119]}…"
    what = f"Your file {name} ({upload.get_kind_display()})"
    if upload.state == UploadState.APPLIED:
        if getattr(handler, "notifies_applied", False) and "same_as_upload" not in upload.summary:
            return
        subject = f"Your file {name} was applied"
        body = f"{what} was applied: {upload.row_count or 0:,} row(s). Its upload page shows the details."
    elif upload.state == UploadState.REJECTED:
        subject = f"Your file {name} was rejected"
        body = (
            f"{what} was rejected with {upload.error_count:,} error(s) and changed nothing. Its upload page "
            "lists every error: correct the file and upload it again."
        )
    else:
        return
    with transaction.atomic():
        notify(
            [upload.organisation],
            kind=f"upload.{upload.state}",
            rollout=upload.rollout,
            subject=subject,
            body=body,
        )
