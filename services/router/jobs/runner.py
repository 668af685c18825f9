"""Runs one job through the router's own orchestrator, under its submitter's current principal.

A Responses API request runs as a turn of :class:`~services.router.conversations.Conversations`,
exactly as on the synchronous route. The submitter's key is never stored: the job keeps the key's
id, and each run asks auth for that key's principal as it is now, so a key revoked (or re-limited)
since the submit is honoured. The job id is the request id, so the job's ledger rows are found by it.
"""

from __future__ import annotations

import grpc

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError
from services.router.conversations import Conversations
from services.router.jobs.model import Job
from services.router.orchestrator import CallContext, Orchestrator


async def _no_headers(headers: list[tuple[str, str]]) -> None:
    return None


class OrchestratorRunner:
    """A job's run: the same admission, limits, budgets, routing, fallbacks and metering as a sync call."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        auth: auth_pb2_grpc.AuthServiceAsyncStub,
        conversations: Conversations | None = None,
    ) -> None:
        self._orchestrator = orchestrator
        self._auth = auth
        self._conversations = conversations

    async def principal(self, key_id: str, request_id: str) -> auth_pb2.Principal:
        """The key's current principal; PERMISSION_DENIED once it is revoked or expired."""
        try:
            response = await self._auth.GetPrincipal(
                auth_pb2.GetPrincipalRequest(key_id=key_id), timeout=5.0, metadata=(("x-request-id", request_id),)
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError.from_rpc_error(exc, "auth") from None
        return response.principal

    async def __call__(self, job: Job) -> bytes:
        """The canonical answer of ``job``'s request, serialized."""
        principal = await self.principal(job.key_id, job.id)
        request = chat_pb2.ChatCompletionRequest.FromString(job.request)
        call = CallContext(api_key="", request_id=job.id, principal=principal)
        if not request.HasField("conversation") or self._conversations is None:
            completion = await self._orchestrator.chat(request, call, _no_headers)
            return completion.SerializeToString()

        # A Responses API request: the same turn as the synchronous route (its response id, the
        # conversation it continues, stored when it asked to be).
        async def authenticate() -> auth_pb2.Principal:
            return principal

        turn = await self._conversations.begin(request, authenticate, job.id)
        completion = await self._orchestrator.chat(turn.run, call, _no_headers)
        await self._conversations.finish(turn, completion, job.id)
        return completion.SerializeToString()
