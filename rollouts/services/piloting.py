"""Piloting (PL1, PL4, PL6, PL7, PL8, SL1, L3, C2): who is in a rollout's effective pilot group.

Every list change is recorded where its author owns it (a CSP's Default Pilot List as
`RolloutHub.in_default_pilot` for its region; Suppliers' and DCC's amendments as PilotAmendment
rows), and then `recompute_pilot_group` derives the effective pilot group of the whole rollout in
one statement (PL6), so the rule lives in one place (`EFFECTIVE`). The cap (PL1) is checked under
the rollout's row lock against the group the change would produce. Previews run the same writes
in a savepoint that is rolled back, so they show exactly what confirming would do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files import File
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from .. import audit, selectors
from ..guid import GuidFormatError, display_guid, parse_guid
from ..intake import pipeline
from ..intake.errors import CODES, Failure, RowsRejected, reject_file
from ..intake.pipeline import ROWS, Layout, Staging, check_guids_visible, failures_of
from ..models import (
    Batch,
    Group,
    Organisation,
    OrgKind,
    PilotAmendment,
    PilotReason,
    Rollout,
    RolloutHub,
    Stage,
    Status,
    Upload,
    UploadKind,
    UploadState,
    User,
    VulnerableFlag,
)
from . import counters, planning
from .notifications import notify, relevant_organisations

# A plain CSV list is parsed by PostgreSQL itself (rollouts.intake.pipeline): 50,000 GUIDs staged in
# ~0.1 s instead of ~1 s through the Python reader, with the same rows, numbers and errors.
DEFAULT_PILOT_LIST = Layout(kind=UploadKind.DEFAULT_PILOT_LIST, columns={"guid": True}, copy_csv=True)
PREFERRED_PILOT_LIST = Layout(kind=UploadKind.PREFERRED_PILOT_LIST, columns={"guid": True, "action": False})
VULNERABLE_FLAGS = Layout(kind=UploadKind.VULNERABLE_FLAGS, columns={"guid": True, "vulnerable": False})
PRODUCTION_PROVING_LIMIT = 100  # PL8: fewer than 100 per rollout

# -- PL6: the effective pilot group, in one statement ------------------------------------------------
#
# Per hub of the rollout: on its CSP's default list; vetoed (one of its current Suppliers removed it);
# added (every one of its Suppliers added it; one organisation in both roles counts once); DCC's
# friendly and production-proving additions; the System's or DCC's selection for a Supplier (PL7).
# A veto keeps a hub out whatever else says it in, except production proving (PL8). Amendments by a
# former Supplier of the hub do not count (E6): only the hub's current Suppliers are looked at.
EFFECTIVE_OF = """
    WITH am AS (
        SELECT rh.id,
               bool_or(a.action = 'remove' AND a.reason = ''
                       AND a.supplier_id IN (rh.import_supplier_id, rh.gas_supplier_id)) AS vetoed,
               count(DISTINCT a.supplier_id) FILTER (
                   WHERE a.action = 'add' AND a.reason = ''
                     AND a.supplier_id IN (rh.import_supplier_id, rh.gas_supplier_id)) AS adders,
               bool_or(a.action = 'add' AND a.reason = 'friendly' AND a.supplier_id = %(dcc)s) AS friendly,
               bool_or(a.action = 'add' AND a.reason = 'production_proving'
                       AND a.supplier_id = %(dcc)s) AS proving,
               bool_or(a.action = 'add' AND a.reason = 'selected_on_behalf'
                       AND a.supplier_id IN (rh.import_supplier_id, rh.gas_supplier_id)) AS on_behalf
        FROM rollouts_pilotamendment a
        JOIN rollouts_rollouthub rh ON rh.rollout_id = a.rollout_id AND rh.hub_id = a.hub_id
        WHERE a.rollout_id = %(rollout)s {hubs}
        GROUP BY rh.id
    ), flags AS (
        SELECT rh.id, rh.hub_id, rh.region, rh.import_supplier_id, rh.gas_supplier_id, rh.batch_id,
               rh."group" AS old_group, rh.pilot_reason AS old_reason, rh.status = 'left' AS gone,
               {on_default} AS on_default,
               coalesce(am.vetoed, false) AS vetoed,
               coalesce(am.adders, 0) > 0
                 AND coalesce(am.adders, 0) = (CASE WHEN rh.import_supplier_id IS NOT NULL THEN 1 ELSE 0 END
                                               + CASE WHEN rh.gas_supplier_id IS NOT NULL
                                                       AND rh.gas_supplier_id IS DISTINCT FROM rh.import_supplier_id
                                                      THEN 1 ELSE 0 END) AS added,
               coalesce(am.friendly, false) AS friendly,
               coalesce(am.proving, false) AS proving,
               coalesce(am.on_behalf, false) AS on_behalf
        FROM rollouts_rollouthub rh LEFT JOIN am ON am.id = rh.id
        WHERE rh.rollout_id = %(rollout)s {hubs}
    )
    SELECT f.*,
           CASE WHEN f.gone THEN ''
                WHEN f.proving THEN 'production_proving'
                WHEN f.vetoed THEN ''
                WHEN f.on_default THEN 'default'
                WHEN f.added THEN 'added'
                WHEN f.friendly THEN 'friendly'
                WHEN f.on_behalf THEN 'selected_on_behalf'
                ELSE '' END AS reason
    FROM flags f
"""
# `{hubs}`: nothing (every hub of the rollout), or a condition on rh.hub_id restricting it to some hubs;
# `{on_default}`: rh.in_default_pilot, or the value a change is about to write there.
EFFECTIVE = EFFECTIVE_OF.format(hubs="", on_default="rh.in_default_pilot")


def _dcc_id() -> int:
    dcc = Organisation.objects.filter(kind=OrgKind.DCC).values_list("pk", flat=True).first()
    return dcc if dcc is not None else -1


def _params(rollout_id: int, **extra: Any) -> dict[str, Any]:
    return {"rollout": rollout_id, "dcc": _dcc_id(), **extra}


def effective_pilot_count(rollout_id: int, *, hubs_table: str | None = None) -> int:
    """How many hubs the effective pilot group holds now, from the amendments (not the group column);
    with `hubs_table` (a temporary table with a hub_id column), how many of those hubs."""
    effective = EFFECTIVE
    if hubs_table:
        hubs = f"AND rh.hub_id IN (SELECT hub_id FROM {hubs_table})"
        effective = EFFECTIVE_OF.format(hubs=hubs, on_default="rh.in_default_pilot")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({effective}) e WHERE e.reason <> ''", _params(rollout_id))
        return cursor.fetchone()[0]


def _own_pilot_guids(rollout_id: int, supplier_id: int) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT h.guid FROM ({EFFECTIVE}) e JOIN rollouts_hub h ON h.id = e.hub_id
                WHERE e.reason <> '' AND %(org)s IN (e.import_supplier_id, e.gas_supplier_id)""",
            _params(rollout_id, org=supplier_id),
        )
        return {row[0] for row in cursor.fetchall()}


@dataclass(frozen=True)
class GroupChange:
    """What one recomputation changed: hubs that joined and left the pilot, per CSP region."""

    pilot: int
    joined: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(self.joined.values()) + sum(self.left.values())


