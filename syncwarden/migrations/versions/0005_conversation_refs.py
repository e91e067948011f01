"""Stored Teams conversation references, and the cards posted about each ticket.

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
        sa.Column("user_mri", sa.String(length=256), nullable=True),
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
    op.create_table(
        "card_posts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_ref", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=512), nullable=False),
        sa.Column("activity_id", sa.String(length=256), nullable=False),
        sa.Column("service_url", sa.String(length=512), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_posts")),
    )
    op.create_index(op.f("ix_card_posts_ticket_ref"), "card_posts", ["ticket_ref"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_card_posts_ticket_ref"), table_name="card_posts")
    op.drop_table("card_posts")
    op.drop_index(op.f("ix_conversation_refs_role"), table_name="conversation_refs")
    op.drop_index(op.f("ix_conversation_refs_user_aad_id"), table_name="conversation_refs")
    op.drop_table("conversation_refs")
