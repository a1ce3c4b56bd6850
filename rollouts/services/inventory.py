"""The Smart Metering Inventory load (issue 3, B3, E6): the first user of the intake pipeline.

`load_inventory` streams the inventory layout of FILE_FORMATS.md into staging (a plain CSV is parsed by
PostgreSQL itself), checks every row set-based, and applies it with INSERT … SELECT / UPDATE … FROM in
one transaction. Hubs are never deleted; `full` mode marks hubs absent from the file as left. What
changed for hubs already in the SMI is written to InventoryChange (one row per hub changed, back or
left); brand-new hubs are counted in the summary and handed to the live rollouts directly, so live
rollouts can react (B3, E6).

Measured on 1,000,000 new hubs (bench/intake.py): the reference columns of a file take few distinct
values, so they are resolved once per distinct combination (`inventory_profiles`, a few rows) instead
of once per row, and the rows are checked against them only when a combination is bad.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.files import File
from django.utils import timezone

from ..intake.pipeline import ROWS, Layout, Staging, process_upload, receive_upload
from ..models import Organisation, OrgKind, Upload, UploadKind, User
from .membership import LIVE, lock_estate, lock_live_rollouts, reconcile_live_rollouts
from .smi import apply_smi_versions

INVENTORY = Layout(
    kind=UploadKind.INVENTORY,
    columns={
        "guid": True,
        "device_model": True,
        "firmware_version": True,
        "csp_region": True,
        "import_supplier": False,
        "gas_supplier": False,
        "flags": False,
    },
    copy_csv=True,  # DCC's file: PostgreSQL parses a plain CSV itself (rollouts.intake.pipeline)
)
FLAGS = ("friendly", "production_proving")
DEFAULT_MAX_REMOVALS = 1000
ANALYZE_FROM = 10_000  # hubs written by one load from which the SMI's statistics are refreshed

# The staged row, resolved against the reference data (NULL where unknown).
RESOLVED = f"""
    SELECT s.row_no, s.guid_hex AS guid, d.id AS device_model_id, f.id AS firmware_version_id,
           lower(btrim(s.csp_region)) AS region, imp.id AS import_supplier_id, gas.id AS gas_supplier_id,
           coalesce('friendly' = ANY(s.flag_list), false) AS friendly,
           coalesce('production_proving' = ANY(s.flag_list), false) AS production_proving
    FROM (SELECT r.row_no, r.guid_hex, r.device_model, r.firmware_version, r.csp_region, r.import_supplier,
                 r.gas_supplier,
                 CASE WHEN btrim(coalesce(r.flags, '')) <> ''
                      THEN ARRAY(SELECT lower(btrim(t)) FROM unnest(string_to_array(r.flags, ';')) t) END AS flag_list
          FROM {ROWS} r) s
    LEFT JOIN rollouts_devicemodel d ON d.cpl_code = upper(btrim(s.device_model))
    LEFT JOIN rollouts_firmwareversion f ON f.device_model_id = d.id AND f.version = upper(btrim(s.firmware_version))
    LEFT JOIN rollouts_organisation imp ON imp.slug = lower(btrim(s.import_supplier)) AND imp.kind = 'supplier'
    LEFT JOIN rollouts_organisation gas ON gas.slug = lower(btrim(s.gas_supplier)) AND gas.kind = 'supplier'
