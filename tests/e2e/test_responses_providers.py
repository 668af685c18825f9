"""The Responses API through every adapter, with the official SDK: the request becomes canonical
messages, so OpenAI, Anthropic and Gemini (replayed from their recordings, as in
test_providers_through_edge) answer text, tool calls and streams in the Responses API's shapes.
The OpenAI-compatible fake upstream of the shared suite is covered at the end."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Gateway
from tests.e2e.test_providers_through_edge import client, edge, upstream
from tests.edge.openai_schema import errors
from tests.providers.replay import ReplayServer, load

pytestmark = pytest.mark.e2e

__all__ = ["client", "edge", "upstream"]

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


async def _streamed(client: openai.AsyncOpenAI, **kwargs: Any) -> tuple[list[str], Any]:
    async with client.responses.stream(store=False, **kwargs) as stream:
        kinds = [event.type async for event in stream]
        return kinds, await stream.get_final_response()


async def test_openai_text_tools_and_stream(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(
        load("openai/chat.text.json"),
        load("openai/chat.tool_calls.parallel.json"),
        load("openai/chat.stream.tool_calls.parallel.include_usage.sse"),
    )
    raw = await client.responses.with_raw_response.create(
        model="openai:gpt-4o", input="Hello", instructions="Be brief.", store=False
    )
    assert errors("Response", json.loads(raw.text)) == []
    text = raw.parse()
    recorded = load("openai/chat.text.json").json()
    assert text.output_text == recorded["choices"][0]["message"]["content"]
    sent = upstream.requests[0].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]

    tools = await client.responses.create(model="openai:gpt-4o", input="Weather?", tools=[WEATHER], store=False)
    calls = [item for item in tools.output if item.type == "function_call"]
    recorded_calls = load("openai/chat.tool_calls.parallel.json").json()["choices"][0]["message"]["tool_calls"]
    assert [(c.call_id, c.name) for c in calls] == [(r["id"], r["function"]["name"]) for r in recorded_calls]
    assert upstream.requests[1].body["tools"][0]["function"]["name"] == "get_weather"

    kinds, final = await _streamed(client, model="openai:gpt-4o", input="Weather?", tools=[WEATHER])
    assert kinds.count("response.function_call_arguments.done") == 2 and kinds[-1] == "response.completed"
    assert all(json.loads(item.arguments) for item in final.output if item.type == "function_call")


async def test_anthropic_text_stream_and_tool_use(client: openai.AsyncOpenAI, upstream: ReplayServer) -> None:
    upstream.reply(load("anthropic/messages.text.json"), load("anthropic/messages.stream.tool_use.sse"))
    text = await client.responses.create(
        model="anthropic:claude-haiku-4-5", input="Hello", instructions="Be brief.", max_output_tokens=100, store=False
    )
    recorded = load("anthropic/messages.text.json").json()
    assert text.output_text == "".join(b["text"] for b in recorded["content"] if b["type"] == "text")
    sent = upstream.requests[0]
    assert sent.path == "/v1/messages" and sent.body["max_tokens"] == 100 and sent.body["system"]

    kinds, final = await _streamed(client, model="anthropic:claude-haiku-4-5", input="Weather?", tools=[WEATHER])
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    call = next(item for item in final.output if item.type == "function_call")
    assert call.call_id and call.name and json.loads(call.arguments) is not None


async def test_gemini_function_call_and_a_second_turn_with_its_output(
    client: openai.AsyncOpenAI, upstream: ReplayServer
) -> None:
    upstream.reply(load("gemini/generateContent.functionCall.json"), load("gemini/generateContent.text.json"))
    first = await client.responses.create(
        model="gemini:gemini-2.0-flash", input="Weather?", tools=[WEATHER], store=False
    )
    call = next(item for item in first.output if item.type == "function_call")
    # The client sends the whole conversation back itself (store=False): items map onto canonical
    # messages, which the Gemini adapter translates (functionCall / functionResponse parts).
    second = await client.responses.create(
        model="gemini:gemini-2.0-flash",
        input=[
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'},
        ],
        tools=[WEATHER],
        store=False,
    )
    assert second.output_text
    contents = upstream.requests[1].body["contents"]
    assert any("functionResponse" in part for content in contents for part in content["parts"])


def test_the_openai_compatible_fake_upstream(gateway: Gateway) -> None:
    with gateway.client() as client:
        answer = client.responses.create(model="upstream", input="Hello", store=False)
        with client.responses.stream(model="upstream", input="Hello", store=False) as stream:
            deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
            final = stream.get_final_response()
    assert answer.status == "completed" and answer.output_text == "Hello from the fake upstream."
    # The fake upstream streams eight pieces; each is one delta event, in order.
    assert len(deltas) == 8 and final.output_text == "".join(deltas) and final.status == "completed"
