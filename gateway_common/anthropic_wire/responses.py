"""The canonical answer -> Anthropic Messages JSON: the ``message`` object and its event stream.

The stream renderer is stateful because Anthropic's events are block-structured where canonical
chunks are flat deltas: text and each tool call become content blocks, opened
(``content_block_start``) when their first fragment arrives and closed (``content_block_stop``)
when the next block begins or the answer ends. The byte layout is Anthropic's own
(``event: <type>\\ndata: <json>\\n\\n``, as in the recorded upstream streams).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.chat.v1 import chat_pb2

Json = dict[str, Any]

STOP_REASONS: dict[int, str] = {
    chat_pb2.FINISH_REASON_STOP: "end_turn",
    chat_pb2.FINISH_REASON_LENGTH: "max_tokens",
    chat_pb2.FINISH_REASON_TOOL_CALLS: "tool_use",
    chat_pb2.FINISH_REASON_FUNCTION_CALL: "tool_use",
}
"""Canonical finish reason -> Anthropic stop_reason; anything else (a content filter) ends the turn.

The canonical answer does not say which stop sequence matched, so ``stop_sequence`` stays null and
a stop at one reads ``end_turn``."""


def message_id(completion_id: str) -> str:
    """An Anthropic-style id (``msg_…``) for the canonical completion id."""
    return completion_id if completion_id.startswith("msg_") else f"msg_{completion_id}"


def stop_reason(finish_reason: int) -> str:
    """Anthropic's stop_reason for a canonical finish reason."""
    return STOP_REASONS.get(finish_reason, "end_turn")


def _tool_input(arguments: str) -> Json:
    # Anthropic's `input` is an object; a model that produced invalid or non-object JSON gets its
    # text kept whole under one key rather than dropped.
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def _text(message: chat_pb2.Message) -> str:
    if message.HasField("text"):
        return message.text
    return "".join(part.text for part in message.parts if part.WhichOneof("part") == "text")


def usage_json(usage: chat_pb2.Usage) -> Json:
    """Anthropic's usage object; cached prompt tokens, when reported, as ``cache_read_input_tokens``."""
    cached = usage.prompt_tokens_details.cached_tokens if usage.HasField("prompt_tokens_details") else 0
    out: Json = {"input_tokens": max(0, usage.prompt_tokens - cached), "output_tokens": usage.completion_tokens}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def message_to_anthropic(completion: chat_pb2.ChatCompletion, model: str = "") -> Json:
    """The Anthropic ``message`` object for a canonical completion (its first choice)."""
    content: list[Json] = []
    finish = chat_pb2.FINISH_REASON_STOP
    if completion.choices:
        choice = completion.choices[0]
        finish = choice.finish_reason
        text = _text(choice.message)
        if text or not choice.message.tool_calls:
            content.append({"type": "text", "text": text})
        for call in choice.message.tool_calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.function.name,
                    "input": _tool_input(call.function.arguments),
                }
            )
    return {
        "id": message_id(completion.id),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": completion.model or model,
        "stop_reason": stop_reason(finish),
        "stop_sequence": None,
        "usage": usage_json(completion.usage),
    }


def sse_event(data: Json) -> bytes:
    """One server-sent event in Anthropic's layout: the event name is the payload's ``type``."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {data['type']}\ndata: {payload}\n\n".encode()


class MessageStream:
    """Turns canonical chunks into Anthropic stream events, one chunk at a time.

    ``start`` opens the message; ``chunk`` renders each canonical chunk; ``finish`` closes the open
    block and ends the message (``message_delta`` + ``message_stop``); ``error`` ends a broken
    stream with an ``error`` event and never a ``message_stop``, so no client takes it as complete.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self._block = -1  # index of the open content block; -1 before the first
        self._open: str | None = None  # "text", or "tool:<canonical index>"
        self._tool_blocks: dict[int, int] = {}
        self._finish = chat_pb2.FINISH_REASON_UNSPECIFIED
        self._usage = chat_pb2.Usage()
        self._pinged = False

    def start(self, first: chat_pb2.ChatCompletionChunk) -> list[Json]:
        """``message_start`` for the stream whose first chunk is ``first``."""
        message: Json = {
            "id": message_id(first.id),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": first.model or self._model,
            "stop_reason": None,
            "stop_sequence": None,
            # The input count arrives with the last chunk; message_delta carries both counts.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [{"type": "message_start", "message": message}]

    def chunk(self, chunk: chat_pb2.ChatCompletionChunk) -> list[Json]:
        """The events one canonical chunk adds (possibly none)."""
        events: list[Json] = []
        if chunk.HasField("usage"):
            self._usage.CopyFrom(chunk.usage)
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # Anthropic has one answer per message; the router asks for one.
            delta = choice.delta
            if delta.content:
                if self._open != "text":
                    events += self._open_block({"type": "text", "text": ""}, "text")
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": self._block,
                        "delta": {"type": "text_delta", "text": delta.content},
                    }
                )
            for call in delta.tool_calls:
                key = f"tool:{call.index}"
                if call.index not in self._tool_blocks:
                    block = {"type": "tool_use", "id": call.id or f"toolu_{call.index}", "name": call.name, "input": {}}
                    events += self._open_block(block, key)
                    self._tool_blocks[call.index] = self._block
                elif self._open != key:
                    # Fragments of an earlier call after another block began: Anthropic cannot
                    # reopen a block, and the canonical providers never interleave, so they are
                    # dropped rather than attached to the wrong block.
                    continue
                if call.arguments:
                    events.append(
                        {
                            "type": "content_block_delta",
                            "index": self._block,
                            "delta": {"type": "input_json_delta", "partial_json": call.arguments},
                        }
                    )
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return events

    def finish(self) -> list[Json]:
        """Close the open block and end the message with its stop reason and usage."""
        events = self._close_block()
        usage = usage_json(self._usage)
        events.append(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason(self._finish or chat_pb2.FINISH_REASON_STOP),
                    "stop_sequence": None,
                },
                "usage": usage,
            }
        )
        events.append({"type": "message_stop"})
        return events

    @staticmethod
    def error(body: Json) -> list[Json]:
        """The in-band ``error`` event ending a stream that failed after it started."""
        return [body]

    def _open_block(self, block: Json, key: str) -> list[Json]:
        events = self._close_block()
        self._block += 1
        self._open = key
        events.append({"type": "content_block_start", "index": self._block, "content_block": block})
        if not self._pinged:
            # Where Anthropic sends its first ping: after the first block opens.
            self._pinged = True
            events.append({"type": "ping"})
        return events

    def _close_block(self) -> list[Json]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._block}]
