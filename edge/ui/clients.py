"""The UI's one seam to the services: the admin, credential and report RPCs, called with the
signed-in key as the caller's own (``authorization: Bearer``), exactly as the JSON routes call them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import TypeVar

import grpc
from fastapi import Request
from google.protobuf import timestamp_pb2

from edge.openai_api import call_metadata
from edge.state import EdgeState
from edge.ui.session import Session
from gateway.auth.v1 import auth_pb2, credentials_pb2, credentials_pb2_grpc
from gateway.metering.v1 import metering_pb2
from gateway.router.v1 import router_pb2

ADMIN_TIMEOUT_S = 10.0
"""Every call waits for its channel to connect (wait_for_ready) up to this long: a page shown
while auth or the router is reconnecting is slower, not an error."""

T = TypeVar("T")


class CredentialsUnavailable(Exception):
    """Auth does not serve the CredentialService (it answered UNIMPLEMENTED)."""


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class Services:
    """The RPCs one page needs, bound to one request's metadata and the session's key."""

    def __init__(self, request: Request, session: Session) -> None:
        state: EdgeState = request.app.state.edge
        self._auth = state.auth
        self._credentials = credentials_pb2_grpc.CredentialServiceStub(state.channels["auth"])
        self._router = state.router
        # The browser sends no authorization header; the session's key takes its place.
        inherited = tuple((k, v) for k, v in call_metadata(request) if k != "authorization")
        self._metadata = (*inherited, ("authorization", f"Bearer {session.key}"))

    @classmethod
    def for_key(cls, request: Request, key: str) -> Services:
        """Services acting for a key that is not signed in yet (the sign-in check)."""
        return cls(request, Session(key, "tenant"))

    # Tenants, keys and routes (auth; admin keys only, auth decides).

    async def list_tenants(self) -> list[auth_pb2.Tenant]:
        """Every tenant."""
        response = await self._auth.ListTenants(
            auth_pb2.ListTenantsRequest(), metadata=self._metadata, timeout=ADMIN_TIMEOUT_S, wait_for_ready=True
        )
        return list(response.tenants)

    async def create_tenant(self, tenant: auth_pb2.Tenant) -> auth_pb2.Tenant:
        """Create ``tenant``."""
        response = await self._auth.CreateTenant(
            auth_pb2.CreateTenantRequest(tenant=tenant),
            metadata=self._metadata,
            timeout=ADMIN_TIMEOUT_S,
            wait_for_ready=True,
        )
        return response.tenant

    async def update_tenant(self, request: auth_pb2.UpdateTenantRequest) -> auth_pb2.Tenant:
        """Replace a tenant's limits and key defaults."""
        response = await self._auth.UpdateTenant(
            request, metadata=self._metadata, timeout=ADMIN_TIMEOUT_S, wait_for_ready=True
        )
        return response.tenant

    async def list_keys(self, tenant_id: str) -> list[auth_pb2.ApiKey]:
        """The keys of ``tenant_id`` (every tenant when empty), revoked ones included."""
        response = await self._auth.ListKeys(
            auth_pb2.ListKeysRequest(tenant_id=tenant_id, include_revoked=True),
            metadata=self._metadata,
            timeout=ADMIN_TIMEOUT_S,
            wait_for_ready=True,
        )
        return list(response.keys)

    async def create_key(self, request: auth_pb2.CreateKeyRequest) -> auth_pb2.CreateKeyResponse:
        """Create a key; the answer holds its secret, this once."""
        response: auth_pb2.CreateKeyResponse = await self._auth.CreateKey(
            request, metadata=self._metadata, timeout=ADMIN_TIMEOUT_S, wait_for_ready=True
        )
        return response

    async def update_key(self, request: auth_pb2.UpdateKeyRequest) -> auth_pb2.ApiKey:
        """Replace a key's limits or allowed models."""
        response = await self._auth.UpdateKey(
            request, metadata=self._metadata, timeout=ADMIN_TIMEOUT_S, wait_for_ready=True
        )
        return response.key

    async def revoke_key(self, key_id: str) -> None:
        """Revoke a key for good."""
        await self._auth.RevokeKey(
            auth_pb2.RevokeKeyRequest(key_id=key_id),
            metadata=self._metadata,
            timeout=ADMIN_TIMEOUT_S,
            wait_for_ready=True,
        )

    async def list_routes(self) -> list[auth_pb2.Route]:
        """Every route override."""
        response = await self._auth.ListRoutes(
            auth_pb2.ListRoutesRequest(), metadata=self._metadata, timeout=ADMIN_TIMEOUT_S, wait_for_ready=True
        )
        return list(response.routes)

    async def set_route(self, model: str, provider: str, upstream_model: str) -> None:
        """Create or replace a route override."""
        await self._auth.SetRoute(
            auth_pb2.SetRouteRequest(model=model, provider=provider, upstream_model=upstream_model),
            metadata=self._metadata,
            timeout=ADMIN_TIMEOUT_S,
            wait_for_ready=True,
        )

    async def delete_route(self, model: str) -> None:
        """Remove a route override."""
        await self._auth.DeleteRoute(
            auth_pb2.DeleteRouteRequest(model=model),
            metadata=self._metadata,
            timeout=ADMIN_TIMEOUT_S,
            wait_for_ready=True,
        )

    # Upstream credentials (auth's CredentialService; a tenant key sees only its own, auth decides).

    @staticmethod
    async def _credential_call(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise CredentialsUnavailable from None
            raise

    async def list_credentials(self, tenant_id: str) -> list[credentials_pb2.Credential]:
        """The credentials of ``tenant_id`` (empty: every tenant's for an admin, its own for a tenant)."""
        response = await self._credential_call(
            self._credentials.ListCredentials(
                credentials_pb2.ListCredentialsRequest(tenant_id=tenant_id),
                metadata=self._metadata,
                timeout=ADMIN_TIMEOUT_S,
                wait_for_ready=True,
            )
        )
        return list(response.credentials)

    async def create_credential(self, request: credentials_pb2.CreateCredentialRequest) -> None:
        """Store a new credential."""
        await self._credential_call(
            self._credentials.CreateCredential(
                request, metadata=self._metadata, timeout=ADMIN_TIMEOUT_S, wait_for_ready=True
            )
        )

    async def set_credential_state(self, credential_id: str, state: credentials_pb2.CredentialState.ValueType) -> None:
        """Enable or disable a credential."""
        await self._credential_call(
            self._credentials.UpdateCredential(
                credentials_pb2.UpdateCredentialRequest(credential_id=credential_id, state=state),
                metadata=self._metadata,
                timeout=ADMIN_TIMEOUT_S,
                wait_for_ready=True,
            )
        )

    async def rotate_credential(self, credential_id: str, api_key: str) -> None:
        """Replace a credential's API key."""
        await self._credential_call(
            self._credentials.RotateCredential(
                credentials_pb2.RotateCredentialRequest(
                    credential_id=credential_id, secret=credentials_pb2.CredentialSecret(api_key=api_key)
                ),
                metadata=self._metadata,
                timeout=ADMIN_TIMEOUT_S,
                wait_for_ready=True,
            )
        )

    async def delete_credential(self, credential_id: str) -> None:
        """Delete a credential for good."""
        await self._credential_call(
            self._credentials.DeleteCredential(
                credentials_pb2.DeleteCredentialRequest(credential_id=credential_id),
                metadata=self._metadata,
                timeout=ADMIN_TIMEOUT_S,
                wait_for_ready=True,
            )
        )

    # Reports (the router decides whose usage the key may read).

    async def usage(
        self, tenant_id: str, group_by: metering_pb2.GroupBy.ValueType, windows: Sequence[tuple[datetime, datetime]]
    ) -> list[list[metering_pb2.UsageRow]]:
        """Usage rows grouped by ``group_by``, one list per ``[start, end)`` window, asked concurrently."""

        async def one(start: datetime, end: datetime) -> list[metering_pb2.UsageRow]:
            response = await self._router.GetUsage(
                router_pb2.GetUsageRequest(
                    tenant_id=tenant_id, group_by=group_by, start_time=_timestamp(start), end_time=_timestamp(end)
                ),
                metadata=self._metadata,
                timeout=ADMIN_TIMEOUT_S,
                wait_for_ready=True,
            )
            return list(response.rows)

        return list(await asyncio.gather(*(one(start, end) for start, end in windows)))

    async def prompt_log(self, limit: int) -> list[metering_pb2.PromptLogEntry]:
        """The caller's tenant's latest prompt log entries, newest first."""
        response = await self._router.GetPromptLog(
            router_pb2.GetPromptLogRequest(limit=limit),
            metadata=self._metadata,
            timeout=ADMIN_TIMEOUT_S,
            wait_for_ready=True,
        )
        return list(response.entries)
