"""A change marker per profile for the built-in source, so a quiet person reads no appointments.

Every write to ``scheduling_appointments`` moves the profile's revision in
``scheduling_appointment_changes``, from database triggers: the import, the demo data, the bench
and an integration's own SQL all write the table without going through one class, and a marker
that missed one of them would hide a change from the sync. On PostgreSQL one trigger per
statement (transition tables) moves each touched profile once, in profile order, so two bulk
imports lock the rows in the same order; SQLite has row triggers only. ``TRUNCATE`` (PostgreSQL
only; SQLite has none) moves every profile. Profiles that already have appointments get a row
here, so that a later ``TRUNCATE`` moves theirs too.

``sync_states.source_marker`` keeps the marker a settled run read (hashed with the window,
mapping and payload shape) beside its ``source_fingerprint``: empty for everyone at first, so
each person's next run reads the source once and stores it.

A later migration that rebuilds ``scheduling_appointments`` on SQLite (``batch_alter_table``
recreating it) drops these triggers with the old table and must create them again.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSTGRES_FUNCTION = """
CREATE FUNCTION scheduling_appointments_count_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO scheduling_appointment_changes AS changes (profile_id, revision)
        SELECT DISTINCT profile_id, 1 FROM new_rows ORDER BY profile_id
        ON CONFLICT (profile_id) DO UPDATE SET revision = changes.revision + 1;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO scheduling_appointment_changes AS changes (profile_id, revision)
        SELECT profile_id, 1
        FROM (SELECT profile_id FROM old_rows UNION SELECT profile_id FROM new_rows) AS touched
        ORDER BY profile_id
        ON CONFLICT (profile_id) DO UPDATE SET revision = changes.revision + 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO scheduling_appointment_changes AS changes (profile_id, revision)
        SELECT DISTINCT profile_id, 1 FROM old_rows ORDER BY profile_id
        ON CONFLICT (profile_id) DO UPDATE SET revision = changes.revision + 1;
    ELSE
        UPDATE scheduling_appointment_changes SET revision = revision + 1;
    END IF;
    RETURN NULL;
END;
$$
"""
_POSTGRES_TRIGGERS = (
    "CREATE TRIGGER scheduling_appointments_inserted AFTER INSERT ON scheduling_appointments "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION scheduling_appointments_count_change()",
    "CREATE TRIGGER scheduling_appointments_updated AFTER UPDATE ON scheduling_appointments "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION scheduling_appointments_count_change()",
    "CREATE TRIGGER scheduling_appointments_deleted AFTER DELETE ON scheduling_appointments "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION scheduling_appointments_count_change()",
    "CREATE TRIGGER scheduling_appointments_truncated AFTER TRUNCATE ON scheduling_appointments "
    "FOR EACH STATEMENT EXECUTE FUNCTION scheduling_appointments_count_change()",
)
_TRIGGER_NAMES = (
    "scheduling_appointments_inserted",
    "scheduling_appointments_updated",
    "scheduling_appointments_deleted",
    "scheduling_appointments_truncated",
)


# Two statements per touched profile, which any SQLite that runs triggers accepts.
_SQLITE_TRIGGERS = (
    """
CREATE TRIGGER scheduling_appointments_inserted AFTER INSERT ON scheduling_appointments BEGIN
    INSERT OR IGNORE INTO scheduling_appointment_changes VALUES (NEW.profile_id, 0);
    UPDATE scheduling_appointment_changes SET revision = revision + 1
    WHERE profile_id = NEW.profile_id;
END
""",
    """
CREATE TRIGGER scheduling_appointments_updated AFTER UPDATE ON scheduling_appointments BEGIN
    INSERT OR IGNORE INTO scheduling_appointment_changes VALUES (OLD.profile_id, 0);
    UPDATE scheduling_appointment_changes SET revision = revision + 1
    WHERE profile_id = OLD.profile_id;
    INSERT OR IGNORE INTO scheduling_appointment_changes VALUES (NEW.profile_id, 0);
    UPDATE scheduling_appointment_changes SET revision = revision + 1
    WHERE profile_id = NEW.profile_id;
END
""",
    """
CREATE TRIGGER scheduling_appointments_deleted AFTER DELETE ON scheduling_appointments BEGIN
    INSERT OR IGNORE INTO scheduling_appointment_changes VALUES (OLD.profile_id, 0);
    UPDATE scheduling_appointment_changes SET revision = revision + 1
    WHERE profile_id = OLD.profile_id;
END
""",
)


def upgrade() -> None:
    op.create_table(
        "scheduling_appointment_changes",
        sa.Column("profile_id", sa.String(length=128), primary_key=True),
        sa.Column("revision", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO scheduling_appointment_changes (profile_id, revision) "
        "SELECT DISTINCT profile_id, 1 FROM scheduling_appointments"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        for statement in _POSTGRES_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_marker", sa.String(length=64)))


def downgrade() -> None:
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.drop_column("source_marker")
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in _TRIGGER_NAMES:
        suffix = " ON scheduling_appointments" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS {name}{suffix}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS scheduling_appointments_count_change()")
    op.drop_table("scheduling_appointment_changes")
