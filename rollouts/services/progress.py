"""Deployment progress: the CSPs' device status feeds (PL9, SL4, U3), the failure threshold (B1), the
retry of failed hubs (B2), the System's start of safe launch (L5, PL10) and the closure counts (C1).

A status feed goes through the one intake pipeline. It is checked and applied set-based: the staged
records are joined once against the rollout's hubs of the live batches, read whole and met by GUID, or
against the hubs and the rollout's hubs by index (`feed_rows`, _rollout_rows_source); every
rule is one INSERT … SELECT into the failures table; applying is one statement: an UPDATE … FROM of the
rollout's hubs, whose RETURNING gives the one row of SMI versions to write (U3: `rollouts.services.smi`,
right after the feed commits), and the rows that move grouped by their counter keys for the counter delta
table (U1); then one INSERT of the pilot hubs' timeline events (HubEvent).

The timeline is enhanced monitoring, which the modification gives to hubs enrolled in a pilot (PL9;
SECMP0024 MP24-AD11): a pilot hub's records are all kept, whatever the stage. A safe launch hub has its
device-level status, time and reason (SL4 "as in PL9") and the feed file itself is kept, but no timeline:
a national safe launch would otherwise add a row per hub per record (50,000 records: 0.1 s of a feed).

Ordering: a record moves a hub only when its `at` is later than the hub's `status_at`; an older
record is kept in a pilot hub's timeline and changes nothing else, and a record already in the timeline
is not written again, so re-sending a feed changes nothing (it is applied with dedupe=False and is
idempotent by `at`). A newer record may only move a hub forward: pending → scheduled → distributed →
activated or failed; anything else is `status_invalid`. `activated` counts only on the rollout's
target version; otherwise the hub is `failed` with "reported firmware X, expected Y" (U3).

B1 "reported" means hubs with an outcome (activated or failed): the failed share is failed /
(activated + failed), and it passes the threshold when strictly greater than the rollout's
percentage, once at least `failure_threshold_min_reported` hubs have an outcome.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Max, Q, QuerySet, Sum
from django.urls import reverse
from django.utils import timezone

from .. import audit, tasks
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
    DeploymentStatus,
    Group,
    HubEvent,
    Incident,
    Organisation,
    OrgKind,
    Outcome,
    Rollout,
    RolloutCounter,
    RolloutHub,
    Stage,
    Status,
    Upload,
    UploadKind,
    User,
)
from ..transitions import apply_move
from .counters import (
    DELTA_KEYS_TABLE,
    DELTA_TABLE,
    apply_batch_deltas,
    apply_delta_keys,
    apply_deltas,
    create_delta_keys_table,
    create_delta_table,
    delta_keys_sql,
)
from .notifications import notify, notify_parties
from .planning import replan, tell_csps
from .schedules import WindowTimeError, parse_window_time

STATUS_FEED = Layout(
    kind=UploadKind.STATUS_FEED,
    columns={"guid": True, "status": True, "at": True, "reason": False, "firmware_version": False},
    # The CSP's machine-written file: PostgreSQL parses a plain CSV itself (rollouts.intake.pipeline); the
    # staged text is the reader's, so `at` is parsed by _stage_times the same way (tests/rollouts/test_plain_csv.py).
    copy_csv=True,
    analyze_columns=("guid_hex", "at"),  # the joins to the hubs and to the parsed times
    analyze_target=10,  # both joins meet a unique key (the hubs' GUID, the distinct times): a small sample
)
FEED_STATUSES = ("scheduled", "distributed", "activated", "failed")
# Forward only: a newer record may move a hub to a higher rank, never back or sideways (status_invalid).
RANK = "CASE {col} WHEN 'pending' THEN 0 WHEN 'scheduled' THEN 1 WHEN 'distributed' THEN 2 ELSE 3 END"
TIMES_CHUNK = 20_000  # distinct `at` texts parsed per read (StatusFeedHandler._stage_times)
# The staged records with their parsed `at` (StatusFeedHandler._stage_times), for rows_by_hub.
FEED_ROWS_WITH_TIMES = f"""(SELECT r.*, t.at AS at_parsed, t.code AS at_code, t.message AS at_message
                           FROM {ROWS} r LEFT JOIN feed_times t ON t.value = r.at) staged"""
# Whether batch b is being deployed now, so that a feed may report its hubs: the pilot batches during the
# pilot, every batch during safe launch (`_params`: the rollout's stage and status).
LIVE_BATCH = """((%(pilot_live)s AND b."group" = 'pilot') OR (%(any_live)s AND NOT %(pilot_live)s))"""
# A record's rollout row, batch and whether that batch is live for the feed (`check`): of aliases rh and b.
ROLLOUT_ROW_SQL = f"""rh.id AS rh_id, rh.ctid AS rh_ctid, rh.status::text AS old_status, rh.status_at AS old_at,
    rh.batch_id, rh."group" AS hub_group, rh.region AS hub_region, rh.import_supplier_id, rh.gas_supplier_id,
    b.held AS batch_held, (b.id IS NOT NULL AND rh.status <> 'left' AND {LIVE_BATCH}) AS live"""
ROLLOUT_ROW = (
    "rh_id",
    "rh_ctid",
    "old_status",
    "old_at",
    "batch_id",
    "hub_group",
    "hub_region",
    "import_supplier_id",
    "gas_supplier_id",
    "batch_held",
    "live",
)
# A record's hub and rollout row from the live batches' rows (l) or else looked up (f): _rollout_rows_source.
WHOLE_OR_LOOKED_UP = ", ".join(
    f"CASE WHEN l.rh_id IS NULL THEN f.{c} ELSE l.{c} END AS {c}" for c in ("hub_id", "visible", *ROLLOUT_ROW)
)
# The live batches' rows are read whole while they hold at most this many hubs per record (bench.progress).
FEED_WHOLE_BATCHES_RATIO = 2
CLOCK_SKEW = dt.timedelta(minutes=10)  # a record timed later than now + this is refused
LIVE_STATUSES = (Status.ACTIVE, Status.PAUSED, Status.SUSPENDED)
ON_HOLD = (Status.PAUSED, Status.SUSPENDED)
OUTCOME_STATUSES = (DeploymentStatus.ACTIVATED, DeploymentStatus.FAILED)
UNFINISHED = (DeploymentStatus.PENDING, DeploymentStatus.SCHEDULED, DeploymentStatus.DISTRIBUTED)


def _fail(staging: Staging, select_sql: str, params: dict[str, Any]) -> None:
    staging.cursor.execute(f"INSERT INTO {FAILURES} (row_no, col, value, code, message) {select_sql}", params)


@dataclass
class StatusFeedHandler:
    """Checks and applies one CSP's device status feed for one rollout (PL9, SL4, U3)."""

    rollout: Rollout
    csp: Organisation
    now: dt.datetime
    layout: Layout = STATUS_FEED
    summary: dict[str, Any] = field(default_factory=dict)
    activated_by_supplier: dict[int, int] = field(default_factory=dict)
    failed_by_supplier: dict[int, int] = field(default_factory=dict)
    touched_batches: list[int] = field(default_factory=list)
    pilot_touched: bool = False
    pilot_before: dict[str, int] = field(default_factory=dict)
    live_batches: list[int] = field(default_factory=list)  # the CSP's batches being deployed now (`check`)
    live_hubs: int = 0  # the hubs of those batches (Batch.hubs)
    whole_batches: bool = False  # whether `check` read their rows whole (_rollout_rows_source)

    def begin(self) -> None:
        """In the applying transaction (a worker's, for a big feed): the rollout locked and read again."""
        self.rollout = (
            Rollout.objects.select_for_update().select_related("target_version").get(pk=self.rollout.pk)
        )
        self.now = timezone.now()
        rollout = self.rollout
        succeeded = (rollout.stage, rollout.status, rollout.pilot_outcome) == (
            Stage.PILOTING,
            Status.ACTIVE,
            Outcome.SUCCESS,
        )
        if succeeded and _start_safe_launch(rollout, self.now):
            # L5 was due (A06 posted, the pilot window over): the System starts safe launch now, not at the
            # beat job's next run, so this feed's safe launch records are in a live batch.
            self.rollout = Rollout.objects.select_related("target_version").get(pk=self.rollout.pk)
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL random_page_cost = 1.1")  # TOOLCHAIN "National scale": 50k-list actions
            # The feed's sorts and hashes (the timeline's anti-join, the moved rows read by four CTEs) fit in
            # memory instead of spilling to temp files at the 4 MB default; one transaction, a few nodes.
            cursor.execute("SET LOCAL work_mem = '64MB'")
            # A big feed's statements pass the JIT cost thresholds; compiling them costs more than it saves
            # on these simple joins and per-row expressions.
            cursor.execute("SET LOCAL jit = off")
        self.pilot_before = _pilot_counts(self.rollout.pk)

    def finish(self, upload: Upload) -> None:
        """The feed's notices (U3, PL9) and the failure threshold (B1), in the same transaction."""
        rollout = self.rollout
        _notify_outcomes(rollout, self)
        if self.pilot_touched or self.summary.get("distributed"):
            _notify_pilot_milestones(rollout, self.pilot_before, _pilot_counts(rollout.pk))
        check_failure_thresholds(rollout, self.touched_batches, pilot=self.pilot_touched)
        if self.summary.get("smi_versions_queued"):
            # U3: the hubs' versions, right after. Robust: the feed has committed, so a broker that is down
            # is logged, not turned into an error for the CSP; the beat job writes them once it is back.
            transaction.on_commit(tasks.apply_smi_versions.delay, robust=True)

    @property
    def _params(self) -> dict[str, Any]:
        rollout = self.rollout
        return {
            "rollout": rollout.pk,
            "region": self.csp.region,
            "target": rollout.target_version.version.upper(),
            "pilot_live": rollout.stage == Stage.PILOTING and rollout.status in LIVE_STATUSES,
            "any_live": rollout.stage in (Stage.PILOTING, Stage.SAFE_LAUNCH)
            and rollout.status in LIVE_STATUSES,
            "on_hold": rollout.status in ON_HOLD,
            "latest": self.now + CLOCK_SKEW,
            "now": self.now,
        }

    def _stage_times(self, staging: Staging) -> None:
        """`at` once per distinct text, parsed by `_parse_at` (FILE_FORMATS "Times": an offset or Z as
        given, UK local time without one, clock changes refused) into `feed_times` (value, at, code,
        message). Python's ISO 8601 parser is C: 50,000 distinct texts read, parsed and sent back in
        binary take about 0.09 s, against 0.22-0.34 s for the regex that picked out the forms SQL could
        cast the same way. The texts are read a chunk at a time (a 1,000,000-record feed stays small)."""
        cursor = staging.cursor
        staging.create_temp(
            "feed_times",
            "SELECT NULL::text AS value, NULL::timestamptz AS at, NULL::text AS code, NULL::text AS message "
            "WHERE false",
        )
        # A server-side cursor reads the texts a chunk at a time; each chunk is parsed and copied back, the
        # times in binary, then any texts refused with their reasons.
        with cursor.connection.cursor(name="feed_times_texts") as reader:
            reader.execute(f"SELECT DISTINCT at FROM {ROWS} WHERE at IS NOT NULL")
            while chunk := reader.fetchmany(TIMES_CHUNK):
                refused = []
                with cursor.copy("COPY feed_times (value, at) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "timestamptz"])
                    for (value,) in chunk:
                        try:
                            copy.write_row((value, _parse_at(value)))
                        except WindowTimeError as error:
                            code = "time_ambiguous" if error.code == "time_ambiguous" else "value_invalid"
                            refused.append((value, code, error.message))
                if refused:
                    with cursor.copy("COPY feed_times (value, code, message) FROM STDIN") as copy:
                        for row in refused:
                            copy.write_row(row)
        # Its statistics, for the join onto the staged records: without them the planner took one time for
        # 610 and the join's 50,000 rows for 152,500, and read the whole hub index and rollout (1.7 s).
        # The values are unique, so a small sample gives their number (50,000: 5 ms instead of 23 ms).
        cursor.execute("ALTER TABLE feed_times ALTER COLUMN value SET STATISTICS 10")
        cursor.execute("ANALYZE feed_times (value)")

    def _rollout_rows_source(self, staging: Staging) -> str:
        """The staged records with their parsed times, each with its hub (`hub_id`, `visible`: P3) and its
        rollout row, batch and liveness (ROLLOUT_ROW), as a query for `check`; its parameters are `_params`.

        Two ways, with the same answer (tests/rollouts/test_progress.py runs the feed tests both ways):
        - the live batches' rows whole: when the CSP's live batches hold at most FEED_WHOLE_BATCHES_RATIO
          hubs per record (Batch.hubs, maintained), their rollout rows are read through the batch index
          and met by GUID (RolloutHub.guid) in one hash join; only a record that meets none of them (an
          unknown hub, another region's, one not in a live batch: each refused) is looked up alone;
        - otherwise (a small feed into a national safe launch) each record's hub by GUID, then its rollout
          row by hub (rows_by_hub: both indexes read in order).
        Tuned server, 3,000,000 hubs, one time for all (README "Figures"): 50,000 records into their
        50,000-hub batch, `feed_rows` 0.19-0.36 s whole against 0.52-0.90 s looked up; 25,000 into 50,000
        (the ratio), the first feed 0.59-0.63 s whole against 0.58-0.59 s; 5,000 into 500,000, the whole
        feed 0.36-0.68 s whole against 0.18-0.22 s looked up."""
        cursor = staging.cursor
        cursor.execute(
            f"""SELECT coalesce(array_agg(b.id), '{{}}'), coalesce(sum(b.hubs), 0) FROM rollouts_batch b
                WHERE b.rollout_id = %(rollout)s AND b.region = %(region)s AND {LIVE_BATCH}""",
            self._params,
        )
        self.live_batches, self.live_hubs = cursor.fetchone()
        self.whole_batches = 0 < self.live_hubs <= FEED_WHOLE_BATCHES_RATIO * staging.row_count
        if not self.whole_batches:
            # rows_by_hub: 50,000 records spread over 3M hubs, tuned server, `feed_rows` 0.90-1.48 s against
            # 1.27-1.49 s in the file's order. The parsed times are joined on before it: joined after, a hash
            # join of 50,000 distinct times gave the rows in the times' order and each rollout row was looked
            # up in random order (50,000 distinct times, tuned: 0.67 s against 0.48 s).
            return f"""SELECT r.*, {ROLLOUT_ROW_SQL}
                       FROM {rows_by_hub("h.region = %(region)s AS visible", rows=FEED_ROWS_WITH_TIMES)} r
                       LEFT JOIN rollouts_rollouthub rh ON rh.rollout_id = %(rollout)s AND rh.hub_id = r.hub_id
                       LEFT JOIN rollouts_batch b ON b.id = rh.batch_id"""
        live_batches = ",".join(str(int(b)) for b in self.live_batches)
        # `f` runs only for a record that met no live row: its condition on `l` alone is a one-time filter
        # there (OFFSET 0 keeps the subquery apart; flattened, it ran the lookups for every record). A row
        # that left the SMI is looked up too: its `visible` then reads the hub's region, as the other way does
        # (a rollout row's region follows the SMI's only while the hub is in it).
        return f"""SELECT staged.*, {WHOLE_OR_LOOKED_UP}
                   FROM {FEED_ROWS_WITH_TIMES}
                   LEFT JOIN (SELECT rh.guid, rh.hub_id, rh.region = %(region)s AS visible, {ROLLOUT_ROW_SQL}
                              FROM rollouts_rollouthub rh JOIN rollouts_batch b ON b.id = rh.batch_id
                              WHERE rh.rollout_id = %(rollout)s AND rh.batch_id IN ({live_batches})
                                AND rh.status <> 'left') l ON l.guid = staged.guid_hex
                   LEFT JOIN LATERAL (
                       SELECT h.id AS hub_id, h.region = %(region)s AS visible, {ROLLOUT_ROW_SQL}
                       FROM rollouts_hub h
                       LEFT JOIN rollouts_rollouthub rh ON rh.rollout_id = %(rollout)s AND rh.hub_id = h.id
                       LEFT JOIN rollouts_batch b ON b.id = rh.batch_id
                       WHERE l.rh_id IS NULL AND h.guid = staged.guid_hex
                       OFFSET 0) f ON true"""

    def check(self, staging: Staging, upload: Upload) -> None:
        cursor = staging.cursor
        params = self._params
        self._stage_times(staging)
        source = self._rollout_rows_source(staging)
        # One pass builds every column the checks and the apply read (U3: `activated` on another
        # version is a failure with that reason), and whether the record moves its hub.
        cursor.execute("DROP TABLE IF EXISTS feed_rows")
        cursor.execute(
            f"""CREATE TEMP TABLE feed_rows ON COMMIT DROP AS
                SELECT *, coalesce(visible AND live AND at IS NOT NULL AND at > old_at AND new_status IS NOT NULL
                                   AND new_status <> old_status AND status IN {FEED_STATUSES}, false) AS moves
                FROM (
                    SELECT *,
                           CASE WHEN status = 'activated' AND fw IS DISTINCT FROM %(target)s THEN 'failed'
                                ELSE status END AS new_status,
                           CASE WHEN status = 'activated' AND fw IS NOT NULL AND fw <> %(target)s
                                THEN format('reported firmware %%s, expected %%s', fw, %(target)s)
                                WHEN status = 'failed' THEN coalesce(reason, '') ELSE '' END AS new_reason
                    FROM (
                        SELECT r.row_no, r.guid, r.guid_hex, r.status AS status_given,
                               lower(btrim(r.status)) AS status, r.at AS at_given,
                               r.at_parsed AS at, r.at_code, r.at_message,
                               nullif(btrim(r.reason), '') AS reason,
                               upper(nullif(btrim(r.firmware_version), '')) AS fw,
                               r.hub_id, r.visible, {", ".join(f"r.{c}" for c in ROLLOUT_ROW)}
                        FROM ({source}) r
                        OFFSET 0
                    ) j
                    OFFSET 0
                ) s""",
            params,
        )
        if self.csp.kind == OrgKind.CSP:
            visibility = [
                # P3, as check_guids_visible: unknown hubs and other regions' alike (the join found the hub)
                (
                    "guid_hex IS NOT NULL AND NOT coalesce(visible, false)",
                    "'guid'",
                    "guid",
                    "'guid_not_in_region'",
                    "NULL",
                )
            ]
        else:
            visibility = []
            check_guids_visible(staging, self.csp)
        moves_to = "moves AND status IN ('distributed', 'activated')"
        rules = [
            *visibility,
            (
                f"status IS NULL OR status NOT IN {FEED_STATUSES}",
                "'status'",
                "status_given",
                "'value_invalid'",
                "'The status is one of scheduled, distributed, activated or failed.'",
            ),
            ("at_code IS NOT NULL", "'at'", "at_given", "at_code", "at_message"),
            (
                "at > %(latest)s",
                "'at'",
                "at_given",
                "'value_invalid'",
                "'This time is in the future: report a status once it has happened.'",
            ),
            ("status = 'failed' AND reason IS NULL", "'reason'", "''", "'reason_missing'", "NULL"),
            ("status = 'activated' AND fw IS NULL", "'firmware_version'", "''", "'version_missing'", "NULL"),
            (
                "visible AND NOT coalesce(live, false)",
                "'guid'",
                "guid",
                "'hub_not_in_live_batch'",
                """CASE WHEN rh_id IS NULL THEN 'This Communications Hub is not part of this rollout.'
                        WHEN old_status = 'left' THEN 'This Communications Hub has left the SMI.'
                        WHEN batch_id IS NULL THEN 'This Communications Hub is not in any batch of this rollout.'
                        ELSE 'The batch of this Communications Hub is not being deployed now.' END""",
            ),
            (
                f"{moves_to} AND (%(on_hold)s OR batch_held)",
                "'status'",
                "status_given",
                "'rollout_on_hold'",
                """CASE WHEN batch_held THEN 'The batch of this Communications Hub is held by DCC: nothing in it '
                                             'is distributed or activated until DCC releases it.'
                        ELSE 'The rollout is paused or suspended: nothing is distributed or activated until '
                             'it resumes.' END""",
            ),
            (
                f"moves AND {RANK.format(col='new_status')} <= {RANK.format(col='old_status')}",
                "'status'",
                "status_given",
                "'status_invalid'",
                """format('The hub is %%s since %%s; a later record cannot move it to %%s.',
                          old_status, to_char(old_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                          new_status)""",
            ),
        ]
        # A feed that breaks no rule (the usual case) costs one pass over the rows; otherwise each rule
        # writes its failures.
        any_failure = " OR ".join(f"coalesce({condition}, false)" for condition, *_ in rules)
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM feed_rows WHERE {any_failure})", params)
        if not cursor.fetchone()[0]:
            return
        for condition, col, value, code, message in rules:
            _fail(
                staging,
                f"SELECT row_no, {col}, {value}, {code}, {message} FROM feed_rows WHERE {condition}",
                params,
            )

    def apply(self, staging: Staging, upload: Upload) -> dict[str, Any]:
        cursor = staging.cursor
        params = {**self._params, "upload": upload.pk, "target_id": self.rollout.target_version_id}
        create_delta_keys_table(cursor)
        cursor.execute("DROP TABLE IF EXISTS feed_batch_moves")
        cursor.execute(
            """CREATE TEMP TABLE feed_batch_moves (old_batch bigint, new_batch bigint, old_status text,
                                                   new_status text, moved_n bigint) ON COMMIT DROP"""
        )
        # One statement moves the hubs (no rule failed, so `moves` is the whole condition). The UPDATE of the
        # rollout's hubs RETURNs what the one row of SMI versions needs: the hubs activated on the target
        # (U3: `rollouts.services.smi` writes them to the hubs after the commit). The rows that move, grouped
        # by their counter keys (a few groups), give the summed counter deltas (U1), the feed's figures and
        # the per-Supplier counts of the notice. They are grouped from `feed_rows`, where `check` read them:
        # each one was found there (ctid and id, same transaction, under the rollout lock that every writer
        # of them takes, L10), and the count of moved rows must equal the count of rows that move, or the
        # feed is rolled back. Grouping the UPDATE's RETURNING instead kept 15 columns of every moved row
        # (50,000 records: this statement 0.28 s against 0.21 s). Only the status columns change: no index
        # holds them (HOT updates where the page has room). The UPDATE walks its table in page order: at
        # 1M records on a larger-than-cache table, random order costs a page read or write per row. It finds
        # each row by its ctid, not by a primary key lookup (3 index pages a row; 50,000 records, tuned
        # server: 0.50-0.67 s against 0.55-0.72 s).
        cursor.execute(
            f"""WITH moved AS (
                    UPDATE rollouts_rollouthub rh
                    SET status = f.new_status, status_at = f.at, failure_reason = f.new_reason
                    FROM (SELECT rh_ctid, rh_id, hub_id, new_status, at, new_reason
                          FROM feed_rows WHERE moves ORDER BY rh_ctid) f
                    WHERE rh.ctid = f.rh_ctid AND rh.id = f.rh_id
                    RETURNING f.hub_id, f.at, f.new_status
                ), smi AS (
                    INSERT INTO rollouts_smiversionupdate (upload_id, version_id, hub_ids, ats, created_at)
                    SELECT %(upload)s, %(target_id)s, array_agg(hub_id), array_agg(at), %(now)s
                    FROM moved WHERE new_status = 'activated'
                    HAVING count(*) > 0
                    RETURNING cardinality(hub_ids) AS hubs
                ), grouped AS (
                    SELECT %(rollout)s::bigint AS rollout_id, batch_id, status,
                           import_supplier_id AS old_import, gas_supplier_id AS old_gas, hub_region AS old_region,
                           hub_group AS old_group, old_status,
                           import_supplier_id AS new_import, gas_supplier_id AS new_gas, hub_region AS new_region,
                           hub_group AS new_group, new_status, count(*) AS moved_n
                    FROM feed_rows WHERE moves
                    GROUP BY batch_id, status, import_supplier_id, gas_supplier_id, hub_region, hub_group,
                             old_status, new_status
                ), keys AS (
                    INSERT INTO {DELTA_KEYS_TABLE} {delta_keys_sql("grouped", weight="moved_n")}
                ), batch_moves AS (
                    INSERT INTO feed_batch_moves
                    SELECT batch_id, batch_id, old_status, new_status, moved_n FROM grouped
                    WHERE new_status IN ('activated', 'failed')
                ), suppliers AS (
                    SELECT s.org, sum(g.moved_n) FILTER (WHERE g.new_status = 'activated')::bigint AS activated,
                           sum(g.moved_n) FILTER (WHERE g.new_status = 'failed')::bigint AS failed
                    FROM grouped g
                    CROSS JOIN LATERAL (SELECT g.old_import AS org UNION SELECT g.old_gas) s
                    WHERE s.org IS NOT NULL AND g.new_status IN ('activated', 'failed')
                    GROUP BY 1
                )
                SELECT (SELECT count(*) FROM moved),
                       array_agg(DISTINCT batch_id) FILTER (WHERE new_status IN ('activated', 'failed')),
                       coalesce(bool_or(new_group = 'pilot'), false),
                       coalesce(sum(moved_n) FILTER (WHERE new_status = 'scheduled'), 0)::bigint,
                       coalesce(sum(moved_n) FILTER (WHERE new_status = 'distributed'), 0)::bigint,
                       coalesce(sum(moved_n) FILTER (WHERE new_status = 'activated'), 0)::bigint,
                       coalesce(sum(moved_n) FILTER (WHERE new_status = 'failed'), 0)::bigint,
                       coalesce(sum(moved_n) FILTER (WHERE status = 'activated' AND new_status = 'failed'), 0)::bigint,
                       (SELECT coalesce(sum(hubs), 0)::bigint FROM smi),
                       (SELECT coalesce(json_agg(json_build_array(org, coalesce(activated, 0), coalesce(failed, 0))),
                                        '[]') FROM suppliers),
                       coalesce(sum(moved_n), 0)::bigint
                FROM grouped""",
            params,
        )
        (
            moved,
            batches,
            pilot,
            scheduled,
            distributed,
            activated,
            failed,
            wrong_version,
            smi_queued,
            by_supplier,
            to_move,
        ) = cursor.fetchone()
        # Each row was found where `check` read it (ctid), under the rollout lock: all of them, or none.
        if moved != to_move:
            raise RuntimeError(
                f"The feed moved {moved} of the {to_move} hubs it should have: nothing is applied."
            )
        apply_delta_keys(cursor)
        apply_batch_deltas(cursor, "feed_batch_moves", weight="moved_n")  # B1's figures
        for org, activated_n, failed_n in by_supplier:
            self.activated_by_supplier[org] = activated_n
            self.failed_by_supplier[org] = failed_n
        # The timeline (PL9): a pilot hub's every record as reported, once (a repeated record is not written
        # again); see the module's docstring for safe launch hubs.
        cursor.execute(
            """INSERT INTO rollouts_hubevent (rollout_id, hub_id, status, at, reason, firmware_version, upload_id,
                                              recorded_at)
               SELECT %(rollout)s, f.hub_id, f.status, f.at, f.new_reason, coalesce(f.fw, ''), %(upload)s, %(now)s
               FROM feed_rows f
               WHERE f.hub_group = 'pilot' AND NOT EXISTS (SELECT 1 FROM rollouts_hubevent e
                                 WHERE e.rollout_id = %(rollout)s AND e.hub_id = f.hub_id AND e.at = f.at
                                   AND e.status = f.status)
               ORDER BY f.hub_id, f.at""",
            params,
        )
        events = cursor.rowcount
        self.touched_batches = sorted(b for b in (batches or []) if b is not None)
        self.pilot_touched = bool(pilot)
        self.summary = {
            "rollout": self.rollout.pk,
            "region": self.csp.region,
            "records": staging.row_count,
            "moved": moved,
            "unchanged": staging.row_count - moved,
            "scheduled": scheduled,
            "distributed": distributed,
            "activated": activated,
            "failed": failed,
            "failed_wrong_version": wrong_version,
            "events": events,
            "smi_versions_queued": smi_queued,
        }
        return self.summary


