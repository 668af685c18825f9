"""Per-call credential selection in the providers service, against loopback fakes: a CredentialService
(the real one lives in auth), the real rate limit servicer in memory, an OpenAI-compatible upstream
that answers by the key it is sent, and an OAuth token endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import grpc
import pytest
import uvicorn
from google.protobuf import timestamp_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig
from gateway_common.errors import GatewayError
from services.providers.server import build
from services.ratelimit.credentials import CredentialSelector
from services.ratelimit.limiter import Limiter
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.storage.cooldown import Backoff, MemoryCooldowns
from services.ratelimit.storage.memory import MemoryStore
from tests.providers.harness import chunks_in
from tests.servers import free_port, wait_until

PROVIDER = "up"
GLOBAL_KEY = "global-key-0f1e2d3c4b5a"
REQUEST = chat_pb2.ChatCompletionRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")])
TARGET = providers_pb2.Target(provider=PROVIDER, model="gpt-4o-mini")


# --- the fake upstream and token endpoint ------------------------------------------------------


@dataclass
class Seen:
    """What the upstream and the token endpoint received (appended from uvicorn's thread)."""

    authorizations: list[str] = field(default_factory=list)
    refreshes: list[dict[str, str]] = field(default_factory=list)


def _completion(stream: bool) -> Response:
    if not stream:
        return JSONResponse(
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )

    async def events() -> AsyncIterator[bytes]:
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
        for delta, finish in (({"role": "assistant", "content": "o"}, None), ({"content": "k"}, "stop")):
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        usage = {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
        yield f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream")


def _app(seen: Seen) -> Starlette:
    async def chat(request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        seen.authorizations.append(authorization)
        body = await request.json()
        key = authorization.removeprefix("Bearer ")
        if key.startswith("key-429"):
            error = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
            return JSONResponse(error, status_code=429, headers={"retry-after": "7"})
        if key.startswith("key-401"):
            # Like some upstreams, it echoes the key it refused.
            error = {"error": {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}}
            return JSONResponse(error, status_code=401)
        return _completion(bool(body.get("stream")))

    async def token(request: Request) -> Response:
        seen.refreshes.append(dict(parse_qsl((await request.body()).decode())))
        await asyncio.sleep(0.2)  # long enough for every concurrent caller to be waiting on it
        return JSONResponse(
            {
                "access_token": f"fresh-token-{len(seen.refreshes)}",
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": "refresh-2",
                "scope": "a b",
            }
        )

    return Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/token", token, methods=["POST"])]
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Seen]]:
    """The upstream (and token endpoint) in a uvicorn thread: its base URL and what it saw."""
    seen, port = Seen(), free_port()
    config = uvicorn.Config(_app(seen), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "fake upstream", 10)
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    thread.join(timeout=10)


# --- the fake CredentialService -------------------------------------------------------------------


class FakeCredentials(credentials_pb2_grpc.CredentialServiceServicer):
    """ResolveCredentials from a dict; StoreRefreshedTokens recorded."""

    def __init__(self) -> None:
        self.by_tenant: dict[tuple[str, str], list[credentials_pb2.UsableCredential]] = {}
        self.resolves: list[tuple[str, str]] = []
        self.stored: list[credentials_pb2.StoreRefreshedTokensRequest] = []

    async def ResolveCredentials(
        self, request: credentials_pb2.ResolveCredentialsRequest, context: Any
    ) -> credentials_pb2.ResolveCredentialsResponse:
        self.resolves.append((request.tenant_id, request.provider))
        found = self.by_tenant.get((request.tenant_id, request.provider), [])
        return credentials_pb2.ResolveCredentialsResponse(credentials=found, cache_ttl_seconds=60)

    async def StoreRefreshedTokens(
        self, request: credentials_pb2.StoreRefreshedTokensRequest, context: Any
    ) -> credentials_pb2.StoreRefreshedTokensResponse:
        self.stored.append(request)
        return credentials_pb2.StoreRefreshedTokensResponse()


def api_key(credential_id: str, key: str, priority: int, *limits: quota_pb2.Quota) -> credentials_pb2.UsableCredential:
    """A usable API-key credential."""
    return credentials_pb2.UsableCredential(
        credential=credentials_pb2.Credential(
            credential_id=credential_id,
            provider=PROVIDER,
            kind=credentials_pb2.CREDENTIAL_KIND_API_KEY,
            priority=priority,
            limits=limits,
        ),
        secret=credentials_pb2.CredentialSecret(api_key=key),
    )


@dataclass
class World:
    """The providers service wired to the fakes."""

    providers: providers_pb2_grpc.ProviderServiceAsyncStub
    ratelimit: ratelimit_pb2_grpc.RateLimitServiceAsyncStub
    credentials: FakeCredentials
    seen: Seen


@pytest.fixture
async def world(upstream: tuple[str, Seen]) -> AsyncIterator[World]:
    """Fresh fakes, ratelimit and providers service for each test (so caches and cooldowns start empty)."""
    base_url, seen = upstream
    seen.authorizations.clear()
    seen.refreshes.clear()
    fake = FakeCredentials()  # type: ignore[abstract]  # the admin RPCs are auth's, unused here
    limiter = Limiter(MemoryStore(), outage_policy="fail_closed", default_ttl_s=30)
    backends = grpc.aio.server()
    credentials_pb2_grpc.add_CredentialServiceServicer_to_server(fake, backends)
    selector = CredentialSelector(limiter, MemoryCooldowns(Backoff(base_ms=1_000, cap_ms=60_000)))
    ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(limiter, selector), backends)
    port = backends.add_insecure_port("127.0.0.1:0")
    await backends.start()
    address = f"127.0.0.1:{port}"
    config = GatewayConfig.model_validate(
        {
            "tls": {"internal": "off"},
            "services": {"auth": {"address": address}, "ratelimit": {"address": address}},
            "providers": {
                PROVIDER: {
                    "type": "openai_compatible",
                    "base_url": f"{base_url}/v1",
                    "api_key_env": "UP_KEY",
                    "oauth_token_url": f"{base_url}/token",
                    "oauth_client_id_env": "UP_CLIENT_ID",
                    "oauth_client_secret_env": "UP_CLIENT_SECRET",
                }
            },
        }
    )
    env = {"UP_KEY": GLOBAL_KEY, "UP_CLIENT_ID": "client-1", "UP_CLIENT_SECRET": "client-secret-1"}
    app = build(config, listen="127.0.0.1:0", env=env)
    providers_port = await app.start()
    providers_channel = grpc.aio.insecure_channel(f"127.0.0.1:{providers_port}")
    ratelimit_channel = grpc.aio.insecure_channel(address)
    try:
        yield World(
            providers_pb2_grpc.ProviderServiceStub(providers_channel),
            ratelimit_pb2_grpc.RateLimitServiceStub(ratelimit_channel),
            fake,
            seen,
        )
    finally:
        await providers_channel.close(None)
        await ratelimit_channel.close(None)
        await app.stop(0)
        await backends.stop(0)


