"""X1: the database itself refuses UPDATE and DELETE of audit rows (TRUNCATE stays, for test flushes)."""

from __future__ import annotations

from django.db import migrations

FORWARD = """
CREATE FUNCTION rollouts_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % refused on rollouts_auditevent', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER rollouts_audit_append_only
    BEFORE UPDATE OR DELETE ON rollouts_auditevent
    FOR EACH ROW EXECUTE FUNCTION rollouts_audit_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS rollouts_audit_append_only ON rollouts_auditevent;
DROP FUNCTION IF EXISTS rollouts_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("rollouts", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
