"""Stored, continuable conversations of the Responses API: the router's side of ``store`` and
``previous_response_id``.

A request with ``conversation`` options becomes a :class:`Turn` before admission: it gets its
response id, and the conversation it continues (loaded for the caller's tenant only) is put before
its own input, so limits and budgets count what the model will really read. After a completed
answer the turn is stored in metering's ResponseStoreService. A store failure never costs the
client the answer it already has: it is logged and counted, and the answer stands.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from prometheus_client import Counter

from gateway.auth.v1 import auth_pb2
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import response_store_pb2, response_store_pb2_grpc
from gateway.router.v1 import router_pb2
from gateway_common.errors import GatewayError
from gateway_common.grpc_server import REQUEST_ID_KEY
from gateway_common.openai_wire import responses_render

log = logging.getLogger(__name__)

RESPONSE_NOT_FOUND = "RESPONSE_NOT_FOUND"
"""ErrorInfo reason of a response that is absent, deleted or another tenant's."""

STORE_FAILURES = Counter(
    "gateway_response_store_failures_total", "Responses that could not be stored (the answer was still sent)."
)

Authenticate = Callable[[], Awaitable[auth_pb2.Principal]]


def new_response_id() -> str:
    """A fresh response id: ``resp_`` and 48 random hex digits."""
    return f"resp_{secrets.token_hex(24)}"


def not_found(response_id: str, param: str) -> GatewayError:
    """The one answer for a response the caller may not see, whether absent or another tenant's."""
    return GatewayError(
        grpc.StatusCode.NOT_FOUND,
        RESPONSE_NOT_FOUND,
        f"Response with id '{response_id}' not found.",
        {"param": param},
    )


def _instructions_message(request: chat_pb2.ChatCompletionRequest) -> list[chat_pb2.Message]:
    if not request.conversation.HasField("instructions"):
        return []
    return [chat_pb2.Message(role=chat_pb2.ROLE_SYSTEM, text=request.conversation.instructions)]


@dataclass
class _Accumulated:
    text: list[str] = field(default_factory=list)
    calls: dict[int, chat_pb2.ToolCall] = field(default_factory=dict)


@dataclass
class Turn:
    """One Responses API request: what runs, what is stored, and the answer as it arrives."""

    response_id: str
    principal: auth_pb2.Principal
    run: chat_pb2.ChatCompletionRequest
    """The request the orchestrator runs: instructions, the previous conversation, this input."""
    stored: chat_pb2.ChatCompletionRequest
    """The request as stored: without the instructions (never carried over to the next turn)."""
    input_start: int
    _stream: _Accumulated = field(default_factory=_Accumulated)
    _last: chat_pb2.ChatCompletionChunk = field(default_factory=chat_pb2.ChatCompletionChunk)

    def chunk(self, chunk: chat_pb2.ChatCompletionChunk) -> chat_pb2.ChatCompletionChunk:
        """A streamed chunk under the response id; its content is kept to store once complete."""
        chunk.id = self.response_id
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            if choice.delta.HasField("content"):
                self._stream.text.append(choice.delta.content)
            for delta in choice.delta.tool_calls:
                call = self._stream.calls.setdefault(delta.index, chat_pb2.ToolCall(type="function"))
                if delta.HasField("id"):
                    call.id = delta.id
                if delta.HasField("name"):
                    call.function.name += delta.name
                if delta.HasField("arguments"):
                    call.function.arguments += delta.arguments
            if choice.finish_reason:
                self._last.choices.add().finish_reason = choice.finish_reason
        if chunk.HasField("usage"):
            self._last.usage.CopyFrom(chunk.usage)
        if chunk.model:
            self._last.model = chunk.model
        if chunk.provider:
            self._last.provider = chunk.provider
        return chunk

    def streamed_completion(self) -> chat_pb2.ChatCompletion:
        """The answer a completed stream gave, as one canonical completion."""
        message = chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT)
        if self._stream.text:
            message.text = "".join(self._stream.text)
        for index in sorted(self._stream.calls):
            message.tool_calls.append(self._stream.calls[index])
        finish = self._last.choices[-1].finish_reason if self._last.choices else chat_pb2.FINISH_REASON_STOP
        completion = chat_pb2.ChatCompletion(
            id=self.response_id,
            created=self.stored.conversation.created_at,
            model=self._last.model,
            provider=self._last.provider,
            usage=self._last.usage,
        )
        completion.choices.add(index=0, message=message, finish_reason=finish)
        return completion