def _parse_at(value: str) -> dt.datetime:
    text = value.strip()
    try:  # the common case, a full time with an offset: no regex, no clock-change check needed
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is not None and parsed.tzinfo is not None and ("T" in text or " " in text):
        try:  # (a try costs nothing here; contextlib.suppress cost 0.5 µs a time, 23 ms of 50,000)
            return parsed.astimezone(dt.UTC)
        except OverflowError:  # out of range in UTC: parse_window_time says so
            pass
    return parse_window_time(text, end=False)


def records_file(records: Iterable[dict[str, Any]]) -> ContentFile:
    """API records (dicts with the layout's columns) as the CSV the pipeline reads: staged the same way."""
    out = io.StringIO()
    writer = csv.writer(out)
    names = STATUS_FEED.names
    writer.writerow(names)
    for record in records:
        row = []
        for name in names:
            value = record.get(name)
            if isinstance(value, dt.datetime):
                value = value.isoformat()
            row.append("" if value is None else str(value))
        writer.writerow(row)
    return ContentFile(out.getvalue().encode(), name="status-feed.csv")


def _require(user: User | None, kind: OrgKind) -> Organisation:
    org = user.organisation if user is not None and user.organisation_id else None
    if org is None or org.kind != kind:
        raise PermissionDenied(f"Only {OrgKind(kind).label} users can do this.")
    return org