async def _chat(world: World, tenant: str) -> providers_pb2.ChatResponse:
    return await world.providers.Chat(
        providers_pb2.ChatRequest(target=TARGET, completion=REQUEST, tenant_id=tenant), timeout=10
    )


async def _states(world: World, *ids: str) -> list[ratelimit_pb2.CredentialRuntimeState]:
    request = ratelimit_pb2.GetCredentialStatesRequest(
        credentials=[ratelimit_pb2.CredentialCandidate(credential_id=i) for i in ids]
    )
    return list((await world.ratelimit.GetCredentialStates(request, timeout=5)).states)


# --- the tests ---------------------------------------------------------------------------------


async def test_the_best_priority_credential_serves_and_is_named(world: World) -> None:
    world.credentials.by_tenant[("t1", PROVIDER)] = [api_key("cred_b", "key-b", 5), api_key("cred_a", "key-a", 1)]
    reply = await _chat(world, "t1")
    assert reply.credential_id == "cred_a"
    assert world.seen.authorizations == ["Bearer key-a"]


async def test_a_credential_out_of_window_quota_gives_way_to_the_next(world: World) -> None:
    one_per_minute = quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_MINUTE, limit=1)
    world.credentials.by_tenant[("t1", PROVIDER)] = [
        api_key("cred_a", "key-a", 1, one_per_minute),
        api_key("cred_b", "key-b", 2),
    ]
    assert [(await _chat(world, "t1")).credential_id for _ in range(3)] == ["cred_a", "cred_b", "cred_b"]
    assert world.seen.authorizations == ["Bearer key-a", "Bearer key-b", "Bearer key-b"]


