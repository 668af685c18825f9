"""The Anthropic Messages wire: parsing into the canonical request, rendering messages and events.

Every rendered body and event is validated against the official Anthropic spec
(``tests/edge/anthropic_schema.py``); the recorded upstream traffic is parsed the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.chat.v1 import chat_pb2
from gateway_common import anthropic_wire
from gateway_common.errors import GatewayError
from gateway_common.openai_wire import from_struct
from tests.edge import anthropic_schema

FIXTURES = Path(anthropic_schema.SPEC).parents[2] / "upstream" / "anthropic"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def _parse(body: dict[str, Any]) -> chat_pb2.ChatCompletionRequest:
    request, _ = anthropic_wire.parse_messages_request(body)
    return request


def _base(**fields: Any) -> dict[str, Any]:
    return {"model": "mock:x", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], **fields}


def test_recorded_upstream_requests_parse_and_are_valid_requests_per_the_spec() -> None:
    for name in ("messages.text.request.json", "messages.stream.text_then_tool_use.2024.request.json"):
        body = json.loads((FIXTURES / name).read_text())["body"]
        assert anthropic_schema.errors("CreateMessageParams", body) == []
        request, stream = anthropic_wire.parse_messages_request(body)
        assert request.model == body["model"] and request.max_tokens == body["max_tokens"]
        assert stream is bool(body.get("stream"))


def test_string_content_system_sampling_and_metadata() -> None:
    request, stream = anthropic_wire.parse_messages_request(
        _base(
            system="Be brief.",
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            metadata={"user_id": "u-1"},
            stream=True,
        )
    )
    assert stream is True
    assert [m.role for m in request.messages] == [chat_pb2.ROLE_SYSTEM, chat_pb2.ROLE_USER]
    assert request.messages[0].text == "Be brief." and request.messages[1].text == "Hi"
    assert (request.temperature, request.top_p, list(request.stop), request.user) == (0.5, 0.9, ["END"], "u-1")
    assert from_struct(request.extra) == {"top_k": 40}


def test_system_blocks_with_cache_control_become_one_system_message() -> None:
    system = [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Project rules.", "cache_control": {"type": "ephemeral"}},
    ]
    request = _parse(_base(system=system))
    assert [p.text for p in request.messages[0].parts] == ["You are Claude Code.", "Project rules."]
    assert not request.HasField("extra")


def test_images_base64_and_url() -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What is this?"},
    ]
    message = _parse(_base(messages=[{"role": "user", "content": content}])).messages[0]
    assert message.parts[0].image_url.url == f"data:image/png;base64,{PNG}"
    assert message.parts[1].image_url.url == "https://example.com/cat.png"
    assert message.parts[2].text == "What is this?"


def test_tool_use_and_tool_results_map_to_tool_calls_and_tool_messages() -> None:
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Also be quick."},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no such city"}],
                    "is_error": True,
                },
            ],
        },
    ]
    request = _parse(
        _base(messages=messages, tools=tools, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    )
    roles = [m.role for m in request.messages]
    assert roles == [
        chat_pb2.ROLE_USER,
        chat_pb2.ROLE_ASSISTANT,
        chat_pb2.ROLE_TOOL,
        chat_pb2.ROLE_TOOL,
        chat_pb2.ROLE_USER,
    ]
    call = request.messages[1].tool_calls[0]
    assert (call.id, call.type, call.function.name, json.loads(call.function.arguments)) == (
        "toolu_1",
        "function",
        "get_weather",
        {"city": "Paris"},
    )
    assert request.messages[1].parts[0].text == "Let me check."
    assert (request.messages[2].tool_call_id, request.messages[2].text) == ("toolu_1", "18C")
    errored = request.messages[3]
    assert errored.tool_call_id == "toolu_2"
    assert [p.text for p in errored.parts] == [anthropic_wire.TOOL_ERROR_PREFIX.strip(), "no such city"]
    assert request.messages[4].parts[0].text == "Also be quick."
    tool = request.tools[0]
    assert (tool.type, tool.function.name, tool.function.description) == ("function", "get_weather", "Weather")
    assert from_struct(tool.function.parameters) == {"type": "object"}
    assert request.tool_choice.mode == chat_pb2.TOOL_CHOICE_MODE_AUTO
    assert request.HasField("parallel_tool_calls") and request.parallel_tool_calls is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "any"}, ("mode", chat_pb2.TOOL_CHOICE_MODE_REQUIRED)),
        ({"type": "none"}, ("mode", chat_pb2.TOOL_CHOICE_MODE_NONE)),
        ({"type": "tool", "name": "f"}, ("function_name", "f")),
    ],
)
def test_tool_choice_forms(choice: dict[str, Any], expected: tuple[str, Any]) -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    request = _parse(_base(tools=tools, tool_choice=choice))
    assert request.tool_choice.WhichOneof("choice") == expected[0]
    assert getattr(request.tool_choice, expected[0]) == expected[1]
    assert not request.HasField("parallel_tool_calls")


def test_thinking_blocks_of_past_assistant_turns_are_dropped() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Hello!"},
            ],
        },
        {"role": "user", "content": "Again"},
    ]
    assistant = _parse(_base(messages=messages)).messages[1]
    assert [p.text for p in assistant.parts] == ["Hello!"]
    with pytest.raises(GatewayError):
        _parse(_base(messages=[{"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}]))


def test_unknown_top_level_fields_travel_in_extra() -> None:
    request = _parse(_base(thinking={"type": "enabled", "budget_tokens": 1024}))
    assert from_struct(request.extra) == {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def test_count_tokens_body_needs_no_max_tokens_and_refuses_sampling_fields() -> None:
    request = anthropic_wire.parse_count_tokens_request(
        {"model": "mock:x", "system": "s", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert len(request.messages) == 2 and not request.HasField("max_tokens")
    with pytest.raises(GatewayError) as caught:
        anthropic_wire.parse_count_tokens_request({**_base(), "temperature": 1})
    assert caught.value.metadata["param"] == "max_tokens"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], "body"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (_base(max_tokens=0), "max_tokens"),
        (_base(max_tokens="5"), "max_tokens"),
        (_base(max_tokens=2**40), "max_tokens"),
        (_base(messages=None), "messages"),
        (_base(messages=[]), "messages"),
        (_base(messages=["hi"]), "messages[0]"),
        (_base(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
        (_base(messages=[{"role": "user"}]), "messages[0].content"),
        (_base(messages=[{"role": "user", "content": []}]), "messages[0].content"),
        (_base(messages=[{"role": "user", "content": [{"text": "x"}]}]), "messages[0].content[0].type"),
        (_base(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages[0].content[0].type"),
        (_base(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
        (_base(messages=[{"role": "user", "content": [{"type": "text", "text": 3}]}]), "messages[0].content[0].text"),
        (
            _base(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]),
            "messages[0].content[0].source.type",
        ),
        (
            _base(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA"}}
                        ],
                    }
                ]
            ),
            "messages[0].content[0].source.media_type",
        ),
        (
            _base(
                messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "ftp://x"}}]}]
            ),
            "messages[0].content[0].source.url",
        ),
        (
            _base(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]),
            "messages[0].content[0].type",
        ),
        (
            _base(
                messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}]}]
            ),
            "messages[0].content[0].input",
        ),
        (
            _base(messages=[{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]),
            "messages[0].content[0].tool_use_id",
        ),
        (
            _base(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": 1}]}]),
            "messages[0].content[0].is_error",
        ),
        (_base(system=[{"type": "image"}]), "system[0].type"),
        (_base(system=7), "system"),
        (_base(temperature=1.5), "temperature"),
        (_base(top_p=-0.1), "top_p"),
        (_base(top_k=-1), "top_k"),
        (_base(stop_sequences="END"), "stop_sequences"),
        (_base(stop_sequences=[1]), "stop_sequences[0]"),
        (_base(metadata={"user_id": 5}), "metadata.user_id"),
        (_base(metadata={"session": "x"}), "metadata.session"),
        (_base(stream="yes"), "stream"),
        (_base(tools=[{"name": "f"}]), "tools[0].input_schema"),
        (_base(tools=[{"name": "f", "input_schema": {"type": "string"}}]), "tools[0].input_schema.type"),
        (_base(tools=[{"input_schema": {"type": "object"}}]), "tools[0].name"),
        (_base(tools=[{"type": "bash_20250124", "name": "bash"}]), "tools[0].type"),
        (
            _base(
                tools=[
                    {"name": "f", "input_schema": {"type": "object"}},
                    {"name": "f", "input_schema": {"type": "object"}},
                ]
            ),
            "tools[1].name",
        ),
        (_base(tool_choice={"type": "required"}), "tool_choice.type"),
        (_base(tool_choice={"type": "tool", "name": "missing"}), "tool_choice.name"),
        (_base(tool_choice={"type": "tool"}), "tool_choice.name"),
        (_base(model="bad\x00model"), "model"),
    ],
)
def test_every_malformed_field_is_refused_by_name(body: Any, param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        anthropic_wire.parse_messages_request(body)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert caught.value.metadata["param"] == param
    assert param in caught.value.message or param == "body"


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


def _completion(finish: int, text: str | None = "Hello", tool_args: str | None = None) -> chat_pb2.ChatCompletion:
    completion = chat_pb2.ChatCompletion(id="chatcmpl-1", model="gpt-4o", provider="openai")
    choice = completion.choices.add(index=0, finish_reason=finish)
    choice.message.role = chat_pb2.ROLE_ASSISTANT
    if text is not None:
        choice.message.text = text
    if tool_args is not None:
        choice.message.tool_calls.add(
            id="call_1", type="function", function=chat_pb2.FunctionCall(name="get_weather", arguments=tool_args)
        )
    completion.usage.prompt_tokens, completion.usage.completion_tokens = 12, 3
    return completion


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        (chat_pb2.FINISH_REASON_STOP, "end_turn"),
        (chat_pb2.FINISH_REASON_LENGTH, "max_tokens"),
        (chat_pb2.FINISH_REASON_TOOL_CALLS, "tool_use"),
        (chat_pb2.FINISH_REASON_CONTENT_FILTER, "end_turn"),
    ],
)
def test_message_object_is_valid_per_the_spec(finish: int, reason: str) -> None:
    body = anthropic_wire.message_to_anthropic(_completion(finish))
    assert anthropic_schema.errors("Message", body) == []
    assert body["id"] == "msg_chatcmpl-1" and body["stop_reason"] == reason and body["stop_sequence"] is None
    assert body["content"] == [{"type": "text", "text": "Hello"}]
    assert body["usage"] == {"input_tokens": 12, "output_tokens": 3}


def test_tool_use_message_has_input_as_an_object() -> None:
    body = anthropic_wire.message_to_anthropic(
        _completion(chat_pb2.FINISH_REASON_TOOL_CALLS, text=None, tool_args='{"city":"Paris"}')
    )
    assert anthropic_schema.errors("Message", body) == []
    assert body["content"] == [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]
    broken = anthropic_wire.message_to_anthropic(
        _completion(chat_pb2.FINISH_REASON_TOOL_CALLS, text="Checking.", tool_args="{not json")
    )
    assert anthropic_schema.errors("Message", broken) == []
    assert broken["content"][0] == {"type": "text", "text": "Checking."}
    assert broken["content"][1]["input"] == {"_raw_arguments": "{not json"}


def _chunk(**delta: Any) -> chat_pb2.ChatCompletionChunk:
    finish = delta.pop("finish", chat_pb2.FINISH_REASON_UNSPECIFIED)
    chunk = chat_pb2.ChatCompletionChunk(id="chatcmpl-2", model="gpt-4o")
    chunk.choices.add(index=0, delta=chat_pb2.Delta(**delta), finish_reason=finish)
    return chunk


def _render(chunks: list[chat_pb2.ChatCompletionChunk]) -> list[dict[str, Any]]:
    stream = anthropic_wire.MessageStream("gpt-4o")
    events = stream.start(chunks[0])
    for chunk in chunks:
        events += stream.chunk(chunk)
    return events + stream.finish()


def _check(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    raw = b"".join(anthropic_wire.sse_event(e) for e in events)
    parsed = anthropic_schema.parse_sse(raw)
    for name, data in parsed:
        assert anthropic_schema.stream_event_errors(name, data) == [], (name, data)
    return parsed


def test_text_stream_event_sequence() -> None:
    usage = chat_pb2.ChatCompletionChunk(id="chatcmpl-2")
    usage.usage.prompt_tokens, usage.usage.completion_tokens = 9, 2
    parsed = _check(
        _render(
            [
                _chunk(role=chat_pb2.ROLE_ASSISTANT, content="Hel"),
                _chunk(content="lo"),
                _chunk(finish=chat_pb2.FINISH_REASON_STOP),
                usage,
            ]
        )
    )
    names = [name for name, _ in parsed]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert parsed[0][1]["message"]["id"] == "msg_chatcmpl-2"
    assert [d["delta"]["text"] for n, d in parsed if n == "content_block_delta"] == ["Hel", "lo"]
    assert parsed[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 9, "output_tokens": 2},
    }


def test_text_then_tool_use_stream_opens_one_block_each() -> None:
    parsed = _check(
        _render(
            [
                _chunk(role=chat_pb2.ROLE_ASSISTANT, content="Checking."),
                _chunk(tool_calls=[chat_pb2.ToolCallDelta(index=0, id="call_1", name="get_weather", arguments="")]),
                _chunk(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments='{"city":')]),
                _chunk(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments='"Paris"}')]),
                _chunk(tool_calls=[chat_pb2.ToolCallDelta(index=1, id="call_2", name="get_time", arguments="{}")]),
                _chunk(finish=chat_pb2.FINISH_REASON_TOOL_CALLS),
            ]
        )
    )
    starts = [d for n, d in parsed if n == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    json_parts = [d["delta"]["partial_json"] for n, d in parsed if n == "content_block_delta" and d["index"] == 1]
    assert json.loads("".join(json_parts)) == {"city": "Paris"}
    assert [d["index"] for n, d in parsed if n == "content_block_stop"] == [0, 1, 2]
    assert [d["delta"]["stop_reason"] for n, d in parsed if n == "message_delta"] == ["tool_use"]


def test_a_broken_stream_ends_with_an_error_event_and_no_message_stop() -> None:
    stream = anthropic_wire.MessageStream("m")
    first = _chunk(content="par")
    events = stream.start(first) + stream.chunk(first)
    events += stream.error({"type": "error", "error": {"type": "overloaded_error", "message": "upstream broke"}})
    parsed = _check(events)
    assert parsed[-1][0] == "error" and "message_stop" not in [n for n, _ in parsed]


def test_recorded_upstream_streams_validate_with_the_same_checker() -> None:
    for name in ("messages.stream.text.sse", "messages.stream.tool_use.sse"):
        for event, data in anthropic_schema.parse_sse((FIXTURES / name).read_text()):
            assert anthropic_schema.stream_event_errors(event, data) == []
