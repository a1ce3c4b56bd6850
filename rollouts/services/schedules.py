"""Batches and windows: the Default Pilot Schedule (PL2, A03), the Safe Launch Schedule (SL2, A08),
DCC's hold and release of a batch (SL3), and the reads over them (SL3, T5).

A schedule file goes through the one intake pipeline. Its checks and its apply are set-based: the
staged rows are joined once against the hubs and the rollout's hubs (`sched_rows`), every rule is
one INSERT … SELECT into the failures table, and applying is one upsert of the batches and one
UPDATE … FROM of the rollout's hubs, so a 50,000-hub batch costs a few statements (SL2).

Times (FILE_FORMATS "Times") are parsed once per distinct text of the file in Python
(`parse_window_time`, which knows the UK clock changes exactly), then joined back in SQL: a file
has one window per batch, so a handful of distinct values whatever its size.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files import File
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .. import audit
from ..intake.errors import reject_file
from ..intake.pipeline import (
    FAILURES,
    ROWS,
    Layout,
    Staging,
    check_guids_visible,
    receive_upload,
    rows_by_hub,
    submit_upload,
)
from ..models import (
    Batch,
    Group,
    Organisation,
    OrgKind,
    Rollout,
    RolloutHub,
    Stage,
    Status,
    Upload,
    UploadKind,
    User,
)
from .counters import apply_batch_deltas
from .notifications import notify
from .planning import Replanned, replan, tell_csps

UK = ZoneInfo("Europe/London")
UTC = dt.UTC

SCHEDULE_COLUMNS = {"batch": True, "guid": True, "window_start": True, "window_end": True}
DEFAULT_PILOT_SCHEDULE = Layout(kind=UploadKind.DEFAULT_PILOT_SCHEDULE, columns=SCHEDULE_COLUMNS)
SAFE_LAUNCH_SCHEDULE = Layout(kind=UploadKind.SAFE_LAUNCH_SCHEDULE, columns=SCHEDULE_COLUMNS)
DEPLOYMENT_PLAN_HEADER = ["guid", "batch", "window_start", "window_end", "planned_activation_at", "source"]

DISTRIBUTED = ("distributed", "activated", "failed")  # PL9: the CSP has sent the firmware to these hubs
BATCH_NAME_MAX = 100

# -- Times ---------------------------------------------------------------------------------------------

_DATE_ONLY = re.compile(r"\d{4}-?\d{2}-?\d{2}")
_DATE_TIME = re.compile(r"\d{4}-?\d{2}-?\d{2}[T ]\d{2}(:?\d{2}(:?\d{2}([.,]\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?")


class WindowTimeError(ValueError):
    """A window time that cannot be used; `code` is `window_invalid` or `time_ambiguous`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_window_time(text: str, *, end: bool) -> dt.datetime:
    """FILE_FORMATS "Times": an ISO 8601 date or date and time, in UTC.

    Without an offset the time is UK local (Europe/London). A date alone is 00:00 of that day for a
    start and the end of that day (00:00 of the next day) for a `window_end`. A local time that does
    not exist (spring forward) or happens twice (fall back) is `time_ambiguous`; anything else that
    is not ISO 8601 is `window_invalid`.
    """
    value = (text or "").strip()
    if not value:
        raise WindowTimeError("window_invalid", "Give a time in ISO 8601, such as 2026-05-01T09:00.")
    try:
        if _DATE_ONLY.fullmatch(value):
            day = dt.date.fromisoformat(value)
            local = dt.datetime.combine(day + dt.timedelta(days=1) if end else day, dt.time())
            aware = None
        elif _DATE_TIME.fullmatch(value):
            parsed = dt.datetime.fromisoformat(value.replace(",", "."))
            local, aware = (parsed, None) if parsed.tzinfo is None else (None, parsed)
        else:
            raise ValueError(value)
    except (ValueError, OverflowError):
        raise WindowTimeError(
            "window_invalid",
            f"{value!r} is not a date or time in ISO 8601. Write it as 2026-05-01 or 2026-05-01T09:00 "
            "(UK time), or with an offset such as 2026-05-01T09:00+01:00.",
        ) from None
    if aware is not None:
        try:
            return aware.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-01:00 is in the year 10000 in UTC
            raise WindowTimeError(
                "window_invalid", f"{value!r} is outside the years 0001 to 9999 once turned into UTC."
            ) from None
    assert local is not None
    early, late = local.replace(tzinfo=UK, fold=0), local.replace(tzinfo=UK, fold=1)
    if early.utcoffset() != late.utcoffset():
        # zoneinfo: fold only matters in a gap or an overlap. In an overlap both instants exist and
        # read back as the same wall time; in a gap neither reads back.
        exists = early.astimezone(UTC).astimezone(UK).replace(tzinfo=None) == local
        what = "happens twice" if exists else "does not exist"
        raise WindowTimeError(
            "time_ambiguous",
            f"{local:%Y-%m-%d %H:%M} UK time {what} because the clocks change that night. Add an offset, "
            f"such as {local:%Y-%m-%dT%H:%M}+01:00 (summer time) or {local:%Y-%m-%dT%H:%M}+00:00.",
        )
    return early.astimezone(UTC)


