"""A version on every ticket row (``tickets.row_version``), moved by the database on each update.

An approver's decision reads its ticket with no lock and writes only if the row is still the
version it read (``workflows.unit_of_work.UnitsOfWork.optimistic``). PostgreSQL has such a
version of its own (the ``xmin`` system column, which the decision used until now); SQLite has
nothing like it, and without one an SQLite decision had to hold the write lock from its read to
its commit. A counter of our own works the same on both, so both are guarded one way.

It is moved by triggers, not by the code that writes tickets: the provisioning runner, IT's
commands, the reminders and any SQL an operator runs all update tickets, and a version that one of
them forgot to move would let a decision overwrite their change. PostgreSQL sets it in a
``BEFORE UPDATE`` trigger; SQLite cannot change ``NEW`` there, so an ``AFTER UPDATE`` trigger
updates the row once more (with ``recursive_triggers`` off, as it is by default, that update does
not fire the trigger again, and its ``WHEN`` stops it if someone turns them on). An update that
sets ``row_version`` itself keeps the value it set.

A later migration that rebuilds ``tickets`` on SQLite (``batch_alter_table`` recreating it)
drops the trigger with the old table and must create it again.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSTGRES_FUNCTION = """
CREATE FUNCTION tickets_next_row_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.row_version = OLD.row_version THEN
        NEW.row_version := OLD.row_version + 1;
    END IF;
    RETURN NEW;
END;
$$
"""
_POSTGRES_TRIGGER = (
    "CREATE TRIGGER tickets_row_version BEFORE UPDATE ON tickets "
    "FOR EACH ROW EXECUTE FUNCTION tickets_next_row_version()"
)
_SQLITE_TRIGGER = """
CREATE TRIGGER tickets_row_version AFTER UPDATE ON tickets
WHEN NEW.row_version = OLD.row_version BEGIN
    UPDATE tickets SET row_version = OLD.row_version + 1 WHERE id = NEW.id;
END
"""


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("row_version", sa.BigInteger(), server_default="1", nullable=False)
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        op.execute(_POSTGRES_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tickets_row_version ON tickets")
        op.execute("DROP FUNCTION IF EXISTS tickets_next_row_version()")
    else:
        op.execute("DROP TRIGGER IF EXISTS tickets_row_version")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("row_version")
