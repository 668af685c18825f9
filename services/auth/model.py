"""The auth domain: tenants, API keys, their limits and policy, and the principal a key resolves to.

Plain frozen dataclasses: no protobuf, no database. The servicer translates them to and from the
wire, the store to and from rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Scope(StrEnum):
    """What a key may do."""

    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    USAGE_READ = "usage:read"
    ADMIN = "admin"


ALL_SCOPES: tuple[Scope, ...] = (Scope.CHAT, Scope.EMBEDDINGS, Scope.USAGE_READ, Scope.ADMIN)
DEFAULT_SCOPES: tuple[Scope, ...] = (Scope.CHAT, Scope.EMBEDDINGS)
"""Scopes of a key created without any."""
TENANT_KEY_SCOPES: tuple[Scope, ...] = (Scope.CHAT, Scope.EMBEDDINGS, Scope.USAGE_READ)
"""Scopes of the keys bootstrapped from GATEWAY_TENANT_KEYS."""


class Unit(StrEnum):
    """What a quota counts."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    COST_MICRO_USD = "cost_micro_usd"


class Window(StrEnum):
    """The calendar period (UTC) a quota is counted over."""

    MINUTE = "minute"
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class Quota:
    """At most ``limit`` units per window."""

    unit: Unit
    window: Window
    limit: int


@dataclass(frozen=True)
class Limits:
    """Quotas and a concurrency cap; ``max_concurrent_requests=None`` means no cap."""

    quotas: tuple[Quota, ...] = ()
    max_concurrent_requests: int | None = None

    @property
    def is_empty(self) -> bool:
        """Whether these limits limit nothing (for a key: it inherits its tenant's key defaults)."""
        return not self.quotas and self.max_concurrent_requests is None


@dataclass(frozen=True)
class Policy:
    """A tenant's request policy, applied by the router before any provider is called."""

    deny_models: tuple[str, ...] = ()
    deny_providers: tuple[str, ...] = ()
    max_prompt_tokens: int | None = None
    log_prompts: bool = False
    refuse_unpriced: bool = False
    """With a budget set, refuse deployments that have no known price (see auth.proto Policy)."""
    continue_broken_streams: bool | None = None
    """False: the tenant's broken streams are not continued; None follows the router's setting."""


@dataclass(frozen=True)
class Tenant:
    """An organisation that owns keys, with its own limits and the defaults its keys inherit."""

    tenant_id: str
    display_name: str
    limits: Limits
    key_defaults: Limits
    policy: Policy
    create_time: datetime


@dataclass(frozen=True)
class ApiKey:
    """A key without its secret. ``limits=None`` means it inherits its tenant's key defaults."""

    key_id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    allowed_models: tuple[str, ...]
    limits: Limits | None
    create_time: datetime
    expire_time: datetime | None = None
    revoke_time: datetime | None = None

    def refusal(self, now: datetime) -> str | None:
        """Why the key cannot be used at ``now`` ("revoked", "expired"), or None when it can."""
        if self.revoke_time is not None:
            return "revoked"
        if self.expire_time is not None and self.expire_time <= now:
            return "expired"
        return None


@dataclass(frozen=True)
class NewKey:
    """A key about to be stored: its description plus the hash of its secret (never the secret)."""

    key: ApiKey
    key_hash: str


@dataclass(frozen=True)
class Principal:
    """Who a request acts for, with everything the router needs to govern it."""

    tenant_id: str
    key_id: str
    key_prefix: str
    key_name: str
    scopes: tuple[str, ...]
    allowed_models: tuple[str, ...]
    key_limits: Limits
    tenant_limits: Limits
    policy: Policy
    expire_time: datetime | None = None
    """When the key stops working; callers must not cache the principal past it."""


def resolve_principal(key: ApiKey, tenant: Tenant) -> Principal:
    """The principal of a usable key: its own limits if it has any, else its tenant's key defaults."""
    return Principal(
        tenant_id=tenant.tenant_id,
        key_id=key.key_id,
        key_prefix=key.prefix,
        key_name=key.name,
        scopes=key.scopes,
        allowed_models=key.allowed_models,
        key_limits=key.limits if key.limits is not None and not key.limits.is_empty else tenant.key_defaults,
        tenant_limits=tenant.limits,
        policy=tenant.policy,
        expire_time=key.expire_time,
    )


@dataclass(frozen=True)
class TenantChanges:
    """What UpdateTenant replaces; None keeps the current value."""

    limits: Limits | None = None
    key_defaults: Limits | None = None
    policy: Policy | None = None


@dataclass(frozen=True)
class KeyChanges:
    """What UpdateKey replaces; None keeps the current value. Empty ``limits`` means inherit."""

    limits: Limits | None = None
    scopes: tuple[str, ...] | None = None
    allowed_models: tuple[str, ...] | None = None
