"""Token ceilings: counts that never fall below what an upstream will bill, for reservations.

No tokenizer is loaded: vocabularies differ per provider and none can be downloaded at run time.
Instead of an estimate that is right on average (and so wrong half the time, by a factor of several
for code, non-Latin scripts or a provider with a smaller vocabulary), this module computes a bound
that holds for every tokenizer the gateway talks to: byte-level BPE (OpenAI, Llama, Anthropic) and
SentencePiece with byte fallback (Gemini) emit at most one token per UTF-8 byte of text, so
``utf-8 bytes + fixed per-message overhead`` is a ceiling. Reservations use it; settlement replaces
it with the upstream's own count, so the only cost of a generous ceiling is a reservation held
for the length of one request.

The fixed overheads are each provider's documented worst case, rounded up:
- per message: OpenAI counts 3-4 tokens of role and separators, Anthropic and Gemini fewer;
- per request with tools: Anthropic prepends a hidden tool-use system prompt of up to 346 tokens,
  OpenAI a few tokens of namespace framing;
- per image: OpenAI's high-detail 2048x768 image costs 1,105 tokens, Anthropic caps an image at
  about 1,600 (1.15 megapixels / 750), Gemini 258 per 768px tile; the ceiling below covers them.
"""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from gateway.chat.v1 import chat_pb2

PER_MESSAGE_OVERHEAD = 8
"""Role markers and separators around each message, above every provider's count."""

REPLY_PRIMING = 8
"""Tokens every reply is primed with (the assistant role header)."""

TOOLS_OVERHEAD = 512
"""Framing a provider adds once when tools are declared (Anthropic's tool-use prompt: 346)."""

PER_TOOL_OVERHEAD = 16
"""Framing around each declared tool or tool call."""

PER_IMAGE_CEILING = 4096
"""The most one image can cost (OpenAI high detail 1,105; Anthropic about 1,600; Gemini 258 a tile)."""


def text_ceiling(text: str) -> int:
    """At most this many tokens in ``text``: one per UTF-8 byte (a surrogate counts as 3 bytes)."""
    return len(text.encode("utf-8", "surrogatepass"))


def _struct_ceiling(struct: struct_pb2.Struct) -> int:
    return text_ceiling(json_format.MessageToJson(struct, indent=None)) if struct.fields else 0


def _message_ceiling(message: chat_pb2.Message) -> int:
    total = PER_MESSAGE_OVERHEAD
    if message.HasField("text"):
        total += text_ceiling(message.text)
    for part in message.parts:
        kind = part.WhichOneof("part")
        if kind == "text":
            total += text_ceiling(part.text)
        elif kind == "image_url":
            total += PER_IMAGE_CEILING
        elif kind == "input_audio":
            # Audio is billed by duration; base64 text is far longer than any audio token count.
            total += text_ceiling(part.input_audio.data)
    if message.HasField("name"):
        total += text_ceiling(message.name)
    if message.HasField("refusal"):
        total += text_ceiling(message.refusal)
    total += text_ceiling(message.tool_call_id)
    for call in message.tool_calls:
        total += PER_TOOL_OVERHEAD + text_ceiling(call.function.name) + text_ceiling(call.function.arguments)
        total += text_ceiling(call.custom.name) + text_ceiling(call.custom.input)
    return total + _struct_ceiling(message.extra)


def prompt_token_ceiling(request: chat_pb2.ChatCompletionRequest) -> int:
    """Tokens the prompt of ``request`` can use at most: messages, parts, tool calls, tool
    definitions, a JSON schema the answer must follow, and pass-through fields."""
    total = REPLY_PRIMING + sum(_message_ceiling(message) for message in request.messages)
    if request.tools:
        total += TOOLS_OVERHEAD
        for tool in request.tools:
            total += PER_TOOL_OVERHEAD + text_ceiling(json_format.MessageToJson(tool, indent=None))
    if request.HasField("response_format"):
        total += text_ceiling(json_format.MessageToJson(request.response_format, indent=None))
    return total + _struct_ceiling(request.extra)


def embedding_token_ceiling(request: chat_pb2.EmbeddingRequest) -> int:
    """Tokens the inputs of an embeddings request can use at most; token-array inputs count exactly."""
    texts = sum(text_ceiling(text) + 1 for text in request.input)
    return texts + sum(len(item.tokens) for item in request.token_inputs)


def completion_token_ceiling(chunk: chat_pb2.ChatCompletionChunk) -> int:
    """At most this many completion tokens in a streamed chunk: its text, refusal and tool calls.

    A chunk may carry no text and still stand for a token (a role marker, a reasoning step the
    upstream does not show), so every choice counts at least one.
    """
    total = 0
    for choice in chunk.choices:
        delta = choice.delta
        counted = text_ceiling(delta.content) + text_ceiling(delta.refusal)
        for call in delta.tool_calls:
            counted += text_ceiling(call.name) + text_ceiling(call.arguments)
        total += max(1, counted)
    return total


# The names other modules used before these were ceilings; kept so callers read naturally.
estimate_text_tokens = text_ceiling
estimate_prompt_tokens = prompt_token_ceiling
estimate_embedding_tokens = embedding_token_ceiling
