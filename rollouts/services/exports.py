"""Downloads in the export layouts of FILE_FORMATS.md, scoped by the actor's organisation and audited.

Each export is one SELECT (`rollouts.exports.Query`, every column escaped in SQL), streamed as CSV
by PostgreSQL's `COPY … TO STDOUT` or written to a temporary XLSX file whose worksheet rows
PostgreSQL builds (`rollouts.exports.xlsx_file`). A Supplier's rows name its role and whether a hub is split, never the other
Supplier (P3, P4); a CSP's rows are its region's only.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Literal

from django.core.exceptions import PermissionDenied
from django.db import models

from .. import audit
from ..exports import Query, copy_csv, iso_sql, xlsx_file
from ..models import TERMINAL, Organisation, OrgKind, Rollout, ScheduleRequest, Status, User
from .schedules import DEPLOYMENT_PLAN_HEADER

Format = Literal["csv", "xlsx"]
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

ESTATE_COLUMNS = (
    "guid",
    "device_model",
    "firmware_version",
    "csp_region",
    "role",
    "split",
    "rollout",
    "stage",
    "group",
    "deployment_status",
    "status_at",
    "planned_activation_at",
    "failure_reason",
)
ELIGIBILITY_COLUMNS = ("guid", "device_model", "firmware_version", "csp_region", "role", "split")
DEVICE_STATUS_COLUMNS = (
    "guid",
    "batch",
    "deployment_status",
    "status_at",
    "firmware_version",
    "failure_reason",
)

DEFAULT_PILOT_LIST_COLUMNS = ("guid",)
SCHEDULE_COLUMNS = ("batch", "guid", "window_start", "window_end")  # A03 and A08: re-importable
EFFECTIVE_PILOT_COLUMNS = ("guid", "csp_region", "batch", "window_start", "window_end", "why")
DEPLOYMENT_PLAN_COLUMNS = tuple(DEPLOYMENT_PLAN_HEADER)
SCHEDULE_REQUEST_COLUMNS = ("request", "constraint", "value", "guid", "status", "answer_reason", "conflict")

# Live: published and not finished (a draft is nobody's business but DCC's).
NOT_LIVE = tuple(sorted({Status.DRAFT, *TERMINAL}))


def guid_sql(column: str) -> str:
    """00-DB-12-…: the display spelling, which no spreadsheet mistakes for a number."""
    return "concat_ws('-', " + ", ".join(f"substr({column}, {i}, 2)" for i in range(1, 17, 2)) + ")"


def role_sql(imp: str, gas: str) -> str:
    """The Supplier's role on a hub; `o.org` is the Supplier (P4: the other one is never named)."""
    return (
        f"CASE WHEN {imp} = o.org AND {gas} = o.org THEN 'import+gas' "
        f"WHEN {imp} = o.org THEN 'import' ELSE 'gas' END"
    )


def split_sql(imp: str, gas: str) -> str:
    return f"CASE WHEN {imp} IS NOT NULL AND {gas} IS NOT NULL AND {imp} <> {gas} THEN 'yes' ELSE 'no' END"


@dataclass
class Download:
    filename: str
    content_type: str
    rows: int
    chunks: Iterator[bytes] | None = None  # CSV: streamed
    file: IO[bytes] | None = None  # XLSX: a temporary file, deleted when closed


def _require(user: User, *kinds: OrgKind) -> Organisation:
    org = user.organisation
    if org is None or org.kind not in kinds:
        raise PermissionDenied
    return org


def _download(user: User, name: str, obj: models.Model, query: Query, fmt: Format, filename: str) -> Download:
    """Build the file and record the download (X2): CSV counts its rows first, XLSX once written."""
    if fmt == "csv":
        rows = query.count()
        download = Download(f"{filename}.csv", CONTENT_TYPES["csv"], rows, chunks=copy_csv(query))
    elif fmt == "xlsx":
        handle, rows = xlsx_file(query)
        download = Download(f"{filename}.xlsx", CONTENT_TYPES["xlsx"], rows, file=handle)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    audit.record(user, f"export.{name}", obj, rows=rows, format=fmt)
    return download