"""


VALUE_COLUMNS = "device_model, firmware_version, csp_region, import_supplier, gas_supplier, flags"

# Each distinct combination of the value columns, resolved as RESOLVED resolves a row, and `bad` when a
# row with these values fails one of the checks of InventoryHandler.check (the same conditions).
PROFILES = f"""
    SELECT s.*, d.id AS device_model_id, f.id AS firmware_version_id,
           lower(btrim(s.csp_region)) AS region, imp.id AS import_supplier_id, gas.id AS gas_supplier_id,
           coalesce('friendly' = ANY(s.flag_list), false) AS friendly,
           coalesce('production_proving' = ANY(s.flag_list), false) AS production_proving,
           coalesce(s.device_model IS NOT NULL AND d.id IS NULL
                    OR s.firmware_version IS NOT NULL AND d.id IS NOT NULL AND f.id IS NULL
                    OR s.csp_region IS NOT NULL AND lower(btrim(s.csp_region)) NOT IN ('north', 'central', 'south')
                    OR btrim(coalesce(s.import_supplier, '')) <> '' AND imp.id IS NULL
                    OR btrim(coalesce(s.gas_supplier, '')) <> '' AND gas.id IS NULL
                    OR EXISTS (SELECT 1 FROM unnest(string_to_array(s.flags, ';')) t
                               WHERE lower(btrim(t)) NOT IN ('', 'friendly', 'production_proving')), true) AS bad
    FROM (SELECT g.*,
                 CASE WHEN btrim(coalesce(g.flags, '')) <> ''
                      THEN ARRAY(SELECT lower(btrim(t)) FROM unnest(string_to_array(g.flags, ';')) t) END AS flag_list
          FROM (SELECT {VALUE_COLUMNS} FROM {ROWS} GROUP BY {VALUE_COLUMNS}) g) s
    LEFT JOIN rollouts_devicemodel d ON d.cpl_code = upper(btrim(s.device_model))
    LEFT JOIN rollouts_firmwareversion f ON f.device_model_id = d.id AND f.version = upper(btrim(s.firmware_version))
    LEFT JOIN rollouts_organisation imp ON imp.slug = lower(btrim(s.import_supplier)) AND imp.kind = 'supplier'
    LEFT JOIN rollouts_organisation gas ON gas.slug = lower(btrim(s.gas_supplier)) AND gas.kind = 'supplier'
"""

# A checked file's rows with their resolved values (no cell is NULL once every check passed).
STAGED = f"""
    SELECT r.guid_hex AS guid, p.device_model_id, p.firmware_version_id, p.region, p.import_supplier_id,
           p.gas_supplier_id, p.friendly, p.production_proving
    FROM {ROWS} r JOIN inventory_profiles p USING ({VALUE_COLUMNS})
"""

HUB_INSERT = """
    INSERT INTO rollouts_hub (guid, device_model_id, firmware_version_id, region, import_supplier_id,
                              gas_supplier_id, friendly, production_proving, status, firmware_as_of,
                              updated_at, left_at)
    SELECT v.guid, v.device_model_id, v.firmware_version_id, v.region, v.import_supplier_id,
           v.gas_supplier_id, v.friendly, v.production_proving, 'in_smi', %(as_of)s, %(as_of)s, NULL
"""

# The (model, version) pairs a live rollout would take a new hub on (membership decides; this only
# keeps the hand-over small).
LIVE_TARGETS = f"""
    SELECT r.device_model_id, rv.firmwareversion_id AS firmware_version_id
    FROM rollouts_rollout r JOIN rollouts_rollout_replaced_versions rv ON rv.rollout_id = r.id
    WHERE r.status IN {LIVE}
