"""Supplier instructions to deploy earlier (E1-E6, T2; T5 through `planning.replan`; P4; X3).

A Supplier instructs by file (the "Deployment instruction" layout: guid, optional deploy_at), by a
selection of GUIDs (staged through the same pipeline from a small CSV built in memory) or for "all my
eligible hubs" (expanded at receipt from RolloutHub rows). Everything is set-based: the hubs of one
instruction land in a temporary table of hub ids (`instruction_touched`), one INSERT ... ON CONFLICT
upserts the Supplier's standing HubInstruction rows (a new instruction replaces the previous one per
hub), and only those hubs are replanned (E2/E3: both Suppliers of a split hub must instruct; the later time
wins): the acting Supplier's time is known, so a list's hubs are replanned by `replan_given` and "all my
eligible hubs" by `replan_supplier`; pilot hubs (and split ones of "all my eligible hubs") go through `replan`.

Every write runs under the rollout row lock (L10). Two Suppliers instructing the same split hubs at
once would otherwise each replan without seeing the other's uncommitted HubInstruction rows, and the
split hubs would keep the automatic time although both had instructed (a lost update);
tests/rollouts/test_instructions.py shows the race with the lock taken away.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import BooleanField, Case, Exists, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.utils import timezone

from .. import audit
from ..guid import GUID_SQL_TYPE, GuidFormatError, parse_guid
from ..intake import pipeline
from ..intake.errors import CODES, Failure, RowsRejected, failure, reject_file
from ..intake.pipeline import FAILURES, ROWS, Layout, Staging, receive_upload, rows_by_hub
from ..models import (
    HubInstruction,
    Instruction,
    InstructionKind,
    Organisation,
    OrgKind,
    Rollout,
    RolloutHub,
    Stage,
    Status,
    Upload,
    UploadKind,
    UploadState,
    User,
)
from ..models.rollouts import UK
from .notifications import notify
from .planning import SOLE, Replanned, replan, replan_given, replan_supplier, tell_csps

# copy_csv: a plain CSV is staged by COPY (FORMAT csv) instead of the Python reader, with the same rows, row
# numbers and failures (tests/rollouts/test_plain_csv.py); 50,000 rows staged in ~0.1 s instead of ~0.5 s.
INSTRUCTION_LAYOUT = Layout(
    kind=UploadKind.INSTRUCTION, columns={"guid": True, "deploy_at": False}, copy_csv=True
)
LIVE_STAGES = (Stage.NOTIFICATION, Stage.PILOTING, Stage.SAFE_LAUNCH)
# I3: a pause means nothing is distributed or activated, but a Supplier may still record (or replace)
# instructions: instructed times that pass during the hold revert and are "re-instructable before the
# deadline", which needs instructions to be accepted during a pause. A suspension is a Panel matter
# that may end in a stop (which voids pending instructions), so nothing new is recorded while
# SUSPENDED: `rollout_on_hold`. Withdrawals only restore the automatic time, so they stay open during
# either hold.
INSTRUCTABLE = (Status.ACTIVE, Status.PAUSED)
WITHDRAWABLE = (Status.ACTIVE, Status.PAUSED, Status.SUSPENDED)
NOT_DISTRIBUTED = ("pending", "scheduled")
# temp table of the hubs one call changes: hub_id, deploy_at, and from the Supplier's own rollout hub row read
# in the same pass, `partner` (the other Supplier of a split hub, else NULL) and `residual` (split or pilot: not
# a hub `replan_supplier` writes by itself); for a list also `rh_id` (that row) and `pilot` (a hub `replan_given`
# leaves to `replan`). _split_partners and the replans read these instead of joining the rollout's hub rows
# again (each such join was a full scan for "all my eligible hubs").
TOUCHED = "instruction_touched"
RESIDUAL = "instruction_residual"  # temp table: hub_id of TOUCHED's residual (or pilot) hubs, for `replan`
BY_SUPPLIER_FROM = 100_000  # a withdrawal of all from this many hubs is replanned by Supplier (see `replan`)
PLAIN_INSERT_FROM = (
    100_000  # hubs in one instruction from which rows are replaced by DELETE + INSERT, not upserted
)
ANALYZE_FROM = 5_000  # hubs in one instruction from which HubInstruction statistics are refreshed
TIMES = "instruction_times"  # temp table: each distinct deploy_at text of a file, parsed
RESOLVED = "instruction_resolved"  # temp table: each GUID row's hub, visibility and own rollout row status
# Over the Supplier's own rollout hub row `rh` (%(org)s): the other Supplier of a split hub, and whether the hub
# is one `replan_supplier` does not write itself (split, or pilot: planning.SOLE negated).
VISIBLE_HUB = "coalesce(h.import_supplier_id = %(org)s OR h.gas_supplier_id = %(org)s, false) AS visible"
PARTNER = """CASE WHEN rh.import_supplier_id <> rh.gas_supplier_id
                  THEN CASE WHEN rh.import_supplier_id = %(org)s THEN rh.gas_supplier_id ELSE rh.import_supplier_id END
             END"""
RESIDUAL_HUB = f"NOT ({SOLE})"
# E5: the failures that make a row an "invalid GUID"; with only_valid=True those rows are dropped.
GUID_CODES = ("guid_format", "guid_duplicate", "guid_not_yours", "guid_not_eligible", "already_distributed")


# -- times (FILE_FORMATS.md "Times") ----------------------------------------------------------------


def uk_time(value: dt.datetime) -> dt.datetime:
    """An aware time as given; a naive one is UK local time. Raises ValueError("time_ambiguous") for a
    local time that happens twice or not at all at a clock change."""
    if value.tzinfo is not None:
        return value
    early, late = value.replace(tzinfo=UK, fold=0), value.replace(tzinfo=UK, fold=1)
    if early.utcoffset() != late.utcoffset():
        raise ValueError("time_ambiguous")
    return early


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 text to an aware time (a date alone is 00:00 UK). ValueError("value_invalid" or
    "time_ambiguous") otherwise."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("value_invalid") from None
    return uk_time(value)


def _uk(moment: dt.datetime) -> str:
    return f"{timezone.localtime(moment, UK):%d %B %Y %H:%M} UK time"


def _time_failure(code: str, at: dt.datetime | None, rollout: Rollout) -> str:
    if code == "value_invalid":
        return "This is not a time. Write it in ISO 8601, such as 2026-05-01T09:00 (UK time) or 2026-05-01T08:00Z."
    if code == "time_in_past":
        return f"{_uk(at)} is not later than now. Choose a later time."
    if code == "deploy_at_not_earlier":
        return (
            f"{_uk(at)} is not earlier than the automatic deployment time, {_uk(rollout.auto_deploy_at)}. "
            "Choose an earlier time, or send no instruction for this hub."
        )
    return CODES[code]


def _time_code(at: dt.datetime, rollout: Rollout, now: dt.datetime) -> str | None:
    """E1: later than now, earlier than the automatic time."""
    if at <= now:
        return "time_in_past"
    if at >= rollout.auto_deploy_at:
        return "deploy_at_not_earlier"
    return None


# -- the rollout under lock, and the rules that do not depend on the hubs ------------------------------


def _lock_rollout(rollout_id: int) -> Rollout:
    """L10: the rollout row lock serialises every instruction, withdrawal and lapse of one rollout."""
    return Rollout.objects.select_for_update().get(pk=rollout_id)


def _bulk_settings(cursor, *, lists: bool = True) -> None:
    """For this transaction only: index lookups for 50k-hub lists (TOOLCHAIN "National scale": 4.7x; not for a
    withdrawal, `lists` False), no JIT: its compilation took 0.1-0.4 s per bulk statement here, more than it
    saved; and work_mem for the hash of a Supplier's million instructions (withdrawing all spilled it to
    disk in 8 batches at the default 4 MB), as progress.py does for feeds."""
    cursor.execute(
        ("SET LOCAL random_page_cost = 1.1; " if lists else "")
        + "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'"
    )


def _supplier_of(user: User) -> Organisation:
    if user is None or user.organisation_id is None or user.organisation.kind != OrgKind.SUPPLIER:
        raise PermissionDenied("Only Suppliers give instructions to deploy earlier.")
    return user.organisation


def _rollout_for(supplier: Organisation, rollout_id: int) -> Rollout:
    """The locked rollout, or DoesNotExist when the Supplier may not see it (P3: same as missing)."""
    rollout = _lock_rollout(rollout_id)
    touches = RolloutHub.objects.filter(rollout=rollout).filter(
        Q(import_supplier=supplier) | Q(gas_supplier=supplier)
    )
    if rollout.published_at is None or not touches.exists():
        raise Rollout.DoesNotExist("Rollout matching query does not exist.")
    return rollout


def _refuse(code: str, message: str | None = None) -> RowsRejected:
    return RowsRejected([failure(code, message=message)])


def _check_open(rollout: Rollout, now: dt.datetime, statuses: tuple[str, ...]) -> None:
    if rollout.stage not in LIVE_STAGES or rollout.status not in (*statuses, Status.SUSPENDED):
        raise ValidationError(
            f"{rollout.reference} is {rollout.describe_state()}: it takes no instructions.",
            code="rollout_not_live",
        )
    if now > rollout.instruction_deadline:  # T2: inclusive
        raise _refuse(
            "deadline_passed",
            f"Instructions for {rollout.reference} closed at {_uk(rollout.instruction_deadline)} "
            "(one month before the automatic deployment time).",
        )
    if rollout.status not in statuses:
        raise _refuse(
            "rollout_on_hold",
            f"{rollout.reference} is suspended: no new instruction is recorded until the Panel has decided.",
        )


# -- instructing ------------------------------------------------------------------------------------


@dataclass
class InstructionHandler:
    """The intake Handler of a deployment instruction file (or a staged selection)."""

    rollout: Rollout
    supplier: Organisation
    user: User
    kind: str
    now: dt.datetime
    default_deploy_at: dt.datetime | None
    only_valid: bool
    layout: Layout = INSTRUCTION_LAYOUT
    notifies_applied: ClassVar[bool] = True  # the receipt (E5) is the background upload's result notice
    dropped: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    instruction: Instruction | None = None

    def begin(self) -> None:
        """In the applying transaction: a worker applies a big file after the request that received it, so
        the rollout is locked again and the file refused if it stopped taking instructions meanwhile. The
        deadline (T2) is judged at receipt, `now`: a file received in time counts however long it queued."""
        with connection.cursor() as cursor:
            _bulk_settings(cursor)
        self.rollout = _lock_rollout(self.rollout.pk)
        try:
            _check_open(self.rollout, self.now, INSTRUCTABLE)
        except RowsRejected as rejected:  # deadline_passed, rollout_on_hold
            (first,) = rejected.failures
            raise reject_file(first.code, message=first.message) from rejected
        except ValidationError as error:  # rollout_not_live: stopped, closed or superseded since
            raise reject_file("deadline_passed", message=error.messages[0]) from error

    def check(self, staging: Staging, upload: Upload) -> None:
        org, rollout = self.supplier.pk, self.rollout.pk
        # One pass over the hubs (d): each GUID resolved once to its hub, whether the Supplier may see it (P3)
        # and the Supplier's own row in this rollout; the three GUID checks and `apply` read this small table
        # instead of joining the 50,000 GUIDs to the hub and rollout tables three times (0.45 s -> 0.15 s).
        staging.create_temp(
            RESOLVED,
            f"""SELECT r.row_no, r.guid, r.deploy_at, r.hub_id, r.visible, rh.status AS status, {PARTNER} AS partner,
                       rh.id AS rh_id, {RESIDUAL_HUB} AS residual, rh."group" = 'pilot' AS pilot
                FROM {rows_by_hub(VISIBLE_HUB, "WHERE guid_hex IS NOT NULL")} r
                LEFT JOIN rollouts_rollouthub rh ON rh.rollout_id = %(rollout)s AND rh.hub_id = r.hub_id
                      AND (rh.import_supplier_id = %(org)s OR rh.gas_supplier_id = %(org)s)""",
            {"org": org, "rollout": rollout},
        )
        # guid_not_yours: unknown and others' hubs alike (P3, as `check_guids_visible`); guid_not_eligible: the
        # Supplier's hub has no row of its own in this rollout (or left it); already_distributed: its row is
        # past `scheduled`.
        staging.fail(
            f"""SELECT row_no, 'guid', guid, 'guid_not_yours', NULL FROM {RESOLVED} WHERE NOT visible
                UNION ALL
                SELECT row_no, 'guid', guid, 'guid_not_eligible', NULL FROM {RESOLVED}
                WHERE visible AND (status IS NULL OR status = 'left')
                UNION ALL
                SELECT row_no, 'guid', guid, 'already_distributed', NULL FROM {RESOLVED}
                WHERE status NOT IN ('pending', 'scheduled', 'left')"""
        )
        self._check_times(staging)
        if self.only_valid:
            self._drop_invalid_guids(staging)

    def _check_times(self, staging: Staging) -> None:
        """Each distinct deploy_at text is parsed once in Python (few in practice), into TIMES."""
        cursor = staging.cursor
        cursor.execute(
            f"SELECT DISTINCT deploy_at FROM {ROWS} WHERE deploy_at IS NOT NULL AND btrim(deploy_at) <> ''"
        )
        parsed = []
        for (text,) in cursor.fetchall():
            try:
                at = parse_time(text)
                code = _time_code(at, self.rollout, self.now)
            except ValueError as e:
                at, code = None, str(e)
            parsed.append((text, at, code, _time_failure(code, at, self.rollout) if code else None))
        staging.create_temp(
            TIMES,
            "SELECT NULL::text AS value, NULL::timestamptz AS at, NULL::text AS code, "
            "NULL::text AS message WHERE false",
        )
        with cursor.copy(f"COPY {TIMES} (value, at, code, message) FROM STDIN") as copy:
            for row in parsed:
                copy.write_row(row)
        staging.fail(
            f"""SELECT r.row_no, 'deploy_at', r.deploy_at, t.code, t.message
                FROM {ROWS} r JOIN {TIMES} t ON t.value = r.deploy_at WHERE t.code IS NOT NULL"""
        )
        if self.default_deploy_at is None:
            staging.fail(
                f"""SELECT row_no, 'deploy_at', coalesce(deploy_at, ''), 'value_invalid',
                           'No time given: write one in deploy_at or choose a time for the whole file in the form.'
                    FROM {ROWS} WHERE deploy_at IS NOT NULL AND btrim(deploy_at) = ''"""
            )

    def _drop_invalid_guids(self, staging: Staging) -> None:
        """E5, the explicit second step: only when every failure is an invalid GUID are those rows
        dropped; any other failure still refuses the whole instruction, with every failure."""
        cursor = staging.cursor
        codes = [*GUID_CODES, "cell_not_text"]
        cursor.execute(
            f"SELECT count(*), count(*) FILTER (WHERE row_no IS NULL OR NOT code = ANY(%s)) FROM {FAILURES}",
            [codes],
        )
        total, others = cursor.fetchone()
        if not total or others:
            return
        cursor.execute(
            f"""WITH bad AS (DELETE FROM {FAILURES} RETURNING row_no)
                DELETE FROM {ROWS} r WHERE r.row_no IN (SELECT row_no FROM bad)"""
        )
        self.dropped = cursor.rowcount
        cursor.execute(
            f"DELETE FROM {RESOLVED} x WHERE NOT EXISTS (SELECT 1 FROM {ROWS} r WHERE r.row_no = x.row_no)"
        )
        cursor.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {ROWS})")
        if cursor.fetchone()[0]:
            staging.fail(
                "SELECT NULL::int, 'guid', '', 'file_empty', 'None of the hubs in this instruction is valid.'"
            )

    def apply(self, staging: Staging, upload: Upload) -> dict[str, Any]:
        staging.create_temp(
            TOUCHED,
            f"""SELECT x.hub_id, x.rh_id, coalesce(t.at, %s::timestamptz) AS deploy_at, x.partner, x.residual,
                       x.pilot
                FROM {RESOLVED} x LEFT JOIN {TIMES} t ON t.value = x.deploy_at""",
            [self.default_deploy_at],
        )
        self.instruction, self.result = _record_instruction(
            rollout=self.rollout,
            supplier=self.supplier,
            user=self.user,
            kind=self.kind,
            default_deploy_at=self.default_deploy_at,
            upload=upload,
        )
        return {**self.result, "instruction": self.instruction.pk, "dropped_invalid_rows": self.dropped}

    def finish(self, upload: Upload) -> None:
        """E5: the receipt notice, in the applying transaction (at once, or in the worker)."""
        _receipt(
            self.rollout,
            self.supplier,
            self.instruction,
            {**self.result, "dropped_invalid_rows": self.dropped},
        )


def instruction_handler(
    *,
    rollout_id: int,
    supplier_id: int,
    user_id: int,
    kind: str,
    received_at: str,
    default_deploy_at: str | None,
    only_valid: bool,
) -> InstructionHandler:
    """The handler as a worker rebuilds it from the task's ids and ISO times (pipeline.submit_upload)."""
    return InstructionHandler(
        rollout=Rollout.objects.get(pk=rollout_id),
        supplier=Organisation.objects.get(pk=supplier_id),
        user=User.objects.get(pk=user_id),
        kind=kind,
        now=dt.datetime.fromisoformat(received_at),
        default_deploy_at=dt.datetime.fromisoformat(default_deploy_at) if default_deploy_at else None,
        only_valid=only_valid,
    )