def _lock_visible(org: Organisation, rollout_id: int) -> Rollout:
    """The rollout under its row lock (L10); one the organisation may not see is DoesNotExist (P3)."""
    from ..selectors import rollouts_for

    visible = rollouts_for(org).filter(pk=rollout_id).values("pk")
    return Rollout.objects.select_for_update().select_related("target_version").get(pk__in=visible)


def _pilot_counts(rollout_id: int) -> dict[str, int]:
    """The pilot group's hubs by deployment status, from the counters (each hub once, under its CSP)."""
    rows = (
        RolloutCounter.objects.filter(
            rollout_id=rollout_id, group=Group.PILOT, organisation__kind=OrgKind.CSP
        )
        .values_list("status")
        .annotate(n=Sum("hubs"))
    )
    return dict(rows)


def _started(counts: dict[str, int]) -> bool:
    return any(counts.get(s, 0) for s in ("distributed", "activated", "failed"))


def _finished(counts: dict[str, int]) -> bool:
    return sum(counts.get(s, 0) for s in ("activated", "failed")) > 0 and not any(
        counts.get(s, 0) for s in UNFINISHED
    )


def rollout_link(rollout: Rollout, face: str = "ssi") -> str:
    return f"{settings.PORTAL_BASE_URL}{reverse(f'{face}:rollout-detail', args=[rollout.pk])}"