def recompute_pilot_group(
    rollout_id: int, *, hubs_table: str | None = None, flip_default: bool = False
) -> GroupChange:
    """PL6, SL1: set every hub's group ('pilot' or its complement 'safe_launch') and pilot_reason from
    the default lists and amendments, set-based; then rebuild the counters and replan (U1, T5).

    Call inside the caller's transaction, under the rollout's lock. A hub that leaves the pilot also
    leaves the pilot batch it was in (it is now a safe launch hub).

    With `hubs_table` (a temporary table with a hub_id column), only those hubs are recomputed: for a
    change that touched only their lists or amendments, since a hub's group depends on nothing else.
    Their counters then move by the rows that changed, and only those rows are replanned, instead of a
    recount and replan of the whole rollout. With `flip_default` as well, each of those hubs also changes
    its Default Pilot List flag in the same UPDATE, the group following the new flag: one new version
    of each row instead of two (a CSP's first 50,000-hub list).
    """
    if flip_default and not hubs_table:
        raise ValueError("flip_default needs the hubs_table of the hubs whose flag changes")
    hubs = f"AND rh.hub_id IN (SELECT hub_id FROM {hubs_table})" if hubs_table else ""
    on_default = "NOT rh.in_default_pilot" if flip_default else "rh.in_default_pilot"
    update = f"""
        UPDATE rollouts_rollouthub rh
        SET "group" = CASE WHEN e.reason <> '' THEN 'pilot' ELSE 'safe_launch' END,
            pilot_reason = e.reason,
            in_default_pilot = e.on_default,
            batch_id = CASE WHEN e.reason = '' AND rh.batch_id IN (
                                SELECT b.id FROM rollouts_batch b
                                WHERE b.rollout_id = %(rollout)s AND b."group" = 'pilot')
                            THEN NULL ELSE rh.batch_id END
        FROM ({EFFECTIVE_OF.format(hubs=hubs, on_default=on_default)}) e
        WHERE rh.id = e.id AND rh.rollout_id = %(rollout)s {hubs}
          AND (rh."group" <> CASE WHEN e.reason <> '' THEN 'pilot' ELSE 'safe_launch' END
               OR rh.pilot_reason <> e.reason OR rh.in_default_pilot <> e.on_default)"""
    with connection.cursor() as cursor:
        if hubs_table is None:
            cursor.execute(
                f"""
                WITH upd AS ({update} RETURNING rh.region, rh."group", e.old_group)
                SELECT region,
                       count(*) FILTER (WHERE "group" = 'pilot' AND old_group <> 'pilot'),
                       count(*) FILTER (WHERE "group" <> 'pilot' AND old_group = 'pilot')
                FROM upd GROUP BY region""",
                _params(rollout_id),
            )
            rows = cursor.fetchall()
        else:
            counters.create_delta_table(cursor)
            cursor.execute(
                f"""
                WITH upd AS ({update}
                             RETURNING rh.rollout_id, rh.hub_id, rh.import_supplier_id, rh.gas_supplier_id,
                                       rh.region, rh.status, e.old_group, rh."group", e.batch_id AS old_batch,
                                       rh.batch_id AS new_batch)
                INSERT INTO {counters.DELTA_TABLE} (rollout_id, hub_id, old_import, old_gas, old_region, old_group,
                                                    old_status, new_import, new_gas, new_region, new_group, new_status,
                                                    old_batch, new_batch)
                SELECT rollout_id, hub_id, import_supplier_id, gas_supplier_id, region, old_group, status,
                       import_supplier_id, gas_supplier_id, region, "group", status, old_batch, new_batch
                FROM upd""",
                _params(rollout_id),
            )
            cursor.execute(
                f"""SELECT new_region,
                           count(*) FILTER (WHERE new_group = 'pilot' AND old_group <> 'pilot'),
                           count(*) FILTER (WHERE new_group <> 'pilot' AND old_group = 'pilot')
                    FROM {counters.DELTA_TABLE} GROUP BY new_region"""
            )
            rows = cursor.fetchall()
        cursor.execute(
            """SELECT count(*) FROM rollouts_rollouthub WHERE rollout_id = %s AND "group" = 'pilot'""",
            [rollout_id],
        )
        pilot = cursor.fetchone()[0]
        if hubs_table is None:
            counters.recount([rollout_id])
            planning.replan(rollout_id)
        else:
            cursor.execute(f"ANALYZE {counters.DELTA_TABLE}")
            counters.apply_deltas(cursor)
            planning.replan(rollout_id, hubs_table=counters.DELTA_TABLE)
    return GroupChange(
        pilot=pilot,
        joined={region: n for region, n, _ in rows if n},
        left={region: n for region, _, n in rows if n},
    )


# -- the cap (PL1) -----------------------------------------------------------------------------------


def pilot_full_message(rollout: Rollout, before: int, after: int) -> str:
    room = max(rollout.pilot_max - before, 0)
    return (
        f"The pilot group is full: {rollout.reference} allows {rollout.pilot_max} pilot hubs "
        f"(production-proving hubs included) and has {before}, so there is room for {room} more; "
        f"this change would make it {after}. Add at most {room} hubs, or remove others first."
    )


def _over_cap(rollout: Rollout, before: int, after: int) -> bool:
    """A change that would pass the cap is refused; one that shrinks an over-full group is not."""
    return after > rollout.pilot_max and after > before


def _check_cap(rollout: Rollout, before: int) -> int:
    """For form-style services: ValidationError `pilot_full` if the written change passes the cap."""
    after = effective_pilot_count(rollout.pk)
    if _over_cap(rollout, before, after):
        raise ValidationError(pilot_full_message(rollout, before, after), code="pilot_full")
    return after


def _cap_failure(rollout: Rollout, before: int, after: int | None = None) -> None:
    """For uploads: a `pilot_full` failure for the whole file (raised from apply, so it rolls back).
    `after` when the caller knows it, else counted."""
    if after is None:
        after = effective_pilot_count(rollout.pk)
    if _over_cap(rollout, before, after):
        raise RowsRejected(
            [Failure(None, "guid", "", "pilot_full", pilot_full_message(rollout, before, after))]
        )


class _Undo(Exception):
    """Raised to roll a savepoint back after a tentative write (previews)."""


def _tentatively[T](work: Callable[[], T]) -> T:
    """Run `work` in a savepoint, keep its result, and roll every write back."""
    result: list[T] = []
    try:
        with transaction.atomic():
            result.append(work())
            raise _Undo
    except _Undo:
        pass
    return result[0]


# -- who may do it, on which rollout ------------------------------------------------------------------


def _organisation(user: User | None, *kinds: OrgKind) -> Organisation:
    org = user.organisation if user is not None and user.organisation_id else None
    if org is None or org.kind not in kinds:
        names = " or ".join(OrgKind(k).label for k in kinds)
        raise PermissionDenied(f"Only {names} users can do this.")
    return org


def _lock_rollout(rollout_id: int, org: Organisation | None) -> Rollout:
    """The rollout, locked for the rest of the transaction (PL1: the cap is checked under this lock).

    A rollout the organisation may not see is reported exactly as a missing one (P3).
    """
    if org is not None and not selectors.rollouts_for(org).filter(pk=rollout_id).exists():
        raise Rollout.DoesNotExist("No such rollout.")
    return Rollout.objects.select_for_update().get(pk=rollout_id)


def _require_pilot_open(rollout: Rollout, what: str) -> None:
    """Pilot lists change only while the published rollout is in notification and active."""
    if not rollout.has_pilot:
        raise ValidationError(
            f"{rollout.reference} is a {rollout.get_impact_display().lower()} release and has no pilot: "
            f"there is no {what} to change.",
            code="no_pilot",
        )
    if rollout.stage != Stage.NOTIFICATION:
        raise ValidationError(
            f"The {what} of {rollout.reference} can no longer change: the rollout is "
            f"{rollout.describe_state()}, and the pilot group is fixed once the pilot starts.",
            code="pilot_started",
        )
    if rollout.status == Status.DRAFT:
        raise ValidationError(
            f"{rollout.reference} is still a draft: the {what} can change once DCC has published it.",
            code="not_published",
        )
    if rollout.status != Status.ACTIVE:
        raise ValidationError(
            f"The {what} of {rollout.reference} cannot change while the rollout is "
            f"{rollout.describe_state()}: wait until DCC resumes it.",
            code="rollout_on_hold",
        )


NOT_ELIGIBLE = (
    "This Communications Hub is not eligible for this rollout (not of its device model and replaced firmware "
    "versions, or no longer in the SMI). Remove the row."
)