def _record_instruction(
    *,
    rollout: Rollout,
    supplier: Organisation,
    user: User,
    kind: str,
    default_deploy_at: dt.datetime | None,
    upload: Upload | None,
    hubs: int | None = None,
) -> tuple[Instruction, dict[str, Any]]:
    """From TOUCHED (hub_id, deploy_at, partner, residual[, rh_id, pilot]; `hubs` rows when the caller knows):
    the Instruction, the upserted HubInstructions, the replan.

    For "all my eligible hubs" TOUCHED is every undistributed hub of the Supplier, so the replan takes them by
    Supplier (see `replan_supplier`); a list's hubs are replanned by row id (`replan_given`). TOUCHED needs no
    index either way."""
    every_hub = kind == InstructionKind.ALL_ELIGIBLE
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TOUCHED}")  # no index: the replans take their hubs by Supplier or by row id
        residual = pilot = None  # split and pilot hubs, pilot hubs: counted for a list, not for all eligible
        if hubs is None:
            cursor.execute(
                f"SELECT count(*), count(*) FILTER (WHERE residual), count(*) FILTER (WHERE pilot) FROM {TOUCHED}"
            )
            hubs, residual, pilot = cursor.fetchone()
        instruction = Instruction.objects.create(
            rollout=rollout,
            supplier=supplier,
            kind=kind,
            default_deploy_at=default_deploy_at,
            upload=upload,
            hub_count=hubs,
            created_by=user,
        )
        if hubs < PLAIN_INSERT_FROM:
            cursor.execute(
                f"""WITH up AS (
                        INSERT INTO rollouts_hubinstruction (rollout_id, hub_id, supplier_id, instruction_id, deploy_at)
                        SELECT %s, hub_id, %s, %s, deploy_at FROM {TOUCHED}
                        ON CONFLICT (rollout_id, hub_id, supplier_id)
                        DO UPDATE SET instruction_id = EXCLUDED.instruction_id, deploy_at = EXCLUDED.deploy_at
                        RETURNING xmax = 0 AS inserted)
                    SELECT count(*) FILTER (WHERE NOT inserted) FROM up""",
                [rollout.pk, supplier.pk, instruction.pk],
            )
            replaced = cursor.fetchone()[0]
        else:
            # The same outcome as the upsert: the Supplier's earlier rows for these hubs are replaced (and
            # counted), then a plain INSERT. ON CONFLICT's speculative insertion cost a third more per row
            # (1,000,000 hubs: 4.8-5.3 s upserted, 3.1-3.5 s inserted); the rollout lock keeps anyone else
            # from inserting the same (rollout, hub, Supplier) in between.
            cursor.execute(
                f"""DELETE FROM rollouts_hubinstruction hi USING {TOUCHED} t
                    WHERE hi.rollout_id = %s AND hi.supplier_id = %s AND hi.hub_id = t.hub_id""",
                [rollout.pk, supplier.pk],
            )
            replaced = cursor.rowcount
            cursor.execute(
                f"""INSERT INTO rollouts_hubinstruction (rollout_id, hub_id, supplier_id, instruction_id, deploy_at)
                    SELECT %s, hub_id, %s, %s, deploy_at FROM {TOUCHED}""",
                [rollout.pk, supplier.pk, instruction.pk],
            )
        if hubs >= ANALYZE_FROM and (residual is None or residual > 0):
            # Fresh statistics before replan: with stale ones (e.g. the first big instruction on a nearly
            # empty table) its per-hub lookup took the rollout_id index and scanned every instruction of
            # the rollout for each hub (50,000 hubs: > 10 minutes instead of seconds). ANALYZE samples a
            # bounded number of rows, and counts this transaction's own inserts. A list without split and
            # pilot hubs is replanned without reading HubInstruction (`replan_given`), nor are partners looked
            # up: no ANALYZE (50 ms of a 50,000-hub selection).
            cursor.execute("ANALYZE rollouts_hubinstruction")
    if every_hub:  # every undistributed hub of the Supplier now has this one time
        planned_changed = replan_supplier(rollout.pk, supplier.pk, default_deploy_at, _residual_hubs())
    else:
        planned_changed = _replan_listed(rollout, hubs, pilot)
    partners = _split_partners(rollout)
    result = {
        "rollout": rollout.pk,
        "hubs": hubs,
        "replaced": replaced,
        "split_hubs": sum(n for n, _ in partners.values()),
        "split_hubs_partner_instructed": sum(k for _, k in partners.values()),
        "planned_changed": planned_changed.total(),
    }
    tell_csps(rollout, planned_changed, "a Supplier instructed earlier deployment (E1-E3)")
    _notify_partners(
        rollout,
        partners,
        kind="instruction.partner_instructed",
        subject=f"{rollout.reference}: the other Supplier of some of your split hubs instructed earlier deployment",
        says=lambda n, mine: (
            f"The other Supplier of {n:,} of your split hubs in {rollout} has instructed earlier deployment. "
            "For a split hub both Suppliers must instruct: the planned time is the later of the two times, "
            f"and without both it is the automatic deployment time, {_uk(rollout.auto_deploy_at)}. "
            f"You have instructed {mine:,} of these hubs. Instructions close at {_uk(rollout.instruction_deadline)}."
        ),
    )
    return instruction, result


