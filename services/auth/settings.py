"""Secrets the auth service reads from the environment only: they never live in the config file.

- ``GATEWAY_TENANT_KEYS='tenant:key,tenant2:key2'`` bootstraps tenants and their keys;
- ``GATEWAY_ADMIN_KEY`` bootstraps one key with every scope, ``admin`` included, in tenant ``admin``.

A malformed value stops the service at start with a message that names the variable and the entry
(by position) but never a key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway_common.config import ConfigError

from .validation import TENANT_ID_PATTERN

TENANT_KEYS_ENV = "GATEWAY_TENANT_KEYS"
ADMIN_KEY_ENV = "GATEWAY_ADMIN_KEY"
_FORMAT_HINT = "expected 'tenant:key,tenant2:key2'"


@dataclass(frozen=True)
class BootstrapKey:
    """A key to provision at start, for a tenant (created when missing)."""

    tenant_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class AuthSecrets:
    """The parsed secret environment. ``tenant_keys=None`` means GATEWAY_TENANT_KEYS is unset (or empty)."""

    tenant_keys: tuple[BootstrapKey, ...] | None = None
    admin_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthSecrets:
        """Read and check the variables; ConfigError when one is malformed."""
        env = os.environ if env is None else env
        raw_keys = env.get(TENANT_KEYS_ENV, "").strip()
        tenant_keys = parse_tenant_keys(raw_keys) if raw_keys else None
        admin_key = env.get(ADMIN_KEY_ENV, "").strip() or None
        if admin_key is not None and tenant_keys is not None:
            for i, entry in enumerate(tenant_keys, 1):
                if entry.secret == admin_key:
                    raise ConfigError(f"{ADMIN_KEY_ENV} is also entry {i} of {TENANT_KEYS_ENV}; use distinct keys")
        return cls(tenant_keys, admin_key)


def parse_tenant_keys(text: str) -> tuple[BootstrapKey, ...]:
    """Parse ``tenant:key,tenant2:key2``; empty entries (a trailing comma) are skipped.

    The key is everything after the first ':' (tenant ids hold no ':'). Errors name the entry by
    its position, never by its text, which would hold the key.
    """
    entries: list[BootstrapKey] = []
    seen: dict[str, int] = {}
    for position, raw in enumerate(text.split(","), 1):
        entry = raw.strip()
        if not entry:
            continue
        tenant_id, colon, secret = entry.partition(":")
        tenant_id, secret = tenant_id.strip(), secret.strip()
        where = f"{TENANT_KEYS_ENV}: entry {position}"
        if not colon:
            raise ConfigError(f"{where} has no ':' between tenant and key ({_FORMAT_HINT})")
        if not tenant_id:
            raise ConfigError(f"{where} has no tenant before ':' ({_FORMAT_HINT})")
        if not secret:
            raise ConfigError(f"{where} has no key after ':' ({_FORMAT_HINT})")
        if not TENANT_ID_PATTERN.fullmatch(tenant_id):
            raise ConfigError(
                f"{where}: the tenant id must be 1-63 characters of a-z, 0-9, '_' or '-', "
                "starting with a letter or digit"
            )
        if secret in seen:
            raise ConfigError(f"{where} repeats the key of entry {seen[secret]}; every key must be distinct")
        seen[secret] = position
        entries.append(BootstrapKey(tenant_id, secret))
    if not entries:
        raise ConfigError(f"{TENANT_KEYS_ENV} holds no entry ({_FORMAT_HINT})")
    return tuple(entries)
