"""The Anthropic translator, pure: requests against what the official SDK sent, and responses and
streams straight from the recordings (expected values are read from the recorded bodies)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError, Reason
from gateway_common.openai_wire import chunk_to_openai, completion_to_openai, parse_chat_request
from services.providers.translate.anthropic import (
    AnthropicStream,
    chat_request_to_anthropic,
    completion_from_anthropic,
)
from tests.providers.recordings import load_json, reassemble, sse_events

A = "anthropic"


def translate(body: dict[str, Any], *, stream: bool = False, default_max_tokens: int = 4096) -> dict[str, Any]:
    request, _ = parse_chat_request(body)
    return chat_request_to_anthropic(request, body["model"], stream=stream, default_max_tokens=default_max_tokens)


def refused(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        translate(body)
    return caught.value


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {
            "type": "string",
            "enum": ["celsius", "fahrenheit"],
            "description": "The unit of temperature",
        },
    },
    "required": ["location"],
}


# ---------------------------------------------------------------------------------------------
# Requests: the OpenAI equivalent of each recorded request translates to what was sent
# ---------------------------------------------------------------------------------------------


def _openai_tools(anthropic_tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
        }
        for t in anthropic_tools
    ]


@pytest.mark.parametrize(
    "recording",
    [
        "messages.text.request.json",
        "messages.text.2024.request.json",
        "messages.tool_use.request.json",
        "messages.text_and_tool_use.request.json",
        "messages.stream.tool_use.request.json",
        "messages.stream.text_then_tool_use.2024.request.json",
    ],
)
def test_simple_recorded_requests_are_reproduced(recording: str) -> None:
    sent = load_json(A, recording)["body"]
    body: dict[str, Any] = {
        "model": sent["model"],
        "messages": [{"role": "user", "content": sent["messages"][0]["content"]}],
        "max_tokens": sent["max_tokens"],
    }
    if "tools" in sent:
        body["tools"] = _openai_tools(sent["tools"])
    expected = {k: v for k, v in sent.items() if k != "stream" or v}
    assert translate(body, stream=bool(sent.get("stream"))) == expected


def test_recorded_tool_result_conversation_is_reproduced() -> None:
    sent = load_json(A, "messages.stream.text.request.json")["body"]
    tool_use = sent["messages"][1]["content"][0]
    tool_result = sent["messages"][2]["content"][0]
    body = {
        "model": sent["model"],
        "max_tokens": sent["max_tokens"],
        "messages": [
            {"role": "user", "content": sent["messages"][0]["content"]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": tool_use["id"],
                        "type": "function",
                        "function": {"name": tool_use["name"], "arguments": json.dumps(tool_use["input"])},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": tool_result["tool_use_id"], "content": tool_result["content"]},
        ],
        "tools": _openai_tools(sent["tools"]),
    }
    expected = json.loads(json.dumps(sent))
    del expected["messages"][1]["content"][0]["caller"]  # added by the SDK's beta tool runner
    assert translate(body, stream=True) == expected


# ---------------------------------------------------------------------------------------------
# Requests: mapping rules
# ---------------------------------------------------------------------------------------------


def test_system_developer_and_turn_merging() -> None:
    out = translate(
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "What time is it?"},
                {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {"id": "t1", "type": "function", "function": {"name": "clock", "arguments": '{"tz":"UTC"}'}},
                        {"id": "t2", "type": "function", "function": {"name": "clock", "arguments": ""}},
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "12:00"},
                {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "13:00"}]},
                {"role": "user", "content": "Thanks"},
            ],
        }
    )
    assert out["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}]
    assert out["max_tokens"] == 4096
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Hi"},
        {"type": "text", "text": "What time is it?"},
    ]
    assert out["messages"][1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "t1", "name": "clock", "input": {"tz": "UTC"}},
        {"type": "tool_use", "id": "t2", "name": "clock", "input": {}},
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "12:00"},
        {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "13:00"}]},
        {"type": "text", "text": "Thanks"},
    ]


def test_tool_results_come_first_in_their_user_turn() -> None:
    out = translate(
        {
            "model": "claude",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
                },
                {"role": "user", "content": "Hurry up"},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
            ],
        }
    )
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
            {"type": "text", "text": "Hurry up"},
        ],
    }


def test_sampling_limits_stop_user_and_images() -> None:
    out = translate(
        {
            "model": "claude",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ],
            "max_tokens": 100,
            "max_completion_tokens": 200,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END", "STOP"],
            "user": "user-42",
            "seed": 7,
            "presence_penalty": 0,
            "logprobs": False,
            "store": True,
        },
        default_max_tokens=9,
    )
    assert out == {
        "model": "claude",
        "max_tokens": 200,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "user-42"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    }


def test_max_tokens_falls_back_to_legacy_then_default() -> None:
    messages = [{"role": "user", "content": "x"}]
    assert translate({"model": "m", "messages": messages, "max_tokens": 50})["max_tokens"] == 50
    assert translate({"model": "m", "messages": messages}, default_max_tokens=77)["max_tokens"] == 77


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, True, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}],
    }
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    out = translate(body)
    assert out["tools"] == [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    assert out.get("tool_choice") == expected


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    out = translate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"function": {"name": "ping"}}]}
    )
    assert out["tools"] == [{"name": "ping", "input_schema": {"type": "object", "properties": {}}}]


def test_anthropic_fields_in_extra_are_forwarded() -> None:
    out = translate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "service_tier": "auto",
            "metadata": {"user_id": "from-metadata"},
            "user": "ignored-because-metadata-has-one",
        }
    )
    assert out["top_k"] == 5
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert out["service_tier"] == "auto"
    assert out["metadata"] == {"user_id": "from-metadata"}


def test_safety_identifier_becomes_the_user_id() -> None:
    out = translate({"model": "m", "messages": [{"role": "user", "content": "x"}], "safety_identifier": "hashed"})
    assert out["metadata"] == {"user_id": "hashed"}
    assert "safety_identifier" not in out


def test_anthropic_native_content_blocks_are_forwarded_and_files_become_documents() -> None:
    native = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}}
    out = translate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        native,
                        {
                            "type": "file",
                            "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
                        },
                    ],
                }
            ],
        }
    )
    assert out["messages"][0]["content"] == [
        native,
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"temperature": 1.5}, "temperature"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"web_search_options": {}}, None),
        ({"functions": [{"name": "f"}]}, "functions"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
            "messages[0].content[0].file",
        ),
    ],
)
def test_fields_anthropic_cannot_honour_are_refused(extra: dict[str, Any], param: str | None) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    if param is None:
        # An empty web_search_options asks for nothing: ignored, not refused.
        assert "web_search_options" not in translate(body)
        return
    error = refused(body)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == Reason.UNSUPPORTED_FIELD
    assert error.metadata["param"] == param
    assert param in error.message


def test_invalid_tool_call_arguments_name_the_field() -> None:
    error = refused(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
                },
            ],
        }
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["param"] == "messages[1].tool_calls[0].function.arguments"


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------

FINISH = {
    "end_turn": chat_pb2.FINISH_REASON_STOP,
    "stop_sequence": chat_pb2.FINISH_REASON_STOP,
    "max_tokens": chat_pb2.FINISH_REASON_LENGTH,
    "tool_use": chat_pb2.FINISH_REASON_TOOL_CALLS,
    "refusal": chat_pb2.FINISH_REASON_CONTENT_FILTER,
}


def _prompt_tokens(usage: dict[str, Any]) -> int:
    return int(
        usage["input_tokens"]
        + (usage.get("cache_read_input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
    )


@pytest.mark.parametrize(
    "recording",
    ["messages.text.json", "messages.text.2024.json", "messages.text_and_tool_use.json", "messages.tool_use.json"],
)
def test_recorded_responses(recording: str) -> None:
    data = load_json(A, recording)
    completion = completion_from_anthropic(data, "claude-prod", created=1700000000)
    assert (completion.id, completion.model, completion.provider, completion.created) == (
        data["id"],
        data["model"],
        "claude-prod",
        1700000000,
    )
    [choice] = completion.choices
    texts = [b["text"] for b in data["content"] if b["type"] == "text"]
    tools = [b for b in data["content"] if b["type"] == "tool_use"]
    assert choice.message.role == chat_pb2.ROLE_ASSISTANT
    assert choice.message.HasField("text") == bool(texts)
    assert choice.message.text == "".join(texts)
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        (t["id"], "function", t["name"], t["input"]) for t in tools
    ]
    assert choice.finish_reason == FINISH[data["stop_reason"]]
    usage = data["usage"]
    assert completion.usage.prompt_tokens == _prompt_tokens(usage)
    assert completion.usage.completion_tokens == usage["output_tokens"]
    assert completion.usage.total_tokens == _prompt_tokens(usage) + usage["output_tokens"]
    assert completion.usage.prompt_tokens_details.HasField("cached_tokens") == ("cache_read_input_tokens" in usage)
    # The OpenAI rendering has no Anthropic-only values (service_tier "standard" is not OpenAI's).
    assert "service_tier" not in completion_to_openai(completion)


def test_cache_tokens_count_as_prompt_and_thinking_becomes_reasoning_content() -> None:
    completion = completion_from_anthropic(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
                {"type": "text", "text": "42"},
            ],
            "stop_reason": "max_tokens",
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 1000,
                "output_tokens": 5,
            },
        },
        "a",
        created=0,
    )
    assert completion.usage.prompt_tokens == 1110
    assert completion.usage.prompt_tokens_details.cached_tokens == 1000
    assert completion.usage.total_tokens == 1115
    assert completion.choices[0].finish_reason == chat_pb2.FINISH_REASON_LENGTH
    assert completion_to_openai(completion)["choices"][0]["message"]["reasoning_content"] == "Let me think."


def test_a_body_without_content_is_a_retryable_upstream_error() -> None:
    with pytest.raises(GatewayError) as caught:
        completion_from_anthropic({"type": "message"}, "a", created=0)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.retryable


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------

STREAMS = [
    "messages.stream.basic.sdk-fixture.sse",
    "messages.stream.text.sse",
    "messages.stream.text.after-429-retry.sse",
    "messages.stream.tool_use.sse",
    "messages.stream.text_then_tool_use.2024.sse",
    "docs-examples/stream.basic.sse",
    "docs-examples/stream.tool_use.sse",
]


def run_stream(events: list[tuple[str, str]]) -> list[chat_pb2.ChatCompletionChunk]:
    translator = AnthropicStream("anthropic", created=1700000000)
    chunks = [chunk for event, data in events for chunk in translator.feed(event, data)]
    translator.close()
    return chunks


def expected_from_recording(events: list[tuple[str, str]]) -> dict[str, Any]:
    """Text, tool calls, stop reason and token counts as the recorded events state them."""
    payloads = [json.loads(data) for _, data in events]
    start = next(p["message"] for p in payloads if p["type"] == "message_start")
    deltas = [p for p in payloads if p["type"] == "message_delta"]
    prompt_usage = start["usage"]
    for delta in deltas:
        if "input_tokens" in delta["usage"]:
            prompt_usage = delta["usage"]
    blocks: dict[int, dict[str, Any]] = {}
    for p in payloads:
        if p["type"] == "content_block_start":
            blocks[p["index"]] = {**p["content_block"], "json": "", "text": p["content_block"].get("text", "")}
        elif p["type"] == "content_block_delta":
            delta = p["delta"]
            if delta["type"] == "text_delta":
                blocks[p["index"]]["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                blocks[p["index"]]["json"] += delta["partial_json"]
    ordered = [blocks[i] for i in sorted(blocks)]
    return {
        "id": start["id"],
        "model": start["model"],
        "text": "".join(b["text"] for b in ordered if b["type"] == "text"),
        "calls": [(b["id"], b["name"], json.loads(b["json"])) for b in ordered if b["type"] == "tool_use"],
        "finish": FINISH[deltas[-1]["delta"]["stop_reason"]],
        "prompt_tokens": _prompt_tokens(prompt_usage),
        "completion_tokens": deltas[-1]["usage"]["output_tokens"],
    }


@pytest.mark.parametrize("recording", STREAMS)
def test_recorded_streams(recording: str) -> None:
    events = sse_events(A, recording)
    expected = expected_from_recording(events)
    chunks = run_stream(events)
    assert {(c.id, c.model, c.provider, c.created) for c in chunks} == {
        (expected["id"], expected["model"], "anthropic", 1700000000)
    }
    result = reassemble(chunks)
    [choice] = result["choices"].values()
    assert choice["role"] == chat_pb2.ROLE_ASSISTANT
    assert choice["text"] == expected["text"]
    calls = [(c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(choice["calls"].items())]
    assert calls == expected["calls"]
    assert sorted(choice["calls"]) == list(range(len(expected["calls"])))
    assert choice["finish"] == expected["finish"]
    usage = result["usage"]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        expected["prompt_tokens"],
        expected["completion_tokens"],
        expected["prompt_tokens"] + expected["completion_tokens"],
    )
    # Shape: role first, finish then usage last, and nothing after the usage chunk.
    assert chunks[0].choices[0].delta.role == chat_pb2.ROLE_ASSISTANT
    assert chunks[-2].choices[0].finish_reason == expected["finish"]
    assert not chunks[-1].choices and chunks[-1].HasField("usage")
    assert all(not c.HasField("usage") for c in chunks[:-1])
    assert all(not ch.finish_reason for c in chunks[:-2] for ch in c.choices)


def test_tool_call_fragments_serialize_like_openai() -> None:
    chunks = run_stream(sse_events(A, "messages.stream.text_then_tool_use.2024.sse"))
    fragments = [
        call
        for chunk in chunks
        for choice in chunk_to_openai(chunk, include_usage=True)["choices"]
        for call in choice["delta"].get("tool_calls", [])
    ]
    firsts = [f for f in fragments if "id" in f]
    assert firsts == [
        {
            "index": 0,
            "id": "toolu_014x5X91kx3fvdhpLvwXZWE2",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {
            "index": 1,
            "id": "toolu_0121kXsENLvoDZ72LCuAnCCz",
            "type": "function",
            "function": {"name": "get_time", "arguments": ""},
        },
    ]
    # Later fragments carry only the index and a non-empty argument piece.
    for fragment in fragments:
        if "id" not in fragment:
            assert fragment.keys() == {"index", "function"}
            assert fragment["function"].keys() == {"arguments"} and fragment["function"]["arguments"]


def test_in_stream_overloaded_error_is_retryable_unavailable() -> None:
    events = sse_events(A, "docs-examples/stream.error.overloaded_error.sse")
    translator = AnthropicStream("anthropic", created=0)
    prefix = sse_events(A, "messages.stream.text.sse")[:4]
    for event, data in prefix:
        translator.feed(event, data)
    with pytest.raises(GatewayError) as caught:
        for event, data in events:
            translator.feed(event, data)
    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.retryable
    assert error.metadata["upstream_type"] == "overloaded_error"
    assert error.message == "Overloaded"


def test_in_stream_rate_limit_error_keeps_its_class() -> None:
    translator = AnthropicStream("anthropic", created=0)
    with pytest.raises(GatewayError) as caught:
        translator.feed("error", '{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}')
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.retryable


@pytest.mark.parametrize("recording", ["messages.stream.tool_use.sse", "messages.stream.text.sse"])
def test_every_cut_short_stream_is_broken_not_complete(recording: str) -> None:
    events = sse_events(A, recording)
    for cut in range(len(events) - 1):
        translator = AnthropicStream("anthropic", created=0)
        for event, data in events[:cut]:
            translator.feed(event, data)
        with pytest.raises(GatewayError) as caught:
            translator.close()
        assert caught.value.reason == Reason.UPSTREAM_STREAM_BROKEN
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.retryable


@pytest.mark.parametrize(
    "bad",
    [
        ("content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"'),
        ("content_block_delta", "[1, 2]"),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":5,"delta":{"type":"input_json_delta","partial_json":"{"}}',
        ),
    ],
)
def test_malformed_events_break_the_stream(bad: tuple[str, str]) -> None:
    events = sse_events(A, "messages.stream.text.sse")
    translator = AnthropicStream("anthropic", created=0)
    for event, data in events[:3]:
        translator.feed(event, data)
    with pytest.raises(GatewayError) as caught:
        translator.feed(*bad)
    assert caught.value.reason == Reason.UPSTREAM_STREAM_BROKEN


def test_events_before_message_start_break_the_stream() -> None:
    translator = AnthropicStream("anthropic", created=0)
    with pytest.raises(GatewayError) as caught:
        translator.feed(
            "content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}'
        )
    assert caught.value.reason == Reason.UPSTREAM_STREAM_BROKEN


def test_tool_call_without_input_gets_empty_object_and_thinking_streams_as_reasoning() -> None:
    events = [
        (
            "message_start",
            '{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3,"output_tokens":1}}}',
        ),
        (
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"s"}}',
        ),
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        (
            "content_block_start",
            '{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"now","input":{}}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}',
        ),
        ("content_block_stop", '{"type":"content_block_stop","index":1}'),
        ("some_future_event", '{"type":"some_future_event"}'),
        ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}'),
        ("message_stop", '{"type":"message_stop"}'),
    ]
    chunks = run_stream(events)
    result = reassemble(chunks)
    assert result["choices"][0]["calls"] == {0: {"id": "t", "name": "now", "arguments": "{}"}}
    reasoning = [
        chunk_to_openai(c, include_usage=False)["choices"][0]["delta"].get("reasoning_content")
        for c in chunks
        if c.choices
    ]
    assert "hmm" in reasoning
    assert (result["usage"].prompt_tokens, result["usage"].completion_tokens) == (3, 9)