"""


@dataclass
class InventoryHandler:
    mode: str
    as_of: dt.datetime
    max_removals: int
    force: bool
    layout: Layout = INVENTORY

    def check(self, staging: Staging, upload: Upload) -> None:
        staging.cursor.execute(
            "SET LOCAL jit = off"
        )  # compiling plans for a million rows costs more than it saves
        staging.create_temp("inventory_profiles", PROFILES)
        staging.cursor.execute("ANALYZE inventory_profiles")  # a few rows: hash them, not the staged million
        staging.cursor.execute("SELECT EXISTS (SELECT 1 FROM inventory_profiles WHERE bad)")
        if staging.cursor.fetchone()[0]:
            self.check_rows(staging)
        self.check_removals(staging)

    def check_rows(self, staging: Staging) -> None:
        """Every bad row with its reason codes (only run when some combination of values is bad)."""
        staging.create_temp("inventory_resolved", RESOLVED)
        staging.fail(f"""
            SELECT r.row_no, 'device_model', r.device_model, 'reference_unknown',
                   format('No device model with CPL code %%s is registered in the portal. Check the code, or ask '
                          'staff to register the model first.', r.device_model)
            FROM {ROWS} r JOIN inventory_resolved v USING (row_no)
            WHERE r.device_model IS NOT NULL AND v.device_model_id IS NULL""")
        staging.fail(f"""
            SELECT r.row_no, 'firmware_version', r.firmware_version, 'reference_unknown',
                   format('Firmware version %%s is not registered for device model %%s. Write the 4 octets of hex '
                          'as in the CPL (e.g. 0002012F), or ask staff to register the version.',
                          r.firmware_version, r.device_model)
            FROM {ROWS} r JOIN inventory_resolved v USING (row_no)
            WHERE r.firmware_version IS NOT NULL AND v.device_model_id IS NOT NULL
              AND v.firmware_version_id IS NULL""")
        staging.fail(f"""
            SELECT r.row_no, 'csp_region', r.csp_region, 'value_invalid',
                   'The CSP region must be north, central or south.'
            FROM {ROWS} r JOIN inventory_resolved v USING (row_no)
            WHERE r.csp_region IS NOT NULL AND v.region NOT IN ('north', 'central', 'south')""")
        for column in ("import_supplier", "gas_supplier"):
            staging.fail(f"""
                SELECT r.row_no, '{column}', r.{column}, 'reference_unknown',
                       format('No Supplier with the slug %%s is registered in the portal.', r.{column})
                FROM {ROWS} r JOIN inventory_resolved v USING (row_no)
                WHERE btrim(coalesce(r.{column}, '')) <> '' AND v.{column}_id IS NULL""")
        staging.fail(f"""
            SELECT r.row_no, 'flags', r.flags, 'value_invalid',
                   'Flags are friendly and production_proving, separated by semicolons (;).'
            FROM {ROWS} r
            WHERE EXISTS (SELECT 1 FROM unnest(string_to_array(r.flags, ';')) t
                          WHERE lower(btrim(t)) NOT IN ('', 'friendly', 'production_proving'))""")

    def check_removals(self, staging: Staging) -> None:
        if self.mode == "full" and not self.force and staging.failure_count() == 0:
            staging.cursor.execute(f"""
                SELECT count(*) FROM rollouts_hub h
                WHERE h.status = 'in_smi' AND NOT EXISTS (SELECT 1 FROM {ROWS} r WHERE r.guid_hex = h.guid)""")
            removals = staging.cursor.fetchone()[0]
            if removals > self.max_removals:
                staging.fail(
                    "SELECT NULL::int, '', %s, 'too_many_removals', %s",
                    [
                        str(removals),
                        f"This full load would mark {removals:,} hubs as left the SMI, more than the limit of "
                        f"{self.max_removals:,}. Check that the file is the whole inventory; if it is, load it "
                        "again with --force (or a higher --max-removals).",
                    ],
                )

    def apply(self, staging: Staging, upload: Upload) -> dict[str, Any]:
        cursor = staging.cursor
        params = {"upload": upload.pk, "as_of": self.as_of}
        lock_estate(cursor)  # no publication is building its rows meanwhile (see membership)
        lock_live_rollouts(cursor)  # L10, before any hub row is written (see membership)
        apply_smi_versions()  # U3: every version a feed has confirmed, before the load compares the hubs
        # Sorts and hashes of a million rows in memory, not on disk.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute("SELECT EXISTS (SELECT 1 FROM rollouts_hub)")
        first_load = not cursor.fetchone()[0]
        # New hubs on a (model, version) a live rollout takes: their GUIDs now, their ids after the insert.
        cursor.execute("DROP TABLE IF EXISTS inventory_new_hubs")
        cursor.execute("CREATE TEMP TABLE inventory_new_hubs (hub_id bigint) ON COMMIT DROP")
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM inventory_profiles p JOIN ({LIVE_TARGETS}) t "
            "USING (device_model_id, firmware_version_id))"
        )
        joiners = cursor.fetchone()[0]
        if first_load:
            # Nothing to compare with: one INSERT, in GUID order (the unique index fills page by page), with
            # the other indexes built afterwards (1M hubs: 5-8 s in all instead of 11 s; bench/intake.py).
            # DROP INDEX locks the empty table until commit; a failure rolls the drop back with the rest.
            rebuild = _drop_secondary_indexes(cursor, "rollouts_hub")
            cursor.execute(f"{HUB_INSERT} FROM ({STAGED}) v ORDER BY v.guid", params)
            new = cursor.rowcount
            cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
            for definition in rebuild:
                cursor.execute(definition)
            if joiners:
                staging.create_temp("inventory_resolved", STAGED)
                cursor.execute(
                    f"""INSERT INTO inventory_new_hubs SELECT h.id
                        FROM inventory_resolved v JOIN ({LIVE_TARGETS}) t USING (device_model_id, firmware_version_id)
                        JOIN rollouts_hub h ON h.guid = v.guid"""
                )
        else:
            new = self.apply_changes(staging, params, joiners)
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE NOT "left"),
                   count(*) FILTER (WHERE supplier_changed), count(*) FILTER (WHERE model_changed),
                   count(*) FILTER (WHERE version_changed), count(*) FILTER (WHERE "left"),
                   count(*) FILTER (WHERE returned)
            FROM rollouts_inventorychange WHERE upload_id = %(upload)s""",
            params,
        )
        updated, supplier, model, version, left, returned = cursor.fetchone()
        if new + updated + left >= ANALYZE_FROM:
            cursor.execute("ANALYZE rollouts_hub")  # later joins plan on the new size (autovacuum is off)
        reached = reconcile_live_rollouts(
            upload.pk, new_hubs="inventory_new_hubs"
        )  # B3, E6: same transaction
        return {
            **reached,
            "mode": self.mode,
            "as_of": self.as_of.isoformat(),
            "new": new,
            "updated": updated,
            "unchanged": staging.row_count - new - updated,
            "supplier_changed": supplier,
            "model_changed": model,
            "version_changed": version,
            "left": left,
            "returned": returned,
        }

    def apply_changes(self, staging: Staging, params: dict[str, Any], joiners: bool) -> int:
        """A load into a non-empty SMI: changed hubs (with InventoryChange rows), then new ones, then
        (full mode) absent ones marked left. Returns the number of new hubs."""
        cursor = staging.cursor
        staging.create_temp("inventory_resolved", STAGED)
        cursor.execute("ANALYZE inventory_resolved")
        # Changed hubs first: new ones do not exist yet, so nothing here can meet this load's inserts.
        # The old values are read from the snapshot before the UPDATE. A load older than
        # the hub's confirmed firmware (as_of) never undoes it.
        cursor.execute(
            """
            WITH old AS (
                SELECT h.id, h.import_supplier_id, h.gas_supplier_id, h.device_model_id, h.firmware_version_id,
                       h.status, h.region, h.friendly, h.production_proving, v.guid,
                       v.device_model_id AS new_model, v.firmware_version_id AS new_version, v.region AS new_region,
                       v.import_supplier_id AS new_import, v.gas_supplier_id AS new_gas,
                       v.friendly AS new_friendly, v.production_proving AS new_pp,
                       %(as_of)s >= h.firmware_as_of AS newer
                FROM inventory_resolved v JOIN rollouts_hub h ON h.guid = v.guid
            ), diff AS (
                SELECT o.*,
                       (o.import_supplier_id IS DISTINCT FROM o.new_import
                        OR o.gas_supplier_id IS DISTINCT FROM o.new_gas) AS supplier_changed,
                       (o.newer AND o.device_model_id <> o.new_model) AS model_changed,
                       (o.newer AND o.firmware_version_id <> o.new_version) AS version_changed,
                       o.status = 'left' AS returned
                FROM old o
            ), changed AS (
                SELECT * FROM diff
                WHERE supplier_changed OR model_changed OR version_changed OR returned
                   OR region <> new_region OR friendly <> new_friendly OR production_proving <> new_pp
            ), upd AS (
                UPDATE rollouts_hub h
                SET device_model_id = CASE WHEN c.newer THEN c.new_model ELSE h.device_model_id END,
                    firmware_version_id = CASE WHEN c.newer THEN c.new_version ELSE h.firmware_version_id END,
                    firmware_as_of = GREATEST(h.firmware_as_of, %(as_of)s),
                    region = c.new_region, import_supplier_id = c.new_import, gas_supplier_id = c.new_gas,
                    friendly = c.new_friendly, production_proving = c.new_pp,
                    status = 'in_smi', left_at = NULL, updated_at = %(as_of)s
                FROM changed c WHERE h.id = c.id
                RETURNING h.id
            )
            INSERT INTO rollouts_inventorychange (upload_id, hub_id, is_new, supplier_changed, model_changed,
                                                  version_changed, "left", returned, old_import_supplier_id,
                                                  old_gas_supplier_id, old_device_model_id, old_firmware_version_id)
            SELECT %(upload)s, c.id, false, c.supplier_changed, c.model_changed, c.version_changed, false, c.returned,
                   c.import_supplier_id, c.gas_supplier_id, c.device_model_id, c.firmware_version_id
            FROM changed c JOIN upd USING (id)""",
            params,
        )
        if joiners:
            staging.create_temp(
                "inventory_new_guids",
                f"""SELECT v.guid FROM inventory_resolved v
                    WHERE NOT EXISTS (SELECT 1 FROM rollouts_hub h WHERE h.guid = v.guid)
                      AND (v.device_model_id, v.firmware_version_id) IN ({LIVE_TARGETS})""",
            )
        # New hubs, in GUID order (the unique index fills page by page).
        cursor.execute(
            f"""{HUB_INSERT} FROM inventory_resolved v
                WHERE NOT EXISTS (SELECT 1 FROM rollouts_hub h WHERE h.guid = v.guid) ORDER BY v.guid""",
            params,
        )
        new = cursor.rowcount
        if joiners:
            cursor.execute(
                "INSERT INTO inventory_new_hubs SELECT h.id FROM inventory_new_guids g JOIN rollouts_hub h USING (guid)"
            )
        if self.mode == "full":
            cursor.execute(
                """
                WITH gone AS (
                    UPDATE rollouts_hub h SET status = 'left', left_at = %(as_of)s, updated_at = %(as_of)s
                    WHERE h.status = 'in_smi' AND NOT EXISTS (SELECT 1 FROM inventory_resolved v WHERE v.guid = h.guid)
                    RETURNING h.id
                )
                INSERT INTO rollouts_inventorychange (upload_id, hub_id, is_new, supplier_changed, model_changed,
                                                      version_changed, "left", returned)
                SELECT %(upload)s, id, false, false, false, false, true, false FROM gone""",
                params,
            )
        return new


