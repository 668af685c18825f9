"""Usage events say whether a broken stream was continued, how often and from where.

Two columns with defaults: existing rows were answered by one attempt each (or broke for good).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``continuations`` and ``continued_from`` to ``usage_events``."""
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("continuations", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("continued_from", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("continued_from")
        batch.drop_column("continuations")