def _fail_not_eligible(staging: Staging, rollout_id: int) -> None:
    """guid_not_eligible for a GUID the sender may see but that is not a hub of this rollout."""
    staging.fail(
        f"""SELECT r.row_no, 'guid', r.guid, 'guid_not_eligible', %s
            FROM {ROWS} r
            WHERE r.guid_hex IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM {pipeline.FAILURES} f WHERE f.row_no = r.row_no AND f.col = 'guid')
              AND NOT EXISTS (SELECT 1 FROM rollouts_rollouthub rh JOIN rollouts_hub h ON h.id = rh.hub_id
                              WHERE rh.rollout_id = %s AND h.guid = r.guid_hex AND rh.status <> 'left')""",
        [NOT_ELIGIBLE, rollout_id],
    )


def tell_csps_group_changed(rollout: Rollout, change: GroupChange, *, why: str) -> None:
    """The CSPs whose pilot hubs changed must keep their Default Pilot Schedule complete (PL2, L3)."""
    for csp in Organisation.objects.filter(
        kind=OrgKind.CSP, region__in=sorted(set(change.joined) | set(change.left))
    ):
        joined, left = change.joined.get(csp.region, 0), change.left.get(csp.region, 0)
        notify(
            [csp],
            kind="pilot.group_changed",
            rollout=rollout,
            subject=f"{rollout.reference}: the effective pilot group changed in your region",
            body=(
                f"{why}. In your region {joined} hub(s) joined the effective pilot group of {rollout} and "
                f"{left} left it. Check that your Default Pilot Schedule puts every pilot hub in a batch."
            ),
        )


# -- PL1: the Default Pilot List (A02) --------------------------------------------------------------


def _still_open(rollout_id: int, what: str) -> Rollout:
    """For a handler's `begin`: the rollout locked again in the applying transaction (a worker applies
    a big file after the request that received it), refusing the file if the pilot has moved on."""
    rollout = _lock_rollout(rollout_id, None)
    try:
        _require_pilot_open(rollout, what)
    except ValidationError as error:
        code = "rollout_on_hold" if error.code == "rollout_on_hold" else "deadline_passed"
        raise reject_file(code, message=error.messages[0]) from error
    return rollout


LISTED = "pilot_listed"  # the Default Pilot List's rows with their hub and rollout row (looked up once)
FLIPPED = "pilot_flipped"  # the hubs whose flag the list changed


@dataclass
class DefaultPilotListHandler:
    rollout: Rollout
    csp: Organisation
    layout: Layout = DEFAULT_PILOT_LIST
    change: GroupChange | None = None

    def begin(self) -> None:
        self.rollout = _still_open(self.rollout.pk, "Default Pilot List")
        with connection.cursor() as cursor:
            # A 50,000-GUID list: index lookups, not scans of every hub (TOOLCHAIN "National scale"); and no
            # JIT, whose compilation cost more than it saved on these statements.
            cursor.execute("SET LOCAL random_page_cost = 1.1; SET LOCAL jit = off")

    @property
    def _params(self) -> dict[str, Any]:
        return {"rollout": self.rollout.pk, "region": self.csp.region}

    def check(self, staging: Staging, upload: Upload) -> None:
        # Each GUID's hub and rollout row, looked up once: the checks and the apply read this table, and
        # never join the list to the hubs again (with 2,230,000 hubs each such join was a hash join over all
        # of them, ~1 s). The LATERAL subquery (OFFSET 0 keeps the planner from flattening it into that
        # hash join) looks each GUID up in the hubs' GUID index: 50,000 lookups, whatever the SMI's size.
        staging.create_temp(
            LISTED,
            f"""SELECT r.row_no, h.id AS hub_id, h.region = %s AS visible, rh.id AS rh_id,
                       rh.region, rh.status, rh.in_default_pilot
                FROM {ROWS} r
                CROSS JOIN LATERAL (SELECT h.id, h.region FROM rollouts_hub h WHERE h.guid = r.guid_hex OFFSET 0) h
                LEFT JOIN rollouts_rollouthub rh ON rh.rollout_id = %s AND rh.hub_id = h.id""",
            [self.csp.region, self.rollout.pk],
        )
        # Indexed on the rollout row: the apply's anti-join probes it per flagged row of the region, a plan
        # that stays fast when stale statistics put that side at one row (unindexed, such a nested loop
        # scanned the 50,000 rows once per flagged row: 281 s).
        staging.cursor.execute(f"CREATE INDEX ON {LISTED} (rh_id); ANALYZE {LISTED}")
        # guid_not_in_region for unknown hubs and other regions' alike (P3, as check_guids_visible)
        staging.fail(
            f"""SELECT r.row_no, 'guid', r.guid, 'guid_not_in_region', NULL FROM {ROWS} r
                WHERE r.guid_hex IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM {LISTED} l WHERE l.row_no = r.row_no AND l.visible)"""
        )
        staging.fail(
            f"""SELECT r.row_no, 'guid', r.guid, 'guid_not_eligible', %s
                FROM {ROWS} r JOIN {LISTED} l ON l.row_no = r.row_no
                WHERE l.visible AND (l.rh_id IS NULL OR l.status = 'left')
                  AND NOT EXISTS (SELECT 1 FROM {pipeline.FAILURES} f WHERE f.row_no = r.row_no AND f.col = 'guid')""",
            [NOT_ELIGIBLE],
        )

    def apply(self, staging: Staging, upload: Upload) -> dict[str, Any]:
        before = effective_pilot_count(self.rollout.pk)
        cursor = staging.cursor
        cursor.execute(f"DROP TABLE IF EXISTS {FLIPPED}")
        cursor.execute(
            f"CREATE TEMP TABLE {FLIPPED} (hub_id bigint NOT NULL, listed boolean NOT NULL) ON COMMIT DROP"
        )
        # The region's rows whose flag changes: listed and not yet on the list (found through the looked-up
        # rows), and on the list but no longer listed (the region's flagged rows not among them). The
        # recomputation writes the new flags with the groups they give.
        cursor.execute(
            f"""
            INSERT INTO {FLIPPED}
            SELECT l.hub_id, true FROM {LISTED} l WHERE l.region = %(region)s AND NOT l.in_default_pilot
            UNION ALL
            SELECT rh.hub_id, false FROM rollouts_rollouthub rh
            WHERE rh.rollout_id = %(rollout)s AND rh.region = %(region)s AND rh.in_default_pilot
              AND NOT EXISTS (SELECT 1 FROM {LISTED} l WHERE l.rh_id = rh.id)""",
            self._params,
        )
        cursor.execute(
            f"SELECT count(*) FILTER (WHERE listed), count(*) FILTER (WHERE NOT listed) FROM {FLIPPED}"
        )
        listed, unlisted = cursor.fetchone()
        cursor.execute(f"ANALYZE {FLIPPED}")
        # Only these hubs' flags change, and a hub's place in the group depends on its own row and
        # amendments only: the group after is the group before, with these hubs counted again.
        flipped_before = effective_pilot_count(self.rollout.pk, hubs_table=FLIPPED)
        self.change = recompute_pilot_group(self.rollout.pk, hubs_table=FLIPPED, flip_default=True)
        after = before - flipped_before + effective_pilot_count(self.rollout.pk, hubs_table=FLIPPED)
        _cap_failure(self.rollout, before, after)  # the flags are written: RowsRejected rolls it all back
        return {
            "rollout_id": self.rollout.pk,
            "region": self.csp.region,
            "on_list": staging.row_count,
            "newly_listed": listed,
            "no_longer_listed": unlisted,
            "pilot_before": before,
            "pilot_after": self.change.pilot,
        }

    def finish(self, upload: Upload) -> None:
        rollout, csp = self.rollout, self.csp
        suppliers = Organisation.objects.filter(
            kind=OrgKind.SUPPLIER, pk__in=_suppliers_in_region(rollout.pk, csp.region)
        )
        notify(
            suppliers,
            kind="pilot.default_list",
            rollout=rollout,
            subject=f"{rollout.reference}: {csp.name} has uploaded its Default Pilot List",
            body=(
                f"{csp.name} has uploaded the Default Pilot List for its region for {rollout}. See which of "
                "your hubs are in the effective pilot group, and add or remove hubs with your Preferred "
                "Pilot List before the pilot starts."
            ),
        )
        tell_csps_group_changed(rollout, self.change, why=f"{csp.name} uploaded its Default Pilot List")


