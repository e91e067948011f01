"""Entra object ids stored in lower case, so lookups compare with the indexes' plain ``=``.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE tickets SET subject_id = lower(subject_id), requester_id = lower(requester_id)"
    )
    op.execute("UPDATE enrollments SET subject_id = lower(subject_id)")


def downgrade() -> None:
    """Nothing to undo: lower-case ids are what the earlier code compared anyway."""
