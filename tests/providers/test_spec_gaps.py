"""Spec-valid requests the SDKs send that the gateway used to refuse: token-array embeddings, the
``function`` role, custom tools and custom tool calls, ``tool_choice`` of type ``allowed_tools``.

Each request is first checked against the official OpenAI spec, so the test proves a spec-valid
request is accepted; then it is followed to what each upstream receives: passed on unchanged to
OpenAI-style upstreams (the replayed upstream sees it), translated where a clean translation
exists, or refused with UNSUPPORTED_FIELD naming the exact parameter.
"""

from __future__ import annotations

import copy
from typing import Any

import grpc
import pytest

from gateway.chat.v1 import chat_pb2
from gateway_common.config import HttpProviderConfig, MockProviderConfig
from gateway_common.errors import GatewayError, Reason
from gateway_common.openai_wire import (
    chat_request_to_openai,
    completion_from_openai,
    completion_to_openai,
    embedding_request_to_openai,
    parse_chat_request,
    parse_embedding_request,
)
from services.providers.adapters.mock import MockAdapter
from services.providers.adapters.openai import OpenAIAdapter
from services.providers.translate.anthropic import chat_request_to_anthropic
from services.providers.translate.gemini import chat_request_to_gemini, embedding_request_to_gemini
from tests.edge.openai_schema import errors as spec_errors
from tests.providers.conformance import KEY, PROVIDER
from tests.providers.replay import ReplayServer, load

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
CODE_EXEC = {
    "type": "custom",
    "custom": {
        "name": "code_exec",
        "description": "Runs Python code.",
        "format": {"type": "grammar", "grammar": {"definition": "start: /.+/", "syntax": "lark"}},
    },
}
ALLOWED_TOOLS = {
    "type": "allowed_tools",
    "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]},
}
FUNCTION_HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
    {"role": "function", "name": "get_weather", "content": '{"temperature": 21}'},
]
CUSTOM_HISTORY = [
    {"role": "user", "content": "Compute 6*7."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "custom", "custom": {"name": "code_exec", "input": "print(6*7)"}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "42"},
]


def chat(**body: Any) -> dict[str, Any]:
    full = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **body}
    assert spec_errors("CreateChatCompletionRequest", full) == []
    return full


def parsed(body: dict[str, Any]) -> chat_pb2.ChatCompletionRequest:
    request, _ = parse_chat_request(copy.deepcopy(body))
    return request


def refusal(raised: pytest.ExceptionInfo[GatewayError]) -> tuple[grpc.StatusCode, Reason, str]:
    error = raised.value
    return error.code, error.reason, error.metadata.get("param", "")


# ---------------------------------------------------------------------------------------------
# OpenAI-style upstreams: passed on as sent
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        chat(messages=FUNCTION_HISTORY),
        chat(messages=CUSTOM_HISTORY, tools=[CODE_EXEC]),
        chat(tools=[WEATHER, CODE_EXEC], tool_choice={"type": "custom", "custom": {"name": "code_exec"}}),
        chat(tools=[WEATHER, TIME], tool_choice=ALLOWED_TOOLS),
        chat(
            tools=[WEATHER, CODE_EXEC],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "custom", "custom": {"name": "code_exec"}}]},
            },
        ),
    ],
    ids=["function-role", "custom-call-history", "custom-choice", "allowed-tools", "allowed-custom"],
)
def test_openai_bodies_carry_the_new_shapes_unchanged(body: dict[str, Any]) -> None:
    upstream = chat_request_to_openai(parsed(body), "gpt-4o", stream=False)
    assert spec_errors("CreateChatCompletionRequest", upstream) == []
    for key in ("messages", "tools", "tool_choice"):
        if key in body:
            assert upstream[key] == body[key], key


@pytest.mark.parametrize("kind", ["openai", "azure", "openai_compatible"])
async def test_the_openai_style_adapters_send_them_upstream(replay: ReplayServer, kind: Any) -> None:
    replay.reply(load("openai/chat.text.json"), load("openai/embeddings.float.json"))
    adapter = OpenAIAdapter(PROVIDER, HttpProviderConfig(type=kind), KEY, f"{replay.url}/v1")
    body = chat(
        messages=[*FUNCTION_HISTORY, *CUSTOM_HISTORY], tools=[WEATHER, TIME, CODE_EXEC], tool_choice=ALLOWED_TOOLS
    )
    try:
        await adapter.chat("gpt-4o", parsed(body))
        request, _ = parse_embedding_request({"model": "text-embedding-3-small", "input": [[1234, 5678], [9]]})
        await adapter.embed("text-embedding-3-small", request)
    finally:
        await adapter.aclose()
    sent_chat, sent_embed = (received.body for received in replay.requests)
    assert sent_chat["messages"] == body["messages"]
    assert sent_chat["tools"] == body["tools"] and sent_chat["tool_choice"] == ALLOWED_TOOLS
    assert sent_embed["input"] == [[1234, 5678], [9]]
    # Azure names the deployment in the URL instead of the body's model.
    assert spec_errors("CreateEmbeddingRequest", {"model": "text-embedding-3-small", **sent_embed}) == []


def test_a_custom_tool_call_in_an_answer_comes_back_as_one() -> None:
    answer = load("openai/chat.text.json").json()
    call = {"id": "call_9", "type": "custom", "custom": {"name": "code_exec", "input": "print(6*7)"}}
    answer["choices"][0]["message"].update({"content": None, "tool_calls": [call]})
    answer["choices"][0]["finish_reason"] = "tool_calls"
    out = completion_to_openai(completion_from_openai(answer, PROVIDER))
    assert out["choices"][0]["message"]["tool_calls"] == [call]
    assert spec_errors("CreateChatCompletionResponse", out) == []


