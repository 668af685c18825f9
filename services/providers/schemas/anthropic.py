"""Wire types of Anthropic's Messages API (``POST /v1/messages``), as far as the gateway uses them.

TypedDicts rather than models: request bodies are built as plain dicts and sent as JSON, and
responses are read defensively field by field (an upstream may add fields or omit optional ones), so
these types document and check the shapes without a validation pass on the hot path.
Source: Anthropic's hosted OpenAPI spec (``../shared/fixtures/specs/anthropic``) and the recordings.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# --- request -----------------------------------------------------------------------------------


class TextBlock(TypedDict):
    """A text content block; Anthropic rejects empty ones."""

    type: Literal["text"]
    text: str


class Base64Source(TypedDict):
    """Inline media: an image or a document given as base64 bytes."""

    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(TypedDict):
    """Media the upstream fetches itself."""

    type: Literal["url"]
    url: str


class ImageBlock(TypedDict):
    """An image content block."""

    type: Literal["image"]
    source: Base64Source | UrlSource


class DocumentBlock(TypedDict):
    """A document (PDF or plain text) content block."""

    type: Literal["document"]
    source: Base64Source | UrlSource


class ToolUseBlock(TypedDict):
    """A tool call of the assistant; ``input`` is the arguments object."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(TypedDict):
    """The result of a tool call, sent in a user turn."""

    type: Literal["tool_result"]
    tool_use_id: str
    content: NotRequired[str | list[TextBlock | ImageBlock]]


# Blocks the gateway builds, plus any block a client sent in Anthropic's own shape (forwarded as is).
ContentBlock = TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | dict[str, Any]


class MessageParam(TypedDict):
    """One turn; roles alternate and the conversation starts with a user turn."""

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolParam(TypedDict):
    """A client tool: ``input_schema`` is a JSON schema of type object."""

    name: str
    description: NotRequired[str]
    input_schema: dict[str, Any]


class ToolChoiceParam(TypedDict):
    """How the model uses tools: auto, any (at least one), tool (that one), none."""

    type: Literal["auto", "any", "tool", "none"]
    name: NotRequired[str]
    disable_parallel_tool_use: NotRequired[bool]


class MessagesRequest(TypedDict):
    """The request body; fields the gateway does not model are merged into the sent dict."""

    model: str
    messages: list[MessageParam]
    max_tokens: int
    system: NotRequired[str | list[TextBlock]]
    stop_sequences: NotRequired[list[str]]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    tools: NotRequired[list[ToolParam]]
    tool_choice: NotRequired[ToolChoiceParam]
    metadata: NotRequired[dict[str, Any]]
    stream: NotRequired[bool]


# --- response ----------------------------------------------------------------------------------

StopReason = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "model_context_window_exceeded"
]


class Usage(TypedDict):
    """Token counts. ``input_tokens`` excludes the cached prompt: the prompt is the sum of the three
    input counts. In a stream, ``message_delta`` repeats them cumulatively (newer API versions)."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: NotRequired[int | None]
    cache_read_input_tokens: NotRequired[int | None]
    service_tier: NotRequired[str | None]


class Message(TypedDict):
    """A completed message (the non-streaming answer, and ``message_start.message``)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: Usage


class ErrorBody(TypedDict):
    """``{"type": "error", "error": {"type", "message"}}``, as an error response and a stream event."""

    type: Literal["error"]
    error: dict[str, str]


# Stream events: message_start, content_block_start, content_block_delta (text_delta,
# input_json_delta, thinking_delta, signature_delta, citations_delta), content_block_stop,
# message_delta, message_stop, ping, error. New event types may appear and are ignored.
StreamEventType = Literal[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
]

# HTTP status Anthropic uses for each error type; an in-stream ``error`` event has no status of its
# own, so this is how it is mapped like the equivalent error response.
ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
