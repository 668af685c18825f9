"""Stored Responses API responses (``store: true``), per tenant.

A new table only: the ledger is not touched. Keyed by (tenant_id, response_id) so every lookup
names the tenant; ``created_at`` is indexed for the retention purge.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``stored_responses`` and its ``created_at`` index."""
    op.create_table(
        "stored_responses",
        sa.Column("tenant_id", sa.String(), nullable=False),
        sa.Column("response_id", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("previous_response_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("input_items", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "response_id"),
    )
    op.create_index("ix_stored_responses_created_at", "stored_responses", ["created_at"])


def downgrade() -> None:
    """Drop the table (and its index with it)."""
    op.drop_index("ix_stored_responses_created_at", table_name="stored_responses")
    op.drop_table("stored_responses")
