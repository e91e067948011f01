"""Access reconciliation's memory: delta links, the mirror of the people it cares about and of
the sync group's members, and the drift it found (issue 16).

Revision ID: 0020
Revises: 0017
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reconcile_links",
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("delta_link", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "directory_people",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("primary_address", sa.String(length=320), nullable=True),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("upn", sa.String(length=320), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sync_group_members",
        sa.Column("group_id", sa.String(length=64), primary_key=True),
        sa.Column("member_id", sa.String(length=64), primary_key=True),
    )
    op.create_table(
        "drift_findings",
        sa.Column("key", sa.String(length=128), primary_key=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ignored_fingerprint", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_drift_findings_kind", "drift_findings", ["kind"])
    op.create_index("ix_drift_findings_resolved_at", "drift_findings", ["resolved_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_findings_resolved_at", table_name="drift_findings")
    op.drop_index("ix_drift_findings_kind", table_name="drift_findings")
    op.drop_table("drift_findings")
    op.drop_table("sync_group_members")
    op.drop_table("directory_people")
    op.drop_table("reconcile_links")
