"""Route overrides: which provider serves a bare model id, set at run time by an admin.

The auth service stores them (its database is the one every replica already shares) and checks
them against the providers the configuration knows; routers fetch the whole table every few
seconds (``GetRouteTable``) and apply it before config aliases and prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import grpc

from gateway_common.errors import GatewayError, Reason, invalid_argument

from .storage import NotFound

MAX_MODEL_CHARS = 200
# Model ids as upstreams spell them ("gpt-4o", "meta-llama/Llama-3.1-8B", "gemini-2.5-pro"): no
# spaces, no ':' (``provider:model`` names already say where they go).
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@+-]*")


@dataclass(frozen=True)
class Route:
    """Requests naming ``model`` go to ``provider``, as ``upstream_model`` (empty: ``model``)."""

    model: str
    provider: str
    upstream_model: str
    update_time: datetime


class RouteStore(Protocol):
    """Where overrides live."""

    async def put(self, route: Route) -> Route:
        """Insert or replace the override for ``route.model``."""
        ...

    async def list(self) -> list[Route]:
        """Every override, ordered by model id."""
        ...

    async def delete(self, model: str) -> Route:
        """Remove the override; NotFound when there is none."""
        ...


def check_model_id(model: str, field: str) -> str:
    """A bare model id: 1 to 200 characters, no spaces and no ':'."""
    if not model or len(model) > MAX_MODEL_CHARS or not _MODEL_ID.fullmatch(model):
        raise invalid_argument(
            f"must be a model id of at most {MAX_MODEL_CHARS} characters (letters, digits and . _ / @ + -; "
            "no ':', since provider:model names route themselves)",
            field,
        )
    return model


class Routes:
    """Validated route overrides over a store."""

    def __init__(self, store: RouteStore, providers: Collection[str], clock: Callable[[], datetime]) -> None:
        self._store = store
        self._providers = frozenset(providers)
        self._clock = clock

    async def set(self, model: str, provider: str, upstream_model: str) -> Route:
        """Store the override; INVALID_ARGUMENT naming the provider when the configuration has none such."""
        check_model_id(model, "model")
        if upstream_model:
            check_model_id(upstream_model, "upstream_model")
        if provider not in self._providers:
            raise invalid_argument(
                f"unknown provider {provider!r} (known: {', '.join(sorted(self._providers))})", "provider"
            )
        return await self._store.put(Route(model, provider, upstream_model, self._clock()))

    async def list(self) -> list[Route]:
        """Every override, ordered by model id."""
        return await self._store.list()

    async def delete(self, model: str) -> Route:
        """Remove the override for ``model``; NOT_FOUND when there is none."""
        check_model_id(model, "model")
        try:
            return await self._store.delete(model)
        except NotFound:
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND, Reason.INVALID_REQUEST, f"Route {model!r} not found.", {"param": "model"}
            ) from None
