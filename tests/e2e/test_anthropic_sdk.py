"""The official ``anthropic`` Python SDK (and a Claude Code-shaped request) against the whole suite.

The Anthropic Messages ingress is one more way into the canonical pipeline: these tests send
``messages.create`` / ``messages.stream`` / ``count_tokens`` through the real edge, router, auth,
ratelimit, providers and metering processes, routed to the mock provider, to an OpenAI-compatible
upstream (the fake one) and to the Anthropic adapter (a loopback server replaying recorded
Anthropic traffic), and check the limits and the ledger as for chat completions. Every raw body
and event read off the wire is validated against the official Anthropic spec.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import pytest_asyncio

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from suite.supervisor import Suite, free_port
from tests.e2e.conftest import Gateway
from tests.edge import anthropic_schema
from tests.providers.replay import ReplayServer, load

pytestmark = pytest.mark.e2e

HELLO: list[Any] = [{"role": "user", "content": "Hello there"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


_CLIENTS: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close every SDK client a test made: a client left to the garbage collector warns of its
    open sockets in whatever later test happens to run the collection."""
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _sdk(gateway: Gateway, key: str | None = None, **kwargs: Any) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key or gateway.key, max_retries=0, **kwargs)
    _CLIENTS.append(client)
    return client


def _create_key(gateway: Gateway, name: str, **fields: Any) -> tuple[str, str]:
    """(secret, key_id) of a new key of tenant acme, made through the admin API."""
    created = httpx.post(
        f"{gateway.url}/admin/v1/keys",
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        json={"tenant_id": "acme", "name": name, **fields},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    body = created.json()
    return body["secret"], body["key"]["key_id"]


async def _ledger(gateway: Gateway, key_id: str, at_least: int, timeout_s: float = 10.0) -> metering_pb2.UsageRow:
    """The ledger's totals for ``key_id`` once it holds ``at_least`` requests (metering is batched)."""
    deadline = time.monotonic() + timeout_s
    async with gateway.suite.channel("metering", identity="cli") as channel:
        metering = metering_pb2_grpc.MeteringServiceStub(channel)
        while True:
            answer = await metering.QueryUsage(metering_pb2.QueryUsageRequest(key_id=key_id), timeout=5)
            row = answer.rows[0] if answer.rows else metering_pb2.UsageRow()
            if row.requests >= at_least:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"the ledger holds {row.requests} requests of {key_id}, expected {at_least}")
            await asyncio.sleep(0.05)


def _raw_events(gateway: Gateway, body: dict[str, Any], headers: dict[str, str]) -> list[tuple[str, Any]]:
    """The stream's events as sent on the wire, each checked against the spec."""
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        response = http.post("/v1/messages", json={**body, "stream": True}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = anthropic_schema.parse_sse(response.content)
    for name, data in events:
        assert anthropic_schema.stream_event_errors(name, data) == [], (name, data)
    return events


# -- messages.create ------------------------------------------------------------------------------


def test_create_text_with_system_prompt_through_the_mock(gateway: Gateway) -> None:
    raw = _sdk(gateway).messages.with_raw_response.create(
        model="mock:demo", max_tokens=64, system="Answer briefly.", messages=HELLO
    )
    assert anthropic_schema.errors("Message", json.loads(raw.http_response.content)) == []
    assert raw.headers["request-id"] and raw.headers["x-gateway-provider"].startswith("mock")
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Mock reply to: Hello there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 5


def test_create_with_an_image(gateway: Gateway) -> None:
    content: Any = [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
        },
        {"type": "text", "text": "Describe it"},
    ]
    message = _sdk(gateway).messages.create(
        model="mock:demo", max_tokens=64, messages=[{"role": "user", "content": content}]
    )
    assert message.content[0].text == "Mock reply to: Describe it"  # type: ignore[union-attr]
    # The image counts at its ceiling in the prompt estimate (an image part reached the provider).
    assert message.usage.input_tokens > 4096


def test_max_tokens_stops_with_max_tokens(gateway: Gateway) -> None:
    message = _sdk(gateway).messages.create(model="mock:demo", max_tokens=2, messages=HELLO)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