@transaction.atomic(durable=True)
def submit_status_feed(
    *,
    user: User,
    rollout_id: int,
    content: File | None = None,
    name: str | None = None,
    records: list[dict[str, Any]] | None = None,
) -> Upload:
    """PL9, SL4, U3, B1: a CSP's device status records for the hubs of its region in live batches, from a
    file or from API records (staged the same way). All or nothing (X3); returns the upload (a feed over
    INTAKE_BACKGROUND_BYTES comes back `received` and a worker applies it after this commits).

    Moves statuses forward set-based (an older record never overwrites a newer status; a repeated
    feed changes nothing), keeps the pilot hubs' timeline, records activated versions in the SMI, sends one
    notice per Supplier per feed, the pilot's start and end notices, and applies the failure
    threshold (B1)."""
    csp = _require(user, OrgKind.CSP)
    if (content is None) == (records is None):
        raise ValidationError("Send either a file or a list of records.")
    rollout = _lock_visible(csp, rollout_id)
    if records is not None:
        content = records_file(records)
        name = name or "status-feed (API)"
    upload = receive_upload(
        user=user,
        organisation=csp,
        kind=UploadKind.STATUS_FEED,
        content=content,
        name=name,
        rollout_id=rollout.pk,
    )
    kwargs = {"rollout_id": rollout.pk, "csp_id": csp.pk}
    # dedupe off: idempotent by `at`, a re-sent feed changes nothing.
    return submit_upload(upload, "rollouts.services.progress.status_feed_handler", kwargs, dedupe=False)


