"""The prompt log: what a logged call asked and answered, one row per request id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the prompt log table, keyed by the usage event's request id."""
    op.create_table(
        "prompt_logs",
        sa.Column("request_id", sa.String(), primary_key=True),
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("response_text", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    """Drop the prompt log."""
    op.drop_table("prompt_logs")