def _replan_listed(rollout: Rollout, hubs: int, pilot: int) -> Replanned:
    """T5 for a list's `hubs` in TOUCHED (hub_id, rh_id, deploy_at, partner, pilot; `pilot` of them pilot
    hubs): the others by `replan_given`, the pilot hubs by `replan`."""
    changed = replan_given(rollout.pk, rollout.auto_deploy_at, TOUCHED) if hubs > pilot else Counter()
    if pilot:
        changed += replan(rollout.pk, hubs_table=_residual_hubs("pilot"))
    return changed


def _residual_hubs(column: str = "residual") -> str | None:
    """RESIDUAL: TOUCHED's hubs with `column` (`residual`: split and pilot, which `replan_supplier` leaves to
    `replan`; `pilot`, which `replan_given` leaves to it); None if there are none (the common case of a
    Supplier's own hubs: no further pass over the rollout's hub rows)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {RESIDUAL}")
        cursor.execute(
            f"CREATE TEMP TABLE {RESIDUAL} ON COMMIT DROP AS SELECT hub_id FROM {TOUCHED} WHERE {column}"
        )
        if not cursor.rowcount:
            return None
        cursor.execute(f"CREATE INDEX ON {RESIDUAL} (hub_id); ANALYZE {RESIDUAL}")
    return RESIDUAL


def _split_partners(rollout: Rollout) -> dict[int, tuple[int, int]]:
    """For the split hubs in TOUCHED (its `partner` column): partner organisation -> (hubs, hubs the partner
    has instructed). The partner's id stays in this module: notices go to it and never name anyone (P4).

    TOUCHED took `partner` from the Supplier's own rollout hub row when it was built, so only the split hubs
    are looked up, each by HubInstruction's key (before: every hub of TOUCHED joined to the rollout's hub
    rows again, 0.3-0.6 s at 50,000 hubs, a full scan at 1,000,000)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT t.partner, count(*), count(*) FILTER (WHERE EXISTS (
                        SELECT 1 FROM rollouts_hubinstruction hi
                        WHERE hi.rollout_id = %(rollout)s AND hi.hub_id = t.hub_id AND hi.supplier_id = t.partner))
                FROM {TOUCHED} t WHERE t.partner IS NOT NULL
                GROUP BY t.partner""",
            {"rollout": rollout.pk},
        )
        return {partner: (n, k) for partner, n, k in cursor.fetchall()}


def _notify_partners(
    rollout: Rollout, partners: dict[int, tuple[int, int]], *, kind: str, subject: str, says
) -> None:
    """One notice per partner with the count; `partners` maps partner -> (hubs, the partner's own count)."""
    orgs = Organisation.objects.in_bulk(list(partners))
    for partner, (n, mine) in sorted(partners.items()):
        notify([orgs[partner]], kind=kind, rollout=rollout, subject=subject, body=says(n, mine))


def _receipt(
    rollout: Rollout, supplier: Organisation, instruction: Instruction, result: dict[str, Any]
) -> None:
    """E5: the acknowledgement, with counts; for "all my eligible hubs" the count and what it leaves out (E4)."""
    lines = [
        f"We received your instruction {instruction.pk} for {result['hubs']:,} hubs of {rollout} "
        f"on {_uk(instruction.created_at)}."
    ]
    if instruction.kind == InstructionKind.ALL_ELIGIBLE:
        lines.append(
            f"It covers all your eligible hubs not yet distributed at receipt: {result['hubs']:,} hubs. "
            "Hubs that join this rollout later are not covered: they keep the automatic deployment time "
            "unless you instruct them."
        )
    if result.get("dropped_invalid_rows"):
        lines.append(
            f"{result['dropped_invalid_rows']:,} rows with invalid GUIDs were left out, as you asked."
        )
    if result["replaced"]:
        lines.append(f"It replaces your earlier instruction for {result['replaced']:,} of these hubs.")
    if result["split_hubs"]:
        lines.append(
            f"{result['split_hubs']:,} of them are split hubs: their time changes only once the other Supplier "
            f"has instructed too, to the later of the two times. The other Supplier has instructed "
            f"{result['split_hubs_partner_instructed']:,} of them so far."
        )
    lines.append(
        f"The planned activation time changed for {result['planned_changed']:,} hubs. You can replace or "
        f"withdraw this instruction until {_uk(rollout.instruction_deadline)}, not once a hub is distributed."
    )
    notify(
        [supplier],
        kind="instruction.received",
        rollout=rollout,
        subject=f"{rollout.reference}: instruction received for {result['hubs']:,} hubs",
        body="\n\n".join(lines),
    )


def instruct_early_deployment(
    *,
    user: User,
    rollout_id: int,
    content: Any = None,
    name: str | None = None,
    guids: list[str] | None = None,
    all_eligible: bool = False,
    default_deploy_at: dt.datetime | None = None,
    only_valid: bool = False,
) -> Instruction | Upload:
    """E1-E5: record a Supplier's instruction to activate hubs earlier than the automatic time.

    Exactly one of `content` (a file in the Deployment instruction layout), `guids` (a selection) or
    `all_eligible`. A file or list with any failure is refused whole with every failure (RowsRejected,
    X3); `only_valid=True` is the explicit second step that drops the invalid-GUID rows (E5).
    The rejected upload, its errors and one audit event are committed before RowsRejected is raised.
    Returns the Instruction, or for a file or selection over INTAKE_BACKGROUND_BYTES the `received`
    Upload that a worker applies after this commits (its result comes as a notice, with the receipt).
    """
    outcome = _instruct(
        user=user,
        rollout_id=rollout_id,
        content=content,
        name=name,
        guids=guids,
        all_eligible=all_eligible,
        default_deploy_at=default_deploy_at,
        only_valid=only_valid,
    )
    if isinstance(outcome, Upload):  # rejected: committed, so it is kept (X3)
        pipeline.raise_if_rejected(outcome)
    return outcome


@transaction.atomic(durable=True)
def _instruct(
    *,
    user: User,
    rollout_id: int,
    content: Any,
    name: str | None,
    guids: list[str] | None,
    all_eligible: bool,
    default_deploy_at: dt.datetime | None,
    only_valid: bool,
) -> Instruction | Upload:
    now = timezone.now()  # the time of receipt (T2), also "now" for time_in_past
    supplier = _supplier_of(user)
    if sum((content is not None, guids is not None, all_eligible)) != 1:
        raise ValueError("Give exactly one of content, guids or all_eligible.")
    if (guids is not None or all_eligible) and default_deploy_at is None:
        raise ValidationError("Choose the time to deploy.", code="deploy_at_missing")
    with connection.cursor() as cursor:
        _bulk_settings(cursor)
    rollout = _rollout_for(supplier, rollout_id)
    _check_open(rollout, now, INSTRUCTABLE)
    if default_deploy_at is not None:
        try:
            default_deploy_at = uk_time(default_deploy_at)
            code = _time_code(default_deploy_at, rollout, now)
        except ValueError as e:
            code = str(e)
        if code:
            raise RowsRejected(
                [
                    failure(
                        code,
                        column="deploy_at",
                        value=str(default_deploy_at),
                        message=_time_failure(
                            code, default_deploy_at if code != "time_ambiguous" else None, rollout
                        ),
                    )
                ]
            )

    if all_eligible:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {TOUCHED}")
            cursor.execute(
                f"""CREATE TEMP TABLE {TOUCHED} ON COMMIT DROP AS
                    SELECT rh.hub_id, %(at)s::timestamptz AS deploy_at, {PARTNER} AS partner,
                           {RESIDUAL_HUB} AS residual
                    FROM rollouts_rollouthub rh
                    WHERE rh.rollout_id = %(rollout)s AND rh.status IN ('pending', 'scheduled')
                      AND (rh.import_supplier_id = %(org)s OR rh.gas_supplier_id = %(org)s)""",
                {"at": default_deploy_at, "rollout": rollout.pk, "org": supplier.pk},
            )
            hubs = cursor.rowcount
        instruction, result = _record_instruction(
            rollout=rollout,
            supplier=supplier,
            user=user,
            kind=InstructionKind.ALL_ELIGIBLE,
            default_deploy_at=default_deploy_at,
            upload=None,
            hubs=hubs,
        )
        if not result["hubs"]:
            raise ValidationError(
                "You have no hubs in this rollout that are not yet distributed.", code="no_hubs"
            )
        audit.record(user, "instruction.received", instruction, **result, kind=instruction.kind)
        _receipt(rollout, supplier, instruction, result)
        return instruction

    if guids is not None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["guid"])
        writer.writerows([g] for g in guids)
        content = ContentFile(buffer.getvalue().encode(), name=f"selection of {len(guids)} hubs.csv")
        name = content.name
    upload = receive_upload(
        user=user,
        organisation=supplier,
        kind=UploadKind.INSTRUCTION,
        content=content,
        name=name,
        rollout_id=rollout.pk,
    )
    # Applied here under the lock this request holds, or (a big file, issue 7) by a worker once this commits:
    # the upload page shows its progress, the worker's handler locks the rollout again (`begin`) and the
    # receipt notice (E5) follows from `finish` either way.
    upload = pipeline.submit_upload(
        upload,
        "rollouts.services.instructions.instruction_handler",
        {
            "rollout_id": rollout.pk,
            "supplier_id": supplier.pk,
            "user_id": user.pk,
            "kind": InstructionKind.SELECTION if guids is not None else InstructionKind.FILE,
            "received_at": now.isoformat(),
            "default_deploy_at": default_deploy_at.isoformat() if default_deploy_at else None,
            "only_valid": only_valid,
        },
        dedupe=False,  # an instruction sent again after a withdrawal means something
    )
    if upload.state != UploadState.APPLIED:  # rejected, or queued for a worker
        return upload
    return Instruction.objects.get(pk=upload.summary["instruction"])


