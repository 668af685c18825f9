"""The canonical answer -> the Responses API's shapes: the ``response`` object, its input items, and
the typed stream events (a stateful renderer per stream, numbering every event).

Item ids are derived from the response id and the item's position, so that the ids a client saw
when the response was created are the ids ``GET /v1/responses/{id}`` and ``input_items`` show.
Used by the edge and by async jobs (a job's result in the shape the synchronous call returns).
"""

from __future__ import annotations

import re
import time
from typing import Any

from gateway.chat.v1 import chat_pb2
from gateway_common.openai_wire.values import Json, from_struct

_INCOMPLETE = {
    chat_pb2.FINISH_REASON_LENGTH: "max_output_tokens",
    chat_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}
_ROLE_NAMES = {
    chat_pb2.ROLE_USER: "user",
    chat_pb2.ROLE_SYSTEM: "system",
    chat_pb2.ROLE_DEVELOPER: "developer",
    chat_pb2.ROLE_ASSISTANT: "assistant",
}


def _suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")


def output_item_id(response_id: str, kind: str, index: int) -> str:
    """The id of output item ``index`` (``msg``/``fc``) of a response: stable across create and GET."""
    return f"{kind}_{_suffix(response_id)}_{index}"


def _input_item_id(response_id: str, kind: str, index: int) -> str:
    return f"{kind}_{_suffix(response_id)}_in{index}"


def _text_of(message: chat_pb2.Message) -> str:
    if message.HasField("text"):
        return message.text
    return "".join(part.text for part in message.parts if part.WhichOneof("part") == "text")


def _output_text_part(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str) -> Json:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [_output_text_part(text)],
    }


def _function_call_item(item_id: str, call: chat_pb2.ToolCall, status: str) -> Json:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call.id,
        "name": call.function.name,
        "arguments": call.function.arguments,
        "status": status,
    }


def split_items(messages: list[chat_pb2.Message]) -> list[tuple[str, chat_pb2.Message]]:
    """Canonical messages as Responses API items, each one canonical message, with its id prefix:
    an assistant message's text is a ``msg`` item, each of its tool calls an ``fc`` item; a tool
    message is an ``fco`` (function call output). Item ids count positions in this list, which is
    how the router finds the item an ``item_reference`` names."""
    items: list[tuple[str, chat_pb2.Message]] = []
    for message in messages:
        if message.role == chat_pb2.ROLE_TOOL:
            items.append(("fco", message))
        elif message.role == chat_pb2.ROLE_ASSISTANT:
            text = _text_of(message)
            if text or not message.tool_calls:
                items.append(("msg", chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, text=text)))
            for call in message.tool_calls:
                items.append(("fc", chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, tool_calls=[call])))
        else:
            items.append(("msg", message))
    return items


_ITEM_ID = re.compile(r"^(msg|fc|fco)_([0-9a-f]{1,64})_(in)?([0-9]{1,6})$")


def parse_item_id(item_id: str) -> tuple[str, bool, int] | None:
    """The response id, whether it is an input item, and the position an item id names; None when
    it is not an id this gateway gave."""
    match = _ITEM_ID.match(item_id)
    if match is None:
        return None
    return f"resp_{match.group(2)}", match.group(3) is not None, int(match.group(4))


def output_items(response_id: str, message: chat_pb2.Message, status: str = "completed") -> list[Json]:
    """The output items of an assistant message: its text as a message item, then one item per tool call."""
    items: list[Json] = []
    for index, (kind, item) in enumerate(split_items([message])):
        item_id = output_item_id(response_id, kind, index)
        if kind == "fc":
            items.append(_function_call_item(item_id, item.tool_calls[0], status))
        else:
            items.append(_message_item(item_id, _text_of(item), status))
    return items


