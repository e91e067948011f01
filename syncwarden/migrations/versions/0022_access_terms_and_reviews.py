"""Time-bound access (an end date on tickets and enrollments, its reminder and removal) and
periodic access reviews (issue 16, parts 2 and 3).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("access_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("access_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("expiry_reminded_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("expiry_ticket_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_enrollments_access_until"), ["access_until"], unique=False
        )
    op.create_table(
        "access_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_by", sa.String(length=320), nullable=False),
        sa.Column("reviewers", sa.String(length=16), nullable=False),
        sa.Column("default_decision", sa.String(length=16), nullable=False),
        sa.Column("open_marker", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_reviews")),
        sa.UniqueConstraint("open_marker", name=op.f("uq_access_reviews_open_marker")),
    )
    op.create_table(
        "access_review_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("subject_name", sa.String(length=256), nullable=False),
        sa.Column("subject_upn", sa.String(length=320), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("reviewer_id", sa.String(length=64), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("decided_by", sa.String(length=320), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removal_ticket_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["access_reviews.id"],
            name=op.f("fk_access_review_items_review_id_access_reviews"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_review_items")),
        sa.UniqueConstraint(
            "review_id",
            "enrollment_id",
            name=op.f("uq_access_review_items_review_id_enrollment_id"),
        ),
    )
    op.create_index(op.f("ix_access_review_items_review_id"), "access_review_items", ["review_id"])
    op.create_index(
        op.f("ix_access_review_items_reviewer_id"), "access_review_items", ["reviewer_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_access_review_items_reviewer_id"), table_name="access_review_items")
    op.drop_index(op.f("ix_access_review_items_review_id"), table_name="access_review_items")
    op.drop_table("access_review_items")
    op.drop_table("access_reviews")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollments_access_until"))
        batch_op.drop_column("expiry_ticket_id")
        batch_op.drop_column("expiry_reminded_at")
        batch_op.drop_column("access_until")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("access_until")