@pytest.mark.parametrize("refused", ["key-429", "key-401"])
async def test_a_refused_credential_cools_down_and_the_next_serves_in_the_same_call(world: World, refused: str) -> None:
    world.credentials.by_tenant[("t1", PROVIDER)] = [api_key("cred_a", refused, 1), api_key("cred_b", "key-b", 2)]
    reply = await _chat(world, "t1")
    assert reply.credential_id == "cred_b"
    assert world.seen.authorizations == [f"Bearer {refused}", "Bearer key-b"]
    cooling, fine = await _states(world, "cred_a", "cred_b")
    assert cooling.consecutive_failures == 1 and cooling.cooldown_until_ms > time.time() * 1000
    assert fine.consecutive_failures == 0 and fine.cooldown_until_ms == 0
    # While A cools down, the next call goes straight to B.
    assert (await _chat(world, "t1")).credential_id == "cred_b"
    assert world.seen.authorizations[2:] == ["Bearer key-b"]


async def test_a_stream_moves_to_the_next_credential_before_its_first_chunk(world: World) -> None:
    world.credentials.by_tenant[("t1", PROVIDER)] = [api_key("cred_a", "key-401-x", 1), api_key("cred_b", "key-b", 2)]
    request = providers_pb2.StreamChatRequest(target=TARGET, completion=REQUEST, tenant_id="t1")
    replies = [reply async for reply in world.providers.StreamChat(request, timeout=10)]
    assert replies[0].credential_id == "cred_b"
    assert "".join(c.choices[0].delta.content for r in replies for c in chunks_in(r) if c.choices) == "ok"
    assert world.seen.authorizations == ["Bearer key-401-x", "Bearer key-b"]


async def test_with_every_credential_refused_the_upstream_429_says_when_one_is_back(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.credentials.by_tenant[("t1", PROVIDER)] = [
        api_key("cred_a", "key-429-a", 1),
        api_key("cred_b", "key-401-b", 2),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _chat(world, "t1")
    # The last refusal is the answer (B's 401, its key redacted); each credential was tried once.
    error = GatewayError.from_rpc_error(raised.value)
    assert error.metadata["upstream_status"] == "401"
    assert "key-401-b" not in error.message and "key-401-b" not in str(raised.value.details())
    assert world.seen.authorizations == ["Bearer key-429-a", "Bearer key-401-b"]
    # Now both are cooling down: refused at once with the earliest end (B's 1 s backoff, not A's 7 s).
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _chat(world, "t1")
    error = GatewayError.from_rpc_error(raised.value)
    assert error.metadata["upstream_status"] == "429"
    assert error.retry_after_s is not None and 0 < error.retry_after_s <= 1.0
    assert len(world.seen.authorizations) == 2
    assert "key-401-b" not in caplog.text and "key-429-a" not in caplog.text


async def test_a_tenant_without_credentials_uses_the_global_key_and_asks_auth_once(world: World) -> None:
    for _ in range(3):
        assert (await _chat(world, "t-none")).credential_id == ""
    assert world.seen.authorizations == [f"Bearer {GLOBAL_KEY}"] * 3
    assert world.credentials.resolves == [("t-none", PROVIDER)]
    # A call made for no tenant (an internal caller) does not ask at all.
    await _chat(world, "")
    assert world.credentials.resolves == [("t-none", PROVIDER)]


async def test_an_expiring_oauth_token_is_refreshed_once_under_concurrency(world: World) -> None:
    expires = timestamp_pb2.Timestamp(seconds=int(time.time()) + 60)  # within the 5 minute margin
    oauth = credentials_pb2.UsableCredential(
        credential=credentials_pb2.Credential(
            credential_id="cred_o", provider=PROVIDER, kind=credentials_pb2.CREDENTIAL_KIND_OAUTH, priority=1
        ),
        secret=credentials_pb2.CredentialSecret(
            oauth=credentials_pb2.OAuthTokens(access_token="old-token", refresh_token="refresh-1", expires_at=expires)
        ),
    )
    world.credentials.by_tenant[("t1", PROVIDER)] = [oauth]
    replies = await asyncio.gather(*(_chat(world, "t1") for _ in range(8)))
    assert {r.credential_id for r in replies} == {"cred_o"}
    assert len(world.seen.refreshes) == 1
    form = world.seen.refreshes[0]
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "refresh-1"
    assert form["client_id"] == "client-1"
    [stored] = world.credentials.stored
    assert stored.credential_id == "cred_o"
    assert stored.tokens.access_token == "fresh-token-1" and stored.tokens.refresh_token == "refresh-2"
    assert stored.tokens.expires_at.seconds > time.time() + 3000
    assert world.seen.authorizations == ["Bearer fresh-token-1"] * 8
    # The fresh token is kept: later calls neither refresh again nor send the old one.
    await _chat(world, "t1")
    assert len(world.seen.refreshes) == 1 and world.seen.authorizations[-1] == "Bearer fresh-token-1"