# -- withdrawing ------------------------------------------------------------------------------------


def _stage_guid_list(guids: list[str]) -> list[Failure]:
    """A list of GUIDs into ROWS(row_no, guid, guid_hex); guid_format failures returned (row = position)."""
    failures, rows, seen = [], [], set()
    for position, text in enumerate(guids, start=1):
        try:
            hex_ = parse_guid(text)
        except GuidFormatError:
            failures.append(failure("guid_format", row=position, column="guid", value=str(text)))
            continue
        if hex_ not in seen:  # the same hub twice in a withdrawal list is harmless
            seen.add(hex_)
            rows.append((position, text, hex_))
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {ROWS}")
        cursor.execute(
            f"CREATE TEMP TABLE {ROWS} (row_no int, guid text, guid_hex {GUID_SQL_TYPE}) ON COMMIT DROP"
        )
        with cursor.copy(f"COPY {ROWS} (row_no, guid, guid_hex) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    return failures


@transaction.atomic(durable=True)
def withdraw_instruction(
    *, user: User, rollout_id: int, guids: list[str] | None = None, all: bool = False
) -> dict[str, int]:
    """E1, E3: withdraw the Supplier's standing instruction for some hubs (or all), until the deadline
    and not for a hub already distributed; the hubs are replanned (a split hub's partner is told, P4)."""
    now = timezone.now()
    supplier = _supplier_of(user)
    if (guids is None) == (not all):
        raise ValueError("Give either guids or all=True.")
    with connection.cursor() as cursor:
        _bulk_settings(cursor, lists=False)
    rollout = _rollout_for(supplier, rollout_id)
    _check_open(rollout, now, WITHDRAWABLE)
    org, asked = supplier.pk, None
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TOUCHED}")
        cursor.execute(
            f"""CREATE TEMP TABLE {TOUCHED} (hub_id bigint, rh_id bigint, deploy_at timestamptz, partner bigint,
                                             residual boolean, pilot boolean) ON COMMIT DROP"""
        )
        if guids is not None:
            asked = len(guids)
            failures = _stage_guid_list(guids)
            cursor.execute(
                f"""SELECT r.row_no, r.guid,
                           CASE WHEN h.id IS NULL THEN 'guid_not_yours'
                                WHEN rh.id IS NULL OR rh.status = 'left' THEN 'guid_not_eligible'
                                ELSE 'already_distributed' END
                    FROM {ROWS} r
                    LEFT JOIN rollouts_hub h ON h.guid = r.guid_hex AND %(org)s IN (h.import_supplier_id, h.gas_supplier_id)
                    LEFT JOIN rollouts_rollouthub rh ON rh.rollout_id = %(rollout)s AND rh.hub_id = h.id
                                                    AND %(org)s IN (rh.import_supplier_id, rh.gas_supplier_id)
                    WHERE h.id IS NULL OR rh.id IS NULL OR rh.status NOT IN ('pending', 'scheduled')
                    ORDER BY r.row_no""",
                {"org": org, "rollout": rollout.pk},
            )
            failures += [
                failure(code, row=row, column="guid", value=value) for row, value, code in cursor.fetchall()
            ]
            if failures:
                raise RowsRejected(sorted(failures, key=lambda f: f.row or 0))
            chosen = (
                f"AND hi.hub_id IN (SELECT h.id FROM {ROWS} r JOIN rollouts_hub h ON h.guid = r.guid_hex)"
            )
        else:
            chosen = ""
        cursor.execute(
            f"""WITH gone AS (
                    DELETE FROM rollouts_hubinstruction hi USING rollouts_rollouthub rh
                    WHERE hi.rollout_id = %(rollout)s AND hi.supplier_id = %(org)s {chosen}
                      AND rh.rollout_id = hi.rollout_id AND rh.hub_id = hi.hub_id
                      AND rh.status IN ('pending', 'scheduled')
                    RETURNING hi.hub_id, rh.id AS rh_id, {PARTNER} AS partner, {RESIDUAL_HUB} AS residual,
                              rh."group" = 'pilot' AS pilot),
                touched AS (INSERT INTO {TOUCHED} SELECT hub_id, rh_id, NULL, partner, residual, pilot FROM gone)
                SELECT count(*), count(*) FILTER (WHERE pilot) FROM gone""",
            {"org": org, "rollout": rollout.pk},
        )
        withdrawn, pilot = cursor.fetchone()
        cursor.execute(f"ANALYZE {TOUCHED}")
    if not withdrawn:
        planned_changed = Counter()
    elif all and withdrawn >= BY_SUPPLIER_FROM:
        # Hubs of the Supplier's that had no instruction are replanned too: they do not change (nor count).
        # Split and pilot hubs: only those that had one (RESIDUAL); the others' plan does not involve it.
        planned_changed = replan_supplier(rollout.pk, org, None, _residual_hubs())  # none has one now
    else:
        planned_changed = _replan_listed(rollout, withdrawn, pilot)
    partners = _split_partners(rollout) if withdrawn else {}
    result = {
        "rollout": rollout.pk,
        "withdrawn": withdrawn,
        "not_instructed": (asked - withdrawn) if asked is not None else 0,
        "planned_changed": planned_changed.total(),
        "split_hubs": sum(n for n, _ in partners.values()),
    }
    audit.record(user, "instruction.withdrawn", rollout, **result, all=all)
    tell_csps(rollout, planned_changed, "a Supplier withdrew its instruction to deploy earlier (E1)")
    _notify_partners(
        rollout,
        partners,
        kind="instruction.partner_withdrew",
        subject=f"{rollout.reference}: the other Supplier of some of your split hubs withdrew its instruction",
        says=lambda n, mine: (
            f"The other Supplier of {n:,} of your split hubs in {rollout} has withdrawn its instruction to deploy "
            f"earlier. These hubs now have the automatic deployment time, {_uk(rollout.auto_deploy_at)}, until "
            f"both Suppliers instruct. Your own instructions for {mine:,} of them stand."
        ),
    )
    if withdrawn:
        notify(
            [supplier],
            kind="instruction.withdrawn",
            rollout=rollout,
            subject=f"{rollout.reference}: instruction withdrawn for {withdrawn:,} hubs",
            body=(
                f"Your instruction to deploy earlier is withdrawn for {withdrawn:,} hubs of {rollout}: they have "
                f"the automatic deployment time, {_uk(rollout.auto_deploy_at)}. The planned activation time "
                f"changed for {result['planned_changed']:,} hubs."
            ),
        )
    return result


