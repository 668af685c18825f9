"""The OpenAI wire format <-> the canonical protobuf messages, in both directions.

The edge parses client requests with it and writes responses and stream chunks; the OpenAI-style
provider adapters write upstream requests with it and parse upstream responses. Keeping both
directions in one module is what makes a round trip lossless: every field the gateway does not
model travels in an ``extra`` Struct and comes back out where it went in.

Parsing is hand-written rather than a pydantic model because errors must name the exact OpenAI
parameter path (``messages[2].content[0].image_url``) and the result goes straight into protobuf.
"""

from __future__ import annotations

from gateway_common.openai_wire.bounds import MAX_DEPTH, loads_bounded
from gateway_common.openai_wire.embeddings import (
    embedding_inputs,
    embedding_request_to_openai,
    embedding_response_from_openai,
    embedding_response_to_openai,
    model_to_openai,
    parse_embedding_request,
)
from gateway_common.openai_wire.requests import (
    allowed_tool_name,
    chat_request_to_openai,
    message_to_openai,
    parse_chat_request,
    part_to_openai,
    tool_call_to_openai,
    tool_choice_to_openai,
    tool_to_openai,
)
from gateway_common.openai_wire.responses import (
    chunk_from_openai,
    chunk_to_openai,
    completion_from_openai,
    completion_to_openai,
    usage_from_openai,
    usage_to_openai,
)
from gateway_common.openai_wire.values import (
    FINISH_REASON_NAMES,
    FINISH_REASONS,
    ROLE_NAMES,
    ROLES,
    TOOL_CHOICE_MODE_NAMES,
    TOOL_CHOICE_MODES,
    Json,
    from_struct,
    keep_extra,
    read_array,
    read_bool,
    read_int,
    read_name,
    read_number,
    read_object,
    read_str,
    to_struct,
    upstream_shape_error,
)

__all__ = [
    "FINISH_REASONS",
    "FINISH_REASON_NAMES",
    "MAX_DEPTH",
    "ROLES",
    "ROLE_NAMES",
    "TOOL_CHOICE_MODES",
    "TOOL_CHOICE_MODE_NAMES",
    "Json",
    "allowed_tool_name",
    "chat_request_to_openai",
    "chunk_from_openai",
    "chunk_to_openai",
    "completion_from_openai",
    "completion_to_openai",
    "embedding_inputs",
    "embedding_request_to_openai",
    "embedding_response_from_openai",
    "embedding_response_to_openai",
    "from_struct",
    "keep_extra",
    "loads_bounded",
    "message_to_openai",
    "model_to_openai",
    "parse_chat_request",
    "parse_embedding_request",
    "part_to_openai",
    "read_array",
    "read_bool",
    "read_int",
    "read_name",
    "read_number",
    "read_object",
    "read_str",
    "to_struct",
    "tool_call_to_openai",
    "tool_choice_to_openai",
    "tool_to_openai",
    "upstream_shape_error",
    "usage_from_openai",
    "usage_to_openai",
]
