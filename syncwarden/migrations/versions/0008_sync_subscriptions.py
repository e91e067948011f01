"""Graph change-notification subscriptions, one per enrolled mailbox.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_subscriptions",
        sa.Column("mailbox_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.String(length=128), nullable=False),
        sa.Column("client_state_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox_id", name=op.f("pk_sync_subscriptions")),
        sa.UniqueConstraint("subscription_id", name=op.f("uq_sync_subscriptions_subscription_id")),
    )


def downgrade() -> None:
    op.drop_table("sync_subscriptions")
