"""The SDK against the real suite, the same tests over HTTP and over gRPC."""

from __future__ import annotations

import asyncio
import gc
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import llm_gateway
import pytest
from llm_gateway import Client

from tests.e2e.conftest import Gateway
from tests.sdk.python.conftest import ClientFactory, client_kwargs
from tests.servers import free_port

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello from the SDK"}]


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _admin(gateway: Gateway) -> Client:
    return Client(gateway.admin_key, base_url=gateway.url, max_retries=0)


def _new_key(gateway: Gateway, **kwargs: object) -> llm_gateway.CreatedKey:
    """A fresh key of tenant acme (its own counters), made with the SDK's admin helpers."""
    with _admin(gateway) as admin:
        return admin.admin.keys.create("acme", name=f"sdk-{secrets.token_hex(4)}", **kwargs)  # type: ignore[arg-type]


def test_chat(make_client: ClientFactory, transport: str) -> None:
    reply = make_client().chat("mock:demo", HELLO, temperature=0.2, max_tokens=50, request_id="req_sdk-chat")
    assert isinstance(reply, llm_gateway.ChatResponse)
    assert reply.text == "Mock reply to: Hello from the SDK"
    assert reply.message.role == "assistant" and reply.provider == "mock" and reply.model == "mock:demo"
    assert reply.finish_reason == "stop" and reply.created > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0
    assert reply.request_id == "req_sdk-chat"


def test_chat_takes_message_objects(make_client: ClientFactory, transport: str) -> None:
    messages = [llm_gateway.Message("system", "Be brief."), llm_gateway.Message("user", "Hi", name="ann")]
    assert make_client().chat("mock:demo", messages).text.startswith("Mock reply to:")


def test_models(make_client: ClientFactory, transport: str) -> None:
    client = make_client()
    models = client.models()
    assert all(isinstance(m, llm_gateway.Model) for m in models)
    fast = next(m for m in models if m.id == "fast")
    assert fast.input_usd_per_million == 1.0 and fast.output_usd_per_million == 2.0 and not fast.unpriced
    (one,) = client.models("mock:anything")
    assert one.id == "mock:anything"


def test_stream_chunks_arrive_before_the_upstream_finishes(
    gateway: Gateway, make_client: ClientFactory, transport: str
) -> None:
    stats = gateway.upstream.stats
    finished_before = stats.streams_finished
    with make_client().chat_stream("fake:slow-20", HELLO) as stream:
        first = next(stream)
        # The upstream sends 20 chunks 50 ms apart: it is still sending when the first one is here.
        assert first.delta.role == "assistant"
        assert stats.streams_finished == finished_before
        rest = list(stream)
    text = "".join(c.delta.content or "" for c in [first, *rest])
    assert text.startswith("tok0 tok1")
    assert rest[-1].usage is not None and rest[-1].usage.total_tokens > 0
    assert any(c.finish_reason == "stop" for c in rest)
    _wait_for(lambda: stats.streams_finished == finished_before + 1, "the upstream stream to finish")


@pytest.mark.parametrize("how", ["close", "with", "break"])
def test_abandoning_a_stream_closes_the_upstream_request(
    gateway: Gateway, make_client: ClientFactory, transport: str, how: str
) -> None:
    stats = gateway.upstream.stats
    before = stats.streams_disconnected
    client = make_client()
    if how == "close":
        stream = client.chat_stream("fake:slow-200", HELLO)
        next(stream), next(stream)
        stream.close()
    elif how == "with":
        with client.chat_stream("fake:slow-200", HELLO) as stream:
            next(stream)
    else:
        for count, _chunk in enumerate(client.chat_stream("fake:slow-200", HELLO)):
            if count == 2:
                break
        # The loop held the only reference to the stream: dropping it closes the connection.
        gc.collect()
    # 200 chunks 50 ms apart would take 10 s: the upstream saw the client leave long before.
    _wait_for(lambda: stats.streams_disconnected == before + 1, "the upstream to see the disconnect")


def test_usage_read_back(gateway: Gateway, make_client: ClientFactory, transport: str) -> None:
    key = _new_key(gateway, scopes=["chat", "usage:read"])
    client = make_client(key.secret)
    client.chat("fast", HELLO)
    client.chat("fast", HELLO)

    def recorded() -> bool:
        rows = client.usage(key_id=key.key.key_id, group_by="model")
        return bool(rows) and rows[0].requests == 2

    _wait_for(recorded, "the two requests in the ledger")
    (row,) = client.usage(key_id=key.key.key_id, group_by="model")
    assert isinstance(row, llm_gateway.UsageRow)
    assert row.group == "fast" and row.prompt_tokens > 0 and row.completion_tokens > 0
    assert row.cost_micro_usd > 0 and row.errors == 0
    (total,) = client.usage(key_id=key.key.key_id)
    assert total.requests == 2 and total.group == ""
    # The period filters (RFC 3339 over HTTP's ?from=&to=, Timestamps over gRPC).
    now = datetime.now(UTC)
    assert sum(r.requests for r in client.usage(key_id=key.key.key_id, start_time=now + timedelta(hours=1))) == 0
    window = client.usage(key_id=key.key.key_id, start_time=now - timedelta(hours=1), end_time=now + timedelta(hours=1))
    assert sum(r.requests for r in window) == 2


