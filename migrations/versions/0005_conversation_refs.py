"""Stored Teams conversation references (1:1 chats, the IT and approvals channels).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_refs",
        sa.Column("conversation_id", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("service_url", sa.String(length=512), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("bot_id", sa.String(length=256), nullable=False),
        sa.Column("user_aad_id", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("installed", sa.Boolean(), nullable=False),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversation_refs")),
    )
    op.create_index(
        op.f("ix_conversation_refs_user_aad_id"), "conversation_refs", ["user_aad_id"], unique=False
    )
    op.create_index(op.f("ix_conversation_refs_role"), "conversation_refs", ["role"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_conversation_refs_role"), table_name="conversation_refs")
    op.drop_index(op.f("ix_conversation_refs_user_aad_id"), table_name="conversation_refs")
    op.drop_table("conversation_refs")
