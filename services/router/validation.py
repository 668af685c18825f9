"""Checks a canonical request before anything is reserved or called.

The edge already rejects malformed JSON; internal callers reach the router directly with
protobuf, so the router checks what protobuf cannot express.
"""

from __future__ import annotations

import re
from typing import Literal

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import invalid_argument

# C0 controls and DEL never belong in a model name, and the model name travels to the usage
# ledger, where PostgreSQL refuses NUL in text: one such event would sink a whole metering batch.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_name(value: str, field: str) -> None:
    found = _CONTROL.search(value)
    if found:
        raise invalid_argument(
            f"Invalid value for '{field}': it contains the control character U+{ord(found.group()):04X}.", field
        )


_Sampling = Literal["temperature", "top_p", "presence_penalty", "frequency_penalty"]

_SAMPLING_RANGES: tuple[tuple[_Sampling, float, float], ...] = (
    ("temperature", 0.0, 2.0),
    ("top_p", 0.0, 1.0),
    ("presence_penalty", -2.0, 2.0),
    ("frequency_penalty", -2.0, 2.0),
)
"""OpenAI's documented ranges; every ingress's own parser is at least this strict, gRPC callers are not."""


def validate_chat(request: chat_pb2.ChatCompletionRequest) -> None:
    """INVALID_ARGUMENT naming the field for a request no provider could serve."""
    _check_name(request.model, "model")
    if not request.messages:
        raise invalid_argument("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages")
    for i, message in enumerate(request.messages):
        path = f"messages[{i}]"
        if message.role == chat_pb2.ROLE_UNSPECIFIED:
            raise invalid_argument(f"Missing required parameter: '{path}.role'.", f"{path}.role")
        has_content = message.HasField("text") or bool(message.parts)
        if message.role == chat_pb2.ROLE_TOOL and not message.tool_call_id:
            raise invalid_argument(f"Missing required parameter: '{path}.tool_call_id'.", f"{path}.tool_call_id")
        # An assistant message may hold only tool calls; a function result may be null (the spec allows it).
        if message.role not in (chat_pb2.ROLE_ASSISTANT, chat_pb2.ROLE_FUNCTION) and not has_content:
            raise invalid_argument(f"Missing required parameter: '{path}.content'.", f"{path}.content")
        # The deprecated function_call (kept in extra) is what a legacy assistant turn carries instead.
        if message.role == chat_pb2.ROLE_ASSISTANT and not (
            has_content or message.tool_calls or message.HasField("refusal") or "function_call" in message.extra.fields
        ):
            raise invalid_argument(f"'{path}' must have content or tool_calls (assistant messages).", f"{path}.content")
    for field, low, high in _SAMPLING_RANGES:
        # NaN fails both comparisons, so it is refused by testing for the range, not against it.
        if request.HasField(field) and not low <= getattr(request, field) <= high:
            raise invalid_argument(f"Invalid value for '{field}': must be between {low:g} and {high:g}.", field)
    if request.HasField("n") and request.n < 1:
        raise invalid_argument("Invalid value for 'n': must be at least 1.", "n")
    for name in ("max_tokens", "max_completion_tokens"):
        if request.HasField(name) and getattr(request, name) < 1:
            raise invalid_argument(f"Invalid value for '{name}': must be at least 1.", name)
    if request.HasField("gateway") and request.gateway.HasField("max_cost_usd") and request.gateway.max_cost_usd < 0:
        raise invalid_argument(
            "Invalid value for 'gateway.max_cost_usd': must not be negative.", "gateway.max_cost_usd"
        )


def validate_embedding(request: chat_pb2.EmbeddingRequest) -> None:
    """INVALID_ARGUMENT for an embeddings request without input or with a malformed model name."""
    _check_name(request.model, "model")
    if not request.input and not request.token_inputs:
        raise invalid_argument("Missing required parameter: 'input'.", "input")
    if request.input and request.token_inputs:
        raise invalid_argument("Invalid 'input': give either texts or token arrays, not both.", "input")
