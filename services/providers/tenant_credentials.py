"""A tenant's own upstream credentials: resolved from auth, cached, and OAuth tokens kept fresh.

The clear secret lives only in this process's memory: in the cache (for ``cache_ttl_seconds``, as
auth says) and in :data:`current_credential` for the duration of one upstream call. It is never
logged; adapters redact it from every error they build.

A tenant without credentials for a provider is cached too ("has none"), so that tenant's calls
use the provider's global key with no round trip to auth once the answer is known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import timestamp_pb2

from gateway.auth.v1 import credentials_pb2

if TYPE_CHECKING:
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    from gateway.auth.v1.credentials_pb2_grpc import CredentialServiceAsyncStub as CredentialSource

log = logging.getLogger(__name__)

REFRESH_BEFORE_S = 300.0
"""An OAuth access token is refreshed when it expires within this long."""

DEFAULT_CACHE_TTL_S = 30.0
"""How long a resolution is cached when auth gives no ``cache_ttl_seconds``."""


@dataclass(frozen=True, slots=True)
class TenantCredential:
    """One usable credential: its id, priority and limits, and its secret in clear."""

    credential_id: str
    priority: int
    limits: tuple[Any, ...]
    """The ``gateway.quota.v1.Quota`` messages of the credential's own windows."""
    kind: int
    """``credentials_pb2.CredentialKind``."""
    secret: str
    """The API key, or the OAuth access token."""
    refresh_token: str = ""
    expires_at_s: float | None = None

    def __repr__(self) -> str:
        # Never print the secret (a repr ends up in tracebacks and debug logs).
        return f"TenantCredential({self.credential_id!r}, priority={self.priority})"


current_credential: ContextVar[TenantCredential | None] = ContextVar("tenant_credential", default=None)
"""The tenant credential the current upstream call must use; None for the provider's own key."""


def current_secret() -> tuple[str, ...]:
    """The current call's tenant secret, for the redaction of errors; empty when there is none."""
    credential = current_credential.get()
    return (credential.secret,) if credential is not None else ()


def _credential(usable: credentials_pb2.UsableCredential) -> TenantCredential | None:
    public, secret = usable.credential, usable.secret
    which = secret.WhichOneof("secret")
    if which == "api_key":
        return TenantCredential(
            public.credential_id,
            public.priority,
            tuple(public.limits),
            credentials_pb2.CREDENTIAL_KIND_API_KEY,
            secret.api_key,
        )
    if which == "oauth":
        tokens = secret.oauth
        expires = tokens.expires_at.ToSeconds() if tokens.HasField("expires_at") else None
        return TenantCredential(
            public.credential_id,
            public.priority,
            tuple(public.limits),
            credentials_pb2.CREDENTIAL_KIND_OAUTH,
            tokens.access_token,
            tokens.refresh_token,
            expires,
        )
    return None


@dataclass(frozen=True, slots=True)
class OAuthClientConfig:
    """Where and as whom a provider's OAuth tokens are refreshed."""

    token_url: str
    client_id: str
    client_secret: str = ""


