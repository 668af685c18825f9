"""Input rules for tenants and keys. Each failure names the field it is about (``limits.quotas[1].limit``).

Everything an admin sends is checked here before the store is touched, so bad input never
reaches, let alone corrupts, stored state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from gateway_common.errors import invalid_argument

from .model import ALL_SCOPES, Limits, Policy

TENANT_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_NAME_CHARS = 200
MAX_PATTERN_CHARS = 200
MAX_LIST_ITEMS = 100
_KNOWN_SCOPES = frozenset(str(s) for s in ALL_SCOPES)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def check_tenant_id(tenant_id: str, field: str) -> str:
    """A tenant id: lower-case letters, digits, ``_`` and ``-``, 1 to 63 characters."""
    if not tenant_id:
        raise invalid_argument("tenant_id is required", field)
    if not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise invalid_argument(
            "tenant_id must be 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
            field,
        )
    return tenant_id


def check_name(name: str, field: str) -> str:
    """A human name: at most 200 characters, surrounding space removed."""
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise invalid_argument(f"must be at most {MAX_NAME_CHARS} characters", field)
    return name


def check_scopes(scopes: Iterable[str], field: str) -> tuple[str, ...]:
    """Known scopes only, duplicates dropped, order kept."""
    seen: dict[str, None] = {}
    for i, scope in enumerate(scopes):
        if scope not in _KNOWN_SCOPES:
            known = ", ".join(sorted(_KNOWN_SCOPES))
            raise invalid_argument(f"unknown scope {scope[:40]!r} (known: {known})", f"{field}[{i}]")
        seen[scope] = None
    return tuple(seen)


def check_patterns(patterns: Iterable[str], field: str) -> tuple[str, ...]:
    """Model or provider patterns: non-empty, no whitespace, bounded; duplicates dropped."""
    seen: dict[str, None] = {}
    for i, pattern in enumerate(patterns):
        if i >= MAX_LIST_ITEMS:
            raise invalid_argument(f"at most {MAX_LIST_ITEMS} entries", field)
        if not pattern or len(pattern) > MAX_PATTERN_CHARS or any(c.isspace() for c in pattern):
            raise invalid_argument(
                f"must be a non-empty pattern of at most {MAX_PATTERN_CHARS} characters without spaces",
                f"{field}[{i}]",
            )
        seen[pattern] = None
    return tuple(seen)


def check_limits(limits: Limits, field: str) -> Limits:
    """Quotas with a limit of at least 0, at most one per unit and window; a cap of at least 0."""
    seen: set[tuple[str, str]] = set()
    for i, quota in enumerate(limits.quotas):
        path = f"{_join(field, 'quotas')}[{i}]"
        if quota.limit < 0:
            raise invalid_argument("limit must be at least 0", f"{path}.limit")
        if (quota.unit, quota.window) in seen:
            raise invalid_argument(f"a second quota for {quota.unit} per {quota.window}", path)
        seen.add((quota.unit, quota.window))
    cap = limits.max_concurrent_requests
    if cap is not None and cap < 0:
        raise invalid_argument("must be at least 0", _join(field, "max_concurrent_requests"))
    return limits


def check_policy(policy: Policy, field: str) -> Policy:
    """Deny lists of valid patterns (duplicates dropped) and a prompt-token cap of at least 1."""
    if policy.max_prompt_tokens is not None and policy.max_prompt_tokens < 1:
        raise invalid_argument("must be at least 1 (leave it unset for no cap)", _join(field, "max_prompt_tokens"))
    return replace(
        policy,
        deny_models=check_patterns(policy.deny_models, _join(field, "deny_models")),
        deny_providers=check_patterns(policy.deny_providers, _join(field, "deny_providers")),
    )


def check_key_id(key_id: str, field: str = "key_id") -> str:
    """A key id is required; an unknown one is NOT_FOUND later."""
    if not key_id:
        raise invalid_argument("key_id is required", field)
    return key_id
