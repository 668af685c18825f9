"""Sealed credentials in the ``auth_credentials`` table, one short session per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway_common.db import unavailable_on_outage

from ..model import Quota, Unit, Window
from ..storage import NotFound
from ..storage.tables import CredentialRow, TenantRow
from .envelope import Sealed
from .model import Credential, CredentialChanges, Kind, State


def _limits_json(limits: tuple[Quota, ...]) -> list[dict[str, Any]]:
    return [{"unit": str(q.unit), "window": str(q.window), "limit": q.limit} for q in limits]


def _limits(data: list[dict[str, Any]]) -> tuple[Quota, ...]:
    return tuple(Quota(Unit(q["unit"]), Window(q["window"]), int(q["limit"])) for q in data)


def _credential(row: CredentialRow) -> Credential:
    return Credential(
        credential_id=row.credential_id,
        tenant_id=row.tenant_id,
        provider=row.provider,
        kind=Kind(row.kind),
        name=row.name,
        priority=row.priority,
        state=State(row.state),
        limits=_limits(row.limits),
        secret_last_four=row.secret_last_four,
        expires_at=row.expires_at,
        sealed=Sealed(row.ciphertext, row.nonce, row.wrapped_key, row.kek_id, row.aad),
        create_time=row.create_time,
        rotate_time=row.rotate_time,
    )


def _set_sealed(row: CredentialRow, sealed: Sealed) -> None:
    row.ciphertext, row.nonce, row.wrapped_key = sealed.ciphertext, sealed.nonce, sealed.wrapped_key
    row.kek_id, row.aad = sealed.kek_id, sealed.aad


class SqlCredentialStore:
    """Credentials on the auth database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        async with unavailable_on_outage("auth database"), self._sessions() as session:
            yield session

    async def create(self, credential: Credential) -> Credential:
        """Insert; NotFound when the tenant does not exist."""
        row = CredentialRow(
            credential_id=credential.credential_id,
            tenant_id=credential.tenant_id,
            provider=credential.provider,
            kind=str(credential.kind),
            name=credential.name,
            priority=credential.priority,
            state=str(credential.state),
            limits=_limits_json(credential.limits),
            secret_last_four=credential.secret_last_four,
            expires_at=credential.expires_at,
            ciphertext=b"",
            nonce=b"",
            wrapped_key=b"",
            kek_id="",
            aad="",
            create_time=credential.create_time,
            rotate_time=credential.rotate_time,
            update_time=credential.rotate_time,
        )
        _set_sealed(row, credential.sealed)
        async with self._session() as session:
            if await session.get(TenantRow, credential.tenant_id) is None:
                raise NotFound(f"tenant {credential.tenant_id!r}")
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                raise NotFound(f"tenant {credential.tenant_id!r}") from None
            return _credential(row)

    async def get(self, credential_id: str) -> Credential | None:
        """The credential, or None."""
        async with self._session() as session:
            row = await session.get(CredentialRow, credential_id)
            return None if row is None else _credential(row)

    async def select(self, tenant_id: str | None, provider: str | None) -> list[Credential]:
        """Credentials of one tenant and/or provider (or all), by tenant, provider, priority, age."""
        statement = select(CredentialRow)
        if tenant_id is not None:
            statement = statement.where(col(CredentialRow.tenant_id) == tenant_id)
        if provider is not None:
            statement = statement.where(col(CredentialRow.provider) == provider)
        statement = statement.order_by(
            col(CredentialRow.tenant_id),
            col(CredentialRow.provider),
            col(CredentialRow.priority),
            col(CredentialRow.create_time),
            col(CredentialRow.credential_id),
        )
        async with self._session() as session:
            return [_credential(row) for row in (await session.exec(statement)).all()]

    async def update(self, credential_id: str, changes: CredentialChanges, when: datetime) -> Credential:
        """Apply ``changes`` under a row lock; NotFound when absent."""
        async with self._session() as session:
            row = await self._locked(session, credential_id)
            if changes.name is not None:
                row.name = changes.name
            if changes.priority is not None:
                row.priority = changes.priority
            if changes.state is not None:
                row.state = str(changes.state)
            if changes.limits is not None:
                row.limits = _limits_json(changes.limits)
            row.update_time = when
            await session.commit()
            return _credential(row)

    async def replace_secret(
        self, credential_id: str, sealed: Sealed, last_four: str, expires_at: datetime | None, when: datetime
    ) -> Credential:
        """Store a newly sealed secret; NotFound when absent."""
        async with self._session() as session:
            row = await self._locked(session, credential_id)
            _set_sealed(row, sealed)
            row.secret_last_four, row.expires_at = last_four, expires_at
            row.rotate_time = row.update_time = when
            await session.commit()
            return _credential(row)

    async def rewrap(self, credential_id: str, expected_kek_id: str, sealed: Sealed) -> bool:
        """Store a re-wrapped data key unless the row changed KEK meanwhile (a rotation raced us)."""
        async with self._session() as session:
            row = await self._locked(session, credential_id)
            if row.kek_id != expected_kek_id or row.ciphertext != sealed.ciphertext:
                return False
            _set_sealed(row, sealed)
            await session.commit()
            return True

    async def delete(self, credential_id: str) -> None:
        """Remove for good; NotFound when absent."""
        async with self._session() as session:
            row = await self._locked(session, credential_id)
            await session.delete(row)
            await session.commit()

    async def kek_usage(self) -> dict[str, str]:
        """One credential id per KEK id in use (to check at start that every KEK opens its rows)."""
        statement = select(CredentialRow.kek_id, func.min(CredentialRow.credential_id)).group_by(
            col(CredentialRow.kek_id)
        )
        async with self._session() as session:
            return {kek_id: credential_id for kek_id, credential_id in (await session.exec(statement)).all()}

    async def ids_not_under(self, kek_id: str) -> list[str]:
        """Credentials whose data key another KEK wraps."""
        statement = select(CredentialRow.credential_id).where(col(CredentialRow.kek_id) != kek_id)
        async with self._session() as session:
            return list((await session.exec(statement)).all())

    @staticmethod
    async def _locked(session: AsyncSession, credential_id: str) -> CredentialRow:
        statement = select(CredentialRow).where(col(CredentialRow.credential_id) == credential_id).with_for_update()
        row = (await session.exec(statement)).first()
        if row is None:
            raise NotFound(f"credential {credential_id!r}")
        return row