def test_routed_to_an_openai_compatible_upstream(gateway: Gateway) -> None:
    before = gateway.upstream.stats.requests
    message = _sdk(gateway).messages.create(model="upstream", max_tokens=64, messages=HELLO)
    assert gateway.upstream.stats.requests == before + 1
    assert message.content and message.content[0].type == "text" and message.content[0].text
    with _sdk(gateway).messages.stream(model="fake:plain", max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0


# -- messages.stream -----------------------------------------------------------------------------


def test_stream_text_and_final_message(gateway: Gateway) -> None:
    with _sdk(gateway).messages.stream(model="mock:demo", max_tokens=64, system="Be brief.", messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "Mock reply to: Hello there" and len(pieces) == 5
    assert final.content[0].text == "Mock reply to: Hello there"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5 and final.usage.input_tokens > 0


def test_stream_events_on_the_wire_are_valid(gateway: Gateway) -> None:
    events = _raw_events(
        gateway, {"model": "mock:demo", "max_tokens": 64, "messages": HELLO}, {"x-api-key": gateway.key}
    )
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


def test_a_stream_that_breaks_after_its_first_event_ends_with_an_error_event(gateway: Gateway) -> None:
    events = _raw_events(
        gateway, {"model": "mock:stream-break", "max_tokens": 64, "messages": HELLO}, {"x-api-key": gateway.key}
    )
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "error" and "message_stop" not in names
    with pytest.raises(anthropic.APIStatusError):
        with _sdk(gateway).messages.stream(model="mock:stream-break", max_tokens=64, messages=HELLO) as stream:
            list(stream.text_stream)


# -- tool use over two turns ---------------------------------------------------------------------


def test_tool_use_over_two_turns(gateway: Gateway) -> None:
    client = _sdk(gateway)
    question: Any = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.messages.create(model="mock:tools", max_tokens=64, tools=[WEATHER], messages=[question])
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.input == {} and call.id
    with client.messages.stream(model="mock:tools", max_tokens=64, tools=[WEATHER], messages=[question]) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "name", None), getattr(b, "input", None)) for b in streamed.content] == [
        ("tool_use", "get_weather", {})
    ]
    # Turn two: the client sends the tool's result; the model (now without tools to call) answers.
    second = client.messages.create(
        model="mock:demo",
        max_tokens=64,
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "Mock reply to: What is the weather in Paris?"  # type: ignore[union-attr]


# -- count_tokens --------------------------------------------------------------------------------


async def test_count_tokens_uses_no_quota_and_records_no_usage(gateway: Gateway) -> None:
    secret, key_id = _create_key(gateway, "anthropic-count")
    client = _sdk(gateway, secret)
    counted = client.messages.with_raw_response.count_tokens(
        model="mock:demo",
        system="Be brief.",
        tools=[WEATHER],
        messages=HELLO,  # type: ignore[list-item]
    )
    assert counted.headers["x-gateway-token-count"] == "ceiling"
    count = counted.parse().input_tokens
    longer = client.messages.count_tokens(model="mock:demo", messages=[{"role": "user", "content": "Hello there" * 10}])
    assert count > longer.input_tokens > 0  # the tools weigh more than ten repetitions of a short text
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nosuchprovider:model", messages=HELLO)
    # The count is the ceiling admission reserves: a real request's prompt estimate equals it.
    message = client.messages.create(
        model="mock:demo", max_tokens=64, system="Be brief.", tools=[WEATHER], messages=HELLO
    )
    assert message.usage.input_tokens == count
    ledger = await _ledger(gateway, key_id, at_least=1)
    await asyncio.sleep(0.5)  # what count_tokens would have recorded would be in the same batches
    assert (await _ledger(gateway, key_id, at_least=1)).requests == ledger.requests == 1


# -- errors, keys, limits, metering --------------------------------------------------------------


def test_bad_key_is_an_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        _sdk(gateway, "gw-not-a-key").messages.create(model="mock:demo", max_tokens=8, messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert anthropic_schema.errors("ErrorResponse", caught.value.body) == []
    assert caught.value.request_id


def test_bad_input_is_a_bad_request_error_naming_the_field(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        _sdk(gateway).messages.create(
            model="mock:demo",
            max_tokens=8,
            messages=[{"role": "user", "content": [{"type": "video"}]}],  # type: ignore[list-item]
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages[0].content[0].type" in caught.value.message
    with pytest.raises(anthropic.NotFoundError) as missing:
        _sdk(gateway).messages.create(model="nosuchprovider:model", max_tokens=8, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_x_api_key_and_authorization_are_both_accepted(gateway: Gateway) -> None:
    by_key = _sdk(gateway).messages.create(model="mock:demo", max_tokens=8, messages=HELLO)
    bearer = anthropic.Anthropic(base_url=gateway.url, auth_token=gateway.key, api_key=None, max_retries=0)
    _CLIENTS.append(bearer)
    by_bearer = bearer.messages.create(model="mock:demo", max_tokens=8, messages=HELLO)
    assert by_key.content == by_bearer.content


async def test_over_a_limit_is_a_rate_limit_error_with_retry_after_and_each_call_is_metered(gateway: Gateway) -> None:
    if 60 - time.time() % 60 < 8:
        # A minute quota resets on the UTC minute: start with enough of this one left.
        await asyncio.sleep(60 - time.time() % 60 + 0.05)
    limit = 3
    secret, key_id = _create_key(
        gateway,
        "anthropic-limited",
        limits={"quotas": [{"unit": "UNIT_REQUESTS", "window": "WINDOW_MINUTE", "limit": limit}]},
    )
    client = _sdk(gateway, secret)
    for _ in range(limit + 2):
        # Counting tokens holds no quota: the key's requests below are all still admitted.
        client.messages.count_tokens(model="mock:demo", messages=HELLO)
    client.messages.create(model="mock:demo", max_tokens=8, messages=HELLO)
    with client.messages.stream(model="mock:demo", max_tokens=8, messages=HELLO) as stream:
        stream.until_done()
    client.messages.create(model="mock:demo", max_tokens=8, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="mock:demo", max_tokens=8, messages=HELLO)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    with pytest.raises(anthropic.RateLimitError):
        with client.messages.stream(model="mock:demo", max_tokens=8, messages=HELLO) as refused:
            refused.until_done()
    ledger = await _ledger(gateway, key_id, at_least=limit)
    assert ledger.requests == limit and ledger.completion_tokens == limit * 5


def test_a_claude_code_shaped_request_streams(gateway: Gateway) -> None:
    body = {
        "model": "mock:tools",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "Project instructions.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "List the files", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        "tools": [
            {
                "name": "Bash",
                "description": "Run a shell command.",
                "input_schema": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                    "additionalProperties": False,
                    "$schema": "http://json-schema.org/draft-07/schema#",
                },
            }
        ],
        "metadata": {"user_id": "user_abc_account__session_123"},
        "temperature": 1,
    }
    assert anthropic_schema.errors("PromptCachingBetaCreateMessageParams", body) == []
    headers = {
        "x-api-key": gateway.key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
        "user-agent": "claude-cli/1.0.0 (external, cli)",
        "x-app": "cli",
    }
    events = _raw_events(gateway, body, headers)
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts == [{"type": "tool_use", "id": "call_mock_0", "name": "Bash", "input": {}}]
    assert [d["delta"]["stop_reason"] for n, d in events if n == "message_delta"] == ["tool_use"]
    assert events[-1][0] == "message_stop"


# -- the Anthropic adapter behind the Anthropic ingress ------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def replay() -> AsyncIterator[ReplayServer]:
    server = ReplayServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def anthropic_edge(replay: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A suite whose only real provider is Anthropic, pointed at the replay server."""
    key = f"gw-{secrets.token_urlsafe(32)}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "OPENAI_", "AZURE_", "ANTHROPIC_", "GEMINI_"))
    }
    env.update(
        {"GATEWAY_TENANT_KEYS": f"acme:{key}", "ANTHROPIC_API_KEY": "sk-ant-upstream", "ANTHROPIC_BASE_URL": replay.url}
    )
    data: Path = tmp_path_factory.mktemp("anthropic-only")
    ports = {name: free_port() for name in ("router", "auth", "ratelimit", "providers", "metering", "edge")}
    suite = Suite(data_dir=data, ports=ports, env=env)
    suite.start()
    try:
        yield suite.edge_url, key
    finally:
        suite.stop()


async def test_routed_to_the_anthropic_adapter(anthropic_edge: tuple[str, str], replay: ReplayServer) -> None:
    replay.reset()
    replay.reply(
        load("anthropic/messages.text.json"),
        load("anthropic/messages.stream.tool_use.sse"),
        # A 429 is retried (three attempts by default) before it reaches the client.
        *[load("anthropic/error.429.rate_limit_error.json")] * 3,
    )
    url, key = anthropic_edge
    recorded = load("anthropic/messages.text.json").json()
    async with anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0) as client:
        # A bare claude-* id resolves to the Anthropic provider by prefix, as on chat completions.
        message = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=100, system="Be brief.", messages=HELLO
        )
        assert message.content[0].text == "".join(b["text"] for b in recorded["content"] if b["type"] == "text")  # type: ignore[union-attr]
        assert message.usage.output_tokens == recorded["usage"]["output_tokens"]
        sent = replay.requests[0]
        assert (sent.path, sent.header("x-api-key"), sent.body["max_tokens"]) == (
            "/v1/messages",
            "sk-ant-upstream",
            100,
        )
        assert sent.body["system"] == [{"type": "text", "text": "Be brief."}] or sent.body["system"] == "Be brief."

        async with client.messages.stream(
            model="anthropic:claude-haiku-4-5",
            max_tokens=100,
            tools=[WEATHER],
            messages=HELLO,  # type: ignore[list-item]
        ) as stream:
            final = await stream.get_final_message()
        call = next(block for block in final.content if block.type == "tool_use")
        assert call.name == "get_weather" and call.input == {"location": "San Francisco, CA", "units": "f"}
        assert final.stop_reason == "tool_use"
        assert replay.requests[1].body["tools"][0]["name"] == "get_weather"

        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model="anthropic:claude-haiku-4-5", max_tokens=10, messages=HELLO)
        assert len(replay.requests) == 5


def test_client_disconnect_closes_the_upstream_request(gateway: Gateway) -> None:
    stats = gateway.upstream.stats
    disconnected_before = stats.streams_disconnected
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": gateway.key},
        json={"model": "fake:slow-200", "max_tokens": 64, "messages": HELLO, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(12), strict=False) if line.startswith("event: ")]
        assert "content_block_delta" in " ".join(received)
    # Closing the HTTP response went edge -> router -> providers -> upstream.
    deadline = time.monotonic() + 10
    while stats.streams_disconnected != disconnected_before + 1:
        assert time.monotonic() < deadline, "the upstream never saw the disconnect"
        time.sleep(0.02)
