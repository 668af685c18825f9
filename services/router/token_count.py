"""CountTokens: the prompt tokens of a canonical request, without quota, provider or ledger.

The gateway loads no tokenizer (vocabularies differ per provider and none is downloadable at run
time, see ``gateway_common.tokens``), so the count is the ceiling admission itself reserves: what
the caller is told is exactly what a request of that prompt would hold against its token limits.
"""

from __future__ import annotations

from gateway.auth.v1 import auth_pb2
from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2
from gateway_common.tokens import prompt_token_ceiling
from services.router.orchestrator import Orchestrator
from services.router.validation import validate_chat

_INT32_MAX = 2**31 - 1


def count_tokens(
    orchestrator: Orchestrator, principal: auth_pb2.Principal, request: chat_pb2.ChatCompletionRequest
) -> router_pb2.CountTokensResponse:
    """The ceiling count of ``request``'s prompt; raises as admission would for a bad request or a
    model the principal may not use (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED)."""
    validate_chat(request)
    orchestrator.usable_candidates(principal, request.model)
    return router_pb2.CountTokensResponse(
        input_tokens=min(prompt_token_ceiling(request), _INT32_MAX),
        method=router_pb2.TOKEN_COUNT_METHOD_CEILING,
    )
