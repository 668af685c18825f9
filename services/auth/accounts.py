"""What the auth service does: resolve keys to principals and administer tenants and keys.

It works on domain values over a :class:`~services.auth.storage.Store`, with an injected clock so
expiry is testable without waiting. Input has been checked by the servicer's translation; the
rules that need the store or the clock (a tenant exists, an expiry lies ahead) are checked here.
Nothing here ever logs or echoes a key: only key ids, which are not secret.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from gateway_common.errors import GatewayError, Reason, invalid_argument

from .keys import display_prefix, generate_key, hash_key, new_key_id
from .model import (
    DEFAULT_SCOPES,
    ApiKey,
    KeyChanges,
    Limits,
    NewKey,
    Policy,
    Principal,
    Scope,
    Tenant,
    TenantChanges,
    resolve_principal,
)
from .storage import AlreadyExists, NotFound, Store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(UTC)


def missing_api_key() -> GatewayError:
    """No key was presented."""
    return GatewayError(
        grpc.StatusCode.UNAUTHENTICATED,
        Reason.MISSING_API_KEY,
        "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
    )


def invalid_api_key() -> GatewayError:
    """The key is unknown, expired or revoked; which of these is not said, and the key is never echoed."""
    return GatewayError(grpc.StatusCode.UNAUTHENTICATED, Reason.INVALID_API_KEY, "Incorrect API key provided.")


def _not_found(what: str, ident: str, param: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.NOT_FOUND, Reason.INVALID_REQUEST, f"{what} {ident!r} not found.", {"param": param}
    )


class Accounts:
    """Tenants and keys, over a store."""

    def __init__(self, store: Store, clock: Clock = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def authenticate(self, api_key: str) -> Principal:
        """The principal of a usable key; UNAUTHENTICATED for a missing, unknown, expired or revoked one."""
        if not api_key:
            raise missing_api_key()
        found = await self._store.find_key(hash_key(api_key))
        if found is None:
            log.debug("authentication refused: unknown key")
            raise invalid_api_key()
        key, tenant = found
        refusal = key.refusal(self._clock())
        if refusal is not None:
            log.info("authentication refused: key %s of tenant %s is %s", key.key_id, key.tenant_id, refusal)
            raise invalid_api_key()
        return resolve_principal(key, tenant)

    async def principal_by_key_id(self, key_id: str) -> Principal:
        """The principal of the usable key ``key_id`` (for work a key submitted earlier, such as an
        async job); PERMISSION_DENIED when the key is unknown, expired or revoked since."""
        key = await self._store.get_key(key_id) if key_id else None
        tenant = await self._store.get_tenant(key.tenant_id) if key is not None else None
        if key is None or tenant is None or key.refusal(self._clock()) is not None:
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.PERMISSION_DENIED,
                "The API key that submitted this work is no longer valid (revoked, expired or deleted).",
                {"param": "key_id"},
            )
        return resolve_principal(key, tenant)

    def cache_ttl_seconds(self, principal: Principal, limit: int) -> int:
        """How long a caller may reuse ``principal``: ``limit``, but never past the key's expiry."""
        if principal.expire_time is None:
            return limit
        left = (principal.expire_time - self._clock()).total_seconds()
        return max(0, min(limit, math.floor(left)))

    async def authorize_admin(self, api_key: str) -> Principal:
        """The principal of a usable key holding the ``admin`` scope; PERMISSION_DENIED without it."""
        principal = await self.authenticate(api_key)
        if Scope.ADMIN not in principal.scopes:
            log.info("admin call refused: key %s lacks the admin scope", principal.key_id)
            raise GatewayError(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.PERMISSION_DENIED,
                "This API key lacks the 'admin' scope needed for admin calls.",
                {"scope": str(Scope.ADMIN)},
            )
        return principal

    async def create_tenant(
        self, tenant_id: str, display_name: str, limits: Limits, key_defaults: Limits, policy: Policy
    ) -> Tenant:
        """A new tenant; ALREADY_EXISTS when the id is taken."""
        tenant = Tenant(tenant_id, display_name or tenant_id, limits, key_defaults, policy, self._clock())
        try:
            created = await self._store.create_tenant(tenant)
        except AlreadyExists:
            raise GatewayError(
                grpc.StatusCode.ALREADY_EXISTS,
                Reason.INVALID_REQUEST,
                f"Tenant {tenant_id!r} already exists.",
                {"param": "tenant.tenant_id"},
            ) from None
        log.info("tenant %s created", tenant_id)
        return created

    async def list_tenants(self) -> list[Tenant]:
        """All tenants, oldest first."""
        return await self._store.list_tenants()

    async def update_tenant(self, tenant_id: str, changes: TenantChanges) -> Tenant:
        """The tenant with ``changes`` applied; NOT_FOUND when it does not exist."""
        try:
            tenant = await self._store.update_tenant(tenant_id, changes, self._clock())
        except NotFound:
            raise _not_found("Tenant", tenant_id, "tenant_id") from None
        log.info("tenant %s updated", tenant_id)
        return tenant

    async def create_key(
        self,
        tenant_id: str,
        name: str,
        scopes: tuple[str, ...],
        allowed_models: tuple[str, ...],
        limits: Limits,
        expire_time: datetime | None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which exists only in this return value and the caller's answer."""
        now = self._clock()
        if expire_time is not None and expire_time <= now:
            raise invalid_argument("expire_time must lie in the future", "expire_time")
        secret = generate_key()
        key = ApiKey(
            key_id=new_key_id(),
            tenant_id=tenant_id,
            name=name,
            prefix=display_prefix(secret),
            scopes=scopes or tuple(str(s) for s in DEFAULT_SCOPES),
            allowed_models=allowed_models,
            limits=None if limits.is_empty else limits,
            create_time=now,
            expire_time=expire_time,
        )
        try:
            created = await self._store.create_key(NewKey(key, hash_key(secret)))
        except NotFound:
            raise _not_found("Tenant", tenant_id, "tenant_id") from None
        log.info("key %s created in tenant %s", created.key_id, tenant_id)
        return created, secret

    async def list_keys(self, tenant_id: str | None, include_revoked: bool) -> list[ApiKey]:
        """Keys of one tenant (NOT_FOUND when it does not exist) or of all."""
        if tenant_id is not None and await self._store.get_tenant(tenant_id) is None:
            raise _not_found("Tenant", tenant_id, "tenant_id")
        return await self._store.list_keys(tenant_id, include_revoked)

    async def update_key(self, key_id: str, changes: KeyChanges) -> ApiKey:
        """The key with ``changes`` applied; NOT_FOUND when unknown, FAILED_PRECONDITION when revoked."""
        current = await self._store.get_key(key_id)
        if current is None:
            raise _not_found("Key", key_id, "key_id")
        if current.revoke_time is not None:
            raise GatewayError(
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.INVALID_REQUEST,
                f"Key {key_id!r} is revoked and cannot be changed.",
                {"param": "key_id"},
            )
        try:
            key = await self._store.update_key(key_id, changes)
        except NotFound:
            raise _not_found("Key", key_id, "key_id") from None
        log.info("key %s updated", key_id)
        return key

    async def revoke_key(self, key_id: str) -> ApiKey:
        """The key, revoked for good (revoking twice keeps the first time); NOT_FOUND when unknown."""
        try:
            key = await self._store.revoke_key(key_id, self._clock())
        except NotFound:
            raise _not_found("Key", key_id, "key_id") from None
        log.info("key %s of tenant %s revoked", key_id, key.tenant_id)
        return key