def test_authentication_error(make_client: ClientFactory, transport: str) -> None:
    with pytest.raises(llm_gateway.AuthenticationError) as info:
        make_client("gw-not-a-real-key").chat("mock:demo", HELLO, request_id="req_sdk-auth")
    error = info.value
    assert error.code == "invalid_api_key" and error.request_id == "req_sdk-auth"
    assert (error.status_code, error.grpc_code) == ((401, None) if transport == "http" else (None, "UNAUTHENTICATED"))
    assert "gw-not-a-real-key" not in str(error)


def test_permission_denied_error(gateway: Gateway, make_client: ClientFactory, transport: str) -> None:
    key = _new_key(gateway, scopes=["chat"], allowed_models=["fake:*"])
    client = make_client(key.secret)
    with pytest.raises(llm_gateway.PermissionDeniedError) as info:
        client.chat("mock:demo", HELLO)
    assert info.value.code == "model_not_allowed" and info.value.request_id
    with pytest.raises(llm_gateway.PermissionDeniedError) as denied:
        client.usage()
    assert denied.value.code == "insufficient_permissions"


def test_not_found_error(make_client: ClientFactory, transport: str) -> None:
    with pytest.raises(llm_gateway.NotFoundError) as info:
        make_client().chat("no-such-model", HELLO)
    assert info.value.code == "model_not_found" and info.value.param == "model"
    assert "no-such-model" in info.value.message


def test_bad_request_error(make_client: ClientFactory, transport: str) -> None:
    with pytest.raises(llm_gateway.BadRequestError) as info:
        make_client().chat("mock:demo", [{"role": "wizard", "content": "Hi"}])
    assert info.value.param == "messages[0].role"
    assert (info.value.status_code or 400) == 400


def test_budget_exceeded_error(gateway: Gateway, make_client: ClientFactory, transport: str) -> None:
    # $0.004 a month: one long request (its reservation ~$0.0035) fits, its cost then leaves too little.
    budget = {"quotas": [{"unit": "UNIT_COST_MICRO_USD", "window": "WINDOW_MONTH", "limit": 4000}]}
    client = make_client(_new_key(gateway, limits=budget).secret, max_retries=3)
    long = [{"role": "user", "content": "word " * 300}]
    client.chat("fast", long, max_tokens=1000)
    started = time.monotonic()
    with pytest.raises(llm_gateway.BudgetExceededError) as info:
        # Even with retries on, a spent budget is not retried: it resets only with its window.
        client.chat("fast", long, max_tokens=1000, retry=True)
    assert time.monotonic() - started < 5
    assert isinstance(info.value, llm_gateway.RateLimitError)
    assert info.value.code == "insufficient_quota"
    assert info.value.status_code == 429 if transport == "http" else info.value.grpc_code == "RESOURCE_EXHAUSTED"


def test_server_error(make_client: ClientFactory, transport: str) -> None:
    with pytest.raises(llm_gateway.APIError) as info:
        make_client().chat("mock:error-500", HELLO)
    assert type(info.value) is llm_gateway.APIError
    assert info.value.status_code == 502 if transport == "http" else info.value.grpc_code == "UNAVAILABLE"
    assert info.value.request_id


def test_timeout_error(make_client: ClientFactory, transport: str) -> None:
    started = time.monotonic()
    with pytest.raises(llm_gateway.APITimeoutError):
        make_client(timeout=0.5).chat("mock:timeout", HELLO)
    assert time.monotonic() - started < 3


def test_connection_error(gateway: Gateway, transport: str) -> None:
    port = free_port()
    kwargs = {**client_kwargs(gateway, transport), "base_url": f"http://127.0.0.1:{port}"}
    kwargs["grpc_target"] = f"127.0.0.1:{port}"
    with Client(gateway.key, max_retries=0, timeout=5, **kwargs) as client:  # type: ignore[arg-type]
        with pytest.raises(llm_gateway.APIConnectionError) as info:
            client.models()
    assert not isinstance(info.value, llm_gateway.APITimeoutError)


def test_a_stream_error_before_the_first_chunk_raises_at_once(make_client: ClientFactory, transport: str) -> None:
    with pytest.raises(llm_gateway.AuthenticationError):
        make_client("gw-not-a-real-key").chat_stream("mock:demo", HELLO)


