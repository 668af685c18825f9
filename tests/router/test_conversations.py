"""The router's Responses API state (services/router/conversations.py): response ids, continuing a
stored conversation before admission, storing the answer per tenant, and the stored-response RPCs.

Auth, ratelimit, providers and metering are the in-process fakes of test_orchestration; metering's
ResponseStoreService is a small fake beside them, over real gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.auth.v1 import auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2_grpc, response_store_pb2, response_store_pb2_grpc
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError
from gateway_common.grpc_server import GrpcServer, ServiceRegistration
from services.router.conversations import STORE_FAILURES
from services.router.server import build
from tests.router.test_orchestration import KEY, LOGGED_KEY, FakeAuth, FakeMetering, FakeProviders, FakeRateLimit

MD_A = (("authorization", f"Bearer {KEY}"), ("x-request-id", "req-a"))
MD_B = (("authorization", f"Bearer {LOGGED_KEY}"), ("x-request-id", "req-b"))


class FakeStore(response_store_pb2_grpc.ResponseStoreServiceServicer):
    """Keeps stored responses by (tenant, id), like metering's; ``fail`` makes PutResponse fail."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], response_store_pb2.StoredResponse] = {}
        self.fail = False

    async def PutResponse(self, request: response_store_pb2.PutResponseRequest, context: Any) -> Any:
        if self.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "database is down")
        self.rows[(request.stored.tenant_id, request.stored.response_id)] = request.stored
        return response_store_pb2.PutResponseResponse()

    async def GetResponse(self, request: response_store_pb2.GetResponseRequest, context: Any) -> Any:
        stored = self.rows.get((request.tenant_id, request.response_id))
        if stored is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such response")
        return response_store_pb2.GetResponseResponse(stored=stored)

    async def DeleteResponse(self, request: response_store_pb2.DeleteResponseRequest, context: Any) -> Any:
        if self.rows.pop((request.tenant_id, request.response_id), None) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such response")
        return response_store_pb2.DeleteResponseResponse()


@dataclass
class RecordingProviders(FakeProviders):
    """Remembers the messages of every request a provider received."""

    seen: list[list[chat_pb2.Message]] = field(default_factory=list)

    async def Chat(self, request: providers_pb2.ChatRequest, context: Any) -> providers_pb2.ChatResponse:
        self.seen.append(list(request.completion.messages))
        assert not request.completion.HasField("conversation"), "conversation options never reach a provider"
        return await super().Chat(request, context)

    async def StreamChat(
        self, request: providers_pb2.StreamChatRequest, context: Any
    ) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        self.seen.append(list(request.completion.messages))
        async for chunk in super().StreamChat(request, context):
            yield chunk


@dataclass
class Rig:
    router: router_pb2_grpc.RouterServiceAsyncStub
    providers: RecordingProviders
    ratelimit: FakeRateLimit
    store: FakeStore


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    auth, ratelimit, providers, store = FakeAuth(), FakeRateLimit(), RecordingProviders(), FakeStore()
    registrations = {
        "auth": [ServiceRegistration(auth_pb2_grpc.add_AuthServiceServicer_to_server, auth, "a")],
        "ratelimit": [ServiceRegistration(ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server, ratelimit, "r")],
        "providers": [ServiceRegistration(providers_pb2_grpc.add_ProviderServiceServicer_to_server, providers, "p")],
        "metering": [
            ServiceRegistration(metering_pb2_grpc.add_MeteringServiceServicer_to_server, FakeMetering(), "m"),
            ServiceRegistration(response_store_pb2_grpc.add_ResponseStoreServiceServicer_to_server, store, "s"),
        ],
    }
    servers: list[GrpcServer] = []
    addresses: dict[str, dict[str, str]] = {}
    for name, registration in registrations.items():
        server = GrpcServer("127.0.0.1:0", registration)
        port = await server.start()
        servers.append(server)
        addresses[name] = {"listen": f"127.0.0.1:{port}", "address": f"127.0.0.1:{port}"}
    config = GatewayConfig.model_validate(
        {
            "services": {**addresses, "router": {"listen": "127.0.0.1:0", "address": "unused"}},
            "providers": {"p2": {"type": "openai_compatible", "base_url": "http://y"}},
            "metering": {"flush_interval_s": 0.05, "spool_path": str(tmp_path / "usage-spool.db")},
        }
    )
    app = build(config)
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Rig(router_pb2_grpc.RouterServiceStub(channel), providers, ratelimit, store)
    finally:
        await channel.close()
        await app.stop(0)
        for server in servers:
            await server.stop(0)


def _request(text: str, previous: str = "", store: bool = True) -> chat_pb2.ChatCompletionRequest:
    request = chat_pb2.ChatCompletionRequest(
        model="p2:ok", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=text)], max_completion_tokens=10
    )
    request.conversation.store = store
    request.conversation.previous_response_id = previous
    request.conversation.instructions = "Be brief."
    request.conversation.metadata.update({"topic": "test"})
    return request


async def _chat(rig: Rig, request: chat_pb2.ChatCompletionRequest, md: Any = MD_A) -> chat_pb2.ChatCompletion:
    response = await rig.router.Chat(router_pb2.ChatRequest(completion=request), metadata=md)
    return response.completion