# -- E6: a hub changes Supplier ----------------------------------------------------------------------


def lapse_for_supplier_changes(rollout_ids: list[int]) -> dict[str, int]:
    """E6: for hubs marked `supplier_changed`, the instructions and pilot amendments of organisations that
    are no longer Import or Gas Supplier of the hub lapse, unless the hub is already distributed. The
    mark is cleared, the hubs replanned, and the new Supplier and the staying partner told (no names).

    Runs inside the inventory load's transaction (after `reconcile_live_rollouts`), as the System.
    DCC's own amendments (friendly, production proving) never lapse.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS lapse_marked")
        cursor.execute(
            """CREATE TEMP TABLE lapse_marked ON COMMIT DROP AS
               SELECT rh.id, rh.rollout_id, rh.hub_id, rh.import_supplier_id, rh.gas_supplier_id,
                      rh.status IN ('pending', 'scheduled') AS open,
                      ch.old_import_supplier_id, ch.old_gas_supplier_id
               FROM rollouts_rollouthub rh
               LEFT JOIN LATERAL (SELECT c.old_import_supplier_id, c.old_gas_supplier_id
                                  FROM rollouts_inventorychange c WHERE c.hub_id = rh.hub_id AND c.supplier_changed
                                  ORDER BY c.id DESC LIMIT 1) ch ON true
               WHERE rh.rollout_id = ANY(%s) AND rh.supplier_changed""",
            [list(rollout_ids)],
        )
        gone_from = """m.open AND x.rollout_id = m.rollout_id AND x.hub_id = m.hub_id
                       AND x.supplier_id IS DISTINCT FROM m.import_supplier_id
                       AND x.supplier_id IS DISTINCT FROM m.gas_supplier_id"""
        cursor.execute(
            f"""WITH gone AS (DELETE FROM rollouts_hubinstruction x USING lapse_marked m WHERE {gone_from}
                              RETURNING x.hub_id) SELECT count(*) FROM gone"""
        )
        instructions = cursor.fetchone()[0]
        cursor.execute(
            f"""WITH gone AS (DELETE FROM rollouts_pilotamendment x USING lapse_marked m, rollouts_organisation o
                              WHERE {gone_from} AND o.id = x.supplier_id AND o.kind = 'supplier'
                              RETURNING x.hub_id) SELECT count(*) FROM gone"""
        )
        amendments = cursor.fetchone()[0]
        cursor.execute(
            "UPDATE rollouts_rollouthub rh SET supplier_changed = false FROM lapse_marked m WHERE rh.id = m.id"
        )
        cleared = cursor.rowcount
        cursor.execute(f"DROP TABLE IF EXISTS {TOUCHED}")
        cursor.execute(
            f"CREATE TEMP TABLE {TOUCHED} ON COMMIT DROP AS SELECT hub_id FROM lapse_marked WHERE open"
        )
        # Who to tell, per rollout: a current Supplier that was not one before is new; one that stays is the partner.
        cursor.execute(
            """SELECT m.rollout_id, s.org,
                      s.org IS DISTINCT FROM m.old_import_supplier_id AND s.org IS DISTINCT FROM m.old_gas_supplier_id,
                      count(DISTINCT m.hub_id)
               FROM lapse_marked m CROSS JOIN LATERAL (SELECT m.import_supplier_id AS org UNION
                                                      SELECT m.gas_supplier_id) s
               WHERE m.open AND s.org IS NOT NULL GROUP BY 1, 2, 3"""
        )
        told = cursor.fetchall()
    replanned = {
        rollout_id: replan(rollout_id, hubs_table=TOUCHED) for rollout_id in sorted(set(rollout_ids))
    }
    rollouts = Rollout.objects.in_bulk(list({r for r, *_ in told} | {r for r, c in replanned.items() if c}))
    orgs = Organisation.objects.in_bulk(list({o for _, o, *_ in told}))
    for rollout_id, org, is_new, n in told:
        rollout = rollouts[rollout_id]
        if is_new:
            subject = f"{rollout.reference}: {n:,} hubs became yours"
            body = (
                f"{n:,} hubs of {rollout} now have you as a Supplier. Any instruction or pilot amendment of their "
                f"previous Supplier has lapsed: they have the automatic deployment time, "
                f"{_uk(rollout.auto_deploy_at)}, unless you instruct them (and, on a split hub, the other "
                f"Supplier too) by {_uk(rollout.instruction_deadline)}."
            )
        else:
            subject = f"{rollout.reference}: the other Supplier of {n:,} of your hubs changed"
            body = (
                f"The other Supplier of {n:,} of your hubs in {rollout} changed. The previous Supplier's "
                "instructions and pilot amendments for these hubs have lapsed; yours stand. A split hub moves to "
                "an instructed time only once its new Supplier has instructed too."
            )
        notify([orgs[org]], kind="instruction.supplier_changed", rollout=rollout, subject=subject, body=body)
    for rollout_id, changed in replanned.items():
        if changed:
            tell_csps(
                rollouts[rollout_id],
                changed,
                "hubs changed Supplier, and their previous Supplier's instructions lapsed (E6)",
            )
    result = {
        "hubs_marked": cleared,
        "instructions_lapsed": instructions,
        "amendments_lapsed": amendments,
        "planned_changed": sum(c.total() for c in replanned.values()),
    }
    if cleared:
        audit.record(None, "instruction.lapsed", None, rollouts=sorted(set(rollout_ids)), **result)
    return result


# -- E4: hubs that join after "all my eligible hubs" --------------------------------------------------


def notify_joiners_not_covered(rollout_id: int, hub_ids: list[int]) -> int:
    """E4: each Supplier with a standing "all my eligible hubs" instruction is told how many of its hubs
    joined the rollout later: they are not covered and have the automatic time. Returns notices sent."""
    rollout = Rollout.objects.get(pk=rollout_id)
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT s.org, count(DISTINCT rh.hub_id)
               FROM rollouts_rollouthub rh
               CROSS JOIN LATERAL (SELECT rh.import_supplier_id AS org UNION SELECT rh.gas_supplier_id) s
               WHERE rh.rollout_id = %(rollout)s AND rh.hub_id = ANY(%(hubs)s) AND s.org IS NOT NULL
                 AND rh.status IN ('pending', 'scheduled')
                 AND EXISTS (SELECT 1 FROM rollouts_hubinstruction hi
                             JOIN rollouts_instruction i ON i.id = hi.instruction_id
                             WHERE hi.rollout_id = rh.rollout_id AND hi.supplier_id = s.org
                               AND i.kind = 'all_eligible')
               GROUP BY 1""",
            {"rollout": rollout_id, "hubs": list(hub_ids)},
        )
        counts = dict(cursor.fetchall())
    orgs = Organisation.objects.in_bulk(list(counts))
    closes = (
        f"instruct them by {_uk(rollout.instruction_deadline)}"
        if timezone.now() <= rollout.instruction_deadline
        else "the deadline for instructions has passed"
    )
    for org, n in sorted(counts.items()):
        notify(
            [orgs[org]],
            kind="instruction.joiners_not_covered",
            rollout=rollout,
            subject=f"{rollout.reference}: {n:,} hubs joined after your all-hubs instruction",
            body=(
                f"{n:,} of your hubs joined {rollout} after your instruction for all your eligible hubs. That "
                f"instruction does not cover them: they have the automatic deployment time, "
                f"{_uk(rollout.auto_deploy_at)}. To deploy them earlier, {closes}."
            ),
        )
    return len(counts)