def default_pilot_list_handler(rollout_id: int, csp_id: int) -> DefaultPilotListHandler:
    """The handler as a worker rebuilds it from the task's ids (pipeline.submit_upload)."""
    return DefaultPilotListHandler(
        rollout=Rollout.objects.get(pk=rollout_id), csp=Organisation.objects.get(pk=csp_id)
    )


@transaction.atomic(durable=True)
def upload_default_pilot_list(
    *, user: User, rollout_id: int, content: File, name: str | None = None
) -> Upload:
    """PL1 (A02): a CSP's Default Pilot List for its region, replacing its previous one until the pilot
    starts. Returns the upload, applied or rejected with every error (X3), `pilot_full` included; a file
    over INTAKE_BACKGROUND_BYTES comes back `received` and a worker applies it after this commits."""
    csp = _organisation(user, OrgKind.CSP)
    rollout = _lock_rollout(rollout_id, csp)
    _require_pilot_open(rollout, "Default Pilot List")
    upload = pipeline.receive_upload(
        user=user,
        organisation=csp,
        kind=UploadKind.DEFAULT_PILOT_LIST,
        content=content,
        name=name,
        rollout_id=rollout.pk,
    )
    handler = "rollouts.services.piloting.default_pilot_list_handler"
    return pipeline.submit_upload(upload, handler, {"rollout_id": rollout.pk, "csp_id": csp.pk})


def _suppliers_in_region(rollout_id: int, region: str) -> set[int]:
    rows = RolloutHub.objects.filter(rollout_id=rollout_id, region=region)
    return set(
        rows.exclude(import_supplier=None).values_list("import_supplier_id", flat=True).distinct()
    ) | set(rows.exclude(gas_supplier=None).values_list("gas_supplier_id", flat=True).distinct())


# -- PL4: the Preferred Pilot List (A04), by file or by rules ------------------------------------------


def _replace_amendments(
    cursor: Any,
    rollout_id: int,
    supplier_id: int,
    source_sql: str,
    params: dict[str, Any],
    upload_id: int | None,
) -> None:
    """A Supplier's amendments (reason '') become exactly the (hub_id, action) rows of `source_sql`.

    Its own amendment replaces a selection made on its behalf (PL7) for the same hub.
    """
    args = {
        **params,
        "rollout": rollout_id,
        "supplier": supplier_id,
        "upload": upload_id,
        "now": timezone.now(),
    }
    cursor.execute(
        "DELETE FROM rollouts_pilotamendment WHERE rollout_id = %(rollout)s AND supplier_id = %(supplier)s "
        "AND reason = ''",
        args,
    )
    cursor.execute(
        f"""INSERT INTO rollouts_pilotamendment (rollout_id, hub_id, supplier_id, action, reason, upload_id, created_at)
            SELECT %(rollout)s, s.hub_id, %(supplier)s, s.action, '', %(upload)s, %(now)s FROM ({source_sql}) s
            ON CONFLICT (rollout_id, hub_id, supplier_id) DO UPDATE
                SET action = EXCLUDED.action, reason = '', upload_id = EXCLUDED.upload_id,
                    created_at = EXCLUDED.created_at""",
        args,
    )


STAGED_AMENDMENTS = f"""
    SELECT h.id AS hub_id,
           CASE WHEN lower(btrim(coalesce(r.action, ''))) = 'remove' THEN 'remove' ELSE 'add' END AS action
    FROM {ROWS} r JOIN rollouts_hub h ON h.guid = r.guid_hex
"""


@dataclass
class PreferredPilotListHandler:
    rollout: Rollout
    supplier: Organisation
    layout: Layout = PREFERRED_PILOT_LIST
    change: GroupChange | None = None
    tell: bool = True  # a preview changes nothing and tells nobody

    def begin(self) -> None:
        self.rollout = _still_open(self.rollout.pk, "Preferred Pilot List")

    def check(self, staging: Staging, upload: Upload) -> None:
        check_guids_visible(staging, self.supplier)  # guid_not_yours for unknown and others' hubs alike
        _fail_not_eligible(staging, self.rollout.pk)
        staging.fail(
            f"""SELECT row_no, 'action', action, 'value_invalid',
                       'The action must be add or remove (or empty, which means add).'
                FROM {ROWS} WHERE lower(btrim(coalesce(action, ''))) NOT IN ('', 'add', 'remove')"""
        )

    def apply(self, staging: Staging, upload: Upload) -> dict[str, Any]:
        before = effective_pilot_count(self.rollout.pk)
        _replace_amendments(
            staging.cursor, self.rollout.pk, self.supplier.pk, STAGED_AMENDMENTS, {}, upload.pk
        )
        _cap_failure(self.rollout, before)
        staging.cursor.execute(
            f"SELECT count(*) FILTER (WHERE action = 'add'), count(*) FILTER (WHERE action = 'remove') "
            f"FROM ({STAGED_AMENDMENTS}) s"
        )
        adds, removes = staging.cursor.fetchone()
        self.change = recompute_pilot_group(self.rollout.pk)
        return {
            "rollout_id": self.rollout.pk,
            "adds": adds,
            "removes": removes,
            "pilot_before": before,
            "pilot_after": self.change.pilot,
        }

    def finish(self, upload: Upload) -> None:
        if self.tell:
            _tell_partners(self.rollout, self.supplier)
            tell_csps_group_changed(
                self.rollout, self.change, why="A Supplier changed its Preferred Pilot List"
            )


@dataclass(frozen=True)
class PilotPreview:
    """What a change would do (PL4): the effective group's size, and for the Supplier's own hubs only
    (P3, P4) which would join and which would leave it. `failures` lists every error of a file."""

    pilot_before: int
    pilot_after: int
    pilot_max: int
    added: list[str]  # display GUIDs of the Supplier's own hubs that would join the effective group
    removed: list[str]  # ... and that would leave it
    failures: list[Failure] = field(default_factory=list)
    candidates: int = 0  # rules: hubs the rules chose to add

    @property
    def added_count(self) -> int:
        return len(self.added)

    @property
    def removed_count(self) -> int:
        return len(self.removed)

    @property
    def pilot_full(self) -> bool:
        return self.pilot_after > self.pilot_max and self.pilot_after > self.pilot_before

    @property
    def room(self) -> int:
        return max(self.pilot_max - self.pilot_before, 0)


def _difference(before: set[str], after: set[str]) -> tuple[list[str], list[str]]:
    return [display_guid(g) for g in sorted(after - before)], [
        display_guid(g) for g in sorted(before - after)
    ]


def preferred_pilot_list_handler(rollout_id: int, supplier_id: int) -> PreferredPilotListHandler:
    """The handler as a worker rebuilds it from the task's ids (pipeline.submit_upload)."""
    return PreferredPilotListHandler(
        rollout=Rollout.objects.get(pk=rollout_id), supplier=Organisation.objects.get(pk=supplier_id)
    )


@transaction.atomic(durable=True)
def upload_preferred_pilot_list(
    *, user: User, rollout_id: int, content: File, name: str | None = None
) -> Upload:
    """PL4 (A04): a Supplier's Preferred Pilot List (guid, action add|remove). Each upload replaces the
    Supplier's previous amendments; a removal is a standing veto (PL6). Returns the upload, applied or
    rejected with every error (X3), `pilot_full` included; a file over INTAKE_BACKGROUND_BYTES comes back
    `received` and a worker applies it after this commits."""
    supplier = _organisation(user, OrgKind.SUPPLIER)
    rollout = _lock_rollout(rollout_id, supplier)
    _require_pilot_open(rollout, "Preferred Pilot List")
    upload = pipeline.receive_upload(
        user=user,
        organisation=supplier,
        kind=UploadKind.PREFERRED_PILOT_LIST,
        content=content,
        name=name,
        rollout_id=rollout.pk,
    )
    handler = "rollouts.services.piloting.preferred_pilot_list_handler"
    return pipeline.submit_upload(upload, handler, {"rollout_id": rollout.pk, "supplier_id": supplier.pk})


