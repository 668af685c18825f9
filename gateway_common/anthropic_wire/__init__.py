"""The Anthropic Messages wire format <-> the canonical protobuf messages, for the edge's ``/v1/messages``.

Requests are parsed into the one canonical ``ChatCompletionRequest`` (so every ingress travels the
same router pipeline); answers are rendered from the canonical completion and chunks.
"""

from __future__ import annotations

from gateway_common.anthropic_wire.requests import (
    TOOL_ERROR_PREFIX,
    parse_count_tokens_request,
    parse_messages_request,
)
from gateway_common.anthropic_wire.responses import (
    STOP_REASONS,
    MessageStream,
    message_id,
    message_to_anthropic,
    sse_event,
    stop_reason,
    usage_json,
)

__all__ = [
    "STOP_REASONS",
    "TOOL_ERROR_PREFIX",
    "MessageStream",
    "message_id",
    "message_to_anthropic",
    "parse_count_tokens_request",
    "parse_messages_request",
    "sse_event",
    "stop_reason",
    "usage_json",
]
