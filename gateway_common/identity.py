"""Service identity: who may call which internal RPC, in one table, and the check that applies it.

A caller's identity is the SPIFFE ID in the URI SAN of the client certificate it showed in the TLS
handshake (``spiffe://llm-gateway/<name>``), which gRPC core lists among the call's peer identities
once the CA verified the chain. Nothing here parses certificates.

Trust in tenant scoping: the router is trusted to pass the authenticated principal's tenant to
metering (it does: ``policy.usage_tenant``); metering itself refuses an unscoped (all-tenant) read
from any identity not in :data:`CROSS_TENANT_READERS`, so a router bug or a stolen router
certificate can read one named tenant at a time, never the whole ledger in one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from gateway_common.errors import GatewayError, Reason

TRUST_DOMAIN = "llm-gateway"
_PREFIX = f"spiffe://{TRUST_DOMAIN}/"

ROUTER, EDGE, CLI, RATELIMIT = "router", "edge", "cli", "ratelimit"
PROVIDERS = "providers"
AUTH = "auth"

_AUTH_ADMIN = (
    "CreateTenant",
    "ListTenants",
    "UpdateTenant",
    "CreateKey",
    "ListKeys",
    "UpdateKey",
    "RevokeKey",
    "SetRoute",
    "ListRoutes",
    "DeleteRoute",
)

ALLOWED_CALLERS: Mapping[str, Mapping[str, frozenset[str]]] = {
    "gateway.auth.v1.AuthService": {
        "Authenticate": frozenset({ROUTER}),
        # Each router refreshes its cached route overrides from here every few seconds.
        "GetRouteTable": frozenset({ROUTER}),
        # Async jobs run under the submitter's key id: its current principal, revocations honoured.
        "GetPrincipal": frozenset({ROUTER}),
        **{rpc: frozenset({EDGE, CLI}) for rpc in _AUTH_ADMIN},
    },
    # Upstream credentials: administered from the edge (admin UI, /ui/gemini) and the CLI; read in
    # clear, and refreshed, only by the providers service that uses them.
    "gateway.auth.v1.CredentialService": {
        **{
            rpc: frozenset({EDGE, CLI})
            for rpc in (
                "CreateCredential",
                "ListCredentials",
                "UpdateCredential",
                "RotateCredential",
                "DeleteCredential",
                "RewrapCredentials",
            )
        },
        "ResolveCredentials": frozenset({PROVIDERS}),
        "StoreRefreshedTokens": frozenset({PROVIDERS}),
    },
    "gateway.ratelimit.v1.RateLimitService": {
        "Acquire": frozenset({ROUTER}),
        "Settle": frozenset({ROUTER}),
        "RenewLeases": frozenset({ROUTER}),
        # Per-credential windows and cooldowns: providers chooses a tenant's upstream credential.
        "AcquireCredential": frozenset({PROVIDERS}),
        "SettleCredential": frozenset({PROVIDERS}),
        "ReportCredentialFailure": frozenset({PROVIDERS}),
        # The admin view of credentials (auth's ListCredentials, the CLI) shows cooldowns and usage.
        "GetCredentialStates": frozenset({PROVIDERS, CLI, EDGE, AUTH}),
    },
    "gateway.providers.v1.ProviderService": {
        "Chat": frozenset({ROUTER}),
        "StreamChat": frozenset({ROUTER}),
        "Embed": frozenset({ROUTER}),
        "ListModels": frozenset({ROUTER}),
    },
    "gateway.metering.v1.MeteringService": {
        "RecordEvents": frozenset({ROUTER}),
        # ratelimit reads the ledger to rebuild counters Redis lost; the CLI reads across tenants;
        # auth shows a tenant's credentials' usage in their listing.
        "QueryUsage": frozenset({ROUTER, RATELIMIT, CLI, AUTH}),
        "SumUsageByDescriptor": frozenset({RATELIMIT}),
        # Always for a named tenant (metering refuses others): the router passes the principal's.
        "QueryPromptLog": frozenset({ROUTER}),
    },
    # Stored Responses API responses: always for a named tenant, the router passing the principal's.
    "gateway.metering.v1.ResponseStoreService": {
        "PutResponse": frozenset({ROUTER}),
        "GetResponse": frozenset({ROUTER}),
        "DeleteResponse": frozenset({ROUTER}),
    },
}
"""Service (full gRPC name) → RPC → identities allowed to call it. Anything absent is refused."""

CROSS_TENANT_READERS = frozenset({CLI, RATELIMIT})
"""Identities that may read usage without naming a tenant (operators; counter rebuilds)."""

OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
"""Services any peer the CA vouches for may call, whatever its identity: probes must work."""

PUBLIC_SERVICES = frozenset({ROUTER})
"""Processes whose port is the public entry (tenant keys): TLS without a client certificate."""

caller_var: ContextVar[str | None] = ContextVar("caller", default=None)
"""The verified identity of the current call; None where identities are not enforced (in-process
servers of tests, or ``GATEWAY_INTERNAL_TLS=off``)."""


def spiffe_id(name: str) -> str:
    """The SPIFFE ID that names service ``name``."""
    return f"{_PREFIX}{name}"


def may_read_all_tenants() -> bool:
    """Whether the current caller may run a usage query that names no tenant."""
    caller = caller_var.get()
    return caller is None or caller in CROSS_TENANT_READERS


@dataclass(frozen=True)
class Decision:
    """The outcome of checking one caller against one RPC."""

    identity: str | None
    error: GatewayError | None


def _split(method: str) -> tuple[str, str]:
    service, _, rpc = method.lstrip("/").rpartition("/")
    return service, rpc


class CallerPolicy:
    """Applies :data:`ALLOWED_CALLERS`; decisions are cached per (peer SPIFFE ID, method).

    The cache is bounded by the table's size times the number of distinct identities the CA
    issued, so it needs no eviction.
    """

    def __init__(self, allowed: Mapping[str, Mapping[str, frozenset[str]]] = ALLOWED_CALLERS) -> None:
        self._allowed = allowed
        self._decisions: dict[tuple[bytes | None, str], Decision] = {}

    def is_open(self, method: str) -> bool:
        """Whether ``method`` belongs to a service every verified peer may call."""
        return _split(method)[0] in OPEN_SERVICES

    def decide(self, peer_id: bytes | None, method: str) -> Decision:
        """Whether the peer whose certificate names ``peer_id`` may call ``method``."""
        cached = self._decisions.get((peer_id, method))
        if cached is None:
            cached = self._decide(peer_id, method)
            self._decisions[(peer_id, method)] = cached
        return cached

    def _decide(self, peer_id: bytes | None, method: str) -> Decision:
        service, rpc = _split(method)
        if peer_id is None:
            return Decision(None, _missing(method, "no client certificate naming one SPIFFE ID reached this service"))
        text = peer_id.decode(errors="replace")
        if not text.startswith(_PREFIX) or "/" in text[len(_PREFIX) :]:
            return Decision(None, _missing(method, f"the client certificate names {text!r}, not {_PREFIX}<service>"))
        identity = text[len(_PREFIX) :]
        allowed = self._allowed.get(service, {}).get(rpc, frozenset())
        if identity not in allowed:
            return Decision(identity, _not_allowed(identity, method, allowed))
        return Decision(identity, None)


def peer_spiffe_id(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    """The SPIFFE ID of the call's peer, from the certificate the handshake verified; None unless
    the certificate names exactly one."""
    # peer_identities() is the SAN list gRPC core parsed at the handshake; it costs ~2 µs a call
    # where auth_context() (which copies the whole PEM too) costs ~25 µs.
    names = context.peer_identities() or ()
    spiffe = [name for name in names if name.startswith(b"spiffe://")]
    return spiffe[0] if len(spiffe) == 1 else None


def _missing(method: str, why: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNAUTHENTICATED,
        Reason.MISSING_SERVICE_IDENTITY,
        f"{method} needs a service identity: {why}. Callers present a certificate from the gateway's CA "
        f"whose URI SAN is {_PREFIX}<service>.",
        {"method": method},
    )


def _not_allowed(identity: str, method: str, allowed: frozenset[str]) -> GatewayError:
    who = ", ".join(sorted(allowed)) or "no service"
    return GatewayError(
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.CALLER_NOT_ALLOWED,
        f"service identity {identity!r} may not call {method}; allowed callers: {who} "
        "(gateway_common/identity.py ALLOWED_CALLERS)",
        {"identity": identity, "method": method, "allowed": ",".join(sorted(allowed))},
    )