class Conversations:
    """Begins turns (continuing stored conversations) and stores their answers, per tenant."""

    def __init__(self, store: response_store_pb2_grpc.ResponseStoreServiceAsyncStub, timeout_s: float = 10.0) -> None:
        self._store = store
        self._timeout_s = timeout_s

    async def begin(self, request: chat_pb2.ChatCompletionRequest, authenticate: Authenticate, request_id: str) -> Turn:
        """The turn ``request`` starts: its id, and the conversation it continues put before its input."""
        principal = await authenticate()
        history: list[chat_pb2.Message] = []
        previous_id = request.conversation.previous_response_id
        if previous_id:
            previous = await self._load(principal, previous_id, "previous_response_id", request_id)
            history = list(previous.request.messages)
            if previous.completion.choices:
                history.append(previous.completion.choices[0].message)
        own = await self._resolve(principal, list(request.messages), request_id)
        response_id = new_response_id()
        stored = chat_pb2.ChatCompletionRequest()
        stored.CopyFrom(request)
        del stored.messages[:]
        stored.messages.extend([*history, *own])
        stored.conversation.response_id = response_id
        stored.conversation.created_at = int(time.time())
        run = chat_pb2.ChatCompletionRequest()
        run.CopyFrom(stored)
        del run.messages[:]
        run.messages.extend([*_instructions_message(request), *stored.messages])
        # The providers never see the conversation options: they are the router's business.
        run.ClearField("conversation")
        return Turn(response_id, principal, run, stored, len(history))

    async def _resolve(
        self, principal: auth_pb2.Principal, messages: list[chat_pb2.Message], request_id: str
    ) -> list[chat_pb2.Message]:
        """``messages`` with every ``item_reference`` replaced by the stored item it names (the
        caller's tenant's only), consecutive tool calls joined into one assistant turn."""
        if not any(m.item_reference for m in messages):
            return messages
        loaded: dict[str, tuple[list[chat_pb2.Message], list[chat_pb2.Message]]] = {}
        resolved: list[chat_pb2.Message] = []
        for message in messages:
            if message.item_reference:
                message = await self._item(principal, message.item_reference, loaded, request_id)
            previous = resolved[-1] if resolved else None
            if (
                previous is not None
                and message.role == previous.role == chat_pb2.ROLE_ASSISTANT
                and previous.tool_calls
                and message.tool_calls
                and not _has_content(message)
            ):
                previous.tool_calls.extend(message.tool_calls)
                continue
            copy = chat_pb2.Message()
            copy.CopyFrom(message)
            resolved.append(copy)
        return resolved

    async def _item(
        self,
        principal: auth_pb2.Principal,
        item_id: str,
        loaded: dict[str, tuple[list[chat_pb2.Message], list[chat_pb2.Message]]],
        request_id: str,
    ) -> chat_pb2.Message:
        where = responses_render.parse_item_id(item_id)
        missing = GatewayError(
            grpc.StatusCode.NOT_FOUND, RESPONSE_NOT_FOUND, f"Item with id '{item_id}' not found.", {"param": "input"}
        )
        if where is None:
            raise missing
        response_id, is_input, index = where
        if response_id not in loaded:
            try:
                conversation, stored_inputs = await self.get(principal, response_id, request_id)
            except GatewayError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    raise missing from None
                raise
            answer = [choice.message for choice in conversation.completion.choices[:1]]
            loaded[response_id] = (list(stored_inputs.messages), answer)
        inputs, output = loaded[response_id]
        items = responses_render.split_items(inputs if is_input else output)
        if index >= len(items) or not items[index][1].ListFields():
            raise missing
        return items[index][1]

    async def finish(self, turn: Turn, completion: chat_pb2.ChatCompletion, request_id: str) -> None:
        """Stores a completed answer when the request asked to; a failure is logged and counted only."""
        completion.id = turn.response_id
        # The answer and its stored copy name one creation time: the turn's, not the provider's
        # (which can fall in the next second), so a retrieved response equals the one returned.
        completion.created = turn.stored.conversation.created_at
        if not turn.stored.conversation.store:
            return
        conversation = router_pb2.StoredConversation(
            request=turn.stored, input_start=turn.input_start, completion=completion
        )
        inputs = router_pb2.StoredInputItems(messages=turn.stored.messages[turn.input_start :])
        stored = response_store_pb2.StoredResponse(
            tenant_id=turn.principal.tenant_id,
            response_id=turn.response_id,
            key_id=turn.principal.key_id,
            response=conversation.SerializeToString(),
            input_items=inputs.SerializeToString(),
            previous_response_id=turn.stored.conversation.previous_response_id,
        )
        stored.created_at.FromSeconds(turn.stored.conversation.created_at)
        try:
            await self._store.PutResponse(
                response_store_pb2.PutResponseRequest(stored=stored),
                timeout=self._timeout_s,
                metadata=((REQUEST_ID_KEY, request_id),),
            )
        except grpc.aio.AioRpcError as exc:
            STORE_FAILURES.inc()
            log.warning("response %s was answered but not stored: %s", turn.response_id, exc.code().name)

    async def get(
        self, principal: auth_pb2.Principal, response_id: str, request_id: str
    ) -> tuple[router_pb2.StoredConversation, router_pb2.StoredInputItems]:
        """A stored response of the principal's tenant and its input; NOT_FOUND otherwise."""
        stored = await self._fetch(principal, response_id, "response_id", request_id)
        return _decode(stored), router_pb2.StoredInputItems.FromString(stored.input_items)

    async def delete(self, principal: auth_pb2.Principal, response_id: str, request_id: str) -> None:
        """Deletes a stored response of the principal's tenant; NOT_FOUND otherwise."""
        try:
            await self._store.DeleteResponse(
                response_store_pb2.DeleteResponseRequest(tenant_id=principal.tenant_id, response_id=response_id),
                timeout=self._timeout_s,
                metadata=((REQUEST_ID_KEY, request_id),),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found(response_id, "response_id") from None
            raise GatewayError.from_rpc_error(exc, "response store") from None

    async def _load(
        self, principal: auth_pb2.Principal, response_id: str, param: str, request_id: str
    ) -> router_pb2.StoredConversation:
        return _decode(await self._fetch(principal, response_id, param, request_id))

    async def _fetch(
        self, principal: auth_pb2.Principal, response_id: str, param: str, request_id: str
    ) -> response_store_pb2.StoredResponse:
        try:
            response = await self._store.GetResponse(
                response_store_pb2.GetResponseRequest(tenant_id=principal.tenant_id, response_id=response_id),
                timeout=self._timeout_s,
                metadata=((REQUEST_ID_KEY, request_id),),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found(response_id, param) from None
            raise GatewayError.from_rpc_error(exc, "response store") from None
        # The store scopes by tenant already; checking again costs nothing and survives a store bug.
        if response.stored.tenant_id != principal.tenant_id:
            raise not_found(response_id, param)
        return response.stored


def _has_content(message: chat_pb2.Message) -> bool:
    return bool(message.text if message.HasField("text") else message.parts)


def _decode(stored: response_store_pb2.StoredResponse) -> router_pb2.StoredConversation:
    return router_pb2.StoredConversation.FromString(stored.response)
