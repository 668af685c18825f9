"""In-process stand-ins for auth (admin RPCs, optionally credentials) and the router's reports,
served over real gRPC on loopback, for the admin UI's tests.

They keep the services' own rules where the UI relies on them: admin RPCs need the admin key, a
tenant key reads only its own tenant's usage, credentials are scoped to the caller's tenant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from fastapi.testclient import TestClient
from grpc_status import rpc_status

from edge.app import create_app
from gateway.auth.v1 import auth_pb2, auth_pb2_grpc, credentials_pb2, credentials_pb2_grpc
from gateway.metering.v1 import metering_pb2
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError, Reason

ADMIN_KEY = "gw-admin-key"
ACME_KEY = "gw-acme-key"
BETA_KEY = "gw-beta-key"
KEYS = {ADMIN_KEY: ("ops", True), ACME_KEY: ("acme", False), BETA_KEY: ("beta", False)}


_REASONS = {
    grpc.StatusCode.UNAUTHENTICATED: Reason.INVALID_API_KEY,
    grpc.StatusCode.PERMISSION_DENIED: Reason.PERMISSION_DENIED,
}


def _abort(context: Any, code: grpc.StatusCode, message: str) -> None:
    """Refuse as a gateway service does: a rich google.rpc.Status the edge turns into its message."""
    error = GatewayError(code, _REASONS.get(code, Reason.INVALID_REQUEST), message)
    context.abort_with_status(rpc_status.to_status(error.to_status_proto()))


def _caller(context: Any) -> tuple[str, bool]:
    metadata = dict(context.invocation_metadata())
    key = str(metadata.get("authorization", "")).removeprefix("Bearer ")
    if key not in KEYS:
        _abort(context, grpc.StatusCode.UNAUTHENTICATED, "The API key is not valid.")
    return KEYS[key]


def _admin(context: Any) -> None:
    if not _caller(context)[1]:
        _abort(
            context, grpc.StatusCode.PERMISSION_DENIED, "This API key lacks the 'admin' scope needed for admin calls."
        )


@dataclass
class Fakes:
    """What the fakes hold and which RPCs reached them."""

    calls: Counter[str] = field(default_factory=Counter)
    tenants: dict[str, auth_pb2.Tenant] = field(default_factory=dict)
    keys: dict[str, auth_pb2.ApiKey] = field(default_factory=dict)
    routes: dict[str, auth_pb2.Route] = field(default_factory=dict)
    credentials: dict[str, credentials_pb2.Credential] = field(default_factory=dict)
    usage_requests: list[router_pb2.GetUsageRequest] = field(default_factory=list)


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    """Tenants, keys and routes in memory, behind the admin check."""

    def __init__(self, fakes: Fakes) -> None:
        self.fakes = fakes
        for tenant in ("acme", "beta"):
            fakes.tenants[tenant] = auth_pb2.Tenant(tenant_id=tenant, display_name=tenant.title())

    def ListTenants(self, request: auth_pb2.ListTenantsRequest, context: Any) -> auth_pb2.ListTenantsResponse:
        self.fakes.calls["ListTenants"] += 1
        _admin(context)
        return auth_pb2.ListTenantsResponse(tenants=list(self.fakes.tenants.values()))

    def CreateTenant(self, request: auth_pb2.CreateTenantRequest, context: Any) -> auth_pb2.CreateTenantResponse:
        self.fakes.calls["CreateTenant"] += 1
        _admin(context)
        if request.tenant.tenant_id in self.fakes.tenants:
            _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"The tenant {request.tenant.tenant_id} exists.")
        self.fakes.tenants[request.tenant.tenant_id] = request.tenant
        return auth_pb2.CreateTenantResponse(tenant=request.tenant)

    def UpdateTenant(self, request: auth_pb2.UpdateTenantRequest, context: Any) -> auth_pb2.UpdateTenantResponse:
        self.fakes.calls["UpdateTenant"] += 1
        _admin(context)
        tenant = self.fakes.tenants[request.tenant_id]
        tenant.limits.CopyFrom(request.limits)
        tenant.key_defaults.CopyFrom(request.key_defaults)
        return auth_pb2.UpdateTenantResponse(tenant=tenant)

    def CreateKey(self, request: auth_pb2.CreateKeyRequest, context: Any) -> auth_pb2.CreateKeyResponse:
        self.fakes.calls["CreateKey"] += 1
        _admin(context)
        key_id = f"key_{len(self.fakes.keys) + 1}"
        key = auth_pb2.ApiKey(
            key_id=key_id, tenant_id=request.tenant_id, name=request.name, prefix="gw-secr", limits=request.limits
        )
        self.fakes.keys[key_id] = key
        return auth_pb2.CreateKeyResponse(key=key, secret=f"gw-secret-of-{key_id}")

    def ListKeys(self, request: auth_pb2.ListKeysRequest, context: Any) -> auth_pb2.ListKeysResponse:
        self.fakes.calls["ListKeys"] += 1
        _admin(context)
        keys = [k for k in self.fakes.keys.values() if not request.tenant_id or k.tenant_id == request.tenant_id]
        return auth_pb2.ListKeysResponse(keys=keys)

    def UpdateKey(self, request: auth_pb2.UpdateKeyRequest, context: Any) -> auth_pb2.UpdateKeyResponse:
        self.fakes.calls["UpdateKey"] += 1
        _admin(context)
        key = self.fakes.keys[request.key_id]
        if request.HasField("limits"):
            key.limits.CopyFrom(request.limits)
        if request.allowed_models:
            del key.allowed_models[:]
            key.allowed_models.extend(request.allowed_models)
        return auth_pb2.UpdateKeyResponse(key=key)

    def RevokeKey(self, request: auth_pb2.RevokeKeyRequest, context: Any) -> auth_pb2.RevokeKeyResponse:
        self.fakes.calls["RevokeKey"] += 1
        _admin(context)
        key = self.fakes.keys[request.key_id]
        key.revoke_time.GetCurrentTime()
        return auth_pb2.RevokeKeyResponse(key=key)

    def ListRoutes(self, request: auth_pb2.ListRoutesRequest, context: Any) -> auth_pb2.ListRoutesResponse:
        self.fakes.calls["ListRoutes"] += 1
        _admin(context)
        return auth_pb2.ListRoutesResponse(routes=list(self.fakes.routes.values()))

    def SetRoute(self, request: auth_pb2.SetRouteRequest, context: Any) -> auth_pb2.SetRouteResponse:
        self.fakes.calls["SetRoute"] += 1
        _admin(context)
        route = auth_pb2.Route(model=request.model, provider=request.provider, upstream_model=request.upstream_model)
        self.fakes.routes[request.model] = route
        return auth_pb2.SetRouteResponse(route=route)

    def DeleteRoute(self, request: auth_pb2.DeleteRouteRequest, context: Any) -> auth_pb2.DeleteRouteResponse:
        self.fakes.calls["DeleteRoute"] += 1
        _admin(context)
        return auth_pb2.DeleteRouteResponse(route=self.fakes.routes.pop(request.model))


class FakeCredentials(credentials_pb2_grpc.CredentialServiceServicer):
    """Credentials in memory; a tenant key sees and changes only its own tenant's."""

    def __init__(self, fakes: Fakes) -> None:
        self.fakes = fakes

    def _tenant(self, context: Any, requested: str) -> str:
        tenant, admin = _caller(context)
        if not admin and requested and requested != tenant:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "A tenant key may only name its own tenant.")
        return requested if admin else tenant

    def CreateCredential(
        self, request: credentials_pb2.CreateCredentialRequest, context: Any
    ) -> credentials_pb2.CreateCredentialResponse:
        self.fakes.calls["CreateCredential"] += 1
        tenant = self._tenant(context, request.tenant_id)
        credential = credentials_pb2.Credential(
            credential_id=f"cred_{len(self.fakes.credentials) + 1}",
            tenant_id=tenant,
            provider=request.provider,
            kind=credentials_pb2.CREDENTIAL_KIND_API_KEY,
            name=request.name,
            priority=request.priority,
            state=credentials_pb2.CREDENTIAL_STATE_ACTIVE,
            secret_last_four=request.secret.api_key[-4:],
        )
        self.fakes.credentials[credential.credential_id] = credential
        return credentials_pb2.CreateCredentialResponse(credential=credential)

    def ListCredentials(
        self, request: credentials_pb2.ListCredentialsRequest, context: Any
    ) -> credentials_pb2.ListCredentialsResponse:
        self.fakes.calls["ListCredentials"] += 1
        tenant = self._tenant(context, request.tenant_id)
        found = [c for c in self.fakes.credentials.values() if not tenant or c.tenant_id == tenant]
        return credentials_pb2.ListCredentialsResponse(credentials=found)

    def UpdateCredential(
        self, request: credentials_pb2.UpdateCredentialRequest, context: Any
    ) -> credentials_pb2.UpdateCredentialResponse:
        self.fakes.calls["UpdateCredential"] += 1
        credential = self.fakes.credentials[request.credential_id]
        self._tenant(context, credential.tenant_id)
        credential.state = request.state
        return credentials_pb2.UpdateCredentialResponse(credential=credential)


