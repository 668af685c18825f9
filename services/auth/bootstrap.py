"""Keys provisioned at start: from the environment, and the demo key of the embedded default.

Order matters:
1. every ``GATEWAY_TENANT_KEYS`` entry is upserted (scopes chat, embeddings, usage:read);
2. ``GATEWAY_ADMIN_KEY`` is upserted with every scope in tenant ``admin``;
3. only when ``GATEWAY_TENANT_KEYS`` is unset: the demo key. It is reused from
   ``auth.demo_key_file`` when that file exists, so ``make up`` shows the same key every time;
   otherwise one is generated, but only when the store holds no key at all (so a deployment that
   set an admin key or created keys never grows a demo key with every scope).

An upsert gives the key its tenant and scopes but never lifts a revocation: a revoked key stays
revoked, with a warning. The key itself is never logged, only its id and, for the demo key, the
file it was written to.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from .accounts import Clock
from .keys import display_prefix, generate_key, hash_key, new_key_id
from .model import ALL_SCOPES, TENANT_KEY_SCOPES, ApiKey, Limits, NewKey, Policy, Tenant
from .settings import AuthSecrets
from .storage import Store

log = logging.getLogger(__name__)

ADMIN_TENANT = "admin"
DEMO_TENANT = "demo"
_SHORT_KEY_CHARS = 20


def read_demo_key(path: Path) -> str | None:
    """The demo key kept in ``path``, or None when the file is missing or empty."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return secret or None


def write_demo_key(path: Path, secret: str) -> None:
    """Write the demo key to ``path`` (folder created), readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # The mode given to open applies only to a new file; an old one may have been wider.
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode("utf-8"))
    finally:
        os.close(fd)


async def _upsert(
    store: Store, clock: Clock, tenant_id: str, secret: str, name: str, scopes: tuple[str, ...]
) -> ApiKey:
    now = clock()
    await store.ensure_tenant(Tenant(tenant_id, tenant_id, Limits(), Limits(), Policy(), now))
    key = ApiKey(
        key_id=new_key_id(),
        tenant_id=tenant_id,
        name=name,
        prefix=display_prefix(secret),
        scopes=scopes,
        allowed_models=(),
        limits=None,
        create_time=now,
    )
    stored, created = await store.upsert_key(NewKey(key, hash_key(secret)))
    if stored.revoke_time is not None:
        log.warning("bootstrap key %s (tenant %s) is revoked and stays revoked", stored.key_id, tenant_id)
    elif created:
        log.info("bootstrap key %s created in tenant %s", stored.key_id, tenant_id)
    return stored


async def bootstrap(store: Store, secrets: AuthSecrets, demo_key_file: Path, clock: Clock) -> None:
    """Provision the keys the environment (or the embedded default) asks for."""
    tenant_scopes = tuple(str(s) for s in TENANT_KEY_SCOPES)
    all_scopes = tuple(str(s) for s in ALL_SCOPES)
    for entry in secrets.tenant_keys or ():
        await _upsert(store, clock, entry.tenant_id, entry.secret, "bootstrap", tenant_scopes)
    if secrets.tenant_keys:
        tenants = sorted({entry.tenant_id for entry in secrets.tenant_keys})
        log.info(
            "%d keys from GATEWAY_TENANT_KEYS in place (tenants: %s)", len(secrets.tenant_keys), ", ".join(tenants)
        )
    if secrets.admin_key is not None:
        if len(secrets.admin_key) < _SHORT_KEY_CHARS:
            log.warning("GATEWAY_ADMIN_KEY is short; use a random key such as `gw-` plus 32 random bytes")
        await _upsert(store, clock, ADMIN_TENANT, secrets.admin_key, "admin", all_scopes)
        log.info("admin key from GATEWAY_ADMIN_KEY in place (tenant %s)", ADMIN_TENANT)
    if secrets.tenant_keys is not None:
        return
    secret = await asyncio.to_thread(read_demo_key, demo_key_file)
    if secret is not None:
        await _upsert(store, clock, DEMO_TENANT, secret, "demo", all_scopes)
        log.info("demo key read from %s (tenant %s)", demo_key_file, DEMO_TENANT)
        return
    if await store.count_keys() > 0:
        return
    secret = generate_key()
    await asyncio.to_thread(write_demo_key, demo_key_file, secret)
    await _upsert(store, clock, DEMO_TENANT, secret, "demo", all_scopes)
    log.info("demo key (tenant %s, scopes %s) written to %s", DEMO_TENANT, ", ".join(all_scopes), demo_key_file)