@transaction.atomic(durable=True)
def preview_preferred_pilot(
    *, user: User, rollout_id: int, content: File, name: str | None = None
) -> PilotPreview:
    """PL4: what uploading this Preferred Pilot List would do, without writing anything (the upload is
    checked and applied in a savepoint that is rolled back; the kept file is deleted again)."""
    supplier = _organisation(user, OrgKind.SUPPLIER)
    rollout = _lock_rollout(rollout_id, supplier)
    _require_pilot_open(rollout, "Preferred Pilot List")
    before_total = effective_pilot_count(rollout.pk)
    before = _own_pilot_guids(rollout.pk, supplier.pk)
    kept: list[Upload] = []

    def work() -> tuple[list[Failure], set[str], int]:
        upload = pipeline.receive_upload(
            user=user,
            organisation=supplier,
            kind=UploadKind.PREFERRED_PILOT_LIST,
            content=content,
            name=name,
            rollout_id=rollout.pk,
        )
        kept.append(upload)
        handler = PreferredPilotListHandler(rollout=rollout, supplier=supplier, tell=False)
        upload = pipeline.apply_upload(upload, handler)
        if upload.state == UploadState.REJECTED:
            return failures_of(upload), before, before_total
        return [], _own_pilot_guids(rollout.pk, supplier.pk), effective_pilot_count(rollout.pk)

    failures, after, after_total = _tentatively(work)
    for upload in kept:
        upload.file.delete(save=False)  # the Upload row was rolled back: keep no orphan file
    added, removed = _difference(before, after)
    return PilotPreview(before_total, after_total, rollout.pilot_max, added, removed, failures)


def _tell_partners(rollout: Rollout, supplier: Organisation) -> None:
    """P4: the other Supplier of a split hub is told its partner changed the list, never who it is."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT CASE WHEN rh.import_supplier_id = %(org)s THEN rh.gas_supplier_id ELSE rh.import_supplier_id END,
                      count(*)
               FROM rollouts_rollouthub rh
               WHERE rh.rollout_id = %(rollout)s AND rh.import_supplier_id <> rh.gas_supplier_id
                 AND %(org)s IN (rh.import_supplier_id, rh.gas_supplier_id)
               GROUP BY 1""",
            {"rollout": rollout.pk, "org": supplier.pk},
        )
        partners = dict(cursor.fetchall())
    for partner in Organisation.objects.filter(pk__in=partners):
        notify(
            [partner],
            kind="pilot.partner_changed",
            rollout=rollout,
            subject=f"{rollout.reference}: the other Supplier of some of your split hubs changed its pilot list",
            body=(
                f"The other Supplier of {partners[partner.pk]} of your split hubs in {rollout} has changed its "
                "Preferred Pilot List. A split hub joins the pilot only when both its Suppliers add it, and "
                "stays out when either removes it. See the effective pilot group for your hubs."
            ),
        )


def _rule_source(
    exclude_vulnerable: bool,
    regions: Sequence[str] | None,
    firmware_versions: Sequence[str] | None,
    sample: int | None,
) -> str:
    """(hub_id, action) for the rules: the chosen own hubs are added (a seeded sample when `sample`);
    with `exclude_vulnerable`, the Supplier's vulnerable-flagged hubs are removed (vetoed) and never
    chosen."""
    conditions = [
        "rh.rollout_id = %(rollout)s",
        "rh.status <> 'left'",
        "%(supplier)s IN (rh.import_supplier_id, rh.gas_supplier_id)",
    ]
    if regions is not None:
        conditions.append("rh.region = ANY(%(regions)s)")
    if firmware_versions is not None:
        conditions.append("fv.version = ANY(%(versions)s)")
    if exclude_vulnerable:
        conditions.append("NOT coalesce(vf.vulnerable, false)")
    limit = "LIMIT %(sample)s" if sample is not None else ""
    vetoes = (
        """UNION ALL
           SELECT rh.hub_id, 'remove' FROM rollouts_rollouthub rh
           JOIN rollouts_vulnerableflag vf ON vf.hub_id = rh.hub_id AND vf.supplier_id = %(supplier)s AND vf.vulnerable
           WHERE rh.rollout_id = %(rollout)s AND %(supplier)s IN (rh.import_supplier_id, rh.gas_supplier_id)"""
        if exclude_vulnerable
        else ""
    )
    return f"""
        (SELECT rh.hub_id, 'add' AS action
         FROM rollouts_rollouthub rh
         JOIN rollouts_hub h ON h.id = rh.hub_id
         JOIN rollouts_firmwareversion fv ON fv.id = h.firmware_version_id
         LEFT JOIN rollouts_vulnerableflag vf ON vf.hub_id = rh.hub_id AND vf.supplier_id = %(supplier)s
         WHERE {" AND ".join(conditions)}
         ORDER BY md5(%(seed)s || ':' || h.guid), h.guid
         {limit})
        {vetoes}
    """


@transaction.atomic(durable=True)
def apply_pilot_rules(
    *,
    user: User,
    rollout_id: int,
    exclude_vulnerable: bool,
    regions: list[str] | None,
    firmware_versions: list[str] | None,
    sample: int | None,
    seed: int | None,
    confirm: bool,
) -> PilotPreview:
    """PL4 by rules: the Supplier's Preferred Pilot List becomes its own eligible hubs in `regions` on
    `firmware_versions` (None: any), a seeded random `sample` of them if given, less (and, with
    `exclude_vulnerable`, vetoing) its vulnerable-flagged premises. Like a file, it replaces the
    Supplier's previous amendments. Without `confirm` nothing is written: the preview says what
    would change. The same seed on the same data chooses the same hubs."""
    supplier = _organisation(user, OrgKind.SUPPLIER)
    rollout = _lock_rollout(rollout_id, supplier)
    _require_pilot_open(rollout, "Preferred Pilot List")
    if sample is not None and sample < 0:
        raise ValidationError({"sample": "The sample size is a number of hubs, 0 or more."})
    if seed is None:
        seed = int(timezone.now().timestamp())  # recorded, so the choice can be reproduced
    source = _rule_source(exclude_vulnerable, regions, firmware_versions, sample)
    params = {
        "regions": list(regions or []),
        "versions": [v.strip().upper() for v in firmware_versions or []],
        "sample": sample,
        "seed": str(seed),
    }
    before_total = effective_pilot_count(rollout.pk)
    before = _own_pilot_guids(rollout.pk, supplier.pk)

    def work() -> tuple[set[str], int, int]:
        with connection.cursor() as cursor:
            _replace_amendments(cursor, rollout.pk, supplier.pk, source, params, None)
            cursor.execute(
                f"SELECT count(*) FILTER (WHERE action = 'add') FROM ({source}) s",
                {**params, "rollout": rollout.pk, "supplier": supplier.pk},
            )
            chosen = cursor.fetchone()[0]
        return _own_pilot_guids(rollout.pk, supplier.pk), effective_pilot_count(rollout.pk), chosen

    if not confirm:
        after, after_total, chosen = _tentatively(work)
        added, removed = _difference(before, after)
        return PilotPreview(before_total, after_total, rollout.pilot_max, added, removed, candidates=chosen)
    after, after_total, chosen = work()
    if _over_cap(rollout, before_total, after_total):
        raise ValidationError(pilot_full_message(rollout, before_total, after_total), code="pilot_full")
    change = recompute_pilot_group(rollout.pk)
    added, removed = _difference(before, after)
    audit.record(
        user,
        "pilot.rules_applied",
        rollout,
        exclude_vulnerable=exclude_vulnerable,
        regions=regions,
        firmware_versions=firmware_versions,
        sample=sample,
        seed=seed,
        chosen=chosen,
        added=len(added),
        removed=len(removed),
        pilot_before=before_total,
        pilot_after=change.pilot,
    )
    _tell_partners(rollout, supplier)
    tell_csps_group_changed(rollout, change, why="A Supplier changed its Preferred Pilot List")
    return PilotPreview(before_total, after_total, rollout.pilot_max, added, removed, candidates=chosen)


# -- PL4: vulnerable premises flags ---------------------------------------------------------------------