# -- the Supplier's estate report (U2) -------------------------------------------------------------


ESTATE_HUBS = """FROM (SELECT %s::bigint AS org) o
            JOIN rollouts_hub h ON (h.import_supplier_id = o.org OR h.gas_supplier_id = o.org)"""


def estate_query(org: Organisation) -> Query:
    """Every hub in the SMI where `org` is Import or Gas Supplier, with its live rollout row if any.

    The live rollout rows are one hash join (not a lookup per hub); a hub in two live rollouts shows
    the most recently published one.
    """
    return Query(
        columns=ESTATE_COLUMNS,
        select=[
            guid_sql("h.guid"),
            "d.cpl_code",
            "f.version",
            "h.region",
            role_sql("h.import_supplier_id", "h.gas_supplier_id"),
            split_sql("h.import_supplier_id", "h.gas_supplier_id"),
            "x.reference",
            "lower(x.stage)",
            "x.group",
            "x.status",
            iso_sql("x.status_at"),
            iso_sql("x.planned_activation_at"),
            "nullif(x.failure_reason, '')",
        ],
        from_sql=f"""
            {ESTATE_HUBS}
            JOIN rollouts_devicemodel d ON d.id = h.device_model_id
            JOIN rollouts_firmwareversion f ON f.id = h.firmware_version_id
            LEFT JOIN (
                SELECT DISTINCT ON (rh.hub_id) rh.hub_id, r.reference, r.stage, rh."group", rh.status,
                       rh.status_at, rh.planned_activation_at, rh.failure_reason
                FROM rollouts_rollouthub rh JOIN rollouts_rollout r ON r.id = rh.rollout_id
                WHERE r.published_at IS NOT NULL
                  AND r.status NOT IN ({", ".join(f"'{s}'" for s in NOT_LIVE)})
                  AND (rh.import_supplier_id = %s OR rh.gas_supplier_id = %s)
                ORDER BY rh.hub_id, r.published_at DESC, r.id DESC
            ) x ON x.hub_id = h.id
            WHERE h.status = 'in_smi'""",
        params=[org.pk, org.pk, org.pk],
        # No ORDER BY: GUID order means random heap reads over millions of hubs (2x slower at 1M).
        text_columns=("device_model", "rollout", "failure_reason"),
        count_from_sql=f"{ESTATE_HUBS} WHERE h.status = 'in_smi'",
        count_params=[org.pk],
    )


def estate_size(org: Organisation) -> int:
    return estate_query(org).count()


def download_estate_report(*, user: User, fmt: Format) -> Download:
    """U2: the Supplier's whole estate, one row per hub (P3, P4). Audited as export.estate."""
    org = _require(user, OrgKind.SUPPLIER)
    return _download(user, "estate", org, estate_query(org), fmt, f"estate-{org.slug}")


# -- eligibility of one rollout, to a Supplier -------------------------------------------------------


def eligibility_query(org: Organisation, rollout: Rollout) -> Query:
    return Query(
        columns=ELIGIBILITY_COLUMNS,
        select=[
            guid_sql("h.guid"),
            "d.cpl_code",
            "f.version",
            "rh.region",
            role_sql("rh.import_supplier_id", "rh.gas_supplier_id"),
            split_sql("rh.import_supplier_id", "rh.gas_supplier_id"),
        ],
        from_sql="""
            FROM (SELECT %s::bigint AS org) o
            JOIN rollouts_rollouthub rh
              ON rh.rollout_id = %s AND (rh.import_supplier_id = o.org OR rh.gas_supplier_id = o.org)
            JOIN rollouts_hub h ON h.id = rh.hub_id
            JOIN rollouts_devicemodel d ON d.id = h.device_model_id
            JOIN rollouts_firmwareversion f ON f.id = h.firmware_version_id""",
        params=[org.pk, rollout.pk],
        order_by="h.guid",
        text_columns=("device_model",),
    )


