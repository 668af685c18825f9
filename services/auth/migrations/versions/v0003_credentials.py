"""Upstream credentials tenants own, their secrets sealed by envelope encryption.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "auth_credentials",
        sa.Column("credential_id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(63),
            sa.ForeignKey("auth_tenants.tenant_id", name="fk_auth_credentials_tenant_id"),
            nullable=False,
        ),
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("secret_last_four", sa.String(4), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("kek_id", sa.String(63), nullable=False),
        sa.Column("aad", sa.String(400), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotate_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_auth_credentials_tenant_provider", "auth_credentials", ["tenant_id", "provider"])
    op.create_index("ix_auth_credentials_kek_id", "auth_credentials", ["kek_id"])


def downgrade() -> None:
    op.drop_index("ix_auth_credentials_kek_id", "auth_credentials")
    op.drop_index("ix_auth_credentials_tenant_provider", "auth_credentials")
    op.drop_table("auth_credentials")
