"""The Gemini translator, pure: requests against the recorded ones, responses and streams straight
from the recordings (expected values are read from the recorded bodies)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import grpc
import pytest

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError, Reason
from gateway_common.openai_wire import completion_to_openai, parse_chat_request, parse_embedding_request
from services.providers.translate.gemini import (
    GeminiStream,
    chat_request_to_gemini,
    completion_from_gemini,
    embedding_request_to_gemini,
    embeddings_from_gemini,
    models_from_gemini,
)
from tests.providers.recordings import load_json, reassemble, sse_events

G = "gemini"


def translate(body: dict[str, Any], model: str = "gemini-2.0-flash") -> dict[str, Any]:
    request, _ = parse_chat_request({"model": model, **body})
    return chat_request_to_gemini(request, model)


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def test_recorded_text_requests_are_reproduced() -> None:
    sent = load_json(G, "generateContent.text.request.json")["body"]
    assert translate({"messages": [user("Say hello")]}) == {"contents": sent["contents"]}

    sent = load_json(G, "streamGenerateContent.alt-sse.text.request.json")["body"]
    out = translate(
        {
            "messages": [
                {"role": "system", "content": "You are a helpful chatbot."},
                user(sent["contents"][0]["parts"][0]["text"]),
            ],
            "temperature": 0.0,
        }
    )
    assert out["contents"] == sent["contents"]
    assert out["generationConfig"] == sent["generationConfig"]
    # The recorded SDK also sent role "user" on the system instruction; the API ignores it there.
    assert out["systemInstruction"] == {"parts": sent["systemInstruction"]["parts"]}


def test_recorded_function_response_conversation_is_reproduced() -> None:
    sent = load_json(G, "streamGenerateContent.json-array.functionCall.request.json")["body"]
    out = translate(
        {
            "messages": [
                user("Two names for a pet pelican"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_27db",
                            "type": "function",
                            "function": {"name": "pelican_name_generator", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_27db", "content": '{"output": "Charles"}'},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "pelican_name_generator", "parameters": {"properties": {}, "type": "object"}},
                }
            ],
            "safetySettings": sent["safetySettings"],
            "generationConfig": sent["generationConfig"],
        }
    )

    def without_ids_and_signatures(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The recording used snake_case part names, ids and a thought signature the gateway cannot know.
        result = []
        for content in contents:
            parts = []
            for part in content["parts"]:
                part = {k: v for k, v in part.items() if k != "thoughtSignature"}
                renamed = {"function_call": "functionCall", "function_response": "functionResponse"}
                parts.append(
                    {
                        renamed.get(k, k): {x: y for x, y in v.items() if x != "id"} if isinstance(v, dict) else v
                        for k, v in part.items()
                    }
                )
            result.append({"role": content["role"], "parts": parts})
        return result

    assert out["contents"] == without_ids_and_signatures(sent["contents"])
    assert out["safetySettings"] == sent["safetySettings"]
    assert out["generationConfig"] == sent["generationConfig"]
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {"name": "pelican_name_generator", "parametersJsonSchema": {"properties": {}, "type": "object"}}
            ]
        }
    ]


def test_generation_config_and_json_modes() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    out = translate(
        {
            "messages": [user("x")],
            "temperature": 0.7,
            "top_p": 0.5,
            "n": 2,
            "seed": 11,
            "stop": ["END"],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "top_k": 4,
            "logprobs": True,
            "top_logprobs": 3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}},
            "user": "u1",
            "store": True,
            "parallel_tool_calls": False,
        }
    )
    assert out["generationConfig"] == {
        "temperature": 0.7,
        "topP": 0.5,
        "candidateCount": 2,
        "seed": 11,
        "stopSequences": ["END"],
        "maxOutputTokens": 20,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "topK": 4,
        "responseLogprobs": True,
        "logprobs": 3,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    assert set(out) == {"contents", "generationConfig"}
    json_object = translate({"messages": [user("x")], "response_format": {"type": "json_object"}})
    assert json_object["generationConfig"] == {"responseMimeType": "application/json"}
    assert "generationConfig" not in translate({"messages": [user("x")], "response_format": {"type": "text"}})


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
        (None, None),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {
        "messages": [user("x")],
        "tools": [{"type": "function", "function": {"name": "f", "description": "d"}}],
    }
    if choice is not None:
        body["tool_choice"] = choice
    out = translate(body)
    assert out["tools"] == [{"functionDeclarations": [{"name": "f", "description": "d"}]}]
    assert out.get("toolConfig") == (None if expected is None else {"functionCallingConfig": expected})


def test_roles_media_and_tool_results() -> None:
    out = translate(
        {
            "messages": [
                {"role": "developer", "content": "Rule 1"},
                {"role": "system", "content": [{"type": "text", "text": "Rule 2"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look"},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png?x=1"}},
                        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": "Calling",
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "one", "arguments": '{"x": 1}'}},
                        {"id": "b", "type": "function", "function": {"name": "two", "arguments": ""}},
                    ],
                },
                {"role": "tool", "tool_call_id": "b", "content": "plain text"},
                {"role": "tool", "tool_call_id": "a", "content": '{"ok": true}'},
                user("And?"),
            ]
        }
    )
    assert out["systemInstruction"] == {"parts": [{"text": "Rule 1"}, {"text": "Rule 2"}]}
    assert out["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Look"},
                {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png?x=1"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "Calling"},
                {"functionCall": {"name": "one", "args": {"x": 1}}},
                {"functionCall": {"name": "two", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "two", "response": {"result": "plain text"}}},
                {"functionResponse": {"name": "one", "response": {"ok": True}}},
                {"text": "And?"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("model", "signed"),
    [
        ("gemini-3-pro-preview", True),
        ("models/gemini-3.1-flash", True),
        ("gemini-2.5-flash", False),
        ("gemma-3-27b-it", False),
    ],
)
def test_replayed_calls_get_the_signature_sentinel_on_gemini_3(model: str, signed: bool) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    out = translate(
        {
            "messages": [
                user("x"),
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c", "content": "1"},
            ]
        },
        model=model,
    )
    part = out["contents"][1]["parts"][0]
    assert part.get("thoughtSignature") == ("skip_thought_signature_validator" if signed else None)
    assert part["functionCall"] == {"name": "f", "args": {}}


def test_tool_result_without_a_matching_call_is_invalid() -> None:
    with pytest.raises(GatewayError) as caught:
        translate({"messages": [user("x"), {"role": "tool", "tool_call_id": "nope", "content": "1"}]})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.metadata["param"] == "messages[1].tool_call_id"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"function_call": "auto"}, "function_call"),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-9"}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_fields_gemini_cannot_honour_are_refused(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        translate({"messages": [user("x")], **extra})
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == Reason.UNSUPPORTED_FIELD
    assert caught.value.metadata["param"] == param


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


def test_recorded_text_response_counts_thoughts_as_completion() -> None:
    data = load_json(G, "generateContent.text.json")
    completion = completion_from_gemini(data, "g", model="asked-for", created=5)
    meta = data["usageMetadata"]
    [choice] = completion.choices
    assert choice.message.text == data["candidates"][0]["content"]["parts"][0]["text"]
    assert choice.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (completion.id, completion.model, completion.created) == (data["responseId"], data["modelVersion"], 5)
    assert completion.usage.prompt_tokens == meta["promptTokenCount"]
    assert completion.usage.completion_tokens == meta["candidatesTokenCount"] + meta["thoughtsTokenCount"]
    assert completion.usage.total_tokens == meta["totalTokenCount"]
    assert completion.usage.completion_tokens_details.reasoning_tokens == meta["thoughtsTokenCount"]


def test_recorded_function_call_response() -> None:
    data = load_json(G, "generateContent.functionCall.json")
    completion = completion_from_gemini(data, "g", model="m", created=0, new_id=ids())
    [choice] = completion.choices
    call = data["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("call_0", "function", call["name"], call["args"])
    ]
    assert not choice.message.HasField("text")
    assert choice.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    meta = data["usageMetadata"]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        meta["promptTokenCount"],
        meta["candidatesTokenCount"],
        meta["totalTokenCount"],
    )


def test_generated_tool_call_ids_are_unique() -> None:
    data = load_json(G, "generateContent.functionCall.json")
    first = completion_from_gemini(data, "g", model="m", created=0).choices[0].message.tool_calls[0].id
    second = completion_from_gemini(data, "g", model="m", created=0).choices[0].message.tool_calls[0].id
    assert first.startswith("call_") and second.startswith("call_") and first != second


def test_prompt_blocked_by_safety_is_content_filtered() -> None:
    # Shape from the API reference (no recording of a blocked prompt exists in the fixtures).
    body = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}, "usageMetadata": {"promptTokenCount": 8}}
    with pytest.raises(GatewayError) as caught:
        completion_from_gemini(body, "g", model="m", created=0)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == Reason.CONTENT_FILTERED
    assert not caught.value.retryable
    with pytest.raises(GatewayError) as streamed:
        GeminiStream("g", model="m", created=0).feed(json.dumps(body))
    assert streamed.value.reason == Reason.CONTENT_FILTERED


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("SPII", "content_filter"),
        ("MAX_TOKENS", "length"),
        ("STOP", "stop"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    body = {"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}]}
    completion = completion_from_gemini(body, "g", model="m", created=0)
    assert completion_to_openai(completion)["choices"][0]["finish_reason"] == expected


def test_several_candidates_thoughts_and_logprobs() -> None:
    body = {
        "candidates": [
            {
                "index": 0,
                "content": {"role": "model", "parts": [{"text": "plan", "thought": True}, {"text": "Hi"}]},
                "finishReason": "STOP",
                "logprobsResult": {
                    "topCandidates": [
                        {
                            "candidates": [
                                {"token": "Hi", "logProbability": -0.1},
                                {"token": "Yo", "logProbability": -2.5},
                            ]
                        }
                    ],
                    "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}],
                },
            },
            {"index": 1, "content": {"role": "model", "parts": [{"text": "Hello"}]}, "finishReason": "MAX_TOKENS"},
        ],
        "usageMetadata": {
            "promptTokenCount": 4,
            "candidatesTokenCount": 3,
            "cachedContentTokenCount": 2,
            "totalTokenCount": 7,
        },
    }
    out = completion_to_openai(completion_from_gemini(body, "g", model="gemini-x", created=0))
    assert out["model"] == "gemini-x"
    assert [c["message"]["content"] for c in out["choices"]] == ["Hi", "Hello"]
    assert out["choices"][0]["message"]["reasoning_content"] == "plan"
    assert out["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Yo", "logprob": -2.5, "bytes": [89, 111]},
                ],
            }
        ]
    }
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


def run_stream(payloads: list[str]) -> list[chat_pb2.ChatCompletionChunk]:
    translator = GeminiStream("gemini", model="asked-for", created=9, new_id=ids())
    chunks = [chunk for data in payloads for chunk in translator.feed(data)]
    return chunks + translator.close()


@pytest.mark.parametrize(
    "recording", ["streamGenerateContent.alt-sse.text.sse", "streamGenerateContent.alt-sse.functionCall.sse"]
)
def test_recorded_sse_streams(recording: str) -> None:
    payloads = [data for _, data in sse_events(G, recording)]
    events = [json.loads(p) for p in payloads]
    chunks = run_stream(payloads)
    result = reassemble(chunks)
    [choice] = result["choices"].values()
    parts = [part for e in events for part in e["candidates"][0]["content"]["parts"]]
    assert choice["role"] == chat_pb2.ROLE_ASSISTANT
    assert choice["text"] == "".join(p.get("text", "") for p in parts)
    calls = [p["functionCall"] for p in parts if "functionCall" in p]
    assert [(c["name"], json.loads(c["arguments"])) for c in choice["calls"].values()] == [
        (c["name"], c["args"]) for c in calls
    ]
    assert choice["finish"] == (chat_pb2.FINISH_REASON_TOOL_CALLS if calls else chat_pb2.FINISH_REASON_STOP)
    last = events[-1]["usageMetadata"]  # repeated on every event: the last one counts
    usage = result["usage"]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        last["promptTokenCount"],
        last["candidatesTokenCount"],
        last["totalTokenCount"],
    )
    assert {(c.id, c.model, c.created) for c in chunks} == {(events[0]["responseId"], events[0]["modelVersion"], 9)}
    assert not chunks[-1].choices and all(not c.HasField("usage") for c in chunks[:-1])


def test_recorded_json_array_stream() -> None:
    payloads = load_json(G, "streamGenerateContent.json-array.functionCall.json")
    translator = GeminiStream("gemini", model="m", created=0, new_id=ids())
    chunks = [chunk for payload in payloads for chunk in translator.feed_object(payload)] + translator.close()
    result = reassemble(chunks)
    assert result["choices"][0]["calls"] == {0: {"id": "call_0", "name": "pelican_name_generator", "arguments": "{}"}}
    assert result["choices"][0]["finish"] == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert (result["usage"].prompt_tokens, result["usage"].completion_tokens) == (105, 13)


def test_a_stream_cut_before_its_finish_reason_is_broken() -> None:
    payloads = [data for _, data in sse_events(G, "streamGenerateContent.alt-sse.text.sse")]
    for cut in range(len(payloads)):
        translator = GeminiStream("gemini", model="m", created=0)
        for data in payloads[:cut]:
            translator.feed(data)
        with pytest.raises(GatewayError) as caught:
            translator.close()
        assert caught.value.reason == Reason.UPSTREAM_STREAM_BROKEN and caught.value.retryable


def test_a_stream_with_an_unfinished_candidate_is_broken() -> None:
    translator = GeminiStream("gemini", model="m", created=0)
    translator.feed(
        json.dumps({"candidates": [{"index": 0, "content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}]})
    )
    translator.feed(json.dumps({"candidates": [{"index": 1, "content": {"parts": [{"text": "b"}]}}]}))
    with pytest.raises(GatewayError) as caught:
        translator.close()
    assert caught.value.reason == Reason.UPSTREAM_STREAM_BROKEN


def test_malformed_and_error_events() -> None:
    translator = GeminiStream("gemini", model="m", created=0)
    with pytest.raises(GatewayError) as caught:
        translator.feed('{"candidates": [')
    assert caught.value.reason == Reason.UPSTREAM_STREAM_BROKEN
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(GatewayError) as failed:
        GeminiStream("gemini", model="m", created=0).feed(json.dumps(error))
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert failed.value.retryable
    assert failed.value.message == "The model is overloaded."


# ---------------------------------------------------------------------------------------------
# Embeddings and models
# ---------------------------------------------------------------------------------------------


def test_embeddings() -> None:
    request, _ = parse_embedding_request(
        {"model": "text-embedding-004", "input": ["a", "bb"], "dimensions": 8, "taskType": "RETRIEVAL_QUERY"}
    )
    assert embedding_request_to_gemini(request, "text-embedding-004") == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 8,
                "taskType": "RETRIEVAL_QUERY",
            }
            for text in ("a", "bb")
        ]
    }
    response = embeddings_from_gemini(
        {"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]},
        "g",
        model="text-embedding-004",
        request=request,
    )
    assert [(e.index, list(e.vector)) for e in response.data] == [(0, [0.5, -1.0]), (1, [0.25, 2.0])]
    assert response.usage.estimated and response.usage.prompt_tokens == response.usage.total_tokens > 0
    with pytest.raises(GatewayError) as caught:
        embeddings_from_gemini({"embeddings": [{"values": [1.0]}]}, "g", model="m", request=request)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_recorded_model_list() -> None:
    data = load_json(G, "models.list.json")
    models = models_from_gemini(data, "gem")
    wanted = [
        m["name"].removeprefix("models/")
        for m in data["models"]
        if {"generateContent", "embedContent"} & set(m.get("supportedGenerationMethods", []))
    ]
    assert [m.id for m in models] == [f"gem:{name}" for name in wanted]
    assert len(wanted) < len(data["models"])  # image and video models are left out
    assert all(m.provider == "gem" and m.owned_by == "google" for m in models)
