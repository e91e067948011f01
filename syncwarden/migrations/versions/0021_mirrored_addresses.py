"""Every address of a mirrored person, not only the primary: a person enrolled with an alias is
not a mover while the alias still reaches their mailbox (issue 16).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Lowercase SMTP addresses separated by spaces (an address has none); "" = not known yet.
    with op.batch_alter_table("directory_people") as table:
        table.add_column(sa.Column("addresses", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("directory_people") as table:
        table.drop_column("addresses")