async def test_a_response_gets_an_id_and_is_stored_for_its_tenant(rig: Rig) -> None:
    completion = await _chat(rig, _request("first"))
    assert completion.id.startswith("resp_") and len(completion.id) > 20
    # The instructions lead what the provider read.
    assert [(m.role, m.text) for m in rig.providers.seen[0]] == [
        (chat_pb2.ROLE_SYSTEM, "Be brief."),
        (chat_pb2.ROLE_USER, "first"),
    ]
    stored = rig.store.rows[("t1", completion.id)]
    assert stored.key_id == "k1"
    conversation = router_pb2.StoredConversation.FromString(stored.response)
    # Stored without the instructions (never carried over), with the answer under the response id.
    assert [m.text for m in conversation.request.messages] == ["first"]
    assert conversation.request.conversation.instructions == "Be brief."
    assert conversation.completion.id == completion.id
    assert conversation.completion.choices[0].message.text == "hello"

    got = await rig.router.GetResponse(router_pb2.GetResponseRequest(response_id=completion.id), metadata=MD_A)
    assert got.completion.id == completion.id and got.request.conversation.response_id == completion.id
    assert got.request.conversation.metadata.fields["topic"].string_value == "test"


async def test_previous_response_id_puts_the_conversation_before_the_input_and_limits_count_it(rig: Rig) -> None:
    first = await _chat(rig, _request("first"))
    second = await _chat(rig, _request("second", previous=first.id))
    assert [(m.role, m.text) for m in rig.providers.seen[1]] == [
        (chat_pb2.ROLE_SYSTEM, "Be brief."),
        (chat_pb2.ROLE_USER, "first"),
        (chat_pb2.ROLE_ASSISTANT, "hello"),
        (chat_pb2.ROLE_USER, "second"),
    ]
    # Admission estimated the prompt with the previous turn in it.
    assert rig.ratelimit.acquired[1].amounts.tokens > rig.ratelimit.acquired[0].amounts.tokens
    items = await rig.router.ListResponseInputItems(
        router_pb2.ListResponseInputItemsRequest(response_id=second.id), metadata=MD_A
    )
    assert [m.text for m in items.messages] == ["second"]
    stored = rig.store.rows[("t1", second.id)]
    assert stored.previous_response_id == first.id


async def test_an_item_reference_becomes_the_stored_item_for_its_tenant_only(rig: Rig) -> None:
    first = await _chat(rig, _request("first"))
    suffix = first.id.removeprefix("resp_")
    request = _request("")
    del request.messages[:]
    request.messages.add(role=chat_pb2.ROLE_USER, text="first")
    request.messages.add(role=chat_pb2.ROLE_ASSISTANT, item_reference=f"msg_{suffix}_0")
    request.messages.add(role=chat_pb2.ROLE_USER, text="and then?")
    await _chat(rig, request)
    assert [(m.role, m.text) for m in rig.providers.seen[1]][1:] == [
        (chat_pb2.ROLE_USER, "first"),
        (chat_pb2.ROLE_ASSISTANT, "hello"),
        (chat_pb2.ROLE_USER, "and then?"),
    ]
    assert not any(m.item_reference for m in rig.providers.seen[1])
    for md, reference in ((MD_B, f"msg_{suffix}_0"), (MD_A, f"msg_{suffix}_7")):
        del request.messages[1:]
        request.messages.add(role=chat_pb2.ROLE_ASSISTANT, item_reference=reference)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _chat(rig, request, md)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert GatewayError.from_rpc_error(info.value).metadata["param"] == "input"
    assert len(rig.providers.seen) == 2


async def test_another_tenant_gets_not_found_and_cannot_continue(rig: Rig) -> None:
    first = await _chat(rig, _request("secret"))
    for call in (
        rig.router.GetResponse(router_pb2.GetResponseRequest(response_id=first.id), metadata=MD_B),
        rig.router.ListResponseInputItems(
            router_pb2.ListResponseInputItemsRequest(response_id=first.id), metadata=MD_B
        ),
        rig.router.DeleteResponse(router_pb2.DeleteResponseRequest(response_id=first.id), metadata=MD_B),
        rig.router.Chat(router_pb2.ChatRequest(completion=_request("more", previous=first.id)), metadata=MD_B),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    error = GatewayError.from_rpc_error(info.value)
    assert error.metadata["param"] == "previous_response_id"
    # Tenant B's refused continuation never reached a provider; A's response is still there.
    assert len(rig.providers.seen) == 1 and ("t1", first.id) in rig.store.rows


async def test_delete_removes_it_and_store_false_keeps_nothing(rig: Rig) -> None:
    first = await _chat(rig, _request("x"))
    await rig.router.DeleteResponse(router_pb2.DeleteResponseRequest(response_id=first.id), metadata=MD_A)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rig.router.GetResponse(router_pb2.GetResponseRequest(response_id=first.id), metadata=MD_A)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    unstored = await _chat(rig, _request("y", store=False))
    assert unstored.id.startswith("resp_") and not rig.store.rows


async def test_a_streamed_answer_is_stored_under_the_id_its_chunks_carry(rig: Rig) -> None:
    call = rig.router.StreamChat(router_pb2.StreamChatRequest(completion=_request("stream me")), metadata=MD_A)
    chunks = [item.chunk async for item in call]
    ids = {chunk.id for chunk in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("resp_")
    conversation = router_pb2.StoredConversation.FromString(rig.store.rows[("t1", ids.pop())].response)
    assert conversation.completion.choices[0].message.text == "one two"
    assert conversation.completion.usage.total_tokens == 10


async def test_a_store_failure_still_answers_and_is_counted(rig: Rig) -> None:
    rig.store.fail = True
    before = STORE_FAILURES._value.get()
    completion = await _chat(rig, _request("keep the answer"))
    assert completion.choices[0].message.text == "hello"
    assert STORE_FAILURES._value.get() == before + 1


async def test_a_plain_chat_completion_is_untouched(rig: Rig) -> None:
    request = _request("plain")
    request.ClearField("conversation")
    completion = await _chat(rig, request)
    assert completion.id == "x" and not rig.store.rows
