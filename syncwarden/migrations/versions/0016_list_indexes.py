"""Search keys and indexes for the lists a turn pages through (users, tickets) and for finding
one person by UPN or sync address, so no turn reads a whole table (issue 15).

The keys are filled here from the rows already stored, with the code's own ``search_key``, so
that stored keys and the keys the queries compute are the same function's.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncwarden.core.search_keys import search_key

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEYS = {
    "tickets": {"name_key": "subject_name", "upn_key": "subject_upn"},
    "enrollments": {
        "name_key": "subject_name",
        "upn_key": "subject_upn",
        "mailbox_key": "mailbox",
    },
}
_LIST_INDEXES = {
    "ix_enrollments_list_by_name": ["active", "name_key", "id"],
    "ix_enrollments_list_by_pause": ["active", "paused", "name_key", "id"],
    "ix_enrollments_list_by_error": ["active", "last_error_kind", "name_key", "id"],
}
_BATCH = 1000
# The lengths of subject_name and of the address columns the keys come from.
NAME_LENGTH = 256
ADDRESS_LENGTH = 320


def _key_type(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def _length(key: str) -> int:
    return NAME_LENGTH if key == "name_key" else ADDRESS_LENGTH


def upgrade() -> None:
    for table, keys in _KEYS.items():
        # NOT NULL with a default '' is a plain ADD COLUMN on SQLite too (no table copy).
        with op.batch_alter_table(table, schema=None) as batch_op:
            for key in keys:
                batch_op.add_column(
                    sa.Column(key, _key_type(_length(key)), nullable=False, server_default="")
                )
        _fill_keys(table, keys)
    op.create_index(op.f("ix_tickets_name_key"), "tickets", ["name_key"], unique=False)
    op.create_index(op.f("ix_tickets_upn_key"), "tickets", ["upn_key"], unique=False)
    op.create_index(op.f("ix_enrollments_upn_key"), "enrollments", ["upn_key"], unique=False)
    op.create_index(
        op.f("ix_enrollments_mailbox_key"), "enrollments", ["mailbox_key"], unique=False
    )
    for name, columns in _LIST_INDEXES.items():
        op.create_index(name, "enrollments", columns, unique=False)
    # (status, id) does all that (status) did, and reads one status's tickets newest first.
    op.create_index("ix_tickets_status_id", "tickets", ["status", "id"], unique=False)
    op.drop_index(op.f("ix_tickets_status"), table_name="tickets")


def _fill_keys(table: str, keys: dict[str, str]) -> None:
    connection = op.get_bind()
    sources = sorted(set(keys.values()))
    rows = connection.execute(
        sa.text(f"SELECT id, {', '.join(sources)} FROM {table}")  # noqa: S608 - constants
    ).mappings()
    assignments = ", ".join(f"{key} = :{key}" for key in keys)
    update = sa.text(f"UPDATE {table} SET {assignments} WHERE id = :id")  # noqa: S608
    batch: list[dict[str, object]] = []
    for row in rows.all():
        batch.append(
            {"id": row["id"]}
            | {key: search_key(row[source] or "", _length(key)) for key, source in keys.items()}
        )
        if len(batch) == _BATCH:
            connection.execute(update, batch)
            batch = []
    if batch:
        connection.execute(update, batch)


def downgrade() -> None:
    op.create_index(op.f("ix_tickets_status"), "tickets", ["status"], unique=False)
    op.drop_index("ix_tickets_status_id", table_name="tickets")
    for name in _LIST_INDEXES:
        op.drop_index(name, table_name="enrollments")
    op.drop_index(op.f("ix_enrollments_mailbox_key"), table_name="enrollments")
    op.drop_index(op.f("ix_enrollments_upn_key"), table_name="enrollments")
    op.drop_index(op.f("ix_tickets_upn_key"), table_name="tickets")
    op.drop_index(op.f("ix_tickets_name_key"), table_name="tickets")
    for table, keys in _KEYS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for key in keys:
                batch_op.drop_column(key)
