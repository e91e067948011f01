"""Tickets, approval decisions, provisioning steps and enrollments.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported: a migration must not change when the code's enum does.
OPEN_TICKET = (
    "status IN ('awaiting_approval', 'approved', 'provisioning', 'waiting_manual', 'failed')"
)


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("subject_upn", sa.String(length=320), nullable=False),
        sa.Column("subject_name", sa.String(length=256), nullable=False),
        sa.Column("subject_mail", sa.String(length=320), nullable=False),
        sa.Column("requester_id", sa.String(length=64), nullable=False),
        sa.Column("requester_upn", sa.String(length=320), nullable=False),
        sa.Column("requester_name", sa.String(length=256), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("previous_mailbox", sa.String(length=320), nullable=True),
        sa.Column("profile_id", sa.String(length=128), nullable=True),
        sa.Column("profile_name", sa.String(length=256), nullable=True),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
    )
    op.create_index(op.f("ix_tickets_status"), "tickets", ["status"], unique=False)
    op.create_index(
        "uq_tickets_open_subject",
        "tickets",
        ["subject_id"],
        unique=True,
        sqlite_where=sa.text(OPEN_TICKET),
        postgresql_where=sa.text(OPEN_TICKET),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("subject_upn", sa.String(length=320), nullable=False),
        sa.Column("subject_name", sa.String(length=256), nullable=False),
        sa.Column("profile_id", sa.String(length=128), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_by_ticket", sa.Integer(), nullable=True),
        sa.Column("updated_by_ticket", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sync_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_kind", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_ticket"],
            ["tickets.id"],
            name=op.f("fk_enrollments_created_by_ticket_tickets"),
        ),
        sa.ForeignKeyConstraint(
            ["updated_by_ticket"],
            ["tickets.id"],
            name=op.f("fk_enrollments_updated_by_ticket_tickets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
    )
    op.create_index(op.f("ix_enrollments_subject_id"), "enrollments", ["subject_id"], unique=False)
    op.create_index(
        "uq_enrollments_active_subject_profile",
        "enrollments",
        ["subject_id", "profile_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_steps_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_steps_idempotency_key")),
        sa.UniqueConstraint("ticket_id", "position", name=op.f("uq_steps_ticket_id_position")),
    )
    op.create_index(op.f("ix_steps_next_attempt_at"), "steps", ["next_attempt_at"], unique=False)
    op.create_index(op.f("ix_steps_state"), "steps", ["state"], unique=False)
    op.create_index(op.f("ix_steps_ticket_id"), "steps", ["ticket_id"], unique=False)
    op.create_table(
        "ticket_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("approver_id", sa.String(length=64), nullable=False),
        sa.Column("approver_name", sa.String(length=256), nullable=False),
        sa.Column("approve", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_ticket_decisions_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_decisions")),
        sa.UniqueConstraint(
            "ticket_id", "approver_id", name=op.f("uq_ticket_decisions_ticket_id_approver_id")
        ),
    )
    op.create_index(
        op.f("ix_ticket_decisions_ticket_id"), "ticket_decisions", ["ticket_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ticket_decisions_ticket_id"), table_name="ticket_decisions")
    op.drop_table("ticket_decisions")
    op.drop_index(op.f("ix_steps_ticket_id"), table_name="steps")
    op.drop_index(op.f("ix_steps_state"), table_name="steps")
    op.drop_index(op.f("ix_steps_next_attempt_at"), table_name="steps")
    op.drop_table("steps")
    op.drop_index(
        "uq_enrollments_active_subject_profile",
        table_name="enrollments",
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.drop_index(op.f("ix_enrollments_subject_id"), table_name="enrollments")
    op.drop_table("enrollments")
    op.drop_index(
        "uq_tickets_open_subject",
        table_name="tickets",
        sqlite_where=sa.text(OPEN_TICKET),
        postgresql_where=sa.text(OPEN_TICKET),
    )
    op.drop_index(op.f("ix_tickets_status"), table_name="tickets")
    op.drop_table("tickets")
