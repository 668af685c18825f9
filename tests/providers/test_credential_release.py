"""A tenant credential's reservation is settled at once, not left to its lease, when a stream breaks
after its first chunk or the caller cancels it: the window gets back what the call did not use."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.auth.v1 import credentials_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig
from services.providers.server import build
from services.ratelimit.credentials import CredentialSelector
from services.ratelimit.limiter import Limiter
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.storage.cooldown import Backoff, MemoryCooldowns
from services.ratelimit.storage.memory import MemoryStore
from tests.providers.test_credential_selection import PROVIDER, FakeCredentials, World, api_key
from tests.servers import free_port, wait_until

DAILY_TOKENS = 1_000_000
MAX_TOKENS = 50_000
"""The request's completion cap: what the reservation estimates, far above what the stream uses."""
QUOTA = quota_pb2.Quota(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_DAY, limit=DAILY_TOKENS)
REQUEST = chat_pb2.ChatCompletionRequest(
    messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")], max_tokens=MAX_TOKENS
)
TARGET = providers_pb2.Target(provider=PROVIDER, model="gpt-4o-mini")


def _app() -> Starlette:
    async def chat(request: Request) -> Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")

        async def events() -> AsyncIterator[bytes]:
            base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
            delta = {"role": "assistant", "content": "partial"}
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode()
            if key == "key-slow":
                await asyncio.sleep(30)  # the caller cancels long before
            # key-break: the connection ends without a finish reason or [DONE].

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "fake upstream", 10)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
async def world(upstream: str) -> AsyncIterator[World]:
    fake = FakeCredentials()  # type: ignore[abstract]  # the admin RPCs are auth's, unused here
    limiter = Limiter(MemoryStore(), outage_policy="fail_closed", default_ttl_s=30)
    backends = grpc.aio.server()
    credentials_pb2_grpc.add_CredentialServiceServicer_to_server(fake, backends)
    selector = CredentialSelector(limiter, MemoryCooldowns(Backoff()))
    ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(limiter, selector), backends)
    address = f"127.0.0.1:{backends.add_insecure_port('127.0.0.1:0')}"
    await backends.start()
    config = GatewayConfig.model_validate(
        {
            "tls": {"internal": "off"},
            "services": {"auth": {"address": address}, "ratelimit": {"address": address}},
            "providers": {PROVIDER: {"type": "openai", "base_url": f"{upstream}/v1", "api_key_env": "UP_KEY"}},
        }
    )
    app = build(config, listen="127.0.0.1:0", env={"UP_KEY": "global-key"})
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{await app.start()}")
    ratelimit_channel = grpc.aio.insecure_channel(address)
    try:
        yield World(
            providers_pb2_grpc.ProviderServiceStub(channel),
            ratelimit_pb2_grpc.RateLimitServiceStub(ratelimit_channel),
            fake,
            None,  # type: ignore[arg-type]  # this upstream records nothing
        )
    finally:
        await channel.close(None)
        await ratelimit_channel.close(None)
        await app.stop(0)
        await backends.stop(0)


async def _tokens_used(world: World) -> int:
    request = ratelimit_pb2.GetCredentialStatesRequest(
        credentials=[ratelimit_pb2.CredentialCandidate(credential_id="cred_a", limits=[QUOTA])]
    )
    (state,) = (await world.ratelimit.GetCredentialStates(request, timeout=5)).states
    return DAILY_TOKENS - state.windows[0].remaining


async def _settled(world: World) -> int:
    """The tokens counted once the reservation no longer holds the estimate (polled, at most 5 s)."""
    deadline = time.monotonic() + 5
    while (used := await _tokens_used(world)) >= MAX_TOKENS and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return used


async def test_a_stream_broken_after_its_first_chunk_settles_what_it_used(world: World) -> None:
    world.credentials.by_tenant[("t1", PROVIDER)] = [api_key("cred_a", "key-break", 1, QUOTA)]
    request = providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST, tenant_id="t1")
    replies = []
    with pytest.raises(grpc.aio.AioRpcError):
        async for reply in world.providers.StreamChat(request, timeout=10):
            replies.append(reply)
    assert replies and replies[0].credential_id == "cred_a"

    used = await _settled(world)

    # The prompt's bytes and the 7 streamed: far below the 50 000 estimated.
    assert 0 < used <= REQUEST.ByteSize() + len("partial")


async def test_a_stream_cancelled_after_its_first_chunk_settles_what_it_used(world: World) -> None:
    world.credentials.by_tenant[("t1", PROVIDER)] = [api_key("cred_a", "key-slow", 1, QUOTA)]
    call = world.providers.StreamChat(
        providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST, tenant_id="t1"), timeout=20
    )
    first = await call.read()
    assert first.credential_id == "cred_a"
    assert await _tokens_used(world) >= MAX_TOKENS  # the estimate is held while it runs
    call.cancel()

    used = await _settled(world)

    assert 0 < used <= REQUEST.ByteSize() + len("partial")