# ---------------------------------------------------------------------------------------------
# Embeddings input shapes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([1234, 5678], [[1234, 5678]]),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4]]),
        ("one text", ["one text"]),
        (["a", "b"], ["a", "b"]),
    ],
)
def test_every_spec_input_shape_is_accepted(raw: Any, expected: list[Any]) -> None:
    body = {"model": "text-embedding-3-small", "input": raw}
    assert spec_errors("CreateEmbeddingRequest", body) == []
    request, _ = parse_embedding_request(body)
    assert embedding_request_to_openai(request, "m")["input"] == expected


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ([1, "two"], "input[1]"),
        ([1, -2], "input[1]"),
        ([1, True], "input[1]"),
        ([[1], []], "input[1]"),
        ([[1], [2, 2.5]], "input[1][1]"),
        ([[1], "text"], "input[1]"),
        (["text", 3], "input[1]"),
    ],
)
def test_malformed_token_arrays_are_refused_naming_the_element(raw: Any, param: str) -> None:
    with pytest.raises(GatewayError) as raised:
        parse_embedding_request({"model": "m", "input": raw})
    assert refusal(raised) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_REQUEST, param)


async def test_the_mock_embeds_token_arrays_and_counts_them_exactly() -> None:
    mock = MockAdapter("mock", MockProviderConfig())
    request, _ = parse_embedding_request({"model": "mock:e", "input": [[1, 2, 3], [4, 5]]})
    response = await mock.embed("e", request)
    assert [item.index for item in response.data] == [0, 1]
    assert response.data[0].vector != response.data[1].vector
    assert response.usage.prompt_tokens == 5
    again = await mock.embed("e", request)
    assert again.data[0].vector == response.data[0].vector


def test_gemini_refuses_token_arrays_naming_input() -> None:
    request, _ = parse_embedding_request({"model": "gemini:text-embedding-004", "input": [1234, 5678]})
    with pytest.raises(GatewayError) as raised:
        embedding_request_to_gemini(request, "text-embedding-004")
    assert refusal(raised) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.UNSUPPORTED_FIELD, "input")


# ---------------------------------------------------------------------------------------------
# Anthropic and Gemini: translated, or refused precisely
# ---------------------------------------------------------------------------------------------


def anthropic(body: dict[str, Any]) -> dict[str, Any]:
    return chat_request_to_anthropic(parsed(body), "claude-sonnet-4-5", stream=False, default_max_tokens=1024)


def gemini(body: dict[str, Any]) -> dict[str, Any]:
    return chat_request_to_gemini(parsed(body), "gemini-2.0-flash")


def test_allowed_tools_restrict_the_declared_tools() -> None:
    body = chat(tools=[WEATHER, TIME], tool_choice=ALLOWED_TOOLS)
    to_anthropic = anthropic(body)
    assert [tool["name"] for tool in to_anthropic["tools"]] == ["get_time"]
    assert to_anthropic["tool_choice"] == {"type": "any"}
    to_gemini = gemini(body)
    assert [d["name"] for d in to_gemini["tools"][0]["functionDeclarations"]] == ["get_time"]
    assert to_gemini["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    auto = copy.deepcopy(body)
    auto["tool_choice"]["allowed_tools"]["mode"] = "auto"
    assert anthropic(auto)["tool_choice"] == {"type": "auto"}
    assert gemini(auto)["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


def test_allowed_tools_naming_an_undeclared_tool_is_a_bad_request() -> None:
    body = chat(tools=[WEATHER], tool_choice=ALLOWED_TOOLS)
    for translate in (anthropic, gemini):
        with pytest.raises(GatewayError) as raised:
            translate(body)
        assert refusal(raised)[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.field_violations[0].field == "tool_choice.allowed_tools.tools[0]"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(tools=[WEATHER, CODE_EXEC]), "tools[1]"),
        (chat(messages=CUSTOM_HISTORY), "messages[1].tool_calls[0]"),
        (
            chat(tools=[WEATHER], tool_choice={"type": "custom", "custom": {"name": "code_exec"}}),
            "tool_choice",
        ),
        (
            chat(
                tools=[WEATHER],
                tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [CODE_EXEC]}},
            ),
            "tool_choice.allowed_tools.tools[0]",
        ),
    ],
    ids=["custom-tool", "custom-call", "custom-choice", "allowed-custom"],
)
def test_custom_tools_are_refused_where_the_upstream_has_none(body: dict[str, Any], param: str) -> None:
    for translate in (anthropic, gemini):
        with pytest.raises(GatewayError) as raised:
            translate(body)
        assert refusal(raised) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.UNSUPPORTED_FIELD, param)


def test_the_function_role_goes_to_gemini_by_name_and_is_refused_by_anthropic() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "function", "name": "get_weather", "content": '{"temperature": 21}'},
    ]
    body = chat(messages=messages)
    contents = gemini(body)["contents"]
    assert contents[-1]["parts"][-1] == {"functionResponse": {"name": "get_weather", "response": {"temperature": 21}}}
    with pytest.raises(GatewayError) as raised:
        anthropic(body)
    assert refusal(raised) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.UNSUPPORTED_FIELD, "messages[1].role")


# ---------------------------------------------------------------------------------------------
# Parsing: what stays refused
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].name"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "custom", "custom": {}}]},
            "tools[0].custom.name",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "custom", "custom": {"name": "c", "format": {"type": "xml"}}}],
            },
            "tools[0].custom.format.type",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "none", "tools": []}},
            },
            "tool_choice.allowed_tools.mode",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "web"}}, "tool_choice.type"),
    ],
)
def test_malformed_new_shapes_are_refused_naming_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as raised:
        parse_chat_request(body)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.field_violations[0].field == param