def usage_to_responses(usage: chat_pb2.Usage) -> Json:
    """Canonical usage in the Responses API's names."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.prompt_tokens_details.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.completion_tokens_details.reasoning_tokens},
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }


def _tool_to_responses(tool: chat_pb2.Tool) -> Json:
    return {
        "type": "function",
        "name": tool.function.name,
        "description": tool.function.description if tool.function.HasField("description") else None,
        "parameters": from_struct(tool.function.parameters) if tool.function.HasField("parameters") else None,
        "strict": tool.function.strict if tool.function.HasField("strict") else None,
    }


def _tool_choice(choice: chat_pb2.ToolChoice) -> Any:
    which = choice.WhichOneof("choice")
    if which == "function_name":
        return {"type": "function", "name": choice.function_name}
    if which == "mode":
        return {chat_pb2.TOOL_CHOICE_MODE_NONE: "none", chat_pb2.TOOL_CHOICE_MODE_REQUIRED: "required"}.get(
            choice.mode, "auto"
        )
    return "auto"


def _text_format(request: chat_pb2.ChatCompletionRequest) -> Json:
    fmt = request.response_format
    if fmt.type == "json_schema":
        return {"format": {"type": "json_schema", **from_struct(fmt.json_schema)}}
    if fmt.type == "json_object":
        return {"format": {"type": "json_object"}}
    return {"format": {"type": "text"}}


def response_status(completion: chat_pb2.ChatCompletion) -> tuple[str, Json | None]:
    """``completed``, or ``incomplete`` with its details for an answer cut by length or a filter."""
    reason = completion.choices[0].finish_reason if completion.choices else chat_pb2.FINISH_REASON_UNSPECIFIED
    if reason in _INCOMPLETE:
        return "incomplete", {"reason": _INCOMPLETE[reason]}
    return "completed", None


def response_object(
    request: chat_pb2.ChatCompletionRequest,
    response_id: str,
    *,
    completion: chat_pb2.ChatCompletion | None = None,
    status: str | None = None,
    output: list[Json] | None = None,
    error: Json | None = None,
    created_at: int | None = None,
) -> Json:
    """The ``response`` object for ``request``; without a completion, an in-progress (or failed) one."""
    conversation = request.conversation
    incomplete: Json | None = None
    if completion is not None:
        status_, incomplete = response_status(completion)
        status = status or status_
        if output is None:
            message = completion.choices[0].message if completion.choices else chat_pb2.Message()
            output = output_items(response_id, message, "incomplete" if status == "incomplete" else "completed")
    created = created_at or conversation.created_at or (completion.created if completion else 0) or int(time.time())
    body: Json = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status or "in_progress",
        "error": error,
        "incomplete_details": incomplete,
        "instructions": conversation.instructions if conversation.HasField("instructions") else None,
        "max_output_tokens": request.max_completion_tokens if request.HasField("max_completion_tokens") else None,
        "model": (completion.model if completion is not None and completion.model else request.model),
        "output": output or [],
        "parallel_tool_calls": request.parallel_tool_calls if request.HasField("parallel_tool_calls") else True,
        "previous_response_id": conversation.previous_response_id or None,
        "store": conversation.store,
        "temperature": request.temperature if request.HasField("temperature") else 1.0,
        "top_p": request.top_p if request.HasField("top_p") else 1.0,
        "text": _text_format(request),
        "tool_choice": _tool_choice(request.tool_choice),
        "tools": [_tool_to_responses(tool) for tool in request.tools],
        "truncation": "disabled",
        "metadata": dict(from_struct(conversation.metadata)),
    }
    if request.user:
        body["user"] = request.user
    if completion is not None:
        body["usage"] = usage_to_responses(completion.usage)
        body["output_text"] = "".join(
            part["text"] for item in body["output"] if item["type"] == "message" for part in item["content"]
        )
        if status == "completed":
            body["completed_at"] = created
        if completion.provider:
            # A gateway extension, as on chat completions (clients read x-gateway-provider too).
            body["provider"] = completion.provider
    return body


def input_items(response_id: str, messages: list[chat_pb2.Message]) -> list[Json]:
    """A stored response's input messages as Responses API items, oldest first, with stable ids."""
    items: list[Json] = []
    for index, (kind, message) in enumerate(split_items(messages)):
        item_id = _input_item_id(response_id, kind, index)
        if kind == "fco":
            items.append(
                {
                    "id": item_id,
                    "type": "function_call_output",
                    "call_id": message.tool_call_id,
                    "output": _text_of(message),
                    "status": "completed",
                }
            )
        elif kind == "fc":
            items.append(_function_call_item(item_id, message.tool_calls[0], "completed"))
        elif message.role == chat_pb2.ROLE_ASSISTANT:
            items.append(_message_item(item_id, _text_of(message), "completed"))
        else:
            content: list[Json] = []
            if message.HasField("text"):
                content.append({"type": "input_text", "text": message.text})
            for part in message.parts:
                if part.WhichOneof("part") == "image_url":
                    image = part.image_url
                    content.append({"type": "input_image", "image_url": image.url, "detail": image.detail or "auto"})
                elif part.WhichOneof("part") == "text":
                    content.append({"type": "input_text", "text": part.text})
            role = _ROLE_NAMES.get(message.role, "user")
            items.append({"id": item_id, "type": "message", "role": role, "status": "completed", "content": content})
    return items