def status_feed_handler(rollout_id: int, csp_id: int) -> StatusFeedHandler:
    """The handler as a worker rebuilds it from the task's ids (pipeline.submit_upload)."""
    return StatusFeedHandler(
        rollout=Rollout.objects.get(pk=rollout_id),
        csp=Organisation.objects.get(pk=csp_id),
        now=timezone.now(),
    )


def _notify_outcomes(rollout: Rollout, handler: StatusFeedHandler) -> None:
    """U3: one aggregated notice per current Supplier per feed, with counts and a link; never per hub."""
    suppliers = sorted(set(handler.activated_by_supplier) | set(handler.failed_by_supplier))
    if not suppliers:
        return
    link = rollout_link(rollout)
    orgs = {o.pk: o for o in Organisation.objects.filter(pk__in=suppliers)}
    for org_id in suppliers:
        activated = handler.activated_by_supplier.get(org_id, 0)
        failed = handler.failed_by_supplier.get(org_id, 0)
        parts = []
        if activated:
            parts.append(f"{activated:,} of your hubs activated firmware {rollout.target_version.version}")
        if failed:
            parts.append(f"{failed:,} of your hubs failed")
        notify(
            [orgs[org_id]],
            kind="progress.outcomes",
            rollout=rollout,
            subject=f"{rollout.reference}: {activated:,} activated, {failed:,} failed",
            body=f"In the latest device status feed for {rollout}, {' and '.join(parts)}. The SMI records the "
            f"new version of the activated hubs. See each hub's status and failure reason: {link}",
        )


