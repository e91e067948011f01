"""History of credential-expiry alerts (one per credential and threshold).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credential_alerts",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("owner_kind", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("app_name", sa.String(length=256), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=32), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=256), nullable=True),
        sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_credential_alerts")),
    )
    op.create_index(
        op.f("ix_credential_alerts_object_id"), "credential_alerts", ["object_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_credential_alerts_object_id"), table_name="credential_alerts")
    op.drop_table("credential_alerts")
