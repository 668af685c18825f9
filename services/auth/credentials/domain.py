"""What the credential store does: who may act on which tenant's credentials, what is accepted,
sealing and opening secrets, the short resolve cache, the start-time KEK check and re-wrapping.

An admin key acts on any tenant; any other key only on its own tenant, and another tenant's
credential looks exactly like one that does not exist (NOT_FOUND). Nothing here logs a secret:
only credential ids, tenants, providers and KEK ids, none of which is secret.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime

import grpc

from gateway_common.config import ConfigError
from gateway_common.errors import GatewayError, Reason, invalid_argument

from ..model import Principal, Quota, Scope, Unit
from ..storage import NotFound
from .envelope import KeyRing, SealError, row_aad
from .keyring import KEK_ENV, KEK_FILE_ENV
from .model import Credential, CredentialChanges, Kind, Resolved, Secret, State
from .store import SqlCredentialStore

log = logging.getLogger(__name__)

PROVIDER_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MAX_NAME_CHARS = 200
MAX_PRIORITY = 1_000_000
MAX_SECRET_BYTES = 64 * 1024
_CREDENTIAL_ID = re.compile(r"cred_[0-9a-f]{16}")
_COUNTED_UNITS = (Unit.REQUESTS, Unit.TOKENS)
_MAX_CACHED = 1024


def new_credential_id() -> str:
    """A credential's public id: ``cred_`` and 16 random hex digits."""
    return "cred_" + secrets.token_hex(8)


def _not_found(credential_id: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.NOT_FOUND,
        Reason.INVALID_REQUEST,
        f"Credential {credential_id!r} not found.",
        {"param": "credential_id"},
    )


def _unreadable(what: str) -> GatewayError:
    # The service checked every KEK at start; a row that fails now was altered behind its back.
    return GatewayError(grpc.StatusCode.INTERNAL, Reason.INTERNAL, f"{what} cannot be decrypted.")


def check_provider(provider: str, field: str = "provider") -> str:
    """A provider name as the configuration spells it."""
    if not PROVIDER_PATTERN.fullmatch(provider):
        raise invalid_argument("must be a provider name: 1-63 characters of a-z, 0-9, '_', '.' or '-'", field)
    return provider


def check_credential_name(name: str, field: str = "name") -> str:
    """A display name of at most 200 characters."""
    if len(name) > MAX_NAME_CHARS:
        raise invalid_argument(f"must be at most {MAX_NAME_CHARS} characters", field)
    return name


