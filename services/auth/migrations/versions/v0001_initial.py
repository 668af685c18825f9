"""Tenants and API keys.

Revision ID: 0001
Revises:
Create Date: 2025-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "auth_tenants",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("key_defaults", sa.JSON(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "auth_api_keys",
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(63),
            sa.ForeignKey("auth_tenants.tenant_id", name="fk_auth_api_keys_tenant_id"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        # The SHA-256 of the key; the key itself is never stored.
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("allowed_models", sa.JSON(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_auth_api_keys_key_hash", "auth_api_keys", ["key_hash"], unique=True)
    op.create_index("ix_auth_api_keys_tenant_id", "auth_api_keys", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_auth_api_keys_tenant_id", table_name="auth_api_keys")
    op.drop_index("ix_auth_api_keys_key_hash", table_name="auth_api_keys")
    op.drop_table("auth_api_keys")
    op.drop_table("auth_tenants")
