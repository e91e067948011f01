"""The kind of a ticket's failure (``tickets.failure_kind``), for IT's ``tickets error:<kind>``.

Tickets that failed before this revision keep no kind: their reason is words for people, and
guessing a kind from it would file some of them under the wrong one. The index holds only the
tickets that have a kind, ordered as the list reads one status's page (newest first by id).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HAS_KIND = "failure_kind IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure_kind", sa.String(length=32), nullable=True))
    op.create_index(
        "ix_tickets_failure_kind",
        "tickets",
        ["failure_kind", "status", "id"],
        unique=False,
        sqlite_where=sa.text(_HAS_KIND),
        postgresql_where=sa.text(_HAS_KIND),
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_failure_kind", table_name="tickets")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("failure_kind")
