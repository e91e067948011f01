"""Channel roles in their own table, so one channel can be both the IT and the approvals channel.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_roles",
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("conversation_id", sa.String(length=512), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("role", name=op.f("pk_channel_roles")),
    )
    op.execute(
        "INSERT INTO channel_roles (role, conversation_id, assigned_at) "
        "SELECT role, conversation_id, updated_at FROM conversation_refs WHERE role IS NOT NULL"
    )
    op.drop_index(op.f("ix_conversation_refs_role"), table_name="conversation_refs")
    with op.batch_alter_table("conversation_refs", schema=None) as batch_op:
        batch_op.drop_column("role")


def downgrade() -> None:
    with op.batch_alter_table("conversation_refs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=True))
    op.create_index(op.f("ix_conversation_refs_role"), "conversation_refs", ["role"], unique=False)
    # A channel that held both roles keeps "it" (alerts matter most): the old schema held one.
    op.execute(
        "UPDATE conversation_refs SET role = (SELECT MAX(r.role) FROM channel_roles r "
        "WHERE r.conversation_id = conversation_refs.conversation_id)"
    )
    op.drop_table("channel_roles")