@dataclass
class VulnerableFlagsHandler:
    supplier: Organisation
    layout: Layout = VULNERABLE_FLAGS

    def check(self, staging: Staging, upload: Upload) -> None:
        check_guids_visible(staging, self.supplier)
        staging.fail(
            f"""SELECT row_no, 'vulnerable', vulnerable, 'value_invalid',
                       'Vulnerable must be yes or no (or empty, which means yes).'
                FROM {ROWS} WHERE lower(btrim(coalesce(vulnerable, ''))) NOT IN ('', 'yes', 'no')"""
        )

    def apply(self, staging: Staging, upload: Upload) -> dict[str, Any]:
        staging.cursor.execute(
            f"""INSERT INTO rollouts_vulnerableflag (hub_id, supplier_id, vulnerable, updated_at)
                SELECT h.id, %(supplier)s, lower(btrim(coalesce(r.vulnerable, ''))) <> 'no', %(now)s
                FROM {ROWS} r JOIN rollouts_hub h ON h.guid = r.guid_hex
                ON CONFLICT (hub_id, supplier_id) DO UPDATE
                    SET vulnerable = EXCLUDED.vulnerable, updated_at = EXCLUDED.updated_at
                RETURNING vulnerable""",
            {"supplier": self.supplier.pk, "now": timezone.now()},
        )
        flags = [row[0] for row in staging.cursor.fetchall()]
        return {"flagged": sum(flags), "cleared": len(flags) - sum(flags)}


@transaction.atomic(durable=True)
def upload_vulnerable_flags(*, user: User, content: File, name: str | None = None) -> Upload:
    """PL4: a Supplier flags (vulnerable yes, the default) or clears (no) its own premises, per hub and
    Supplier; rows not in the file keep their flag. Visible only to that Supplier and DCC. A file over
    INTAKE_BACKGROUND_BYTES comes back `received` and a worker applies it after this commits."""
    supplier = _organisation(user, OrgKind.SUPPLIER)
    with transaction.atomic():
        upload = pipeline.receive_upload(
            user=user, organisation=supplier, kind=UploadKind.VULNERABLE_FLAGS, content=content, name=name
        )
        handler = "rollouts.services.piloting.vulnerable_flags_handler"
        return pipeline.submit_upload(upload, handler, {"supplier_id": supplier.pk})


def vulnerable_flags_handler(supplier_id: int) -> VulnerableFlagsHandler:
    """The handler as a worker rebuilds it from the task's ids (pipeline.submit_upload)."""
    return VulnerableFlagsHandler(supplier=Organisation.objects.get(pk=supplier_id))


def vulnerable_flags_for(org: Organisation) -> QuerySet[VulnerableFlag]:
    """PL4, P3: a Supplier sees its own flags, DCC every flag, a CSP none."""
    flags = VulnerableFlag.objects.select_related("hub").order_by("hub__guid", "supplier_id")
    if org.kind == OrgKind.DCC:
        return flags
    if org.kind == OrgKind.SUPPLIER:
        return flags.filter(supplier=org)
    return flags.none()


# -- PL8: DCC's friendly and production-proving hubs ----------------------------------------------------


def _parse_guids(hub_guids: Iterable[str]) -> tuple[list[str], list[Failure]]:
    guids: list[str] = []
    failures: list[Failure] = []
    for n, value in enumerate(hub_guids, start=1):
        try:
            guid = parse_guid(value)
        except GuidFormatError:
            failures.append(Failure(n, "guid", str(value), "guid_format", CODES["guid_format"]))
            continue
        if guid not in guids:
            guids.append(guid)
    return guids, failures


def _dcc_amendment_rows(rollout: Rollout, guids: list[str]) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT g.guid, h.id, h.friendly, h.production_proving, rh.id IS NOT NULL,
                      EXISTS (SELECT 1 FROM rollouts_pilotamendment a
                              WHERE a.rollout_id = %(rollout)s AND a.hub_id = h.id AND a.action = 'remove'
                                AND a.reason = '' AND a.supplier_id IN (rh.import_supplier_id, rh.gas_supplier_id))
               FROM unnest(%(guids)s::text[]) WITH ORDINALITY g(guid, n)
               LEFT JOIN rollouts_hub h ON h.guid = g.guid
               LEFT JOIN rollouts_rollouthub rh ON rh.rollout_id = %(rollout)s AND rh.hub_id = h.id
                                                AND rh.status <> 'left'
               ORDER BY g.n""",
            {"rollout": rollout.pk, "guids": guids},
        )
        return cursor.fetchall()


def _dcc_pilot_change(
    user: User, rollout_id: int, hub_guids: Iterable[str]
) -> tuple[Organisation, Rollout, list[str], list[Failure]]:
    """PL8: DCC's organisation, the rollout locked and open for pilot changes, the parsed GUIDs and
    their format failures (at least one GUID given)."""
    dcc = _organisation(user, OrgKind.DCC)
    rollout = _lock_rollout(rollout_id, dcc)
    _require_pilot_open(rollout, "pilot group")
    guids, failures = _parse_guids(hub_guids)
    if not guids and not failures:
        raise ValidationError("Give at least one hub GUID.", code="required")
    return dcc, rollout, guids, failures


def _add_dcc_hubs(user: User, rollout_id: int, hub_guids: Iterable[str], reason: PilotReason) -> GroupChange:
    dcc, rollout, guids, failures = _dcc_pilot_change(user, rollout_id, hub_guids)
    proving = reason == PilotReason.PRODUCTION_PROVING
    flag = "production proving" if proving else "a friendly customer"
    for n, (guid, hub_id, friendly, production_proving, eligible, vetoed) in enumerate(
        _dcc_amendment_rows(rollout, guids), start=1
    ):
        shown = display_guid(guid)
        if hub_id is None:
            failures.append(Failure(n, "guid", shown, "guid_unknown", CODES["guid_unknown"]))
        elif not eligible:
            failures.append(Failure(n, "guid", shown, "guid_not_eligible", CODES["guid_not_eligible"]))
        elif not (production_proving if proving else friendly):
            failures.append(
                Failure(
                    n, "guid", shown, "guid_not_eligible", f"This hub is not flagged as {flag} in the SMI."
                )
            )
        elif vetoed and not proving:  # PL6, PL8: a Supplier's removal vetoes friendly additions
            failures.append(
                Failure(
                    n,
                    "guid",
                    shown,
                    "guid_not_eligible",
                    "A Supplier of this hub has removed it from the pilot (a standing veto): choose another "
                    "friendly hub.",
                )
            )
    if failures:
        raise RowsRejected(failures)
    before = effective_pilot_count(rollout.pk)
    with connection.cursor() as cursor:
        count_proving = (
            "SELECT count(*) FROM rollouts_pilotamendment WHERE rollout_id = %s AND supplier_id = %s "
            "AND reason = 'production_proving'"
        )
        cursor.execute(count_proving, [rollout.pk, dcc.pk])
        proving_before = cursor.fetchone()[0]
        # One DCC amendment per hub: production proving overrides friendly (it also ignores vetoes).
        on_conflict = (
            "DO UPDATE SET reason = 'production_proving', action = 'add'" if proving else "DO NOTHING"
        )
        cursor.execute(
            f"""INSERT INTO rollouts_pilotamendment (rollout_id, hub_id, supplier_id, action, reason, created_at)
                SELECT %(rollout)s, h.id, %(dcc)s, 'add', %(reason)s, %(now)s
                FROM rollouts_hub h WHERE h.guid = ANY(%(guids)s)
                ON CONFLICT (rollout_id, hub_id, supplier_id) {on_conflict}""",
            {
                "rollout": rollout.pk,
                "dcc": dcc.pk,
                "reason": reason.value,
                "guids": guids,
                "now": timezone.now(),
            },
        )
        if proving:
            cursor.execute(count_proving, [rollout.pk, dcc.pk])
            total = cursor.fetchone()[0]
            if total >= PRODUCTION_PROVING_LIMIT:
                room = max(PRODUCTION_PROVING_LIMIT - 1 - proving_before, 0)
                raise ValidationError(
                    f"A rollout has fewer than {PRODUCTION_PROVING_LIMIT} production-proving hubs: it has "
                    f"{proving_before} and this would make {total}. Add at most {room} more.",
                    code="production_proving_limit",
                )
    _check_cap(rollout, before)
    change = recompute_pilot_group(rollout.pk)
    audit.record(
        user,
        f"pilot.{reason.value}_added",
        rollout,
        hubs=len(guids),
        guids=guids,
        pilot_before=before,
        pilot_after=change.pilot,
    )
    _tell_suppliers_of(
        rollout, guids, f"DCC has added {{n}} of your hubs to the pilot of {{rollout}} as {flag}."
    )
    tell_csps_group_changed(rollout, change, why=f"DCC added {flag} hubs")
    return change


def _tell_suppliers_of(
    rollout: Rollout, guids: list[str], body: str, *, kind: str = "pilot.dcc_added", what: str = "added"
) -> None:
    """Each Supplier hears about its own hubs only, with its own count (P3, P4)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT s.org, count(*) FROM rollouts_rollouthub rh JOIN rollouts_hub h ON h.id = rh.hub_id
               CROSS JOIN LATERAL (SELECT rh.import_supplier_id AS org UNION SELECT rh.gas_supplier_id) s
               WHERE rh.rollout_id = %s AND h.guid = ANY(%s) AND s.org IS NOT NULL GROUP BY 1""",
            [rollout.pk, guids],
        )
        counts = dict(cursor.fetchall())
    for org in Organisation.objects.filter(pk__in=counts):
        notify(
            [org],
            kind=kind,
            rollout=rollout,
            subject=f"{rollout.reference}: DCC {what} some of your hubs {'to' if what == 'added' else 'from'} the pilot",
            body=body.format(n=counts[org.pk], rollout=rollout),
        )


@transaction.atomic(durable=True)
def add_friendly_hubs(*, user: User, rollout_id: int, hub_guids: list[str]) -> GroupChange:
    """PL8: DCC adds friendly-customer hubs (flagged in the SMI) to the pilot, under the cap; a hub a
    Supplier has removed (a veto) is refused. All or nothing: RowsRejected lists every bad GUID."""
    return _add_dcc_hubs(user, rollout_id, hub_guids, PilotReason.FRIENDLY)


@transaction.atomic(durable=True)
def add_production_proving_hubs(*, user: User, rollout_id: int, hub_guids: list[str]) -> GroupChange:
    """PL8: DCC adds production-proving hubs (flagged in the SMI): fewer than 100 per rollout, not
    subject to Suppliers' vetoes, still under the cap."""
    return _add_dcc_hubs(user, rollout_id, hub_guids, PilotReason.PRODUCTION_PROVING)