# -- selector --------------------------------------------------------------------------------------


def instructions_for(org: Organisation, rollout: Rollout) -> QuerySet[dict]:
    """A Supplier's standing instructions in a rollout, one row per hub (E1-E3), with `split` and, for
    split hubs only, `second_supplier_instructed` (True/False; None on other hubs). Never who (P4)."""
    hub_row = RolloutHub.objects.filter(rollout=rollout, hub=OuterRef("hub"))
    split = Exists(
        hub_row.filter(import_supplier__isnull=False, gas_supplier__isnull=False).exclude(
            import_supplier=F("gas_supplier")
        )
    )
    partner_given = Exists(
        HubInstruction.objects.filter(rollout=rollout, hub=OuterRef("hub"))
        .exclude(supplier=org)
        .filter(
            Exists(
                RolloutHub.objects.filter(rollout=rollout, hub=OuterRef("hub")).filter(
                    Q(import_supplier=OuterRef("supplier")) | Q(gas_supplier=OuterRef("supplier"))
                )
            )
        )
    )
    return (
        HubInstruction.objects.filter(rollout=rollout, supplier=org)
        .annotate(
            guid=F("hub__guid"),
            instructed_at=F("instruction__created_at"),
            kind=F("instruction__kind"),
            split=split,
            second_supplier_instructed=Case(
                When(split, then=partner_given), default=Value(None), output_field=BooleanField(null=True)
            ),
            planned_activation_at=Subquery(hub_row.values("planned_activation_at")[:1]),
            activation_source=Subquery(hub_row.values("activation_source")[:1]),
            status=Subquery(hub_row.values("status")[:1]),
        )
        .order_by("hub__guid")
        .values(
            "guid",
            "deploy_at",
            "instruction_id",
            "kind",
            "instructed_at",
            "split",
            "second_supplier_instructed",
            "planned_activation_at",
            "activation_source",
            "status",
        )
    )


__all__ = [
    "instruct_early_deployment",
    "withdraw_instruction",
    "lapse_for_supplier_changes",
    "notify_joiners_not_covered",
    "instructions_for",
    "parse_time",
]