def download_eligibility(*, user: User, rollout: Rollout, fmt: Format = "csv") -> Download:
    """The Supplier's eligible hubs of a rollout with its role on each (N2, P4)."""
    org = _require(user, OrgKind.SUPPLIER)
    query = eligibility_query(org, rollout)
    return _download(user, "eligibility", rollout, query, fmt, f"{rollout.reference}-eligibility")


# -- device status of one rollout, to a CSP (its region) or DCC (all) ------------------------------


def device_status_query(org: Organisation, rollout: Rollout) -> Query:
    region = "AND rh.region = %s" if org.kind == OrgKind.CSP else ""
    return Query(
        columns=DEVICE_STATUS_COLUMNS,
        select=[
            guid_sql("h.guid"),
            "b.name",
            "rh.status",
            iso_sql("rh.status_at"),
            "f.version",
            "nullif(rh.failure_reason, '')",
        ],
        from_sql=f"""
            FROM rollouts_rollouthub rh
            JOIN rollouts_hub h ON h.id = rh.hub_id
            JOIN rollouts_firmwareversion f ON f.id = h.firmware_version_id
            LEFT JOIN rollouts_batch b ON b.id = rh.batch_id
            WHERE rh.rollout_id = %s {region}""",
        order_by="h.guid",
        text_columns=("batch", "failure_reason"),
        params=[rollout.pk, org.region] if region else [rollout.pk],
    )


def download_device_status(*, user: User, rollout: Rollout, fmt: Format = "csv") -> Download:
    """Deployment status of each hub of a rollout: a CSP's region, or every hub for DCC (P3)."""
    org = _require(user, OrgKind.CSP, OrgKind.DCC)
    query = device_status_query(org, rollout)
    return _download(user, "device_status", rollout, query, fmt, f"{rollout.reference}-device-status")


# -- piloting and schedules of one rollout, scoped by party (PL3, SL3, T5, PL5) --------------------------


def _scope_sql(org: Organisation, alias: str = "rh") -> tuple[str, list[object]]:
    """The rows of a rollout this organisation may see (P3): its region (CSP), its hubs (Supplier), all (DCC)."""
    if org.kind == OrgKind.CSP:
        return f"AND {alias}.region = %s", [org.region]
    if org.kind == OrgKind.SUPPLIER:
        return f"AND ({alias}.import_supplier_id = %s OR {alias}.gas_supplier_id = %s)", [org.pk, org.pk]
    return "", []


def default_pilot_list_query(org: Organisation, rollout: Rollout) -> Query:
    """A02 as the CSPs uploaded it: the hubs on a Default Pilot List, in the layout a CSP uploads."""
    scope, params = _scope_sql(org)
    return Query(
        columns=DEFAULT_PILOT_LIST_COLUMNS,
        select=[guid_sql("h.guid")],
        from_sql=f"""
            FROM rollouts_rollouthub rh JOIN rollouts_hub h ON h.id = rh.hub_id
            WHERE rh.rollout_id = %s AND rh.in_default_pilot AND rh.status <> 'left' {scope}""",
        params=[rollout.pk, *params],
        order_by="h.guid",
        text_columns=(),
    )


def _schedule_query(org: Organisation, rollout: Rollout, group: str) -> Query:
    """A03 (group pilot) or A08 (safe launch): each batched hub with its batch's window, in the upload layout."""
    scope, params = _scope_sql(org)
    return Query(
        columns=SCHEDULE_COLUMNS,
        select=[
            "b.name",
            guid_sql("h.guid"),
            iso_sql("b.window_start"),
            iso_sql("b.window_end"),
        ],
        from_sql=f"""
            FROM rollouts_rollouthub rh
            JOIN rollouts_batch b ON b.id = rh.batch_id AND b."group" = %s
            JOIN rollouts_hub h ON h.id = rh.hub_id
            WHERE rh.rollout_id = %s AND rh.status <> 'left' {scope}""",
        params=[group, rollout.pk, *params],
        order_by="b.region, b.window_start, b.name, h.guid",
        text_columns=("batch",),
    )