def _drop_secondary_indexes(cursor: Any, table: str) -> list[str]:
    """Drop the table's indexes that no constraint or uniqueness needs; return their definitions."""
    cursor.execute(
        """SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = %s::regclass AND NOT i.indisunique AND NOT i.indisprimary
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
           ORDER BY 1""",
        [table],
    )
    found = cursor.fetchall()
    for name, _ in found:
        cursor.execute(f'DROP INDEX "{name}"')
    return [definition for _, definition in found]


def load_inventory(
    *,
    user: User | None,
    content: File,
    name: str | None = None,
    mode: str = "delta",
    as_of: dt.datetime | None = None,
    max_removals: int = DEFAULT_MAX_REMOVALS,
    force: bool = False,
) -> Upload:
    """Load the SMI from a file in the inventory layout (DCC, staff or the System). Returns the upload,
    applied (with `summary` counts, and InventoryChange rows for hubs already in the SMI) or rejected
    with every error (X3).
    """
    if mode not in ("delta", "full"):
        raise ValueError("mode is delta or full")
    dcc = Organisation.objects.get(kind=OrgKind.DCC)
    if user is not None and not (user.is_staff or user.organisation_id == dcc.pk):
        raise PermissionDenied("Only DCC and staff load the inventory.")
    upload = receive_upload(
        user=user, organisation=dcc, kind=UploadKind.INVENTORY, content=content, name=name
    )
    handler = InventoryHandler(
        mode=mode, as_of=as_of or timezone.now(), max_removals=max_removals, force=force
    )
    return process_upload(upload.pk, handler)
