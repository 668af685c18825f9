"""Route overrides in the ``auth_routes`` table, one short session per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway_common.db import unavailable_on_outage

from ..routes import Route
from . import NotFound
from .tables import RouteRow


def _route(row: RouteRow) -> Route:
    return Route(row.model, row.provider, row.upstream_model, row.update_time)


class SqlRouteStore:
    """Route overrides on the auth database (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        async with unavailable_on_outage("auth database"), self._sessions() as session:
            yield session

    async def put(self, route: Route) -> Route:
        """Insert the override or replace the one for the same model (under a row lock on PostgreSQL)."""
        async with self._session() as session:
            statement = select(RouteRow).where(col(RouteRow.model) == route.model).with_for_update()
            row = (await session.exec(statement)).first()
            if row is None:
                row = RouteRow(
                    model=route.model,
                    provider=route.provider,
                    upstream_model=route.upstream_model,
                    update_time=route.update_time,
                )
                session.add(row)
            else:
                row.provider = route.provider
                row.upstream_model = route.upstream_model
                row.update_time = route.update_time
            await session.commit()
            return _route(row)

    async def list(self) -> list[Route]:
        """Every override, ordered by model id."""
        async with self._session() as session:
            rows = (await session.exec(select(RouteRow).order_by(col(RouteRow.model)))).all()
            return [_route(row) for row in rows]

    async def delete(self, model: str) -> Route:
        """Remove the override for ``model``; NotFound when there is none."""
        async with self._session() as session:
            row = await session.get(RouteRow, model)
            if row is None:
                raise NotFound(f"route {model!r}")
            removed = _route(row)
            await session.delete(row)
            await session.commit()
            return removed
