"""The unified chat messages <-> the canonical ones (services/router/unified.py)."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2
from gateway_common.errors import GatewayError
from services.router import unified


def _request(body: dict[str, object]) -> router_pb2.UnifiedChatRequest:
    return json_format.ParseDict(body, router_pb2.UnifiedChatRequest())


def test_plain_roles_content_and_the_sampling_fields_map_onto_the_canonical_request() -> None:
    canonical = unified.to_canonical(
        _request(
            {
                "model": "mock:any",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
                    {"role": "assistant", "content": None},
                ],
                "client_id": "billing-svc",
                "temperature": 0.5,
                "max_tokens": 7,
                "top_p": 0.9,
                "stop": ["\n"],
                "user": "u-1",
                "metadata": {"team": "a"},
            }
        )
    )
    system, user, assistant = canonical.messages
    assert (system.role, system.text) == (chat_pb2.ROLE_SYSTEM, "Be brief.")
    assert user.role == chat_pb2.ROLE_USER and [p.text for p in user.parts] == ["Hel", "lo"]
    assert assistant.role == chat_pb2.ROLE_ASSISTANT and not assistant.HasField("text")
    assert canonical.gateway.client_id == "billing-svc"
    assert (canonical.temperature, canonical.max_tokens, canonical.top_p) == (0.5, 7, pytest.approx(0.9))
    assert list(canonical.stop) == ["\n"] and canonical.user == "u-1"
    assert canonical.extra.fields["metadata"].struct_value.fields["team"].string_value == "a"
    assert not canonical.HasField("presence_penalty")


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "ROLE_USER", "content": "x"}, "messages[0].role"),
        ({"role": "user", "content": 3}, "messages[0].content"),
        ({"role": "user", "content": [{"type": "text", "text": 3}]}, "messages[0].content[0].text"),
        ({"role": "user", "content": ["x"]}, "messages[0].content[0]"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_field(message: dict[str, object], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        unified.to_canonical(_request({"messages": [message]}))
    assert info.value.code.name == "INVALID_ARGUMENT"
    assert param in info.value.message


def test_stream_true_on_chat_points_at_the_stream_route() -> None:
    with pytest.raises(GatewayError) as info:
        unified.refuse_stream_flag(_request({"stream": True}))
    assert "/v1/chat:stream" in info.value.message


def test_exactly_one_form_of_request() -> None:
    unified.one_form(True, False)
    unified.one_form(False, True)
    for both in (True, False):
        with pytest.raises(GatewayError):
            unified.one_form(both, both)


def test_the_completion_becomes_the_documented_answer() -> None:
    # The router's completion names the model as the request did (here an alias), and so does the answer.
    completion = chat_pb2.ChatCompletion(id="c1", created=1795645428, model="default-chat", provider="openai")
    completion.choices.add(
        message=chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, text="Hi!"), finish_reason=chat_pb2.FINISH_REASON_STOP
    )
    completion.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5))
    answer = json_format.MessageToDict(unified.from_completion(completion), preserving_proto_field_name=True)
    assert answer == {
        "id": "c1",
        "model": "default-chat",
        "provider": "openai",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "message": {"role": "assistant", "content": "Hi!"},
        "finish_reason": "stop",
        "created": 1795645428,
    }


def test_chunks_carry_the_delta_the_finish_reason_and_the_final_usage() -> None:
    chunk = chat_pb2.ChatCompletionChunk(id="c1", model="mock:any", provider="mock")
    chunk.choices.add(delta=chat_pb2.Delta(role=chat_pb2.ROLE_ASSISTANT, content="He"))
    first = unified.from_chunk(chunk)
    assert (first.delta.role, first.delta.content, first.HasField("finish_reason")) == ("assistant", "He", False)
    last = chat_pb2.ChatCompletionChunk(id="c1", model="mock:any", provider="mock")
    last.choices.add(delta=chat_pb2.Delta(), finish_reason=chat_pb2.FINISH_REASON_LENGTH)
    last.usage.CopyFrom(chat_pb2.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2))
    end = unified.from_chunk(last)
    assert end.finish_reason == "length" and end.usage.total_tokens == 2
