"""Where tenants and keys live, behind one Protocol: the SQL store (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ..model import ApiKey, KeyChanges, NewKey, Tenant, TenantChanges


class StoreError(Exception):
    """A store operation that cannot be done as asked."""


class NotFound(StoreError):
    """The tenant or key does not exist."""


class AlreadyExists(StoreError):
    """A tenant with that id, or a key with that hash, exists already."""


class Store(Protocol):
    """Tenants and API keys. Keys are found by the SHA-256 hash of their secret, never by the secret."""

    async def ping(self) -> None:
        """Answer once the backend is reachable; raise otherwise."""
        ...

    async def find_key(self, key_hash: str) -> tuple[ApiKey, Tenant] | None:
        """The key with this hash and its tenant, whether or not it is still usable."""
        ...

    async def count_keys(self) -> int:
        """How many keys exist, revoked ones included."""
        ...

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        """Insert a tenant; AlreadyExists when its id is taken."""
        ...

    async def ensure_tenant(self, tenant: Tenant) -> bool:
        """Insert the tenant unless one with its id exists; True when it was inserted."""
        ...

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant, or None."""
        ...

    async def list_tenants(self) -> list[Tenant]:
        """All tenants, oldest first."""
        ...

    async def update_tenant(self, tenant_id: str, changes: TenantChanges, when: datetime) -> Tenant:
        """Replace what ``changes`` sets; NotFound when the tenant does not exist."""
        ...

    async def create_key(self, new: NewKey) -> ApiKey:
        """Insert a key; NotFound when its tenant does not exist, AlreadyExists on a hash collision."""
        ...

    async def upsert_key(self, new: NewKey) -> tuple[ApiKey, bool]:
        """Insert the key, or give the key with the same hash its tenant and scopes (revocation stays).

        Returns the stored key and whether it was inserted. The tenant must exist.
        """
        ...

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key, or None."""
        ...

    async def list_keys(self, tenant_id: str | None, include_revoked: bool) -> list[ApiKey]:
        """Keys of one tenant (or all), oldest first."""
        ...

    async def update_key(self, key_id: str, changes: KeyChanges) -> ApiKey:
        """Replace what ``changes`` sets; NotFound when the key does not exist."""
        ...

    async def revoke_key(self, key_id: str, when: datetime) -> ApiKey:
        """Mark the key revoked at ``when`` (kept if it already was); NotFound when it does not exist."""
        ...
