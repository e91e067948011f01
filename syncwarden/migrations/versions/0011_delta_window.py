"""The window each stored delta round covers, so a sync run never writes outside it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delta_window_start", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("delta_window_end", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.drop_column("delta_window_end")
        batch_op.drop_column("delta_window_start")
