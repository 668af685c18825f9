"""Token estimates, for reservations before a call and for upstreams that report no usage.

No tokenizer is loaded: vocabularies differ per provider and downloading one at run time is not
an option. About four characters per token is the usual rule for English text; the reservation is
corrected by the actual usage at settlement, so the estimate only has to be in the right range.
"""

from __future__ import annotations

import math

from google.protobuf import json_format

from gateway.chat.v1 import chat_pb2

_CHARS_PER_TOKEN = 4
_PER_MESSAGE_OVERHEAD = 4  # role and separators, as OpenAI counts them
_PER_IMAGE = 765  # OpenAI's cost of a high-detail 512px tile set; a safe middle estimate


def estimate_text_tokens(text: str) -> int:
    """Tokens in ``text``: about four characters each, at least one for non-empty text."""
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def estimate_prompt_tokens(request: chat_pb2.ChatCompletionRequest) -> int:
    """Tokens the prompt of ``request`` will use: messages, parts, tool calls and tool definitions."""
    total = 3  # every reply is primed with the assistant role
    for message in request.messages:
        total += _PER_MESSAGE_OVERHEAD
        if message.HasField("text"):
            total += estimate_text_tokens(message.text)
        for part in message.parts:
            kind = part.WhichOneof("part")
            if kind == "text":
                total += estimate_text_tokens(part.text)
            elif kind == "image_url":
                total += _PER_IMAGE
            elif kind == "input_audio":
                total += estimate_text_tokens(part.input_audio.data) // 8
        if message.HasField("name"):
            total += estimate_text_tokens(message.name)
        for call in message.tool_calls:
            total += estimate_text_tokens(call.function.name) + estimate_text_tokens(call.function.arguments)
    for tool in request.tools:
        total += estimate_text_tokens(json_format.MessageToJson(tool, indent=None))
    return total


def estimate_embedding_tokens(request: chat_pb2.EmbeddingRequest) -> int:
    """Tokens the inputs of an embeddings request will use."""
    return sum(estimate_text_tokens(text) for text in request.input)
