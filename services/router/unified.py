"""The unified chat API (``POST /v1/chat``) <-> the canonical chat messages.

The unified messages are designed to read like OpenAI's as JSON (plain roles, ``content`` as a
string or parts, numbers as numbers); this module only maps them onto the canonical request the
orchestrator runs, and the canonical answer back. It decides nothing else.
"""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2
from gateway_common.errors import invalid_argument

_ROLES = {
    "system": chat_pb2.ROLE_SYSTEM,
    "developer": chat_pb2.ROLE_DEVELOPER,
    "user": chat_pb2.ROLE_USER,
    "assistant": chat_pb2.ROLE_ASSISTANT,
    "tool": chat_pb2.ROLE_TOOL,
}

_FINISH_REASONS = {
    chat_pb2.FINISH_REASON_STOP: "stop",
    chat_pb2.FINISH_REASON_LENGTH: "length",
    chat_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    chat_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    chat_pb2.FINISH_REASON_FUNCTION_CALL: "function_call",
}


def _part(value: struct_pb2.Value, where: str) -> chat_pb2.ContentPart:
    if value.WhichOneof("kind") != "struct_value":
        raise invalid_argument(f"'{where}' must be an object with a 'type'.", where)
    fields = value.struct_value.fields
    kind = fields["type"].string_value if "type" in fields else ""
    if kind == "text":
        if "text" not in fields or fields["text"].WhichOneof("kind") != "string_value":
            raise invalid_argument(f"'{where}.text' must be a string.", f"{where}.text")
        return chat_pb2.ContentPart(text=fields["text"].string_value)
    if kind == "image_url":
        image = json_format.MessageToDict(fields["image_url"]) if "image_url" in fields else None
        if isinstance(image, str):
            image = {"url": image}
        if not isinstance(image, dict) or not isinstance(image.get("url"), str):
            raise invalid_argument(f"'{where}.image_url.url' must be a string.", f"{where}.image_url")
        return chat_pb2.ContentPart(image_url=chat_pb2.ImageUrl(url=image["url"], detail=str(image.get("detail", ""))))
    if not kind:
        raise invalid_argument(f"'{where}.type' is required.", f"{where}.type")
    # A part type the gateway does not model travels as sent, like on the OpenAI routes.
    return chat_pb2.ContentPart(other=value.struct_value)


def _message(message: router_pb2.UnifiedMessage, where: str) -> chat_pb2.Message:
    role = _ROLES.get(message.role)
    if role is None:
        raise invalid_argument(
            f"'{where}.role' must be one of {', '.join(_ROLES)}; got '{message.role}'.", f"{where}.role"
        )
    result = chat_pb2.Message(role=role, tool_call_id=message.tool_call_id)
    if message.HasField("name"):
        result.name = message.name
    kind = message.content.WhichOneof("kind") if message.HasField("content") else None
    if kind == "string_value":
        result.text = message.content.string_value
    elif kind == "list_value":
        for i, part in enumerate(message.content.list_value.values):
            result.parts.append(_part(part, f"{where}.content[{i}]"))
    elif kind not in (None, "null_value"):
        raise invalid_argument(f"'{where}.content' must be a string, a list of parts or null.", f"{where}.content")
    return result


def to_canonical(request: router_pb2.UnifiedChatRequest) -> chat_pb2.ChatCompletionRequest:
    """The canonical request for a unified one; INVALID_ARGUMENT naming the field when it is malformed."""
    canonical = chat_pb2.ChatCompletionRequest(model=request.model, user=request.user, stop=request.stop)
    canonical.messages.extend(_message(m, f"messages[{i}]") for i, m in enumerate(request.messages))
    for name in ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed"):
        if request.HasField(name):
            setattr(canonical, name, getattr(request, name))
    if request.client_id:
        canonical.gateway.client_id = request.client_id
    if request.HasField("max_cost_usd"):
        canonical.gateway.max_cost_usd = request.max_cost_usd
    if request.HasField("metadata"):
        canonical.extra.fields["metadata"].struct_value.CopyFrom(request.metadata)
    return canonical


def refuse_stream_flag(request: router_pb2.UnifiedChatRequest) -> None:
    """Chat answers in one piece: a request asking it to stream is told where streaming lives."""
    if request.stream:
        raise invalid_argument(
            "'stream': true is not served by POST /v1/chat; send the same body to POST /v1/chat:stream.", "stream"
        )


def _usage(usage: chat_pb2.Usage) -> router_pb2.UnifiedUsage:
    return router_pb2.UnifiedUsage(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def from_completion(completion: chat_pb2.ChatCompletion) -> router_pb2.UnifiedChatResponse:
    """The unified answer: the first choice's message, its finish reason and the usage."""
    response = router_pb2.UnifiedChatResponse(
        id=completion.id,
        # The router answers with the id the request named: it routed once, so it can be sent back.
        model=completion.model,
        provider=completion.provider,
        usage=_usage(completion.usage),
        created=max(0, min(completion.created, 2**32 - 1)),
        message=router_pb2.UnifiedMessage(role="assistant"),
    )
    if not completion.choices:
        response.message.content.null_value = struct_pb2.NULL_VALUE
        return response
    choice = completion.choices[0]
    message = choice.message
    if message.HasField("text"):
        response.message.content.string_value = message.text
    elif message.parts:
        response.message.content.string_value = "".join(p.text for p in message.parts if p.HasField("text"))
    else:
        response.message.content.null_value = struct_pb2.NULL_VALUE
    response.finish_reason = _FINISH_REASONS.get(choice.finish_reason, "")
    return response


def from_chunk(chunk: chat_pb2.ChatCompletionChunk) -> router_pb2.UnifiedChatChunk:
    """The unified chunk: the first choice's delta, its finish reason, and the usage when present."""
    result = router_pb2.UnifiedChatChunk(id=chunk.id, model=chunk.model, provider=chunk.provider)
    result.delta.SetInParent()
    for choice in chunk.choices:
        if choice.index != 0:
            continue
        if choice.delta.role:
            result.delta.role = "assistant"
        if choice.delta.HasField("content"):
            result.delta.content = choice.delta.content
        if choice.finish_reason:
            result.finish_reason = _FINISH_REASONS.get(choice.finish_reason, "stop")
    if chunk.HasField("usage"):
        result.usage.CopyFrom(_usage(chunk.usage))
    return result


def one_form(completion: bool, unified: bool) -> None:
    """Exactly one of the canonical and the unified request must be given."""
    if completion == unified:
        raise invalid_argument("Send exactly one of 'completion' (canonical) and 'unified'.", "completion")