def default_pilot_schedule_query(org: Organisation, rollout: Rollout) -> Query:
    return _schedule_query(org, rollout, "pilot")


def safe_launch_schedule_query(org: Organisation, rollout: Rollout) -> Query:
    return _schedule_query(org, rollout, "safe_launch")


def effective_pilot_group_query(org: Organisation, rollout: Rollout) -> Query:
    """PL6: the effective pilot group with why each hub is in it (`pilot_reason`, set by recompute)."""
    scope, params = _scope_sql(org)
    return Query(
        columns=EFFECTIVE_PILOT_COLUMNS,
        select=[
            guid_sql("h.guid"),
            "rh.region",
            "b.name",
            iso_sql("b.window_start"),
            iso_sql("b.window_end"),
            "nullif(rh.pilot_reason, '')",
        ],
        from_sql=f"""
            FROM rollouts_rollouthub rh
            JOIN rollouts_hub h ON h.id = rh.hub_id
            LEFT JOIN rollouts_batch b ON b.id = rh.batch_id
            WHERE rh.rollout_id = %s AND rh."group" = 'pilot' {scope}""",
        params=[rollout.pk, *params],
        order_by="h.guid",
        text_columns=("batch",),
    )


def deployment_plan_query(org: Organisation, rollout: Rollout) -> Query:
    """T5: each hub's batch, window, planned activation time and why (CSP: its region; DCC: all)."""
    if org.kind == OrgKind.SUPPLIER:
        raise PermissionDenied("The deployment plan is for CSPs and DCC.")
    scope, params = _scope_sql(org)
    return Query(
        columns=DEPLOYMENT_PLAN_COLUMNS,
        select=[
            guid_sql("h.guid"),
            "b.name",
            iso_sql("b.window_start"),
            iso_sql("b.window_end"),
            iso_sql("rh.planned_activation_at"),
            "rh.activation_source",
        ],
        from_sql=f"""
            FROM rollouts_rollouthub rh
            JOIN rollouts_hub h ON h.id = rh.hub_id
            LEFT JOIN rollouts_batch b ON b.id = rh.batch_id
            WHERE rh.rollout_id = %s AND rh.status <> 'left' {scope}""",
        params=[rollout.pk, *params],
        order_by="h.guid",
        text_columns=("batch",),
    )


# A request's value as text: blackout dates joined by ';', a time band as from-to, a batch name as given.
_REQUEST_VALUE_SQL = """CASE jsonb_typeof(sr.value)
    WHEN 'array' THEN array_to_string(ARRAY(SELECT jsonb_array_elements_text(sr.value)), ';')
    WHEN 'object' THEN concat(sr.value ->> 'from', '-', sr.value ->> 'to')
    ELSE sr.value #>> '{}' END"""


def schedule_requests_query(org: Organisation, rollout: Rollout) -> Query:
    """PL5: one row per (request, hub). For a CSP (its region) and DCC, `conflict` says whether another
    Supplier asked a different value of the same constraint for that hub; a Supplier sees only its own
    requests and never learns what its partner asked (P4), so its `conflict` is always `no`."""
    through = ScheduleRequest.hubs.through._meta.db_table
    if org.kind == OrgKind.SUPPLIER:
        scope, params, conflict = "AND sr.supplier_id = %s", [org.pk], "'no'"
    else:
        scope, params = ("AND sr.region = %s", [org.region]) if org.kind == OrgKind.CSP else ("", [])
        conflict = f"""CASE WHEN EXISTS (
                SELECT 1 FROM {through} t2 JOIN rollouts_schedulerequest o ON o.id = t2.schedulerequest_id
                WHERE t2.hub_id = t.hub_id AND o.id <> sr.id AND o.constraint_id = sr.constraint_id
                  AND o.supplier_id <> sr.supplier_id AND o.value <> sr.value) THEN 'yes' ELSE 'no' END"""
    return Query(
        columns=SCHEDULE_REQUEST_COLUMNS,
        select=[
            "sr.id",
            "c.kind",
            _REQUEST_VALUE_SQL,
            guid_sql("h.guid"),
            "sr.state",
            "nullif(sr.answer_reason, '')",
            conflict,
        ],
        from_sql=f"""
            FROM rollouts_schedulerequest sr
            JOIN rollouts_schedulingconstraint c ON c.id = sr.constraint_id
            JOIN {through} t ON t.schedulerequest_id = sr.id
            JOIN rollouts_hub h ON h.id = t.hub_id
            WHERE sr.rollout_id = %s {scope}""",
        params=[rollout.pk, *params],
        order_by="sr.requested_at, sr.id, h.guid",
        text_columns=("value", "answer_reason"),
    )


