"""Responses API wire format: the strict parser (every input form, every error names its parameter)
and the renderer (the response object, input items and the typed event sequence), validated against
the official OpenAI spec."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError
from gateway_common.openai_wire import responses_render
from gateway_common.openai_wire.responses_requests import parse_responses_request
from tests.edge.openai_schema import errors, stream_event_errors


def _parse(body: dict[str, Any]) -> chat_pb2.ChatCompletionRequest:
    return parse_responses_request(body)[0]


def test_a_string_input_is_one_user_message_and_the_state_goes_to_the_router() -> None:
    request, stream = parse_responses_request(
        {
            "model": "mock:x",
            "input": "Hello",
            "instructions": "Be brief.",
            "previous_response_id": "resp_1",
            "store": False,
            "metadata": {"team": "a"},
            "max_output_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "u1",
            "parallel_tool_calls": False,
        }
    )
    assert not stream
    assert [(m.role, m.text) for m in request.messages] == [(chat_pb2.ROLE_USER, "Hello")]
    conversation = request.conversation
    assert (conversation.instructions, conversation.previous_response_id, conversation.store) == (
        "Be brief.",
        "resp_1",
        False,
    )
    assert conversation.metadata.fields["team"].string_value == "a"
    assert (request.max_completion_tokens, request.temperature, request.user) == (50, 0.5, "u1")
    assert request.top_p == pytest.approx(0.9) and request.parallel_tool_calls is False
    # Instructions stay out of the messages: the router puts them first, after loading the history.
    assert not any(m.role == chat_pb2.ROLE_SYSTEM for m in request.messages)
    assert _parse({"input": "x"}).conversation.store is True


def test_items_messages_function_calls_and_outputs_map_onto_canonical_messages() -> None:
    request = _parse(
        {
            "input": [
                {"role": "developer", "content": "rules"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                    ],
                },
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ]
        }
    )
    developer, user, assistant, calls, tool = request.messages
    assert (developer.role, developer.text) == (chat_pb2.ROLE_DEVELOPER, "rules")
    assert user.parts[0].text == "look" and user.parts[1].image_url.url == "https://x/y.png"
    assert user.parts[1].image_url.detail == "low"
    assert assistant.role == chat_pb2.ROLE_ASSISTANT and assistant.parts[0].text == "ok"
    # Consecutive calls are one assistant turn, as chat upstreams expect.
    assert [(c.id, c.function.name) for c in calls.tool_calls] == [("c1", "f"), ("c2", "g")]
    assert (tool.role, tool.tool_call_id, tool.text) == (chat_pb2.ROLE_TOOL, "c1", "42")


def test_an_item_reference_is_left_for_the_router_to_resolve() -> None:
    request = _parse({"input": [{"type": "item_reference", "id": "fc_ab12_1"}, {"role": "user", "content": "go"}]})
    assert request.messages[0].item_reference == "fc_ab12_1"
    assert responses_render.parse_item_id("fc_ab12_1") == ("resp_ab12", False, 1)
    assert responses_render.parse_item_id("msg_ab12_in0") == ("resp_ab12", True, 0)
    assert responses_render.parse_item_id("fc_../x_1") is None


def test_tools_tool_choice_and_text_format() -> None:
    request = _parse(
        {
            "input": "x",
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        }
    )
    tool = request.tools[0]
    assert (tool.type, tool.function.name, tool.function.description) == ("function", "f", "d")
    assert request.tool_choice.function_name == "f"
    assert request.response_format.type == "json_schema"
    assert request.response_format.json_schema.fields["name"].string_value == "out"
    assert _parse({"input": "x", "tool_choice": "required"}).tool_choice.mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED
    assert _parse({"input": "x", "text": {"format": {"type": "json_object"}}}).response_format.type == "json_object"


def test_the_unified_model_gateway_forms_and_constraints() -> None:
    prompt = _parse({"input": {"prompt": "Hi"}})
    assert [(m.role, m.text) for m in prompt.messages] == [(chat_pb2.ROLE_USER, "Hi")]
    messages = _parse({"input": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Yo"}]}]}})
    assert messages.messages[0].parts[0].text == "Yo"
    constrained = _parse(
        {
            "input": "x",
            "constraints": {
                "routing": {"strategy": "cost", "allow_providers": ["mock", "fake"]},
                "budget": {"max_cost_usd": 0.01},
            },
        }
    )
    assert constrained.gateway.strategy == chat_pb2.ROUTING_STRATEGY_COST
    assert list(constrained.gateway.allow_providers) == ["mock", "fake"]
    assert constrained.gateway.max_cost_usd == pytest.approx(0.01)
    assert parse_responses_request({"input": "x"}, force_stream=True)[1] is True


_USER_A = {"type": "message", "role": "user", "content": "a"}
_FILE = [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]
_IMAGE_BY_ID = [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], "body"),
        ({}, "input"),
        ({"input": 3}, "input"),
        ({"input": []}, "input"),
        ({"input": {"other": 1}}, "input"),
        ({"input": [_USER_A, {"type": "web_search_call"}]}, "input[1].type"),
        ({"input": ["x", {"type": "message", "role": "tool", "content": "a"}]}, "input[0]"),
        ({"input": [{"type": "message", "role": "tool", "content": "a"}]}, "input[0].role"),
        ({"input": _FILE}, "input[0].content[0].type"),
        ({"input": _IMAGE_BY_ID}, "input[0].content[0].image_url"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 3}]}, "input[0].output"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].id"),
        ({"input": {"messages": [{"role": "user", "content": 3}]}}, "input.messages[0].content"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "metadata": {"k": 1}}, "metadata.k"),
        ({"input": "x", "store": "yes"}, "store"),
        ({"input": "x", "frobnicate": True}, "frobnicate"),
        ({"input": "x", "constraints": {"routing": {"strategy": "fastest"}}}, "gateway.constraints.routing.strategy"),
    ],
)
def test_every_malformed_request_is_a_400_naming_its_parameter(body: Any, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        parse_responses_request(body)
    assert info.value.code.name == "INVALID_ARGUMENT"
    assert info.value.metadata.get("param") == param, info.value.message


def _completion(finish: int = chat_pb2.FINISH_REASON_TOOL_CALLS) -> chat_pb2.ChatCompletion:
    completion = chat_pb2.ChatCompletion(id="resp_abc", model="mock:tools", created=1795645428, provider="mock")
    message = completion.choices.add(index=0, finish_reason=finish).message  # type: ignore[arg-type]
    message.role = chat_pb2.ROLE_ASSISTANT
    message.text = "Let me check."
    call = message.tool_calls.add(id="call_1", type="function")
    call.function.name = "get_weather"
    call.function.arguments = '{"city":"Paris"}'
    completion.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=11, completion_tokens=7, total_tokens=18))
    return completion


def test_the_response_object_validates_and_its_item_ids_are_stable() -> None:
    request = _parse({"model": "mock:tools", "input": "weather?", "instructions": "Be brief.", "metadata": {"a": "b"}})
    body = responses_render.response_object(request, "resp_abc", completion=_completion())
    assert errors("Response", body) == []
    message, call = body["output"]
    assert message["content"][0]["text"] == "Let me check." and body["output_text"] == "Let me check."
    assert (call["type"], call["call_id"], call["name"]) == ("function_call", "call_1", "get_weather")
    assert body["usage"]["input_tokens"] == 11 and body["usage"]["total_tokens"] == 18
    assert (body["status"], body["instructions"], body["metadata"]) == ("completed", "Be brief.", {"a": "b"})
    again = responses_render.response_object(request, "resp_abc", completion=_completion())
    assert [i["id"] for i in again["output"]] == [i["id"] for i in body["output"]]


def test_a_length_cut_answer_is_incomplete() -> None:
    body = responses_render.response_object(
        _parse({"input": "x"}), "resp_abc", completion=_completion(chat_pb2.FINISH_REASON_LENGTH)
    )
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert errors("Response", body) == []


def _chunk(**delta: Any) -> chat_pb2.ChatCompletionChunk:
    finish = delta.pop("finish", 0)
    chunk = chat_pb2.ChatCompletionChunk(id="resp_abc", model="mock:tools", provider="mock")
    chunk.choices.add(index=0, delta=chat_pb2.Delta(**delta), finish_reason=finish)
    return chunk


def test_the_event_sequence_for_text_and_a_tool_call_validates_and_is_numbered() -> None:
    renderer = responses_render.StreamRenderer(_parse({"model": "mock:tools", "input": "x"}))
    first = _chunk(role=chat_pb2.ROLE_ASSISTANT, content="Hel")
    events = renderer.start(first) + renderer.feed(first) + renderer.feed(_chunk(content="lo"))
    events += renderer.feed(_chunk(tool_calls=[chat_pb2.ToolCallDelta(index=0, id="call_1", name="f", arguments="{")]))
    events += renderer.feed(_chunk(tool_calls=[chat_pb2.ToolCallDelta(index=0, arguments="}")], finish=3))
    usage = chat_pb2.ChatCompletionChunk(id="resp_abc")
    usage.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5))
    events += renderer.feed(usage) + renderer.finish()
    assert [kind for kind, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event["sequence_number"] for _, event in events] == list(range(len(events)))
    for _, event in events:
        assert stream_event_errors(event) == [], event["type"]
    done = events[-1][1]["response"]
    assert done["output_text"] == "Hello" and done["output"][1]["arguments"] == "{}"
    assert done["usage"]["total_tokens"] == 5
    # The ids streamed are the ids the stored response renders with.
    stored = responses_render.response_object(_parse({"input": "x"}), "resp_abc", completion=_completion())
    assert [i["id"] for i in done["output"]] == [i["id"] for i in stored["output"]]


def test_a_failed_stream_ends_with_error_and_response_failed_never_completed() -> None:
    renderer = responses_render.StreamRenderer(_parse({"input": "x"}))
    first = _chunk(content="partial")
    events = renderer.start(first) + renderer.feed(first)
    events += renderer.fail("the upstream stream broke", "upstream_stream_broken", None)
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
    for _, event in events:
        assert stream_event_errors(event) == [], event["type"]
    assert events[-1][1]["response"]["status"] == "failed"


def test_input_items_page_with_stable_ids() -> None:
    request = _parse(
        {
            "input": [
                {"role": "user", "content": "a"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
            ]
        }
    )
    items = responses_render.input_items("resp_abc", list(request.messages))
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    newest = responses_render.item_list(items, limit=2, order="desc", after=None, before=None)
    assert errors("ResponseItemList", newest) == []
    assert [i["type"] for i in newest["data"]] == ["function_call_output", "function_call"] and newest["has_more"]
    rest = responses_render.item_list(items, limit=2, order="desc", after=newest["last_id"], before=None)
    assert [i["type"] for i in rest["data"]] == ["message"] and not rest["has_more"]
    assert responses_render.input_items("resp_abc", list(request.messages)) == items
