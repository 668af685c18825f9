"""The CredentialService RPCs: protobuf in, domain calls, protobuf out.

Admin RPCs authenticate the caller's key (``authorization: Bearer <key>``) first: an admin key acts
on any tenant, any other usable key on its own. ResolveCredentials and StoreRefreshedTokens carry
no key: the service identity (providers only, ``gateway_common/identity.py``) is their check.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import grpc

from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc

from ..accounts import Accounts
from ..model import Principal
from ..servicer import bearer_key
from . import convert
from .domain import Credentials
from .model import CredentialChanges
from .runtime import CredentialRuntime

SERVICE_NAME = credentials_pb2.DESCRIPTOR.services_by_name["CredentialService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]

CooldownLookup = Callable[[Sequence[str]], Awaitable[Mapping[str, datetime]]]
"""Until when each of these credentials cools down after a 429 or 401 (absent: usable).

The seam for the rate limit service, which keeps that runtime state: ``server.py`` passes a lookup
once ratelimit answers it; without one, listings leave ``cooldown_until`` unset."""

RuntimeLookup = Callable[[Sequence[credentials_pb2.Credential]], Awaitable[Mapping[str, CredentialRuntime]]]
"""Each listed credential's cooldown and window usage, from the rate limit service (see
:class:`services.auth.credentials.runtime.RateLimitRuntime`, which ``server.py`` wires); a
credential it says nothing of is shown without them."""

LedgerLookup = Callable[
    [Sequence[credentials_pb2.Credential]], Awaitable[Mapping[str, credentials_pb2.CredentialLedgerUsage]]
]
"""Each listed credential's totals this month, from the usage ledger (see
:class:`services.auth.credentials.ledger_usage.MeteringMonthUsage`); absent ones are shown without."""


class CredentialServicer(credentials_pb2_grpc.CredentialServiceServicer):
    """Translates CredentialService calls to :class:`Credentials`."""

    def __init__(
        self,
        accounts: Accounts,
        credentials: Credentials,
        cooldowns: CooldownLookup | None = None,
        runtime: RuntimeLookup | None = None,
        ledger: LedgerLookup | None = None,
    ) -> None:
        self._accounts = accounts
        self._credentials = credentials
        self._cooldowns = cooldowns
        self._runtime = runtime
        self._ledger = ledger

    async def _caller(self, context: Context) -> Principal:
        return await self._accounts.authenticate(bearer_key(context))

    async def CreateCredential(
        self, request: credentials_pb2.CreateCredentialRequest, context: Context
    ) -> credentials_pb2.CreateCredentialResponse:
        """Seal and store a new credential."""
        caller = await self._caller(context)
        created = await self._credentials.create(
            caller,
            tenant_id=request.tenant_id,
            provider=request.provider,
            name=request.name,
            priority=request.priority,
            limits=convert.quotas_from_proto(request.limits, "limits"),
            secret=convert.secret_from_proto(request.secret, "secret"),
        )
        return credentials_pb2.CreateCredentialResponse(credential=convert.credential_to_proto(created))

    async def ListCredentials(
        self, request: credentials_pb2.ListCredentialsRequest, context: Context
    ) -> credentials_pb2.ListCredentialsResponse:
        """List credentials without secrets."""
        caller = await self._caller(context)
        found = await self._credentials.listing(caller, request.tenant_id, request.provider)
        messages = [convert.credential_to_proto(c) for c in found]
        if self._cooldowns is not None and messages:
            until = await self._cooldowns([m.credential_id for m in messages])
            for message in messages:
                if message.credential_id in until:
                    message.cooldown_until.FromDatetime(until[message.credential_id])
        if self._runtime is not None and messages:
            states = await self._runtime(messages)
            for message in messages:
                state = states.get(message.credential_id)
                if state is None:
                    continue
                if state.cooldown_until is not None:
                    message.cooldown_until.FromDatetime(state.cooldown_until)
                message.window_usage.extend(state.window_usage)
        if self._ledger is not None and messages:
            totals = await self._ledger(messages)
            for message in messages:
                if message.credential_id in totals:
                    message.month_usage.CopyFrom(totals[message.credential_id])
        return credentials_pb2.ListCredentialsResponse(credentials=messages)

    async def UpdateCredential(
        self, request: credentials_pb2.UpdateCredentialRequest, context: Context
    ) -> credentials_pb2.UpdateCredentialResponse:
        """Change name, priority, state or limits (those the request sets)."""
        caller = await self._caller(context)
        changes = CredentialChanges(
            name=request.name if request.HasField("name") else None,
            priority=request.priority if request.HasField("priority") else None,
            state=convert.state_from_proto(request.state),
            limits=convert.quotas_from_proto(request.limits, "limits") if request.replace_limits else None,
        )
        updated = await self._credentials.update(caller, request.credential_id, changes)
        return credentials_pb2.UpdateCredentialResponse(credential=convert.credential_to_proto(updated))

    async def RotateCredential(
        self, request: credentials_pb2.RotateCredentialRequest, context: Context
    ) -> credentials_pb2.RotateCredentialResponse:
        """Replace the secret under a fresh data key."""
        caller = await self._caller(context)
        rotated = await self._credentials.rotate(
            caller, request.credential_id, convert.secret_from_proto(request.secret, "secret")
        )
        return credentials_pb2.RotateCredentialResponse(credential=convert.credential_to_proto(rotated))

    async def DeleteCredential(
        self, request: credentials_pb2.DeleteCredentialRequest, context: Context
    ) -> credentials_pb2.DeleteCredentialResponse:
        """Delete for good."""
        caller = await self._caller(context)
        await self._credentials.delete(caller, request.credential_id)
        return credentials_pb2.DeleteCredentialResponse()

    async def ResolveCredentials(
        self, request: credentials_pb2.ResolveCredentialsRequest, context: Context
    ) -> credentials_pb2.ResolveCredentialsResponse:
        """The tenant's active credentials for a provider, decrypted, best priority first."""
        resolved = await self._credentials.resolve(request.tenant_id, request.provider)
        return credentials_pb2.ResolveCredentialsResponse(
            credentials=[
                credentials_pb2.UsableCredential(
                    credential=convert.credential_to_proto(r.credential), secret=convert.secret_to_proto(r.payload)
                )
                for r in resolved
            ],
            cache_ttl_seconds=math.ceil(self._credentials.cache_ttl_s),
        )

    async def StoreRefreshedTokens(
        self, request: credentials_pb2.StoreRefreshedTokensRequest, context: Context
    ) -> credentials_pb2.StoreRefreshedTokensResponse:
        """Store a refreshed OAuth token set under a fresh data key."""
        tokens = request.tokens
        updated = await self._credentials.refresh(
            request.credential_id, lambda payload: convert.merge_refreshed(payload, tokens)
        )
        return credentials_pb2.StoreRefreshedTokensResponse(credential=convert.credential_to_proto(updated))

    async def RewrapCredentials(
        self, request: credentials_pb2.RewrapCredentialsRequest, context: Context
    ) -> credentials_pb2.RewrapCredentialsResponse:
        """Re-wrap every data key under the current KEK (admin keys only)."""
        await self._accounts.authorize_admin(bearer_key(context))
        done, remaining = await self._credentials.rewrap_all()
        return credentials_pb2.RewrapCredentialsResponse(
            kek_id=self._credentials.current_kek_id, rewrapped=done, remaining=remaining
        )