def download_default_pilot_list(*, user: User, rollout: Rollout, fmt: Format = "csv") -> Download:
    """PL3: the Default Pilot List (A02): a CSP's region, a Supplier's own hubs, everything for DCC."""
    org = _require(user, OrgKind.SUPPLIER, OrgKind.CSP, OrgKind.DCC)
    query = default_pilot_list_query(org, rollout)
    return _download(
        user, "default_pilot_list", rollout, query, fmt, f"{rollout.reference}-default-pilot-list"
    )


def download_default_pilot_schedule(*, user: User, rollout: Rollout, fmt: Format = "csv") -> Download:
    """PL3: the Default Pilot Schedule (A03), scoped as the list; a CSP's download uploads back unchanged."""
    org = _require(user, OrgKind.SUPPLIER, OrgKind.CSP, OrgKind.DCC)
    query = default_pilot_schedule_query(org, rollout)
    filename = f"{rollout.reference}-default-pilot-schedule"
    return _download(user, "default_pilot_schedule", rollout, query, fmt, filename)


def download_effective_pilot_group(*, user: User, rollout: Rollout, fmt: Format = "csv") -> Download:
    """PL6: the effective pilot group with why each hub is in it; a Supplier sees its own hubs only."""
    org = _require(user, OrgKind.SUPPLIER, OrgKind.CSP, OrgKind.DCC)
    query = effective_pilot_group_query(org, rollout)
    filename = f"{rollout.reference}-effective-pilot-group"
    return _download(user, "effective_pilot_group", rollout, query, fmt, filename)


def download_safe_launch_schedule(*, user: User, rollout: Rollout, fmt: Format = "csv") -> Download:
    """SL3: the Safe Launch Schedule (A08): a Supplier's own hubs, a CSP's region, all for DCC."""
    org = _require(user, OrgKind.SUPPLIER, OrgKind.CSP, OrgKind.DCC)
    query = safe_launch_schedule_query(org, rollout)
    filename = f"{rollout.reference}-safe-launch-schedule"
    return _download(user, "safe_launch_schedule", rollout, query, fmt, filename)


def download_deployment_plan(*, user: User, rollout: Rollout, fmt: Format = "csv") -> Download:
    """T5: the deployment plan of a CSP's region (all regions for DCC)."""
    org = _require(user, OrgKind.CSP, OrgKind.DCC)
    query = deployment_plan_query(org, rollout)
    return _download(user, "deployment_plan", rollout, query, fmt, f"{rollout.reference}-deployment-plan")


def download_schedule_requests(*, user: User, rollout: Rollout, fmt: Format = "csv") -> Download:
    """PL5: schedule requests received (CSP: its region; DCC: all), or a Supplier's own requests."""
    org = _require(user, OrgKind.SUPPLIER, OrgKind.CSP, OrgKind.DCC)
    query = schedule_requests_query(org, rollout)
    filename = f"{rollout.reference}-schedule-requests"
    return _download(user, "schedule_requests", rollout, query, fmt, filename)


# -- B5: the evidence pack of a rollout, for the Panel (DCC) -------------------------------------------------


