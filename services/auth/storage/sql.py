"""The SQL store: SQLite by default, PostgreSQL when ``DATABASE_URL`` says so, through one async engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway_common.db import unavailable_on_outage

from ..model import ApiKey, KeyChanges, Limits, NewKey, Policy, Quota, Tenant, TenantChanges, Unit, Window
from . import AlreadyExists, NotFound
from .tables import KeyRow, TenantRow


def limits_to_json(limits: Limits) -> dict[str, Any]:
    """A JSON document for ``limits``."""
    return {
        "quotas": [{"unit": str(q.unit), "window": str(q.window), "limit": q.limit} for q in limits.quotas],
        "max_concurrent_requests": limits.max_concurrent_requests,
    }


def limits_from_json(data: dict[str, Any]) -> Limits:
    """The limits a JSON document from :func:`limits_to_json` describes."""
    quotas = tuple(Quota(Unit(q["unit"]), Window(q["window"]), int(q["limit"])) for q in data.get("quotas", ()))
    cap = data.get("max_concurrent_requests")
    return Limits(quotas, None if cap is None else int(cap))


def policy_to_json(policy: Policy) -> dict[str, Any]:
    """A JSON document for ``policy``."""
    return {
        "deny_models": list(policy.deny_models),
        "deny_providers": list(policy.deny_providers),
        "max_prompt_tokens": policy.max_prompt_tokens,
        "log_prompts": policy.log_prompts,
        "refuse_unpriced": policy.refuse_unpriced,
        "continue_broken_streams": policy.continue_broken_streams,
    }


def policy_from_json(data: dict[str, Any]) -> Policy:
    """The policy a JSON document from :func:`policy_to_json` describes."""
    cap = data.get("max_prompt_tokens")
    cont = data.get("continue_broken_streams")
    return Policy(
        deny_models=tuple(data.get("deny_models", ())),
        deny_providers=tuple(data.get("deny_providers", ())),
        max_prompt_tokens=None if cap is None else int(cap),
        log_prompts=bool(data.get("log_prompts", False)),
        # Absent in documents written before the field existed: the old behaviour (allow).
        refuse_unpriced=bool(data.get("refuse_unpriced", False)),
        # Absent or null: the router's own setting decides.
        continue_broken_streams=None if cont is None else bool(cont),
    )


def _tenant(row: TenantRow) -> Tenant:
    return Tenant(
        tenant_id=row.tenant_id,
        display_name=row.display_name,
        limits=limits_from_json(row.limits),
        key_defaults=limits_from_json(row.key_defaults),
        policy=policy_from_json(row.policy),
        create_time=row.create_time,
    )


def _key(row: KeyRow) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        tenant_id=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(row.scopes),
        allowed_models=tuple(row.allowed_models),
        limits=None if row.limits is None else limits_from_json(row.limits),
        create_time=row.create_time,
        expire_time=row.expire_time,
        revoke_time=row.revoke_time,
    )


def _key_limits_json(limits: Limits | None) -> dict[str, Any] | None:
    # Empty limits and none at all mean the same: inherit the tenant's key defaults.
    return None if limits is None or limits.is_empty else limits_to_json(limits)


def _tenant_row(tenant: Tenant) -> TenantRow:
    return TenantRow(
        tenant_id=tenant.tenant_id,
        display_name=tenant.display_name,
        limits=limits_to_json(tenant.limits),
        key_defaults=limits_to_json(tenant.key_defaults),
        policy=policy_to_json(tenant.policy),
        create_time=tenant.create_time,
        update_time=tenant.create_time,
    )


def _key_row(new: NewKey) -> KeyRow:
    key = new.key
    return KeyRow(
        key_id=key.key_id,
        tenant_id=key.tenant_id,
        name=key.name,
        key_hash=new.key_hash,
        prefix=key.prefix,
        scopes=list(key.scopes),
        allowed_models=list(key.allowed_models),
        limits=_key_limits_json(key.limits),
        create_time=key.create_time,
        expire_time=key.expire_time,
        revoke_time=key.revoke_time,
    )


class SqlStore:
    """Tenants and keys in two tables (``auth_tenants``, ``auth_api_keys``), one short session per call."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        # An unreachable database is a 503 the caller may retry, not an internal error; the
        # engine's pre-ping replaces dead pooled connections, so the next call recovers by itself.
        async with unavailable_on_outage("auth database"), self._sessions() as session:
            yield session

    async def ping(self) -> None:
        """Answer once the database is reachable; raise otherwise."""
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def find_key(self, key_hash: str) -> tuple[ApiKey, Tenant] | None:
        """The key with this hash and its tenant (one indexed query)."""
        statement = (
            select(KeyRow, TenantRow)
            .join(TenantRow, col(KeyRow.tenant_id) == col(TenantRow.tenant_id))
            .where(col(KeyRow.key_hash) == key_hash)
        )
        async with self._session() as session:
            found = (await session.exec(statement)).first()
        if found is None:
            return None
        key_row, tenant_row = found
        return _key(key_row), _tenant(tenant_row)

    async def count_keys(self) -> int:
        """How many keys exist, revoked ones included."""
        async with self._session() as session:
            return (await session.exec(select(func.count()).select_from(KeyRow))).one()

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        """Insert a tenant; AlreadyExists when its id is taken (also when a concurrent insert won)."""
        async with self._session() as session:
            if await session.get(TenantRow, tenant.tenant_id) is not None:
                raise AlreadyExists(f"tenant {tenant.tenant_id!r} exists")
            row = _tenant_row(tenant)
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                raise AlreadyExists(f"tenant {tenant.tenant_id!r} exists") from None
            return _tenant(row)

    async def ensure_tenant(self, tenant: Tenant) -> bool:
        """Insert the tenant unless one with its id exists; True when it was inserted."""
        try:
            await self.create_tenant(tenant)
        except AlreadyExists:
            return False
        return True

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant, or None."""
        async with self._session() as session:
            row = await session.get(TenantRow, tenant_id)
            return None if row is None else _tenant(row)

    async def list_tenants(self) -> list[Tenant]:
        """All tenants, oldest first."""
        statement = select(TenantRow).order_by(col(TenantRow.create_time), col(TenantRow.tenant_id))
        async with self._session() as session:
            return [_tenant(row) for row in (await session.exec(statement)).all()]

    async def update_tenant(self, tenant_id: str, changes: TenantChanges, when: datetime) -> Tenant:
        """Replace what ``changes`` sets, under a row lock on PostgreSQL."""
        async with self._session() as session:
            statement = select(TenantRow).where(col(TenantRow.tenant_id) == tenant_id).with_for_update()
            row = (await session.exec(statement)).first()
            if row is None:
                raise NotFound(f"tenant {tenant_id!r}")
            if changes.limits is not None:
                row.limits = limits_to_json(changes.limits)
            if changes.key_defaults is not None:
                row.key_defaults = limits_to_json(changes.key_defaults)
            if changes.policy is not None:
                row.policy = policy_to_json(changes.policy)
            row.update_time = when
            await session.commit()
            return _tenant(row)

    async def create_key(self, new: NewKey) -> ApiKey:
        """Insert a key; NotFound without its tenant, AlreadyExists on a hash collision."""
        async with self._session() as session:
            if await session.get(TenantRow, new.key.tenant_id) is None:
                raise NotFound(f"tenant {new.key.tenant_id!r}")
            row = _key_row(new)
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                # The tenant exists (checked above, and tenants are never deleted): the hash collided.
                raise AlreadyExists("a key with the same hash exists") from None
            return _key(row)

    async def upsert_key(self, new: NewKey) -> tuple[ApiKey, bool]:
        """Insert the key, or move the key with the same hash to its tenant and scopes."""
        async with self._session() as session:
            statement = select(KeyRow).where(col(KeyRow.key_hash) == new.key_hash).with_for_update()
            row = (await session.exec(statement)).first()
            created = row is None
            if row is None:
                row = _key_row(new)
                session.add(row)
            else:
                row.tenant_id = new.key.tenant_id
                row.scopes = list(new.key.scopes)
            await session.commit()
            return _key(row), created

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key, or None."""
        async with self._session() as session:
            row = await session.get(KeyRow, key_id)
            return None if row is None else _key(row)

    async def list_keys(self, tenant_id: str | None, include_revoked: bool) -> list[ApiKey]:
        """Keys of one tenant (or all), oldest first."""
        statement = select(KeyRow)
        if tenant_id is not None:
            statement = statement.where(col(KeyRow.tenant_id) == tenant_id)
        if not include_revoked:
            statement = statement.where(col(KeyRow.revoke_time).is_(None))
        statement = statement.order_by(col(KeyRow.create_time), col(KeyRow.key_id))
        async with self._session() as session:
            rows: Sequence[KeyRow] = (await session.exec(statement)).all()
            return [_key(row) for row in rows]

    async def update_key(self, key_id: str, changes: KeyChanges) -> ApiKey:
        """Replace what ``changes`` sets, under a row lock on PostgreSQL."""
        async with self._session() as session:
            row = await self._locked_key(session, key_id)
            if changes.limits is not None:
                row.limits = _key_limits_json(changes.limits)
            if changes.scopes is not None:
                row.scopes = list(changes.scopes)
            if changes.allowed_models is not None:
                row.allowed_models = list(changes.allowed_models)
            await session.commit()
            return _key(row)

    async def revoke_key(self, key_id: str, when: datetime) -> ApiKey:
        """Mark the key revoked at ``when``; a key revoked before keeps its first revocation time."""
        async with self._session() as session:
            row = await self._locked_key(session, key_id)
            if row.revoke_time is None:
                row.revoke_time = when
                await session.commit()
            return _key(row)

    @staticmethod
    async def _locked_key(session: AsyncSession, key_id: str) -> KeyRow:
        statement = select(KeyRow).where(col(KeyRow.key_id) == key_id).with_for_update()
        row = (await session.exec(statement)).first()
        if row is None:
            raise NotFound(f"key {key_id!r}")
        return row