class FakeRouter(router_pb2_grpc.RouterServiceServicer):
    """Usage by tenant: one key and one model each; a tenant key may read only its own."""

    def __init__(self, fakes: Fakes) -> None:
        self.fakes = fakes

    def GetUsage(self, request: router_pb2.GetUsageRequest, context: Any) -> router_pb2.GetUsageResponse:
        self.fakes.calls["GetUsage"] += 1
        self.fakes.usage_requests.append(request)
        own, admin = _caller(context)
        tenant = request.tenant_id or own
        if tenant != own and not admin:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, "This API key may read only its own tenant's usage.")
        group = f"key_{tenant}" if request.group_by == metering_pb2.GROUP_BY_KEY else f"model-of-{tenant}"
        row = metering_pb2.UsageRow(group=group, requests=1, prompt_tokens=10, completion_tokens=5, cost_micro_usd=1500)
        return router_pb2.GetUsageResponse(rows=[row])

    def GetPromptLog(self, request: router_pb2.GetPromptLogRequest, context: Any) -> router_pb2.GetPromptLogResponse:
        self.fakes.calls["GetPromptLog"] += 1
        own, _ = _caller(context)
        entry = metering_pb2.PromptLogEntry(
            event_id="ev1", tenant_id=own, key_id=f"key_{own}", model="m", request_preview="<b>hi</b>"
        )
        entry.time.GetCurrentTime()
        return router_pb2.GetPromptLogResponse(entries=[entry])


@contextmanager
def ui_edge(with_credentials: bool = False) -> Iterator[tuple[TestClient, Fakes]]:
    """The edge in-process, auth and router fakes behind it; CredentialService only when asked."""
    fakes = Fakes()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    auth_pb2_grpc.add_AuthServiceServicer_to_server(FakeAuth(fakes), server)
    router_pb2_grpc.add_RouterServiceServicer_to_server(FakeRouter(fakes), server)
    if with_credentials:
        credentials_pb2_grpc.add_CredentialServiceServicer_to_server(FakeCredentials(fakes), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        config = GatewayConfig.model_validate(
            {"services": {"router": {"address": address}, "auth": {"address": address}}}
        )
        with TestClient(create_app(config), raise_server_exceptions=False, follow_redirects=False) as client:
            yield client, fakes
    finally:
        server.stop(grace=None)