def check_priority(priority: int, field: str = "priority") -> int:
    """0 (tried first) to 1 000 000."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise invalid_argument(f"must be between 0 and {MAX_PRIORITY}", field)
    return priority


def check_limits(limits: tuple[Quota, ...], field: str = "limits") -> tuple[Quota, ...]:
    """Requests or tokens per window, each (unit, window) at most once, every limit at least 1."""
    seen: set[tuple[Unit, object]] = set()
    for i, quota in enumerate(limits):
        if quota.unit not in _COUNTED_UNITS:
            raise invalid_argument("a credential's quota counts requests or tokens", f"{field}[{i}].unit")
        if quota.limit < 1:
            raise invalid_argument("must be at least 1 (remove the quota for no limit)", f"{field}[{i}].limit")
        if (quota.unit, quota.window) in seen:
            raise invalid_argument("repeats the unit and window of an earlier quota", f"{field}[{i}]")
        seen.add((quota.unit, quota.window))
    return limits


def check_secret(secret: Secret, field: str = "secret") -> Secret:
    """A secret with something in it, of a sane size."""
    if not secret.last_four:
        raise invalid_argument("the API key or access token is required", field)
    if len(secret.payload) > MAX_SECRET_BYTES:
        raise invalid_argument(f"must be at most {MAX_SECRET_BYTES} bytes", field)
    return secret


class Credentials:
    """Tenant-owned upstream credentials over a store and a key ring."""

    def __init__(
        self,
        store: SqlCredentialStore,
        keyring: KeyRing,
        clock: Callable[[], datetime],
        cache_ttl_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._cache_ttl_s = cache_ttl_s
        self._monotonic = monotonic
        self._cache: dict[tuple[str, str], tuple[float, list[Resolved]]] = {}

    @property
    def cache_ttl_s(self) -> float:
        """How long a resolve answer is reused, here and by callers."""
        return self._cache_ttl_s

    @property
    def current_kek_id(self) -> str:
        """The id of the KEK that wraps new data keys."""
        return self._keyring.current.kek_id

    # -- authorization ---------------------------------------------------------------------

    @staticmethod
    def _is_admin(caller: Principal) -> bool:
        return Scope.ADMIN in caller.scopes

    def _tenant_for(self, caller: Principal, tenant_id: str, field: str = "tenant_id") -> str:
        """The tenant a call acts on: the named one for an admin, the caller's own otherwise."""
        if not tenant_id:
            return caller.tenant_id
        if self._is_admin(caller) or tenant_id == caller.tenant_id:
            return tenant_id
        log.info("credential call refused: key %s of tenant %s named another tenant", caller.key_id, caller.tenant_id)
        raise GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.PERMISSION_DENIED,
            "This API key may only manage its own tenant's credentials.",
            {"param": field},
        )

    async def _visible(self, caller: Principal, credential_id: str) -> Credential:
        if not _CREDENTIAL_ID.fullmatch(credential_id):
            raise _not_found(credential_id)
        credential = await self._store.get(credential_id)
        if credential is None or not (self._is_admin(caller) or credential.tenant_id == caller.tenant_id):
            raise _not_found(credential_id)
        return credential

    # -- admin -------------------------------------------------------------------------------

    async def create(
        self,
        caller: Principal,
        tenant_id: str,
        provider: str,
        name: str,
        priority: int,
        limits: tuple[Quota, ...],
        secret: Secret,
    ) -> Credential:
        """Seal and store a new credential; NOT_FOUND when the tenant does not exist."""
        tenant = self._tenant_for(caller, tenant_id)
        check_provider(provider)
        check_credential_name(name)
        check_priority(priority)
        check_limits(limits)
        check_secret(secret)
        credential_id = new_credential_id()
        now = self._clock()
        credential = Credential(
            credential_id=credential_id,
            tenant_id=tenant,
            provider=provider,
            kind=secret.kind,
            name=name or provider,
            priority=priority,
            state=State.ACTIVE,
            limits=limits,
            secret_last_four=secret.last_four,
            expires_at=secret.expires_at,
            sealed=self._keyring.seal(secret.payload, row_aad(credential_id, tenant, provider)),
            create_time=now,
            rotate_time=now,
        )
        try:
            created = await self._store.create(credential)
        except NotFound:
            raise GatewayError(
                grpc.StatusCode.NOT_FOUND,
                Reason.INVALID_REQUEST,
                f"Tenant {tenant!r} not found.",
                {"param": "tenant_id"},
            ) from None
        self._invalidate(created)
        log.info("credential %s created for tenant %s, provider %s", credential_id, tenant, provider)
        return created

    async def listing(self, caller: Principal, tenant_id: str, provider: str) -> list[Credential]:
        """An admin's listing of any (or every) tenant, a tenant key's of its own."""
        tenant: str | None = self._tenant_for(caller, tenant_id)
        if self._is_admin(caller) and not tenant_id:
            tenant = None
        return await self._store.select(tenant, check_provider(provider) if provider else None)

    async def update(self, caller: Principal, credential_id: str, changes: CredentialChanges) -> Credential:
        """Apply ``changes`` to a visible credential."""
        if changes.name is not None:
            check_credential_name(changes.name)
        if changes.priority is not None:
            check_priority(changes.priority)
        if changes.limits is not None:
            check_limits(changes.limits)
        await self._visible(caller, credential_id)
        try:
            updated = await self._store.update(credential_id, changes, self._clock())
        except NotFound:
            raise _not_found(credential_id) from None
        self._invalidate(updated)
        log.info("credential %s updated", credential_id)
        return updated

    async def rotate(self, caller: Principal, credential_id: str, secret: Secret) -> Credential:
        """Replace the secret (same kind) under a fresh data key."""
        check_secret(secret)
        credential = await self._visible(caller, credential_id)
        if secret.kind != credential.kind:
            raise invalid_argument(f"must be of the credential's kind ({credential.kind})", "secret")
        return await self._replace(credential, secret)

    async def delete(self, caller: Principal, credential_id: str) -> None:
        """Remove a visible credential for good."""
        credential = await self._visible(caller, credential_id)
        try:
            await self._store.delete(credential_id)
        except NotFound:
            raise _not_found(credential_id) from None
        self._invalidate(credential)
        log.info("credential %s deleted", credential_id)

    # -- internal (providers) ------------------------------------------------------------------

    async def resolve(self, tenant_id: str, provider: str) -> list[Resolved]:
        """The tenant's active credentials for ``provider``, opened, best priority first (cached briefly)."""
        key = (tenant_id, provider)
        cached = self._cache.get(key)
        now = self._monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        credentials = await self._store.select(tenant_id, provider)
        resolved = [Resolved(c, self._open(c)) for c in credentials if c.state is State.ACTIVE]
        if self._cache_ttl_s > 0:
            if len(self._cache) >= _MAX_CACHED:
                # Stale answers hold secrets in clear: never keep more of them than needed.
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[key] = (now + self._cache_ttl_s, resolved)
        return resolved

    async def refresh(self, credential_id: str, merge: Callable[[bytes], Secret]) -> Credential:
        """Replace an OAuth credential's token set: ``merge`` gets the stored secret and returns the new one."""
        if not _CREDENTIAL_ID.fullmatch(credential_id):
            raise _not_found(credential_id)
        credential = await self._store.get(credential_id)
        if credential is None:
            raise _not_found(credential_id)
        if credential.kind is not Kind.OAUTH:
            raise invalid_argument("only an OAuth credential has tokens to refresh", "credential_id")
        secret = check_secret(merge(self._open(credential)), "tokens")
        return await self._replace(credential, secret)

    # -- keys ----------------------------------------------------------------------------------

    async def verify_keys(self) -> None:
        """ConfigError unless every KEK id the stored rows name is configured and opens one of its rows."""
        usage = await self._store.kek_usage()
        for kek_id, credential_id in sorted(usage.items()):
            if kek_id not in self._keyring:
                raise ConfigError(
                    f"stored credentials (e.g. {credential_id}) are sealed under KEK {kek_id!r}, which is not "
                    f"configured (configured: {', '.join(self._keyring.ids)}); set {KEK_ENV} or {KEK_FILE_ENV} "
                    "to a key ring that holds it. Refusing to serve credentials that cannot be read."
                )
            credential = await self._store.get(credential_id)
            if credential is None:
                continue
            try:
                self._keyring.check(credential.sealed, self._aad(credential), f"credential {credential_id}")
            except SealError as exc:
                raise ConfigError(
                    f"{exc}; the configured KEK {kek_id!r} is wrong ({KEK_ENV} / {KEK_FILE_ENV}). "
                    "Refusing to serve credentials that cannot be read."
                ) from None
        if usage:
            log.info("credential store: KEKs %s open their rows", ", ".join(sorted(usage)))

    async def rewrap_all(self) -> tuple[int, int]:
        """Re-wrap every data key not under the current KEK; (re-wrapped, left as they were)."""
        current = self._keyring.current.kek_id
        done = 0
        ids = await self._store.ids_not_under(current)
        for credential_id in ids:
            credential = await self._store.get(credential_id)
            if credential is None or credential.sealed.kek_id == current:
                continue
            try:
                sealed = self._keyring.rewrap(credential.sealed, self._aad(credential), f"credential {credential_id}")
            except SealError as exc:
                log.error("re-wrap skipped: %s", exc)
                continue
            if await self._store.rewrap(credential_id, credential.sealed.kek_id, sealed):
                done += 1
        remaining = len(await self._store.ids_not_under(current))
        if ids:
            log.info("credential store: %d data keys re-wrapped under KEK %s, %d left", done, current, remaining)
        return done, remaining

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _aad(credential: Credential) -> str:
        return row_aad(credential.credential_id, credential.tenant_id, credential.provider)

    def _open(self, credential: Credential) -> bytes:
        what = f"credential {credential.credential_id}"
        aad = self._aad(credential)
        # The stored AAD must be the row's own; a mismatch means the sealed columns were copied.
        try:
            if credential.sealed.aad != aad:
                raise SealError(f"{what}: its sealed secret belongs to another row")
            return self._keyring.open(credential.sealed, aad, what)
        except SealError as exc:
            log.error("%s", exc)
            raise _unreadable(what) from None

    async def _replace(self, credential: Credential, secret: Secret) -> Credential:
        sealed = self._keyring.seal(secret.payload, self._aad(credential))
        try:
            updated = await self._store.replace_secret(
                credential.credential_id, sealed, secret.last_four, secret.expires_at, self._clock()
            )
        except NotFound:
            raise _not_found(credential.credential_id) from None
        self._invalidate(updated)
        log.info("credential %s: secret replaced", credential.credential_id)
        return updated

    def _invalidate(self, credential: Credential) -> None:
        self._cache.pop((credential.tenant_id, credential.provider), None)