def _notify_pilot_milestones(rollout: Rollout, before: dict[str, int], after: dict[str, int]) -> None:
    """PL9: the start (first pilot hub distributed) and the end (every pilot hub activated or failed)."""
    if not _started(before) and _started(after):
        notify_parties(
            rollout,
            kind="pilot.deployment_started",
            subject=f"{rollout.reference}: pilot deployment has started",
            body=f"Firmware {rollout.target_version.version} is being distributed to the pilot hubs of {rollout} "
            "(PL9). Each pilot hub's events are shown on its timeline.",
        )
    if not _finished(before) and _finished(after):
        notify_parties(
            rollout,
            kind="pilot.deployment_ended",
            subject=f"{rollout.reference}: pilot deployment has ended",
            body=f"Every pilot hub of {rollout} has reported: {after.get('activated', 0):,} activated, "
            f"{after.get('failed', 0):,} failed (PL9). DCC will post the pilot outcome (A06/A07).",
        )


# -- B1: the failure threshold ------------------------------------------------------------------------


def threshold_crossed(failed: int, reported: int, rollout: Rollout) -> bool:
    """B1: passes the threshold (strictly over the percentage) once enough hubs have reported."""
    return reported >= rollout.failure_threshold_min_reported and failed * 100 > (
        rollout.failure_threshold_pct * reported
    )


