"""The AuthService RPCs: protobuf in, domain calls, protobuf out.

Admin RPCs first check the caller's key (``authorization: Bearer <key>`` metadata) for the
``admin`` scope, then check the input, so an unauthenticated caller learns nothing about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import grpc

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway_common.grpc_server import metadata_value

from . import convert
from .accounts import Accounts, missing_api_key
from .model import KeyChanges, Limits, Policy, Principal, TenantChanges
from .routes import Route, Routes
from .validation import check_key_id, check_name, check_patterns, check_scopes, check_tenant_id

SERVICE_NAME = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
_BEARER = "bearer "

Context = grpc.aio.ServicerContext[Any, Any]


def bearer_key(context: Context) -> str:
    """The key of ``authorization: Bearer <key>`` metadata; UNAUTHENTICATED when there is none."""
    metadata = cast(Sequence[tuple[str, str | bytes]] | None, context.invocation_metadata())
    value = metadata_value(metadata, "authorization")
    if value is None or value[: len(_BEARER)].lower() != _BEARER:
        raise missing_api_key()
    return value[len(_BEARER) :].strip()


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Translates AuthService calls to :class:`Accounts`."""

    def __init__(self, accounts: Accounts, cache_ttl_seconds: int, routes: Routes) -> None:
        self._accounts = accounts
        self._cache_ttl_seconds = cache_ttl_seconds
        self._routes = routes

    async def _admin(self, context: Context) -> Principal:
        return await self._accounts.authorize_admin(bearer_key(context))

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: Context
    ) -> auth_pb2.AuthenticateResponse:
        """Resolve the key to its principal, with how long the caller may cache the answer."""
        principal = await self._accounts.authenticate(request.api_key)
        return auth_pb2.AuthenticateResponse(
            principal=convert.principal_to_proto(principal),
            cache_ttl_seconds=self._accounts.cache_ttl_seconds(principal, self._cache_ttl_seconds),
        )

    async def GetPrincipal(
        self, request: auth_pb2.GetPrincipalRequest, context: Context
    ) -> auth_pb2.GetPrincipalResponse:
        """The current principal of a key named by id (router only: ALLOWED_CALLERS)."""
        principal = await self._accounts.principal_by_key_id(request.key_id)
        return auth_pb2.GetPrincipalResponse(principal=convert.principal_to_proto(principal))

    async def CreateTenant(
        self, request: auth_pb2.CreateTenantRequest, context: Context
    ) -> auth_pb2.CreateTenantResponse:
        """Create a tenant."""
        await self._admin(context)
        tenant = request.tenant
        created = await self._accounts.create_tenant(
            tenant_id=check_tenant_id(tenant.tenant_id, "tenant.tenant_id"),
            display_name=check_name(tenant.display_name, "tenant.display_name"),
            limits=convert.limits_from_proto(tenant.limits, "tenant.limits"),
            key_defaults=convert.limits_from_proto(tenant.key_defaults, "tenant.key_defaults"),
            policy=convert.policy_from_proto(tenant.policy, "tenant.policy"),
        )
        return auth_pb2.CreateTenantResponse(tenant=convert.tenant_to_proto(created))

    async def ListTenants(self, request: auth_pb2.ListTenantsRequest, context: Context) -> auth_pb2.ListTenantsResponse:
        """List every tenant."""
        await self._admin(context)
        tenants = await self._accounts.list_tenants()
        return auth_pb2.ListTenantsResponse(tenants=[convert.tenant_to_proto(t) for t in tenants])

    async def UpdateTenant(
        self, request: auth_pb2.UpdateTenantRequest, context: Context
    ) -> auth_pb2.UpdateTenantResponse:
        """Replace the tenant's limits, key defaults or policy (those the request sets)."""
        await self._admin(context)
        tenant_id = check_tenant_id(request.tenant_id, "tenant_id")
        limits: Limits | None = None
        key_defaults: Limits | None = None
        policy: Policy | None = None
        if request.HasField("limits"):
            limits = convert.limits_from_proto(request.limits, "limits")
        if request.HasField("key_defaults"):
            key_defaults = convert.limits_from_proto(request.key_defaults, "key_defaults")
        if request.HasField("policy"):
            policy = convert.policy_from_proto(request.policy, "policy")
        updated = await self._accounts.update_tenant(tenant_id, TenantChanges(limits, key_defaults, policy))
        return auth_pb2.UpdateTenantResponse(tenant=convert.tenant_to_proto(updated))

    async def CreateKey(self, request: auth_pb2.CreateKeyRequest, context: Context) -> auth_pb2.CreateKeyResponse:
        """Create a key; the answer carries its secret, this once."""
        await self._admin(context)
        key, secret = await self._accounts.create_key(
            tenant_id=check_tenant_id(request.tenant_id, "tenant_id"),
            name=check_name(request.name, "name"),
            scopes=check_scopes(request.scopes, "scopes"),
            allowed_models=check_patterns(request.allowed_models, "allowed_models"),
            limits=convert.limits_from_proto(request.limits, "limits"),
            expire_time=convert.datetime_from(request.expire_time) if request.HasField("expire_time") else None,
        )
        return auth_pb2.CreateKeyResponse(key=convert.key_to_proto(key), secret=secret)

    async def ListKeys(self, request: auth_pb2.ListKeysRequest, context: Context) -> auth_pb2.ListKeysResponse:
        """List keys (of one tenant, or all), without secrets."""
        await self._admin(context)
        tenant_id = check_tenant_id(request.tenant_id, "tenant_id") if request.tenant_id else None
        keys = await self._accounts.list_keys(tenant_id, request.include_revoked)
        return auth_pb2.ListKeysResponse(keys=convert.keys_to_proto(keys))

    async def UpdateKey(self, request: auth_pb2.UpdateKeyRequest, context: Context) -> auth_pb2.UpdateKeyResponse:
        """Replace the key's limits, scopes or allowed models (those the request sets)."""
        await self._admin(context)
        key_id = check_key_id(request.key_id)
        changes = KeyChanges(
            limits=convert.limits_from_proto(request.limits, "limits") if request.HasField("limits") else None,
            scopes=check_scopes(request.scopes, "scopes") or None,
            allowed_models=check_patterns(request.allowed_models, "allowed_models") or None,
        )
        key = await self._accounts.update_key(key_id, changes)
        return auth_pb2.UpdateKeyResponse(key=convert.key_to_proto(key))

    async def RevokeKey(self, request: auth_pb2.RevokeKeyRequest, context: Context) -> auth_pb2.RevokeKeyResponse:
        """Revoke the key for good."""
        await self._admin(context)
        key = await self._accounts.revoke_key(check_key_id(request.key_id))
        return auth_pb2.RevokeKeyResponse(key=convert.key_to_proto(key))

    async def SetRoute(self, request: auth_pb2.SetRouteRequest, context: Context) -> auth_pb2.SetRouteResponse:
        """Create or replace the route override for a model id."""
        await self._admin(context)
        route = await self._routes.set(request.model, request.provider, request.upstream_model)
        return auth_pb2.SetRouteResponse(route=_route_to_proto(route))

    async def ListRoutes(self, request: auth_pb2.ListRoutesRequest, context: Context) -> auth_pb2.ListRoutesResponse:
        """List every route override."""
        await self._admin(context)
        return auth_pb2.ListRoutesResponse(routes=[_route_to_proto(r) for r in await self._routes.list()])

    async def DeleteRoute(self, request: auth_pb2.DeleteRouteRequest, context: Context) -> auth_pb2.DeleteRouteResponse:
        """Remove the route override for a model id."""
        await self._admin(context)
        return auth_pb2.DeleteRouteResponse(route=_route_to_proto(await self._routes.delete(request.model)))

    async def GetRouteTable(
        self, request: auth_pb2.GetRouteTableRequest, context: Context
    ) -> auth_pb2.GetRouteTableResponse:
        """The whole route table for a router's cache; the service identity (router) is the only check."""
        return auth_pb2.GetRouteTableResponse(routes=[_route_to_proto(r) for r in await self._routes.list()])


def _route_to_proto(route: Route) -> auth_pb2.Route:
    message = auth_pb2.Route(model=route.model, provider=route.provider, upstream_model=route.upstream_model)
    message.update_time.FromDatetime(route.update_time)
    return message