def _uk(moment: dt.datetime) -> str:
    return f"{timezone.localtime(moment, UK):%d %B %Y %H:%M} UK time"


# -- The schedule handler ---------------------------------------------------------------------------


BIG_CHANGE = 10_000  # rows moved by one file beyond which its statistics are refreshed


def _fail(staging: Staging, select_sql: str, params: dict[str, Any]) -> None:
    """Staging.fail with named parameters (it takes a sequence)."""
    staging.cursor.execute(f"INSERT INTO {FAILURES} (row_no, col, value, code, message) {select_sql}", params)


def _temp(staging: Staging, name: str, select_sql: str, params: dict[str, Any]) -> None:
    """Staging.create_temp with named parameters."""
    staging.cursor.execute(f"DROP TABLE IF EXISTS {name}")
    staging.cursor.execute(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {select_sql}", params)


@dataclass
class ScheduleHandler:
    """Checks and applies an A03 (group pilot) or A08 (group safe launch) file of one CSP region.

    `replace_region`: every earlier batch of this region and group not in the file is replaced
    (A03: the whole default schedule, until the pilot starts); otherwise only the batches named in
    the file are replaced and the others stay (A08: several files, each adding or replacing).
    """

    rollout: Rollout
    csp: Organisation
    group: str
    layout: Layout
    replace_region: bool
    supplier_ids: list[int] = field(default_factory=list)
    plan_changed: Replanned = field(default_factory=Counter)

    @property
    def _params(self) -> dict[str, Any]:
        return {"rollout": self.rollout.pk, "region": self.csp.region, "group": self.group}

    def begin(self) -> None:
        """In the applying transaction (a worker's, for a big file): the rollout locked again (L10) and
        still open for this schedule, else the file is refused with the reason."""
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL random_page_cost = 1.1")  # TOOLCHAIN "National scale": 50k-list actions
        self.rollout = Rollout.objects.select_for_update().get(pk=self.rollout.pk)
        try:
            _require_open(self.rollout, self.group)
        except ValidationError as error:
            raise reject_file(error.code or "deadline_passed", message=error.messages[0]) from error

    def finish(self, upload: Upload) -> None:
        """The notices of an applied schedule: the Suppliers whose hubs it covers, and the plan change."""
        rollout, csp = self.rollout, self.csp
        if self.supplier_ids and self.group == Group.PILOT:
            notify(
                Organisation.objects.filter(pk__in=self.supplier_ids),
                kind="pilot.default_schedule",
                rollout=rollout,
                subject=f"{rollout.reference}: the default pilot schedule is available",
                body=f"The CSP for the {csp.get_region_display()} region has uploaded its Default Pilot Schedule "
                f"(A03) for {rollout}. See the batches and windows of your pilot hubs, and ask for scheduling "
                "constraints if you need them.",
            )
        elif self.supplier_ids:
            notify(
                Organisation.objects.filter(pk__in=self.supplier_ids),
                kind="safe_launch.schedule",
                rollout=rollout,
                subject=f"{rollout.reference}: the safe launch schedule of your hubs changed",
                body=f"The CSP for the {csp.get_region_display()} region has uploaded a Safe Launch Schedule "
                f"(A08) for {rollout} that covers some of your hubs. See their batches and windows.",
            )
        tell_csps(rollout, self.plan_changed, "your schedule changed their batches or windows")

    def check(self, staging: Staging, upload: Upload) -> None:
        cursor = staging.cursor
        self._stage_times(staging)
        for column, is_end in (("window_start", False), ("window_end", True)):
            staging.fail(
                f"""SELECT r.row_no, %s, r.{column}, t.code, t.message FROM {ROWS} r
                    JOIN sched_times t ON t.value = r.{column} AND t.is_end = %s
                    WHERE t.code IS NOT NULL""",
                [column, is_end],
            )
        _temp(
            staging,
            "sched_rows",
            f"""SELECT r.row_no, btrim(coalesce(r.batch, '')) AS batch, r.batch AS batch_given, r.guid,
                       r.hub_id, r.visible, rh.id AS rh_id, rh."group" AS hub_group,
                       rh.in_default_pilot, rh.status, rh.batch_id AS old_batch_id,
                       ts.at AS start_at, te.at AS end_at, r.window_start, r.window_end
                FROM {rows_by_hub("h.region = %(region)s AS visible")} r
                LEFT JOIN rollouts_rollouthub rh ON rh.rollout_id = %(rollout)s AND rh.hub_id = r.hub_id
                LEFT JOIN sched_times ts ON ts.value = r.window_start AND NOT ts.is_end AND ts.code IS NULL
                LEFT JOIN sched_times te ON te.value = r.window_end AND te.is_end AND te.code IS NULL""",
            self._params,
        )
        cursor.execute("ANALYZE sched_rows")
        check_guids_visible(staging, self.csp)  # P3: unknown and other regions' hubs alike
        self._check_batches(staging)
        self._check_hubs(staging)
        self._check_windows(staging)

    def _stage_times(self, staging: Staging) -> None:
        cursor = staging.cursor
        cursor.execute(
            f"""SELECT DISTINCT window_start, false FROM {ROWS} WHERE window_start IS NOT NULL
                UNION SELECT DISTINCT window_end, true FROM {ROWS} WHERE window_end IS NOT NULL"""
        )
        parsed = []
        for value, is_end in cursor.fetchall():
            try:
                parsed.append((value, is_end, parse_window_time(value, end=is_end), None, None))
            except WindowTimeError as error:
                parsed.append((value, is_end, None, error.code, error.message))
        staging.create_temp(
            "sched_times",
            "SELECT NULL::text AS value, NULL::boolean AS is_end, NULL::timestamptz AS at, "
            "NULL::text AS code, NULL::text AS message WHERE false",
        )
        with cursor.copy("COPY sched_times (value, is_end, at, code, message) FROM STDIN") as copy:
            for row in parsed:
                copy.write_row(row)

    def _check_batches(self, staging: Staging) -> None:
        staging.fail(
            f"""SELECT row_no, 'batch', batch_given, 'batch_unknown',
                       CASE WHEN batch = '' THEN 'Give every row the name of its batch.'
                            ELSE 'A batch name has at most {BATCH_NAME_MAX} characters.' END
                FROM sched_rows WHERE batch = '' OR length(batch) > {BATCH_NAME_MAX}"""
        )

    def _check_hubs(self, staging: Staging) -> None:
        rules = [
            (
                "rh_id IS NULL",
                "This Communications Hub is not eligible for this rollout: it is not of the rollout's device "
                "model on a firmware version the rollout replaces.",
            ),
            (
                "status = 'left'",
                "This Communications Hub has left the SMI, so it is no longer part of this rollout.",
            ),
        ]
        if self.group == Group.PILOT:
            rules.append(
                (
                    "hub_group <> 'pilot' AND NOT in_default_pilot",
                    "This Communications Hub is neither on your Default Pilot List nor in the pilot group of "
                    "this rollout. Add it to your Default Pilot List first, or remove the row.",
                )
            )
        else:
            rules.append(
                (
                    "hub_group = 'pilot'",
                    "This Communications Hub is in the pilot group of this rollout: its batch is in the "
                    "Default Pilot Schedule. The Safe Launch Schedule holds safe launch hubs only.",
                )
            )
        for condition, message in rules:
            staging.fail(
                f"""SELECT row_no, 'guid', guid, 'guid_not_eligible', %s FROM sched_rows
                    WHERE visible AND ({condition})""",
                [message],
            )
        # A hub already distributed cannot move (SL2): not to another batch, not out of a replaced one.
        _fail(
            staging,
            f"""SELECT s.row_no, 'guid', s.guid, 'already_distributed',
                       'The firmware has already been distributed to this Communications Hub in its current '
                       'batch, so it cannot move to batch ' || quote_literal(s.batch) || '. Remove the row.'
                FROM sched_rows s
                LEFT JOIN rollouts_batch b ON b.rollout_id = %(rollout)s AND b.region = %(region)s
                                          AND b."group" = %(group)s AND b.name = s.batch
                WHERE s.visible AND s.rh_id IS NOT NULL AND s.status IN {DISTRIBUTED}
                  AND s.old_batch_id IS DISTINCT FROM b.id""",
            self._params,
        )
        _fail(
            staging,
            f"""SELECT NULL::int, 'guid', h.guid, 'already_distributed',
                       'The firmware has already been distributed to this Communications Hub of batch '
                       || quote_literal(b.name) || ', which this file replaces: it must stay in that batch. '
                       'Add its row to the file.'
                FROM rollouts_batch b
                JOIN rollouts_rollouthub rh ON rh.batch_id = b.id
                JOIN rollouts_hub h ON h.id = rh.hub_id
                WHERE b.rollout_id = %(rollout)s AND b.region = %(region)s AND b."group" = %(group)s
                  AND rh.status IN {DISTRIBUTED}
                  AND ({"true" if self.replace_region else "b.name IN (SELECT batch FROM sched_rows)"})
                  AND NOT EXISTS (SELECT 1 FROM sched_rows s WHERE s.hub_id = rh.hub_id)""",
            self._params,
        )

    def _check_windows(self, staging: Staging) -> None:
        # Every row of one batch carries the same window: compared with the batch's first row.
        staging.fail(
            """SELECT s.row_no,
                      CASE WHEN s.start_at <> f.start_at THEN 'window_start' ELSE 'window_end' END,
                      CASE WHEN s.start_at <> f.start_at THEN s.window_start ELSE s.window_end END,
                      'batch_window_inconsistent',
                      format('Batch %%s has the window %%s to %%s in row %%s; every row of one batch must carry '
                             'the same window.', quote_literal(s.batch), f.window_start, f.window_end, f.row_no)
               FROM sched_rows s
               JOIN (SELECT DISTINCT ON (batch) batch, row_no, start_at, end_at, window_start, window_end
                     FROM sched_rows WHERE start_at IS NOT NULL AND end_at IS NOT NULL
                     ORDER BY batch, row_no) f ON f.batch = s.batch
               WHERE s.start_at IS NOT NULL AND s.end_at IS NOT NULL
                 AND (s.start_at <> f.start_at OR s.end_at <> f.end_at)"""
        )
        staging.fail(
            """SELECT row_no, 'window_end', window_end, 'window_invalid',
                      'The window must end after it starts: this one ends at or before its start.'
               FROM sched_rows WHERE end_at <= start_at"""
        )
        auto = self.rollout.auto_deploy_at
        staging.fail(
            """SELECT row_no, 'window_end', window_end, 'window_after_auto_deploy',
                      %s FROM sched_rows WHERE end_at > %s""",
            [
                f"The window ends after the automatic deployment time, {_uk(auto)}. End it at that time "
                "or earlier.",
                auto,
            ],
        )

    def apply(self, staging: Staging, upload: Upload) -> dict[str, Any]:
        cursor = staging.cursor
        params = {**self._params, "upload": upload.pk, "now": timezone.now()}
        staging.create_temp(
            "sched_batches",
            "SELECT NULL::bigint AS id, NULL::text AS name, NULL::boolean AS added WHERE false",
        )
        cursor.execute(
            """WITH up AS (
                   INSERT INTO rollouts_batch (rollout_id, region, "group", name, window_start, window_end, held,
                                               upload_id, created_at)
                   SELECT %(rollout)s, %(region)s, %(group)s, batch, min(start_at), min(end_at), false,
                          %(upload)s, %(now)s
                   FROM sched_rows GROUP BY batch
                   ON CONFLICT (rollout_id, region, "group", name) DO UPDATE
                       SET window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,
                           upload_id = EXCLUDED.upload_id
                   RETURNING id, name, xmax = 0)
               INSERT INTO sched_batches SELECT * FROM up""",
            params,
        )
        cursor.execute(
            "SELECT count(*) FILTER (WHERE added), count(*) FILTER (WHERE NOT added) FROM sched_batches"
        )
        added, replaced = cursor.fetchone()
        staging.create_temp("sched_touched", "SELECT hub_id FROM sched_rows")
        # The hubs each move takes out of a batch and into one, per batch (Batch.hubs). Neither move touches a
        # hub with an outcome (already_distributed, SL2), so the batches' B1 figures stay as they are.
        staging.create_temp(
            "sched_batch_moves",
            "SELECT NULL::bigint AS old_batch, NULL::bigint AS new_batch, NULL::text AS old_status, "
            "NULL::text AS new_status, NULL::bigint AS n WHERE false",
        )
        # Hubs of a replaced batch that are not in the file lose their batch.
        replaced_scope = "true" if self.replace_region else "b.id IN (SELECT id FROM sched_batches)"
        cursor.execute(
            f"""WITH gone AS (
                    UPDATE rollouts_rollouthub rh SET batch_id = NULL
                    FROM rollouts_batch b
                    WHERE b.rollout_id = %(rollout)s AND b.region = %(region)s AND b."group" = %(group)s
                      AND {replaced_scope} AND rh.batch_id = b.id
                      AND NOT EXISTS (SELECT 1 FROM sched_rows s WHERE s.hub_id = rh.hub_id)
                    RETURNING rh.hub_id, b.id AS old_batch, rh.status), touched AS (
                    INSERT INTO sched_touched SELECT hub_id FROM gone)
                INSERT INTO sched_batch_moves SELECT old_batch, NULL, status, status, count(*) FROM gone GROUP BY 1, 3""",
            params,
        )
        # The rows were read in `check`, in this transaction and under the rollout's lock: their old batch stands.
        cursor.execute(
            """WITH moved AS (
                   UPDATE rollouts_rollouthub rh SET batch_id = b.id
                   FROM sched_rows s JOIN sched_batches b ON b.name = s.batch
                   WHERE rh.id = s.rh_id AND rh.batch_id IS DISTINCT FROM b.id
                   RETURNING s.old_batch_id, b.id AS new_batch, rh.status)
               INSERT INTO sched_batch_moves SELECT old_batch_id, new_batch, status, status, count(*) FROM moved
               GROUP BY 1, 2, 3""",
        )
        cursor.execute(
            """SELECT coalesce(sum(n) FILTER (WHERE new_batch IS NULL), 0)::bigint,
                      coalesce(sum(n) FILTER (WHERE new_batch IS NOT NULL), 0)::bigint FROM sched_batch_moves"""
        )
        unbatched, moved = cursor.fetchone()
        apply_batch_deltas(cursor, "sched_batch_moves", weight="n")
        if moved + unbatched >= BIG_CHANGE:
            # Fresh statistics on batch_id (autovacuum may not have run yet): with those taken at publication
            # (every batch_id NULL) the next file's anti-join is planned as a nested loop (40 s+ at 50,000).
            cursor.execute("ANALYZE rollouts_rollouthub")
        removed = 0
        if self.replace_region:  # A03: the previous default schedule is replaced as a whole
            cursor.execute(
                """DELETE FROM rollouts_batch b
                   WHERE b.rollout_id = %(rollout)s AND b.region = %(region)s AND b."group" = %(group)s
                     AND b.id NOT IN (SELECT id FROM sched_batches)
                     AND NOT EXISTS (SELECT 1 FROM rollouts_rollouthub rh WHERE rh.batch_id = b.id)
                     AND NOT EXISTS (SELECT 1 FROM rollouts_batch r WHERE r.retry_of_id = b.id)""",
                params,
            )
            removed = cursor.rowcount
        cursor.execute("ANALYZE sched_touched")
        self.plan_changed = replan(self.rollout.pk, hubs_table="sched_touched")  # T5
        cursor.execute(
            """SELECT DISTINCT x.id FROM rollouts_rollouthub rh
               CROSS JOIN LATERAL (VALUES (rh.import_supplier_id), (rh.gas_supplier_id)) x(id)
               WHERE rh.rollout_id = %(rollout)s AND rh.hub_id IN (SELECT hub_id FROM sched_touched)
                 AND x.id IS NOT NULL""",
            params,
        )
        self.supplier_ids = [row[0] for row in cursor.fetchall()]
        return {
            "rollout": self.rollout.pk,
            "region": self.csp.region,
            "group": self.group,
            "hubs": staging.row_count,
            "batches_added": added,
            "batches_replaced": replaced,
            "batches_removed": removed,
            "hubs_given_a_batch": moved,
            "hubs_left_without_batch": unbatched,
            "plan_changed": self.plan_changed.total(),
        }


# -- Services --------------------------------------------------------------------------------------


def _require(user: User, kind: OrgKind) -> Organisation:
    org = user.organisation if user is not None and user.organisation_id else None
    if org is None or org.kind != kind:
        raise PermissionDenied(f"Only {OrgKind(kind).label} users can do this.")
    return org


def _lock_rollout(org: Organisation, rollout_id: int) -> Rollout:
    """The rollout under its row lock (L10). One the organisation may not see is `DoesNotExist` (P3)."""
    from ..selectors import rollouts_for

    visible = rollouts_for(org).filter(pk=rollout_id)
    return Rollout.objects.select_for_update().get(pk__in=visible.values("pk"))


def _require_open(rollout: Rollout, group: str) -> None:
    """The schedule of `group` may change now: PL2 until the pilot starts, SL2 while the rollout is live
    and not suspended or stopped. A ValidationError says why, with the reason code a file would get."""
    if group == Group.PILOT:
        if not rollout.has_pilot:
            raise ValidationError(
                f"{rollout.reference} has no pilot ({rollout.get_impact_display().lower()} release).",
                code="deadline_passed",
            )
        if (rollout.stage, rollout.status) != (Stage.NOTIFICATION, Status.ACTIVE):
            on_hold = rollout.stage == Stage.NOTIFICATION and rollout.status in (
                Status.PAUSED,
                Status.SUSPENDED,
            )
            raise ValidationError(
                "The Default Pilot Schedule can be uploaded only while the rollout is published and its pilot "
                f"has not started; {rollout.reference} is {rollout.describe_state()}.",
                code="rollout_on_hold" if on_hold else "deadline_passed",
            )
    elif rollout.stage == Stage.CLOSURE or rollout.status not in (Status.ACTIVE, Status.PAUSED):
        raise ValidationError(
            f"The Safe Launch Schedule can change only while the rollout is live and not suspended or "
            f"stopped; {rollout.reference} is {rollout.describe_state()}.",
            code="rollout_on_hold" if rollout.status == Status.SUSPENDED else "deadline_passed",
        )


def schedule_handler(rollout_id: int, csp_id: int, group: str) -> ScheduleHandler:
    """The handler of an A03 (pilot) or A08 (safe launch) file, also as a worker rebuilds it from ids."""
    layout = DEFAULT_PILOT_SCHEDULE if group == Group.PILOT else SAFE_LAUNCH_SCHEDULE
    return ScheduleHandler(
        rollout=Rollout.objects.get(pk=rollout_id),
        csp=Organisation.objects.get(pk=csp_id),
        group=group,
        layout=layout,
        replace_region=group == Group.PILOT,
    )


def _submit_schedule(
    *, user: User, rollout: Rollout, csp: Organisation, content: File, name: str | None, group: str
) -> Upload:
    """Keep the file, then apply it now or (over INTAKE_BACKGROUND_BYTES) in a worker after commit."""
    layout = DEFAULT_PILOT_SCHEDULE if group == Group.PILOT else SAFE_LAUNCH_SCHEDULE
    upload = receive_upload(
        user=user, organisation=csp, kind=layout.kind, content=content, name=name, rollout_id=rollout.pk
    )
    kwargs = {"rollout_id": rollout.pk, "csp_id": csp.pk, "group": group}
    return submit_upload(upload, "rollouts.services.schedules.schedule_handler", kwargs)


@transaction.atomic(durable=True)
def upload_default_pilot_schedule(
    *, user: User, rollout_id: int, content: File, name: str | None = None
) -> Upload:
    """PL2 (A03): a CSP's batches of its pilot hubs, each with a window. Replaces its previous default
    schedule until the pilot starts. Returns the upload, applied or rejected with every error (X3); a
    file over INTAKE_BACKGROUND_BYTES comes back `received` and a worker applies it after this commits."""
    csp = _require(user, OrgKind.CSP)
    rollout = _lock_rollout(csp, rollout_id)
    _require_open(rollout, Group.PILOT)
    return _submit_schedule(
        user=user, rollout=rollout, csp=csp, content=content, name=name, group=Group.PILOT
    )


@transaction.atomic(durable=True)
def upload_safe_launch_schedule(
    *, user: User, rollout_id: int, content: File, name: str | None = None
) -> Upload:
    """SL2 (A08): a CSP's safe launch batches, of any size. Each file adds batches or replaces the
    batches it names (hubs of a replaced batch not in the file lose their batch); a hub already
    distributed cannot move. Returns the upload, applied or rejected with every error (X3); a file over
    INTAKE_BACKGROUND_BYTES comes back `received` and a worker applies it after this commits."""
    csp = _require(user, OrgKind.CSP)
    rollout = _lock_rollout(csp, rollout_id)
    _require_open(rollout, Group.SAFE_LAUNCH)
    return _submit_schedule(
        user=user, rollout=rollout, csp=csp, content=content, name=name, group=Group.SAFE_LAUNCH
    )


def _set_held(user: User, batch_id: int, *, held: bool, reason: str) -> Batch:
    _require(user, OrgKind.DCC)
    rollout_id = Batch.objects.values_list("rollout_id", flat=True).get(pk=batch_id)
    rollout = Rollout.objects.select_for_update().get(pk=rollout_id)  # L10
    batch = Batch.objects.select_for_update().get(pk=batch_id)
    verb = "hold" if held else "release"
    if rollout.stage == Stage.CLOSURE or rollout.status not in (
        Status.ACTIVE,
        Status.PAUSED,
        Status.SUSPENDED,
    ):
        raise ValidationError(f"Cannot {verb} a batch of a rollout that is {rollout.describe_state()}.")
    if batch.held == held:
        raise ValidationError(
            f"Batch {batch.name} is already {'held' if held else 'released'}: someone may have decided it "
            "already. Reload the page to see its current state."
        )
    if held and not reason.strip():
        raise ValidationError(
            {"reason": "Give the reason for holding the batch: the CSP and Suppliers see it."}
        )
    batch.held = held
    batch.save(update_fields=["held"])
    hubs = RolloutHub.objects.filter(rollout=rollout, batch=batch)
    audit.record(
        user,
        f"batch.{verb}",
        batch,
        rollout=rollout.pk,
        region=batch.region,
        hubs=hubs.count(),
        reason=reason,
    )
    suppliers = set(hubs.exclude(import_supplier=None).values_list("import_supplier", flat=True).distinct())
    suppliers |= set(hubs.exclude(gas_supplier=None).values_list("gas_supplier", flat=True).distinct())
    what = (
        "is held: nothing in it is distributed until DCC releases it"
        if held
        else "is released: distribution resumes in its window"
    )
    notify(
        Organisation.objects.filter(Q(pk__in=suppliers) | Q(kind=OrgKind.CSP, region=batch.region)),
        kind=f"batch.{verb}",
        rollout=rollout,
        subject=f"{rollout.reference}: batch {batch.name} {'held' if held else 'released'}",
        body=f"DCC says batch {batch.name} of {rollout} {what}." + (f" Reason: {reason}" if reason else ""),
    )
    return batch


@transaction.atomic(durable=True)
def hold_batch(*, user: User, batch_id: int, reason: str) -> Batch:
    """SL3: DCC holds a batch; its CSP and the Suppliers with hubs in it are told."""
    return _set_held(user, batch_id, held=True, reason=reason)


@transaction.atomic(durable=True)
def release_batch(*, user: User, batch_id: int, reason: str = "") -> Batch:
    """SL3: DCC releases a held batch."""
    return _set_held(user, batch_id, held=False, reason=reason)


# -- Selectors -------------------------------------------------------------------------------------


def _hubs_of(org: Organisation, rollout: Rollout) -> QuerySet[RolloutHub]:
    rows = RolloutHub.objects.filter(rollout=rollout).exclude(status="left")
    if org.kind == OrgKind.CSP:
        return rows.filter(region=org.region)
    if org.kind == OrgKind.SUPPLIER:
        return rows.filter(Q(import_supplier=org) | Q(gas_supplier=org))
    return rows


def safe_launch_schedule_for(org: Organisation, rollout: Rollout) -> QuerySet[dict]:
    """SL3: the safe launch batches and windows of the hubs this organisation may see (a Supplier: its
    own hubs only), one row per hub ordered by GUID. No Supplier ids leave the selector (P4)."""
    rows = _hubs_of(org, rollout).filter(group=Group.SAFE_LAUNCH, batch__isnull=False)
    return rows.order_by("guid").values(
        "guid",
        batch_name=F("batch__name"),
        window_start=F("batch__window_start"),
        window_end=F("batch__window_end"),
        held=F("batch__held"),
        planned_at=F("planned_activation_at"),
    )


def deployment_plan_for(org: Organisation, rollout: Rollout) -> QuerySet[tuple]:
    """T5: the deployment plan export (FILE_FORMATS "Deployment plan"): tuples in the order of
    DEPLOYMENT_PLAN_HEADER, ordered by GUID; iterate with `.iterator()` to stream. A CSP gets its
    region, DCC every hub; Suppliers have no deployment plan."""
    if org.kind == OrgKind.SUPPLIER:
        raise PermissionDenied("The deployment plan is for CSPs and DCC.")
    return (
        _hubs_of(org, rollout)
        .order_by("hub__guid")
        .values_list(
            "hub__guid",
            "batch__name",
            "batch__window_start",
            "batch__window_end",
            "planned_activation_at",
            "activation_source",
        )
    )