def check_failure_thresholds(rollout: Rollout, batch_ids: list[int], *, pilot: bool) -> list[Incident]:
    """B1 (inside the feed's transaction): for each batch touched and the pilot as a whole, a crossing
    pauses the rollout (System) and opens one incident with the figures; never twice for one scope."""
    from .incidents import open_system_incident

    scopes: list[tuple[str, Batch | None, int, int]] = [
        (f"batch:{batch.pk}", batch, batch.failed_hubs, batch.failed_hubs + batch.activated_hubs)
        for batch in Batch.objects.filter(pk__in=batch_ids).order_by("pk")  # maintained figures (U1's rule)
    ]
    if pilot:
        counts = _pilot_counts(rollout.pk)
        scopes.append(
            ("pilot", None, counts.get("failed", 0), counts.get("failed", 0) + counts.get("activated", 0))
        )
    opened = []
    for scope, batch, failed, reported in scopes:
        if not threshold_crossed(failed, reported, rollout):
            continue
        if Incident.objects.filter(rollout=rollout, raised_by_org=None, figures__scope=scope).exists():
            continue  # once per crossing: not again for the same batch or pilot
        what = f"batch {batch.name} ({batch.region})" if batch else "the pilot group"
        share = round(100 * failed / reported, 2)
        figures = {
            "scope": scope,
            "batch": batch.pk if batch else None,
            "batch_name": batch.name if batch else "",
            "failed": failed,
            "reported": reported,
            "share": share,
            "threshold": float(rollout.failure_threshold_pct),
            "min_reported": rollout.failure_threshold_min_reported,
        }
        description = (
            f"The failed share of {what} is {share}% ({failed:,} of {reported:,} hubs that reported an outcome), "
            f"over the rollout's threshold of {rollout.failure_threshold_pct}% (B1)."
        )
        paused = False
        rollout.refresh_from_db(fields=["stage", "status"])
        if rollout.status == Status.ACTIVE:
            apply_move(rollout.pk, "pause", user=None, reason=description, details={"incident_scope": scope})
            paused = True
        incident = open_system_incident(rollout, description=description, figures=figures)
        if paused:
            notify_parties(
                rollout,
                kind="rollout.paused_by_threshold",
                subject=f"{rollout.reference} is paused: failure threshold passed",
                body=f"The System has paused {rollout}: {description} Nothing is distributed or activated until "
                "DCC decides. Instructed times that pass during the pause revert to the automatic time.",
            )
        opened.append(incident)
    return opened


# -- B2: retry only the failed hubs of a batch --------------------------------------------------------


@transaction.atomic(durable=True)
def retry_failed_hubs(
    *, user: User, batch_id: int, window_start: dt.datetime, window_end: dt.datetime
) -> Batch:
    """B2: DCC moves only the failed hubs of a batch into a new batch (retry_of = that batch), back to
    `pending` with a fresh status time, and replans them; counters move by the exact deltas."""
    _require(user, OrgKind.DCC)
    rollout_id = Batch.objects.values_list("rollout_id", flat=True).get(pk=batch_id)
    rollout = Rollout.objects.select_for_update().get(pk=rollout_id)  # L10
    batch = Batch.objects.select_for_update().get(pk=batch_id)
    if rollout.stage not in (Stage.PILOTING, Stage.SAFE_LAUNCH) or rollout.status not in (
        Status.ACTIVE,
        Status.PAUSED,
    ):
        raise ValidationError(f"Cannot retry hubs of a rollout that is {rollout.describe_state()}.")
    now = timezone.now()
    if window_end <= window_start:
        raise ValidationError({"window_end": "The window must end after it starts."})
    if window_end <= now:
        raise ValidationError({"window_end": "The window has already ended: choose a later one."})
    if rollout.auto_deploy_at and window_end > rollout.auto_deploy_at:
        raise ValidationError({"window_end": "The window ends after the automatic deployment time."})
    retries = Batch.objects.filter(
        rollout=rollout, region=batch.region, group=batch.group, name__startswith=f"{batch.name} retry"
    ).count()
    new = Batch.objects.create(
        rollout=rollout,
        region=batch.region,
        group=batch.group,
        name=f"{batch.name} retry {retries + 1}"[:100],
        window_start=window_start,
        window_end=window_end,
        retry_of=batch,
    )
    with connection.cursor() as cursor:
        create_delta_table(cursor)
        cursor.execute(
            f"""WITH o AS (
                    SELECT rh.id, rh.rollout_id, rh.hub_id, rh.import_supplier_id, rh.gas_supplier_id, rh.region,
                           rh."group", rh.status
                    FROM rollouts_rollouthub rh WHERE rh.batch_id = %(old)s AND rh.status = 'failed'
                ), moved AS (
                    UPDATE rollouts_rollouthub rh SET status = 'pending', status_at = %(now)s, failure_reason = '',
                                                     batch_id = %(new)s
                    FROM o WHERE rh.id = o.id RETURNING o.*
                )
                INSERT INTO {DELTA_TABLE}
                SELECT o.rollout_id, o.hub_id, o.import_supplier_id, o.gas_supplier_id, o.region, o."group", o.status,
                       o.import_supplier_id, o.gas_supplier_id, o.region, o."group", 'pending', %(old)s, %(new)s
                FROM moved o""",
            {"old": batch.pk, "new": new.pk, "now": now},
        )
        moved = cursor.rowcount
        if not moved:
            raise ValidationError(f"Batch {batch.name} has no failed hubs to retry.")
        apply_deltas(cursor)
        cursor.execute("DROP TABLE IF EXISTS retry_hubs")
        cursor.execute(
            f"CREATE TEMP TABLE retry_hubs ON COMMIT DROP AS SELECT hub_id FROM {DELTA_TABLE} WHERE hub_id IS NOT NULL"
        )
        replanned = replan(rollout.pk, hubs_table="retry_hubs")
        cursor.execute(
            f"""SELECT DISTINCT x.id FROM {DELTA_TABLE} d
                CROSS JOIN LATERAL (VALUES (d.new_import), (d.new_gas)) x(id) WHERE x.id IS NOT NULL"""
        )
        suppliers = [row[0] for row in cursor.fetchall()]
    audit.record(user, "batch.retry_failed", new, rollout=rollout.pk, retry_of=batch.pk, hubs=moved)
    notify(
        Organisation.objects.filter(Q(pk__in=suppliers) | Q(kind=OrgKind.CSP, region=batch.region)),
        kind="batch.retry",
        rollout=rollout,
        subject=f"{rollout.reference}: failed hubs of batch {batch.name} are retried",
        body=f"DCC has put the {moved:,} failed hubs of batch {batch.name} of {rollout} into a new batch, "
        f"{new.name}, with the window {timezone.localtime(window_start):%d %B %Y %H:%M} to "
        f"{timezone.localtime(window_end):%d %B %Y %H:%M} (B2). Some of them may be your hubs.",
    )
    tell_csps(rollout, replanned, f"DCC retried failed hubs in a new batch, {new.name} (B2)")
    return new


