"""Route overrides: model id -> provider (+ upstream model), read by every router.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "auth_routes",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("upstream_model", sa.String(200), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("auth_routes")