@transaction.atomic(durable=True)
def remove_dcc_hubs(*, user: User, rollout_id: int, hub_guids: list[str]) -> GroupChange:
    """PL8: DCC takes back friendly or production-proving hubs it added to the pilot, until the pilot
    starts. A hub stays in the group if it is there for another reason (a Default Pilot List, Suppliers'
    additions). All or nothing: RowsRejected lists every GUID DCC has not added."""
    dcc, rollout, guids, failures = _dcc_pilot_change(user, rollout_id, hub_guids)
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT g.guid, a.id IS NOT NULL
               FROM unnest(%(guids)s::text[]) WITH ORDINALITY g(guid, n)
               LEFT JOIN rollouts_hub h ON h.guid = g.guid
               LEFT JOIN rollouts_pilotamendment a ON a.rollout_id = %(rollout)s AND a.hub_id = h.id
                    AND a.supplier_id = %(dcc)s AND a.reason IN ('friendly', 'production_proving')
               ORDER BY g.n""",
            {"rollout": rollout.pk, "dcc": dcc.pk, "guids": guids},
        )
        rows = cursor.fetchall()
    for n, (guid, added) in enumerate(rows, start=1):
        if not added:
            failures.append(
                Failure(
                    n,
                    "guid",
                    display_guid(guid),
                    "guid_not_eligible",
                    "DCC has not added this hub to the pilot of this rollout as friendly or production "
                    "proving: there is nothing to take back. Check the GUID.",
                )
            )
    if failures:
        raise RowsRejected(failures)
    before = effective_pilot_count(rollout.pk)
    removed = PilotAmendment.objects.filter(
        rollout=rollout,
        supplier=dcc,
        reason__in=[PilotReason.FRIENDLY, PilotReason.PRODUCTION_PROVING],
        hub__guid__in=guids,
    ).delete()[0]
    change = recompute_pilot_group(rollout.pk)
    audit.record(
        user,
        "pilot.dcc_removed",
        rollout,
        hubs=removed,
        guids=guids,
        pilot_before=before,
        pilot_after=change.pilot,
    )
    _tell_suppliers_of(
        rollout,
        guids,
        "DCC has taken back {n} of your hubs it had added to the pilot of {rollout}.",
        kind="pilot.dcc_removed",
        what="took back",
    )
    tell_csps_group_changed(rollout, change, why="DCC took back friendly or production-proving hubs")
    return change


# -- L3: the start_pilot guard ----------------------------------------------------------------------


def pilot_not_ready(rollout: Rollout) -> str | None:
    """L3's guard: a non-empty effective pilot group, within the cap, and every pilot hub in a pilot
    batch; else what is missing and who must act."""
    pilot = RolloutHub.objects.filter(rollout=rollout, group=Group.PILOT)
    total = pilot.count()
    if total == 0:
        return (
            "The effective pilot group is empty: the CSPs must upload their Default Pilot Lists (or "
            "Suppliers and DCC add hubs) before the pilot can start."
        )
    if total > rollout.pilot_max:
        return (
            f"The effective pilot group has {total} hubs, more than the cap of {rollout.pilot_max}: "
            f"remove {total - rollout.pilot_max} before the pilot can start."
        )
    pilot_batches = Batch.objects.filter(rollout=rollout, group=Group.PILOT).values("pk")
    unbatched = pilot.exclude(batch__in=pilot_batches)
    missing = unbatched.count()
    if missing:
        regions = sorted(set(unbatched.values_list("region", flat=True)))
        csps = list(
            Organisation.objects.filter(kind=OrgKind.CSP, region__in=regions)
            .order_by("name")
            .values_list("name", flat=True)
        )
        who = ", ".join(csps) or f"the CSPs of {', '.join(regions)}"
        verb = "must upload its" if len(csps) == 1 else "must upload their"
        return (
            f"{missing} pilot hub{'s are' if missing != 1 else ' is'} not in any batch yet: "
            f"{who} {verb} Default Pilot Schedule."
        )
    return None


# -- C2: a superseded rollout's pilot is void ----------------------------------------------------------


def void_pilot(rollout: Rollout) -> int:
    """C2: the pilot under way of a rollout being superseded is void: every batch of the rollout is
    held and its parties are told. Call inside the supersede move's transaction (no transaction of its
    own). Returns how many batches were newly held."""
    held = Batch.objects.filter(rollout=rollout, held=False).update(held=True)
    audit.record(None, "pilot.void", rollout, batches_held=held)
    notify(
        relevant_organisations(rollout),
        kind="pilot.void",
        rollout=rollout,
        subject=f"{rollout.reference}: the pilot is void",
        body=(
            f"{rollout} has been superseded while its pilot was under way, so the pilot is void (C2). "
            "All its batches are held: nothing more will be distributed or activated under it. The newer "
            "rollout covers the same hubs."
        ),
    )
    return held


# -- PL7: contribution ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shortfall:
    supplier_id: int
    supplier_name: str
    eligible: int  # its eligible hubs in the rollout (as Import or Gas Supplier)
    contributed: int  # its hubs in the effective pilot group
    minimum: int

    @property
    def missing(self) -> int:
        return max(self.minimum - self.contributed, 0)


CONTRIBUTION = """
    SELECT s.org, count(*), count(*) FILTER (WHERE rh."group" = 'pilot')
    FROM rollouts_rollouthub rh
    CROSS JOIN LATERAL (SELECT rh.import_supplier_id AS org UNION SELECT rh.gas_supplier_id) s
    WHERE rh.rollout_id = %(rollout)s AND rh.status <> 'left' AND s.org IS NOT NULL
    GROUP BY 1
