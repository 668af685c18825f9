"""Reading the recorded upstream traffic in ``../shared/fixtures/upstream`` for translator tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.chat.v1 import chat_pb2

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "upstream"


def load_json(provider: str, name: str) -> Any:
    """The parsed JSON of a recorded file."""
    return json.loads((UPSTREAM / provider / name).read_text(encoding="utf-8"))


def sse_events(provider: str, name: str) -> list[tuple[str, str]]:
    """``(event, data)`` of every event of a recorded SSE body, parsed as the SSE spec says (CRLF or
    LF lines, ``data:`` lines joined), plus a final event not followed by a blank line, which the
    service's reader dispatches too."""
    text = (UPSTREAM / provider / name).read_text(encoding="utf-8")
    events: list[tuple[str, str]] = []
    event = ""
    data: list[str] = []
    for line in [*text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), ""]:
        if not line:
            if data:
                events.append((event, "\n".join(data)))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name_, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name_ == "event":
            event = value
        elif name_ == "data":
            data.append(value)
    return events


def reassemble(chunks: Iterable[chat_pb2.ChatCompletionChunk]) -> dict[str, Any]:
    """What a client rebuilds from chunks: per choice the text, tool calls (arguments joined by
    index) and finish reason, plus the last usage seen."""
    choices: dict[int, dict[str, Any]] = {}
    usage: chat_pb2.Usage | None = None
    for chunk in chunks:
        for choice in chunk.choices:
            state = choices.setdefault(choice.index, {"text": "", "calls": {}, "finish": 0, "role": 0})
            if choice.delta.role:
                state["role"] = choice.delta.role
            state["text"] += choice.delta.content
            for fragment in choice.delta.tool_calls:
                call = state["calls"].setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
                if fragment.HasField("id"):
                    call["id"] = fragment.id
                if fragment.HasField("name"):
                    call["name"] = fragment.name
                call["arguments"] += fragment.arguments
            if choice.finish_reason:
                state["finish"] = choice.finish_reason
        if chunk.HasField("usage"):
            usage = chunk.usage
    return {"choices": choices, "usage": usage}
