"""Profiles and mappings of the built-in scheduling adapter.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduling_profiles",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduling_profiles")),
    )
    op.create_index(
        op.f("ix_scheduling_profiles_email"), "scheduling_profiles", ["email"], unique=False
    )
    op.create_table(
        "scheduling_mappings",
        sa.Column("profile_id", sa.String(length=128), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["scheduling_profiles.id"],
            name=op.f("fk_scheduling_mappings_profile_id_scheduling_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("profile_id", name=op.f("pk_scheduling_mappings")),
    )


def downgrade() -> None:
    op.drop_table("scheduling_mappings")
    op.drop_index(op.f("ix_scheduling_profiles_email"), table_name="scheduling_profiles")
    op.drop_table("scheduling_profiles")
