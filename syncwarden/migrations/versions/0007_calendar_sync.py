"""Calendar sync: built-in appointments, sync state per enrollment, event links, busy blocks.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduling_appointments",
        sa.Column("profile_id", sa.String(length=128), nullable=False),
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("all_day", sa.Boolean(), nullable=False),
        sa.Column("location", sa.String(length=512), nullable=True),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("profile_id", "id", name=op.f("pk_scheduling_appointments")),
    )
    with op.batch_alter_table("scheduling_appointments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scheduling_appointments_profile_start", ["profile_id", "start_at"], unique=False
        )

    op.create_table(
        "sync_busy_blocks",
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=512), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("show_as", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_sync_busy_blocks_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("enrollment_id", "event_id", name=op.f("pk_sync_busy_blocks")),
    )
    op.create_table(
        "sync_event_links",
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.String(length=512), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("change_key", sa.String(length=128), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_sync_event_links_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("enrollment_id", "source_id", name=op.f("pk_sync_event_links")),
    )
    with op.batch_alter_table("sync_event_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_event_links_event_id"), ["event_id"], unique=False
        )

    op.create_table(
        "sync_states",
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delta_link", sa.Text(), nullable=True),
        sa.Column("delta_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_count", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("recreated", sa.Integer(), nullable=False),
        sa.Column("busy_blocks", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.id"],
            name=op.f("fk_sync_states_enrollment_id_enrollments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("enrollment_id", name=op.f("pk_sync_states")),
    )
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_states_requested_at"), ["requested_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sync_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_states_requested_at"))

    op.drop_table("sync_states")
    with op.batch_alter_table("sync_event_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_event_links_event_id"))

    op.drop_table("sync_event_links")
    op.drop_table("sync_busy_blocks")
    with op.batch_alter_table("scheduling_appointments", schema=None) as batch_op:
        batch_op.drop_index("ix_scheduling_appointments_profile_start")

    op.drop_table("scheduling_appointments")