# -- L5, PL10: the System starts safe launch ----------------------------------------------------------


def pilot_window_end(rollout: Rollout) -> dt.datetime | None:
    """The end of the pilot window: the rollout's pilot_end, or else the last pilot batch's window end."""
    if rollout.pilot_end:
        return rollout.pilot_end
    return Batch.objects.filter(rollout=rollout, group=Group.PILOT).aggregate(end=Max("window_end"))["end"]


def _start_safe_launch(rollout: Rollout, now: dt.datetime) -> bool:
    """Inside a transaction: the System's L5 move once the pilot window has ended after A06. A guard
    that refuses (a withdrawn firmware) leaves the rollout as it is: DCC sees "stop or supersede"."""
    end = pilot_window_end(rollout)
    if end is None or end > now or rollout.pilot_outcome != Outcome.SUCCESS:
        return False
    try:
        with transaction.atomic():
            rollout = apply_move(
                rollout.pk, "start_safe_launch", user=None, reason="The pilot window has ended."
            )
    except ValidationError:
        return False
    notify_parties(
        rollout,
        kind="rollout.start_safe_launch",
        subject=f"{rollout.reference}: safe launch has started",
        body=f"The pilot of {rollout} succeeded (A06) and its window has ended, so safe launch has started (L5).",
    )
    return True


def start_due_safe_launches(now: dt.datetime | None = None) -> int:
    """Beat job (System): every piloting, active rollout with A06 posted whose pilot window has ended
    starts safe launch, each in its own transaction. Returns how many started."""
    now = now or timezone.now()
    due = Rollout.objects.filter(
        stage=Stage.PILOTING, status=Status.ACTIVE, pilot_outcome=Outcome.SUCCESS
    ).values_list("pk", flat=True)
    started = 0
    for rollout_id in list(due):
        with transaction.atomic(durable=True):
            rollout = Rollout.objects.select_for_update().select_related("target_version").get(pk=rollout_id)
            if (rollout.stage, rollout.status) == (Stage.PILOTING, Status.ACTIVE):
                started += _start_safe_launch(rollout, now)
    return started


@transaction.atomic(durable=True)
def post_pilot_success_and_continue(*, user: User, rollout_id: int, commentary: str) -> Rollout:
    """A06 (PL10, L4) and, when the pilot window has already ended, the start of safe launch at once in
    the same transaction (L5); otherwise the beat job starts it at the window's end."""
    _require(user, OrgKind.DCC)
    rollout = apply_move(
        rollout_id,
        "post_pilot_success",
        user=user,
        changes={"pilot_outcome": Outcome.SUCCESS, "pilot_commentary": commentary},
    )
    notify_parties(
        rollout,
        kind="rollout.post_pilot_success",
        subject=f"{rollout.reference}: Pilot Success (A06)",
        body=f"DCC has posted Pilot Success for {rollout}. {commentary}".strip(),
    )
    if rollout.status == Status.ACTIVE:
        _start_safe_launch(rollout, timezone.now())
    rollout.refresh_from_db()
    return rollout


# -- C1: the final counts -----------------------------------------------------------------------------


def closure_summary(rollout: Rollout) -> dict[str, int]:
    """C1: the final counts from the counters (each hub once, under its CSP): activated, failed, left,
    and pending (every hub without an outcome: pending, scheduled or distributed)."""
    rows = (
        RolloutCounter.objects.filter(rollout=rollout, organisation__kind=OrgKind.CSP)
        .values_list("status")
        .annotate(n=Sum("hubs"))
    )
    counts = dict(rows)
    return {
        "activated": counts.get("activated", 0),
        "failed": counts.get("failed", 0),
        "left": counts.get("left", 0),
        "pending": sum(counts.get(s, 0) for s in UNFINISHED),
    }


def describe_summary(summary: dict[str, int]) -> str:
    return (
        f"Final counts: {summary['activated']:,} activated, {summary['failed']:,} failed, "
        f"{summary['left']:,} left the SMI, {summary['pending']:,} not deployed."
    )


# -- selectors ----------------------------------------------------------------------------------------


def hub_timeline_for(org: Organisation, rollout: Rollout, guid: str) -> QuerySet[HubEvent]:
    """PL9: a hub's events in a rollout, oldest first, for its Suppliers, its CSP and DCC; empty for
    anyone else (P3)."""
    rows = RolloutHub.objects.filter(rollout=rollout, hub__guid=guid)
    if org.kind == OrgKind.SUPPLIER:
        rows = rows.filter(Q(import_supplier=org) | Q(gas_supplier=org))
    elif org.kind == OrgKind.CSP:
        rows = rows.filter(region=org.region)
    return HubEvent.objects.filter(rollout=rollout, hub_id__in=rows.values("hub_id")).order_by("at", "id")


def feed_figures(upload: Upload) -> dict[str, Any]:
    """The applied feed's summary (for pages and the API)."""
    return dict(upload.summary or {})
