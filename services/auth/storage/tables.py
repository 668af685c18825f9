"""The auth tables. Their own metadata, so the auth and metering schemas never mix, even in one process.

The migrations under ``services/auth/migrations`` create exactly these (a test compares them).
No column holds a key in clear: ``key_hash`` is its SHA-256, ``prefix`` a few leading characters;
upstream credentials are sealed (``services/auth/credentials/envelope.py``), only their last four shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Dialect, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL keeps the zone (timestamptz); SQLite keeps none, so values go in as naive UTC and
    come back marked UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; the auth store takes UTC-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AuthBase(SQLModel, registry=registry()):
    """Base of the auth tables, with metadata of their own."""


class TenantRow(AuthBase, table=True):
    """One tenant; limits, key defaults and policy as JSON documents."""

    __tablename__ = "auth_tenants"

    tenant_id: str = Field(sa_column=Column(String(63), primary_key=True))
    display_name: str = Field(sa_column=Column(String(200), nullable=False))
    limits: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    key_defaults: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    policy: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    create_time: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    update_time: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class KeyRow(AuthBase, table=True):
    """One API key: its hash, never its secret."""

    __tablename__ = "auth_api_keys"
    __table_args__ = (
        Index("ix_auth_api_keys_key_hash", "key_hash", unique=True),
        Index("ix_auth_api_keys_tenant_id", "tenant_id"),
    )

    key_id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant_id: str = Field(
        sa_column=Column(
            String(63), ForeignKey("auth_tenants.tenant_id", name="fk_auth_api_keys_tenant_id"), nullable=False
        )
    )
    name: str = Field(sa_column=Column(String(200), nullable=False))
    key_hash: str = Field(sa_column=Column(String(64), nullable=False))
    prefix: str = Field(sa_column=Column(String(16), nullable=False))
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    allowed_models: list[str] = Field(sa_column=Column(JSON, nullable=False))
    limits: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=True))
    """None: the key inherits its tenant's key defaults."""
    create_time: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    expire_time: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    revoke_time: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))


class RouteRow(AuthBase, table=True):
    """One route override: a model id served by a named provider."""

    __tablename__ = "auth_routes"

    model: str = Field(sa_column=Column(String(200), primary_key=True))
    provider: str = Field(sa_column=Column(String(63), nullable=False))
    upstream_model: str = Field(sa_column=Column(String(200), nullable=False))
    """Empty: the model id itself goes upstream."""
    update_time: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))


class CredentialRow(AuthBase, table=True):
    """One upstream credential: its public settings, and its secret sealed (envelope encryption)."""

    __tablename__ = "auth_credentials"
    __table_args__ = (
        Index("ix_auth_credentials_tenant_provider", "tenant_id", "provider"),
        Index("ix_auth_credentials_kek_id", "kek_id"),
    )

    credential_id: str = Field(sa_column=Column(String(40), primary_key=True))
    tenant_id: str = Field(
        sa_column=Column(
            String(63), ForeignKey("auth_tenants.tenant_id", name="fk_auth_credentials_tenant_id"), nullable=False
        )
    )
    provider: str = Field(sa_column=Column(String(63), nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    priority: int = Field(sa_column=Column(Integer, nullable=False))
    state: str = Field(sa_column=Column(String(16), nullable=False))
    limits: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    secret_last_four: str = Field(sa_column=Column(String(4), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime(), nullable=True))
    """For OAuth: when the access token expires (not secret)."""
    ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    nonce: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    wrapped_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    """The data key, encrypted by the KEK ``kek_id`` (its own nonce first)."""
    kek_id: str = Field(sa_column=Column(String(63), nullable=False))
    aad: str = Field(sa_column=Column(String(400), nullable=False))
    """The associated data both encryptions authenticate (credential id, tenant, provider)."""
    create_time: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    rotate_time: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    update_time: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
