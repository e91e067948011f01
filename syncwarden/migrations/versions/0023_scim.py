"""SCIM provisioning from Entra ID: the provisioned users and the hashed secret tokens (issue 17).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scim_users",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("user_name_key", sa.String(length=320), nullable=False),
        sa.Column("user_name", sa.String(length=320), nullable=False),
        sa.Column("external_id", sa.String(length=320), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("directory_id", sa.String(length=64), nullable=True),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_name_key", name="uq_scim_users_user_name_key"),
    )
    op.create_index("ix_scim_users_external_id", "scim_users", ["external_id"])
    op.create_index("ix_scim_users_active", "scim_users", ["active"])
    op.create_index("ix_scim_users_directory_id", "scim_users", ["directory_id"])
    op.create_table(
        "scim_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("digest", name="uq_scim_tokens_digest"),
    )


def downgrade() -> None:
    op.drop_table("scim_tokens")
    op.drop_index("ix_scim_users_directory_id", table_name="scim_users")
    op.drop_index("ix_scim_users_active", table_name="scim_users")
    op.drop_index("ix_scim_users_external_id", table_name="scim_users")
    op.drop_table("scim_users")