def item_list(items: list[Json], *, limit: int, order: str, after: str | None, before: str | None) -> Json:
    """One page of ``items`` in the ``ResponseItemList`` shape (``order`` "asc" or "desc")."""
    ordered = items if order == "asc" else list(reversed(items))
    ids = [item["id"] for item in ordered]
    start = ids.index(after) + 1 if after in ids else 0
    end = ids.index(before) if before in ids else len(ordered)
    window = ordered[start:end]
    page = window[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(window) > limit,
    }


class StreamRenderer:
    """Turns the canonical chunks of one stream into the Responses API's typed events.

    Every event carries the next ``sequence_number``. The stream ends with ``response.completed``
    (or ``response.incomplete``) only through :meth:`finish`; :meth:`fail` ends it with ``error``
    and ``response.failed``, so a broken stream never looks complete.
    """

    def __init__(self, request: chat_pb2.ChatCompletionRequest, response_id: str = "") -> None:
        self._request = request
        self._id = response_id
        self._created = int(time.time())
        self._sequence = 0
        self._model = request.model
        self._provider = ""
        self._text: str | None = None
        self._text_index = -1
        # Tool calls by the stream's tool call index: [output index, id, name, arguments].
        self._calls: dict[int, list[Any]] = {}
        self._output: list[Json | None] = []
        self._usage = chat_pb2.Usage()
        self._finish = chat_pb2.FINISH_REASON_UNSPECIFIED
        self._started = False

    @property
    def response_id(self) -> str:
        """The response's id (the router's, from the first chunk)."""
        return self._id

    def _event(self, kind: str, **fields: Any) -> tuple[str, Json]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return kind, event

    def _snapshot(self, status: str, **extra: Any) -> Json:
        output = [item for item in self._output if item is not None]
        body = response_object(self._request, self._id, status=status, output=output, created_at=self._created)
        body["model"] = self._model
        body.update(extra)
        return body

    def start(self, chunk: chat_pb2.ChatCompletionChunk | None) -> list[tuple[str, Json]]:
        """``response.created`` and ``response.in_progress`` (the first chunk names the id and model)."""
        if chunk is not None:
            self._id = chunk.id or self._id
            self._model = chunk.model or self._model
            self._provider = chunk.provider
        self._started = True
        return [
            self._event("response.created", response=self._snapshot("in_progress")),
            self._event("response.in_progress", response=self._snapshot("in_progress")),
        ]

    def feed(self, chunk: chat_pb2.ChatCompletionChunk) -> list[tuple[str, Json]]:
        """The events one canonical chunk adds."""
        events: list[tuple[str, Json]] = []
        if chunk.HasField("usage"):
            self._usage.CopyFrom(chunk.usage)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.HasField("content") and delta.content:
                events += self._text_delta(delta.content)
            for call in delta.tool_calls:
                events += self._call_delta(call)
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return events

    def _text_delta(self, text: str) -> list[tuple[str, Json]]:
        events: list[tuple[str, Json]] = []
        if self._text is None:
            self._text = ""
            self._text_index = len(self._output)
            item = _message_item(output_item_id(self._id, "msg", self._text_index), "", "in_progress")
            item["content"] = []
            self._output.append(None)
            events.append(self._event("response.output_item.added", output_index=self._text_index, item=item))
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._text_index,
                    content_index=0,
                    part=_output_text_part(""),
                )
            )
        self._text += text
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=output_item_id(self._id, "msg", self._text_index),
                output_index=self._text_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _call_delta(self, delta: chat_pb2.ToolCallDelta) -> list[tuple[str, Json]]:
        events: list[tuple[str, Json]] = []
        state = self._calls.get(delta.index)
        if state is None:
            events += self._close_text()
            index = len(self._output)
            state = [index, delta.id if delta.HasField("id") else "", delta.name if delta.HasField("name") else "", ""]
            self._calls[delta.index] = state
            self._output.append(None)
            call = chat_pb2.ToolCall(id=state[1], type="function")
            call.function.name = state[2]
            item = _function_call_item(output_item_id(self._id, "fc", index), call, "in_progress")
            events.append(self._event("response.output_item.added", output_index=index, item=item))
        if delta.HasField("arguments") and delta.arguments:
            state[3] += delta.arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=output_item_id(self._id, "fc", state[0]),
                    output_index=state[0],
                    delta=delta.arguments,
                )
            )
        return events

    def _close_text(self) -> list[tuple[str, Json]]:
        if self._text is None or self._output[self._text_index] is not None:
            return []
        item_id = output_item_id(self._id, "msg", self._text_index)
        status = "incomplete" if self._finish in _INCOMPLETE else "completed"
        item = _message_item(item_id, self._text, status)
        self._output[self._text_index] = item
        where = {"item_id": item_id, "output_index": self._text_index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=self._text, logprobs=[]),
            self._event("response.content_part.done", **where, part=_output_text_part(self._text)),
            self._event("response.output_item.done", output_index=self._text_index, item=item),
        ]

    def _close_calls(self) -> list[tuple[str, Json]]:
        events: list[tuple[str, Json]] = []
        for index, call_id, name, arguments in self._calls.values():
            if self._output[index] is not None:
                continue
            call = chat_pb2.ToolCall(id=call_id, type="function")
            call.function.name = name
            call.function.arguments = arguments
            item = _function_call_item(output_item_id(self._id, "fc", index), call, "completed")
            self._output[index] = item
            item_id = item["id"]
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item_id,
                    output_index=index,
                    name=name,
                    arguments=arguments,
                )
            )
            events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def finish(self) -> list[tuple[str, Json]]:
        """Closes every open item, then ``response.completed`` (or ``response.incomplete``)."""
        events = self._close_text() + self._close_calls()
        extra: Json = {"usage": usage_to_responses(self._usage)}
        if self._provider:
            extra["provider"] = self._provider
        output = [item for item in self._output if item is not None]
        extra["output_text"] = "".join(
            part["text"] for item in output if item["type"] == "message" for part in item["content"]
        )
        if self._finish in _INCOMPLETE:
            response = self._snapshot("incomplete", incomplete_details={"reason": _INCOMPLETE[self._finish]}, **extra)
            return [*events, self._event("response.incomplete", response=response)]
        response = self._snapshot("completed", completed_at=int(time.time()), **extra)
        return [*events, self._event("response.completed", response=response)]

    def fail(self, message: str, code: str | None, param: str | None) -> list[tuple[str, Json]]:
        """Ends a broken stream: ``error`` then ``response.failed`` (never ``response.completed``)."""
        events: list[tuple[str, Json]] = []
        if not self._started:
            events += self.start(None)
        error = {"code": "rate_limit_exceeded" if code == "rate_limit_exceeded" else "server_error", "message": message}
        events.append(self._event("error", code=code, message=message, param=param))
        events.append(self._event("response.failed", response=self._snapshot("failed", error=error)))
        return events
