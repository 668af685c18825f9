"""Usage events name the tenant credential that served them.

One column with a default: every existing row was served by a provider's global credential (the
only kind there was). Indexed with the time, like tenant and key, for a credential's usage over a
period and for the rate limit service's rebuild of per-credential windows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``credential_id`` to ``usage_events`` and its (credential_id, time) index."""
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("credential_id", sa.String(), nullable=False, server_default=""))
    op.create_index("ix_usage_events_credential_id_time", "usage_events", ["credential_id", "time"])


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("ix_usage_events_credential_id_time", table_name="usage_events")
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("credential_id")