"""


def contribution_shortfalls(rollout: Rollout) -> list[Shortfall]:
    """PL7: every participating Supplier with at least `contribution_threshold` eligible hubs, with how
    many pilot hubs it contributes (as Import or Gas) against `contribution_minimum`. For DCC only."""
    if rollout.contribution_minimum == 0:
        return []
    with connection.cursor() as cursor:
        cursor.execute(CONTRIBUTION, {"rollout": rollout.pk})
        counts = {org: (eligible, pilot) for org, eligible, pilot in cursor.fetchall()}
    names = dict(Organisation.objects.filter(pk__in=counts).values_list("pk", "name"))
    return [
        Shortfall(org, names[org], eligible, pilot, rollout.contribution_minimum)
        for org, (eligible, pilot) in sorted(counts.items(), key=lambda item: names[item[0]])
        if eligible >= rollout.contribution_threshold
    ]


# A Supplier's hubs the selection may choose: not in the pilot, not vetoed, flagged vulnerable by none
# of its Suppliers, and (if split) already added by the partner (PL7).
SELECTABLE = """
    SELECT rh.hub_id FROM rollouts_rollouthub rh JOIN rollouts_hub h ON h.id = rh.hub_id
    WHERE rh.rollout_id = %(rollout)s AND rh.status <> 'left' AND rh."group" <> 'pilot'
      AND %(supplier)s IN (rh.import_supplier_id, rh.gas_supplier_id)
      AND NOT EXISTS (SELECT 1 FROM rollouts_pilotamendment a
                      WHERE a.rollout_id = rh.rollout_id AND a.hub_id = rh.hub_id AND a.action = 'remove'
                        AND a.reason = '' AND a.supplier_id IN (rh.import_supplier_id, rh.gas_supplier_id))
      AND NOT EXISTS (SELECT 1 FROM rollouts_vulnerableflag vf
                      WHERE vf.hub_id = rh.hub_id AND vf.vulnerable
                        AND vf.supplier_id IN (rh.import_supplier_id, rh.gas_supplier_id))
      AND (rh.import_supplier_id IS NULL OR rh.gas_supplier_id IS NULL
           OR rh.import_supplier_id = rh.gas_supplier_id
           OR EXISTS (SELECT 1 FROM rollouts_pilotamendment a
                      WHERE a.rollout_id = rh.rollout_id AND a.hub_id = rh.hub_id AND a.action = 'add'
                        AND a.reason = ''
                        AND a.supplier_id = CASE WHEN rh.import_supplier_id = %(supplier)s
                                                 THEN rh.gas_supplier_id ELSE rh.import_supplier_id END))
    ORDER BY md5(%(seed)s || ':' || h.guid), h.guid
    LIMIT %(limit)s
"""


@dataclass(frozen=True)
class SelectionResult:
    selected: dict[int, int]  # supplier id -> hubs selected on its behalf
    still_short: dict[int, int]  # supplier id -> hubs it is still short of (no candidates, or the cap)
    stopped_at_cap: bool
    pilot: int


@transaction.atomic(durable=True)
def select_shortfall(*, user: User | None, rollout_id: int, seed: int | str) -> SelectionResult:
    """PL7: select each obliged Supplier's shortfall from its own hubs by seeded sampling, skipping
    vetoed, vulnerable-flagged and split hubs its partner has not added, and stopping at the cap.

    The System (user None) does this at the contribution deadline; DCC may do it earlier. Recorded
    as PilotAmendment(reason='selected_on_behalf') for that Supplier; the same seed on the same data
    selects the same hubs.
    """
    dcc = _organisation(user, OrgKind.DCC) if user is not None else None
    rollout = _lock_rollout(rollout_id, dcc)
    _require_pilot_open(rollout, "pilot group")
    if user is None and rollout.contribution_deadline and timezone.now() < rollout.contribution_deadline:
        raise ValidationError(
            f"The contribution deadline of {rollout.reference} is "
            f"{timezone.localtime(rollout.contribution_deadline):%d %B %Y %H:%M}: the System selects "
            "shortfalls only then (DCC can do it earlier).",
            code="deadline_not_reached",
        )
    before = effective_pilot_count(rollout.pk)
    room = max(rollout.pilot_max - before, 0)
    selected: dict[int, int] = {}
    joined: Counter[str] = Counter()  # pilot hubs per region, for the CSPs (PL2)
    still_short: dict[int, int] = {}
    stopped = False
    now = timezone.now()
    for shortfall in contribution_shortfalls(rollout):
        # Re-read: a split hub selected for one Supplier also counts for its partner.
        current = _contributed(rollout.pk, shortfall.supplier_id)
        missing = max(rollout.contribution_minimum - current, 0)
        if missing == 0:
            continue
        take = min(missing, room)
        chosen = 0
        if take:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""INSERT INTO rollouts_pilotamendment (rollout_id, hub_id, supplier_id, action, reason,
                                                             created_at)
                        SELECT %(rollout)s, c.hub_id, %(supplier)s, 'add', 'selected_on_behalf', %(now)s
                        FROM ({SELECTABLE}) c
                        ON CONFLICT (rollout_id, hub_id, supplier_id) DO NOTHING""",
                    {
                        "rollout": rollout.pk,
                        "supplier": shortfall.supplier_id,
                        "seed": str(seed),
                        "limit": take,
                        "now": now,
                    },
                )
                chosen = cursor.rowcount
            if chosen:
                joined.update(recompute_pilot_group(rollout.pk).joined)
                room -= chosen
                selected[shortfall.supplier_id] = chosen
        if chosen < missing:
            still_short[shortfall.supplier_id] = missing - chosen
            stopped = stopped or room == 0
    after = _check_cap(rollout, before)
    audit.record(
        user,
        "pilot.shortfall_selected",
        rollout,
        seed=str(seed),
        selected={str(k): v for k, v in selected.items()},
        still_short={str(k): v for k, v in still_short.items()},
        stopped_at_cap=stopped,
        pilot_before=before,
        pilot_after=after,
    )
    who = "DCC" if user is not None else "The System"
    for org in Organisation.objects.filter(pk__in=set(selected) | set(still_short)):
        n, short = selected.get(org.pk, 0), still_short.get(org.pk, 0)
        notify(
            [org],
            kind="pilot.selected_on_behalf",
            rollout=rollout,
            subject=f"{rollout.reference}: pilot hubs selected to make up your contribution",
            body=(
                f"{who} selected {n} of your hubs for the pilot of {rollout}, to make up the minimum of "
                f"{rollout.contribution_minimum} pilot hubs (PL7)."
                + (f" You are still {short} short: no more of your hubs could be chosen." if short else "")
            ),
        )
    tell_csps_group_changed(
        rollout, GroupChange(pilot=after, joined=dict(joined)), why=f"{who} selected pilot hubs (PL7)"
    )
    return SelectionResult(selected, still_short, stopped, after)


def _contributed(rollout_id: int, supplier_id: int) -> int:
    return (
        RolloutHub.objects.filter(rollout_id=rollout_id, group=Group.PILOT)
        .exclude(status="left")
        .filter(Q(import_supplier_id=supplier_id) | Q(gas_supplier_id=supplier_id))
        .count()
    )


__all__ = [
    "GroupChange",
    "PilotPreview",
    "SelectionResult",
    "Shortfall",
    "add_friendly_hubs",
    "add_production_proving_hubs",
    "apply_pilot_rules",
    "contribution_shortfalls",
    "effective_pilot_count",
    "pilot_not_ready",
    "preview_preferred_pilot",
    "recompute_pilot_group",
    "select_shortfall",
    "tell_csps_group_changed",
    "upload_default_pilot_list",
    "upload_preferred_pilot_list",
    "upload_vulnerable_flags",
    "void_pilot",
    "vulnerable_flags_for",
]