def uk_sql(expr: str) -> str:
    """ISO 8601 in UK local time with its offset (+00:00 or +01:00), so a time at a clock change is exact."""
    local = f"(({expr}) AT TIME ZONE 'Europe/London')"
    return (
        f"""to_char({local}, 'YYYY-MM-DD"T"HH24:MI:SS') || CASE WHEN {local} - (({expr}) AT TIME ZONE 'UTC') """
        "= interval '1 hour' THEN '+01:00' ELSE '+00:00' END"
    )


TIMELINE_COLUMNS = ("at", "actor", "user", "organisation", "action", "object", "details")
NOTICE_COLUMNS = ("at", "organisation", "kind", "subject")
DECISION_COLUMNS = (
    "kind",
    "id",
    "decision",
    "state",
    "reason",
    "proposed_by",
    "proposed_at",
    "approved_by",
    "decided_at",
    "comment",
    "panel",
)
BATCH_COLUMNS = ("name", "region", "group", "window_start", "window_end", "held", "hubs")
OUTCOME_COLUMNS = ("group", "status", "hubs")
FAILURE_REASON_COLUMNS = ("reason", "hubs")


def evidence_queries(rollout: Rollout) -> dict[str, Query]:
    """The files of the evidence pack, each one SELECT (escaped in SQL like every export)."""
    r = rollout.pk
    timeline = Query(
        columns=TIMELINE_COLUMNS,
        select=[
            uk_sql("e.at"),
            "e.actor",
            "u.email",
            "o.name",
            "e.action",
            "e.object_repr",
            "e.details::text",
        ],
        # The rollout itself and everything that belongs to it: proposals, batches, incidents, schedule
        # requests and uploads (the (object_type, object_id) index serves each).
        from_sql="""
            FROM rollouts_auditevent e
            LEFT JOIN rollouts_user u ON u.id = e.user_id
            LEFT JOIN rollouts_organisation o ON o.id = e.organisation_id
            WHERE (e.object_type, e.object_id) IN (
                SELECT 'rollouts.rollout', %s::text
                UNION ALL SELECT 'rollouts.proposal', id::text FROM rollouts_proposal WHERE rollout_id = %s
                UNION ALL SELECT 'rollouts.batch', id::text FROM rollouts_batch WHERE rollout_id = %s
                UNION ALL SELECT 'rollouts.incident', id::text FROM rollouts_incident WHERE rollout_id = %s
                UNION ALL SELECT 'rollouts.schedulerequest', id::text FROM rollouts_schedulerequest
                          WHERE rollout_id = %s
                UNION ALL SELECT 'rollouts.upload', id::text FROM rollouts_upload WHERE rollout_id = %s)""",
        params=[r] * 6,
        order_by="e.at, e.id",
        text_columns=("user", "organisation", "object", "details"),
    )
    notices = Query(
        columns=NOTICE_COLUMNS,
        select=[uk_sql("n.created_at"), "o.name", "n.kind", "n.subject"],
        from_sql="""FROM rollouts_notice n JOIN rollouts_organisation o ON o.id = n.organisation_id
                    WHERE n.rollout_id = %s""",
        params=[r],
        order_by="n.created_at, n.id",
        text_columns=("organisation", "subject"),
    )
    # Four-eyes proposals (B4) with proposer and approver, and incident decisions (I2): raised by whom
    # (the System when nobody), decided by whom, and the Panel's confirmation.
    decisions = Query(
        columns=DECISION_COLUMNS,
        select=[f"d.{c}" for c in DECISION_COLUMNS],
        from_sql=f"""FROM (
            SELECT 'proposal' AS kind, p.id, p.move AS decision, p.state, nullif(p.reason, '') AS reason,
                   pu.email AS proposed_by, {uk_sql("p.proposed_at")} AS proposed_at, du.email AS approved_by,
                   {uk_sql("p.decided_at")} AS decided_at, nullif(p.comment, '') AS comment, NULL AS panel,
                   p.proposed_at AS sort_at
            FROM rollouts_proposal p
            JOIN rollouts_user pu ON pu.id = p.proposed_by_id
            LEFT JOIN rollouts_user du ON du.id = p.decided_by_id
            WHERE p.rollout_id = %s
            UNION ALL
            SELECT 'incident', i.id, nullif(i.outcome, ''), CASE WHEN i.outcome = '' THEN 'open' ELSE 'decided' END,
                   nullif(i.outcome_reason, ''), coalesce(ru.email, 'System'), {uk_sql("i.raised_at")},
                   du.email, {uk_sql("i.decided_at")}, i.description, nullif(i.panel, ''), i.raised_at
            FROM rollouts_incident i
            LEFT JOIN rollouts_user ru ON ru.id = i.raised_by_id
            LEFT JOIN rollouts_user du ON du.id = i.decided_by_id
            WHERE i.rollout_id = %s) d""",
        params=[r, r],
        order_by="d.sort_at, d.kind, d.id",
        text_columns=("reason", "proposed_by", "approved_by", "comment"),
    )
    batches = Query(
        columns=BATCH_COLUMNS,
        select=[
            "b.name",
            "b.region",
            'b."group"',
            uk_sql("b.window_start"),
            uk_sql("b.window_end"),
            "CASE WHEN b.held THEN 'yes' ELSE 'no' END",
            "b.hubs",  # maintained (rollouts.services.counters): no count of a national rollout's rows
        ],
        from_sql="""
            FROM rollouts_batch b
            WHERE b.rollout_id = %s""",
        params=[r],
        order_by='b."group", b.region, b.window_start, b.name',
        text_columns=("name",),
    )
    # U1: the CSP rows of the counters hold every hub once (split hubs are not counted twice).
    outcomes = Query(
        columns=OUTCOME_COLUMNS,
        select=['x."group"', "x.status", "x.hubs"],
        from_sql="""FROM (SELECT c."group", c.status, sum(c.hubs) AS hubs
                          FROM rollouts_rolloutcounter c
                          JOIN rollouts_organisation o ON o.id = c.organisation_id AND o.kind = 'csp'
                          WHERE c.rollout_id = %s GROUP BY c."group", c.status HAVING sum(c.hubs) > 0) x""",
        params=[r],
        order_by='x."group", x.status',
        text_columns=(),
    )
    failures = Query(
        columns=FAILURE_REASON_COLUMNS,
        select=["f.reason", "f.hubs"],
        from_sql="""FROM (SELECT coalesce(nullif(failure_reason, ''), '(no reason given)') AS reason,
                                 count(*) AS hubs
                          FROM rollouts_rollouthub WHERE rollout_id = %s AND status = 'failed' GROUP BY 1) f""",
        params=[r],
        order_by="f.hubs DESC, f.reason",
        text_columns=("reason",),
    )
    return {
        "timeline.csv": timeline,
        "notices.csv": notices,
        "decisions.csv": decisions,
        "batches.csv": batches,
        "outcomes.csv": outcomes,
        "failure_reasons.csv": failures,
    }


def evidence_pack(*, user: User, rollout: Rollout) -> Download:
    """B5: one ZIP of CSVs for the Panel: timeline, notices, decisions with proposers and approvers,
    batches, outcome counts and failure reasons. DCC only; audited with each file's row count (X2).

    Each CSV is streamed by COPY into its zip entry in a temporary file (deleted when closed).
    """
    _require(user, OrgKind.DCC)
    handle = tempfile.TemporaryFile(suffix=".zip")  # noqa: SIM115 - closed by FileResponse
    rows: dict[str, int] = {}
    try:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, query in evidence_queries(rollout).items():
                rows[name] = query.count()
                with archive.open(name, "w", force_zip64=True) as entry:
                    for chunk in copy_csv(query):
                        entry.write(chunk)
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    audit.record(user, "export.evidence_pack", rollout, rows=rows, format="zip")
    return Download(f"{rollout.reference}-evidence.zip", "application/zip", sum(rows.values()), file=handle)