def test_429_is_retried_after_its_retry_after(gateway: Gateway) -> None:
    """One request a minute per key: the retry waits out the window the 429 names, then succeeds.

    Both transports run at once (each with its own key), so the test waits for one window only."""
    one_a_minute = {"quotas": [{"unit": "UNIT_REQUESTS", "window": "WINDOW_MINUTE", "limit": 1}]}
    outcomes: dict[str, object] = {}

    def run(transport: str) -> None:
        settings = client_kwargs(gateway, transport)
        with Client(_new_key(gateway, limits=one_a_minute).secret, max_retries=0, **settings) as client:  # type: ignore[arg-type]
            client.chat("mock:demo", HELLO)
            try:
                client.chat("mock:demo", HELLO)
            except llm_gateway.RateLimitError as refused:
                outcomes[f"{transport}-refused"] = refused
            assert isinstance(outcomes.get(f"{transport}-refused"), llm_gateway.RateLimitError)
            refused_at = time.monotonic()
            retry_after = outcomes[f"{transport}-refused"].retry_after  # type: ignore[attr-defined]
            assert retry_after is not None and 0 < retry_after <= 60
        # Retries are opt-in for chat: per client here (retry_non_idempotent).
        with Client(client.api_key, max_retries=2, retry_non_idempotent=True, **settings) as retrying:  # type: ignore[arg-type]
            reply = retrying.chat("mock:demo", HELLO)
        outcomes[transport] = (reply, time.monotonic() - refused_at, retry_after)

    threads = [threading.Thread(target=run, args=(t,)) for t in ("http", "grpc")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    for transport in ("http", "grpc"):
        assert transport in outcomes, f"{transport} did not finish: {outcomes}"
        reply, waited, retry_after = outcomes[transport]  # type: ignore[misc]
        assert reply.text.startswith("Mock reply")
        assert retry_after - 1.5 <= waited <= retry_after + 10, (transport, waited, retry_after)
        refused = outcomes[f"{transport}-refused"]
        assert refused.code == "rate_limit_exceeded"  # type: ignore[attr-defined]


def test_chat_is_not_retried_unless_asked(gateway: Gateway, make_client: ClientFactory, transport: str) -> None:
    one_a_minute = {"quotas": [{"unit": "UNIT_REQUESTS", "window": "WINDOW_MINUTE", "limit": 1}]}
    client = make_client(_new_key(gateway, limits=one_a_minute).secret, max_retries=3)
    client.chat("mock:demo", HELLO)
    started = time.monotonic()
    with pytest.raises(llm_gateway.RateLimitError):
        client.chat("mock:demo", HELLO)
    assert time.monotonic() - started < 2


async def test_async_client(gateway: Gateway, transport: str) -> None:
    stats = gateway.upstream.stats
    async with llm_gateway.AsyncClient(gateway.key, max_retries=0, **client_kwargs(gateway, transport)) as client:  # type: ignore[arg-type]
        reply = await client.chat("mock:demo", HELLO)
        assert reply.text == "Mock reply to: Hello from the SDK"
        assert any(m.id == "fast" for m in await client.models())
        stream = await client.chat_stream("mock:demo", HELLO)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.delta.content or "" for c in chunks) == "Mock reply to: Hello from the SDK"
        with pytest.raises(llm_gateway.NotFoundError):
            await client.chat("no-such-model", HELLO)
        before = stats.streams_disconnected
        async with await client.chat_stream("fake:slow-200", HELLO) as slow:
            await anext(slow)
        deadline = time.monotonic() + 15
        while stats.streams_disconnected != before + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stats.streams_disconnected == before + 1


def test_embed(make_client: ClientFactory, transport: str) -> None:
    result = make_client().embed("mock:embed", ["one", "two"], request_id="req_sdk-embed")
    assert isinstance(result, llm_gateway.Embeddings)
    assert [e.index for e in result.data] == [0, 1]
    assert all(e.vector and all(isinstance(x, float) for x in e.vector) for e in result.data)
    assert result.provider == "mock" and result.usage.prompt_tokens > 0 and result.request_id == "req_sdk-embed"


async def test_async_stream_left_by_break_closes_the_upstream_request(gateway: Gateway, transport: str) -> None:
    stats = gateway.upstream.stats
    async with llm_gateway.AsyncClient(gateway.key, max_retries=0, **client_kwargs(gateway, transport)) as client:  # type: ignore[arg-type]
        before = stats.streams_disconnected
        count = 0
        async for _chunk in await client.chat_stream("fake:slow-200", HELLO):
            count += 1
            if count == 2:
                break
        # Nothing holds the stream any more: collecting it closes the response / cancels the call.
        gc.collect()
        deadline = time.monotonic() + 15
        while stats.streams_disconnected != before + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stats.streams_disconnected == before + 1