class OAuthRefresher:
    """Refreshes access tokens at each provider's token endpoint, once per credential at a time."""

    def __init__(
        self,
        source: CredentialSource,
        clients: Mapping[str, OAuthClientConfig],
        *,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 10.0,
    ) -> None:
        self._source = source
        self._configs = dict(clients)
        self._clock = clock
        self._timeout_s = timeout_s
        self._clients: dict[str, AsyncOAuth2Client] = {}
        self._inflight: dict[str, asyncio.Task[TenantCredential]] = {}
        # The newest token set per credential, so a refresh outlives the cached resolution.
        self._fresh: dict[str, TenantCredential] = {}

    def needs_refresh(self, credential: TenantCredential) -> bool:
        """Whether an OAuth credential's access token expires within :data:`REFRESH_BEFORE_S`."""
        return (
            credential.kind == credentials_pb2.CREDENTIAL_KIND_OAUTH
            and credential.expires_at_s is not None
            and credential.expires_at_s - self._clock() < REFRESH_BEFORE_S
        )

    async def fresh(self, provider: str, credential: TenantCredential) -> TenantCredential:
        """``credential``, refreshed first when its token is about to expire.

        Concurrent calls for one credential share one refresh (single flight). A refresh that fails
        leaves the current token in use (the upstream will say whether it still works).
        """
        known = self._fresh.get(credential.credential_id)
        if known is not None and (known.expires_at_s or 0) >= (credential.expires_at_s or 0):
            credential = known
        if not self.needs_refresh(credential) or not credential.refresh_token:
            return credential
        config = self._configs.get(provider)
        if config is None:
            return credential
        task = self._inflight.get(credential.credential_id)
        if task is None:
            task = asyncio.create_task(self._refresh(provider, config, credential))
            self._inflight[credential.credential_id] = task
            task.add_done_callback(lambda _: self._inflight.pop(credential.credential_id, None))
        try:
            # Shielded: one caller giving up does not cancel the refresh the others wait for.
            return await asyncio.shield(task)
        except Exception as exc:
            log.warning("refreshing credential %s failed: %s", credential.credential_id, type(exc).__name__)
            return credential

    def _client(self, provider: str, config: OAuthClientConfig) -> AsyncOAuth2Client:
        client = self._clients.get(provider)
        if client is None:
            # Imported on the first refresh: authlib (and the httpx and cryptography it pulls in)
            # weighs ~25 MB resident, and most providers services never refresh a token.
            from authlib.integrations.httpx_client import AsyncOAuth2Client

            client = AsyncOAuth2Client(
                client_id=config.client_id,
                client_secret=config.client_secret or None,
                token_endpoint_auth_method="client_secret_post" if config.client_secret else "none",
                timeout=self._timeout_s,
            )
            self._clients[provider] = client
        return client

    async def _refresh(
        self, provider: str, config: OAuthClientConfig, credential: TenantCredential
    ) -> TenantCredential:
        token = await self._client(provider, config).refresh_token(
            config.token_url, refresh_token=credential.refresh_token
        )
        access = str(token["access_token"])
        refresh = str(token.get("refresh_token") or "")
        expires_at = token.get("expires_at")
        tokens = credentials_pb2.OAuthTokens(
            access_token=access,
            refresh_token=refresh,
            token_type=str(token.get("token_type") or "Bearer"),
            scopes=str(token.get("scope") or "").split(),
        )
        if expires_at is not None:
            tokens.expires_at.CopyFrom(timestamp_pb2.Timestamp(seconds=int(expires_at)))
        await self._source.StoreRefreshedTokens(
            credentials_pb2.StoreRefreshedTokensRequest(credential_id=credential.credential_id, tokens=tokens),
            timeout=self._timeout_s,
        )
        fresh = replace(
            credential,
            secret=access,
            refresh_token=refresh or credential.refresh_token,
            expires_at_s=float(expires_at) if expires_at is not None else None,
        )
        self._fresh[credential.credential_id] = fresh
        return fresh

    async def aclose(self) -> None:
        """Close the token endpoints' HTTP clients and forget the tokens."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        self._fresh.clear()


class CredentialCache:
    """``ResolveCredentials`` answers per (tenant, provider), cached for the TTL auth gives."""

    def __init__(
        self, source: CredentialSource, *, clock: Callable[[], float] = time.monotonic, timeout_s: float = 5.0
    ) -> None:
        self._source = source
        self._clock = clock
        self._timeout_s = timeout_s
        self._entries: dict[tuple[str, str], tuple[float, tuple[TenantCredential, ...]]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task[tuple[TenantCredential, ...]]] = {}

    async def get(self, tenant_id: str, provider: str) -> tuple[TenantCredential, ...]:
        """The tenant's usable credentials for ``provider``, best priority first (empty: none)."""
        key = (tenant_id, provider)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._resolve(key))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _resolve(self, key: tuple[str, str]) -> tuple[TenantCredential, ...]:
        try:
            answer = await self._source.ResolveCredentials(
                credentials_pb2.ResolveCredentialsRequest(tenant_id=key[0], provider=key[1]), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # An auth service without tenant credentials: every tenant has none (cached like any answer).
            answer = credentials_pb2.ResolveCredentialsResponse()
        found = tuple(c for c in map(_credential, answer.credentials) if c is not None)
        ttl = answer.cache_ttl_seconds if answer.cache_ttl_seconds > 0 else DEFAULT_CACHE_TTL_S
        self._entries[key] = (self._clock() + ttl, found)
        return found
