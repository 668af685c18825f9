"""The router's canonical answers (proto JSON) -> the JSON the edge answers over HTTP.

Over gRPC the SDK gets what the edge gets from the router — the canonical completion, chunks, a
stored response's request and answer, a job — and renders them as the edge does
(``gateway_common/openai_wire/responses_render.py``, ``responses.py`` and ``jobs.py`` in the
gateway), so that both transports decode into the same :mod:`llm_gateway.types` values: the
``response`` object with its item ids derived from the response id, the Responses API's typed
stream events, the ``chat.completion`` object, and the job object.

Input is proto JSON as ``json_format.MessageToDict(..., preserving_proto_field_name=True,
always_print_fields_with_no_presence=True)`` writes it: a field with presence (``optional``
scalars, messages, oneof members) is a key exactly when it is set, enums are names, 64-bit
integers are strings, and a Struct's numbers are floats.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from llm_gateway.errors import APIError

Json = dict[str, Any]

_INCOMPLETE = {"FINISH_REASON_LENGTH": "max_output_tokens", "FINISH_REASON_CONTENT_FILTER": "content_filter"}
_ROLE_NAMES = {
    "ROLE_SYSTEM": "system",
    "ROLE_DEVELOPER": "developer",
    "ROLE_USER": "user",
    "ROLE_ASSISTANT": "assistant",
    "ROLE_TOOL": "tool",
    "ROLE_FUNCTION": "function",
}
_FINISH_REASON_NAMES = {
    "FINISH_REASON_STOP": "stop",
    "FINISH_REASON_LENGTH": "length",
    "FINISH_REASON_TOOL_CALLS": "tool_calls",
    "FINISH_REASON_CONTENT_FILTER": "content_filter",
    "FINISH_REASON_FUNCTION_CALL": "function_call",
}


def _int(value: Any) -> int:
    return int(value or 0)


def plain(value: Any) -> Any:
    """A Struct's value with integral numbers as ints (a Struct stores every number as a double)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# The Responses API's response object
# ---------------------------------------------------------------------------------------------


def _suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")


def _output_item_id(response_id: str, kind: str, index: int) -> str:
    return f"{kind}_{_suffix(response_id)}_{index}"


def _text_of(message: Json) -> str:
    if "text" in message:
        return str(message["text"])
    return "".join(str(part["text"]) for part in message.get("parts") or () if "text" in part)


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


def _function_call_item(item_id: str, call: Json, status: str) -> Json:
    function = call.get("function") or {}
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call.get("id", ""),
        "name": function.get("name", ""),
        "arguments": function.get("arguments", ""),
        "status": status,
    }


def _output_items(response_id: str, message: Json, status: str) -> list[Json]:
    """An assistant message's text as a message item, then one item per tool call (the edge's order)."""
    items: list[Json] = []
    text = _text_of(message)
    calls = message.get("tool_calls") or []
    if text or not calls:
        items.append(_message_item(_output_item_id(response_id, "msg", 0), text, status))
    for call in calls:
        items.append(_function_call_item(_output_item_id(response_id, "fc", len(items)), call, status))
    return items


def usage_to_responses(usage: Json) -> Json:
    """Canonical usage in the Responses API's names."""
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _int((usage.get("prompt_tokens_details") or {}).get("cached_tokens")),
            "cache_write_tokens": 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))
        },
        "total_tokens": _int(usage.get("total_tokens")) or prompt + completion,
    }


def _tool_to_responses(tool: Json) -> Json:
    function = tool.get("function") or {}
    return {
        "type": "function",
        "name": function.get("name", ""),
        "description": function.get("description"),
        "parameters": plain(function["parameters"]) if "parameters" in function else None,
        "strict": function.get("strict"),
    }


def _tool_choice(choice: Json) -> Any:
    if "function_name" in choice:
        return {"type": "function", "name": choice["function_name"]}
    if "mode" in choice:
        return {"TOOL_CHOICE_MODE_NONE": "none", "TOOL_CHOICE_MODE_REQUIRED": "required"}.get(choice["mode"], "auto")
    return "auto"


def _text_format(request: Json) -> Json:
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return {"format": {"type": "json_schema", **plain(fmt.get("json_schema") or {})}}
    if fmt.get("type") == "json_object":
        return {"format": {"type": "json_object"}}
    return {"format": {"type": "text"}}


def _finish_reason(completion: Json) -> str:
    choices = completion.get("choices") or []
    return str(choices[0].get("finish_reason", "")) if choices else ""


def response_object(
    request: Json,
    response_id: str,
    *,
    completion: Json | None = None,
    status: str | None = None,
    output: list[Json] | None = None,
    error: Json | None = None,
    created_at: int | None = None,
) -> Json:
    """The ``response`` object for ``request``; without a completion, an in-progress (or failed) one."""
    conversation = request.get("conversation") or {}
    incomplete: Json | None = None
    if completion is not None:
        reason = _finish_reason(completion)
        status_ = "incomplete" if reason in _INCOMPLETE else "completed"
        incomplete = {"reason": _INCOMPLETE[reason]} if reason in _INCOMPLETE else None
        status = status or status_
        if output is None:
            choices = completion.get("choices") or []
            message = (choices[0].get("message") or {}) if choices else {}
            output = _output_items(response_id, message, "incomplete" if status == "incomplete" else "completed")
    created = (
        created_at
        or _int(conversation.get("created_at"))
        or (_int(completion.get("created")) if completion else 0)
        or int(time.time())
    )
    body: Json = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status or "in_progress",
        "error": error,
        "incomplete_details": incomplete,
        "instructions": conversation.get("instructions"),
        "max_output_tokens": request.get("max_completion_tokens"),
        "model": (completion.get("model") if completion and completion.get("model") else request.get("model", "")),
        "output": output or [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": conversation.get("previous_response_id") or None,
        "store": bool(conversation.get("store", False)),
        "temperature": request.get("temperature", 1.0),
        "top_p": request.get("top_p", 1.0),
        "text": _text_format(request),
        "tool_choice": _tool_choice(request.get("tool_choice") or {}),
        "tools": [_tool_to_responses(tool) for tool in request.get("tools") or ()],
        "truncation": "disabled",
        "metadata": plain(conversation.get("metadata") or {}),
    }
    if request.get("user"):
        body["user"] = request["user"]
    if completion is not None:
        body["usage"] = usage_to_responses(completion.get("usage") or {})
        body["output_text"] = "".join(
            part["text"] for item in body["output"] if item["type"] == "message" for part in item["content"]
        )
        if status == "completed":
            body["completed_at"] = created
        if completion.get("provider"):
            body["provider"] = completion["provider"]
    return body


class ResponseEvents:
    """Turns the canonical chunks of one stream into the Responses API's typed events, numbered by
    ``sequence_number``, as the edge's stream renderer does: ``start`` (``response.created``,
    ``response.in_progress``), ``feed`` per chunk, then ``finish`` (``response.completed`` or
    ``response.incomplete``) or, for a stream broken after it started, ``fail`` (``error`` and
    ``response.failed``, never ``response.completed``)."""

    def __init__(self, request: Json) -> None:
        self._request = request
        self._id = ""
        self._created = int(time.time())
        self._sequence = 0
        self._model = str(request.get("model", ""))
        self._provider = ""
        self._text: str | None = None
        self._text_index = -1
        # Tool calls by the stream's tool call index: [output index, id, name, arguments].
        self._calls: dict[int, list[Any]] = {}
        self._output: list[Json | None] = []
        self._usage: Json = {}
        self._finish = ""
        self._started = False

    def _event(self, kind: str, **fields: Any) -> Json:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _snapshot(self, status: str, **extra: Any) -> Json:
        output = [item for item in self._output if item is not None]
        body = response_object(self._request, self._id, status=status, output=output, created_at=self._created)
        body["model"] = self._model
        body.update(extra)
        return body

    def start(self, chunk: Json | None) -> list[Json]:
        """``response.created`` and ``response.in_progress`` (the first chunk names the id and model)."""
        if chunk is not None:
            self._id = chunk.get("id") or self._id
            self._model = chunk.get("model") or self._model
            self._provider = chunk.get("provider", "")
        self._started = True
        return [
            self._event("response.created", response=self._snapshot("in_progress")),
            self._event("response.in_progress", response=self._snapshot("in_progress")),
        ]

    def feed(self, chunk: Json) -> list[Json]:
        """The events one canonical chunk adds."""
        events: list[Json] = []
        if "usage" in chunk:
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if _int(choice.get("index")) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or ():
                events += self._call_delta(call)
            reason = choice.get("finish_reason", "FINISH_REASON_UNSPECIFIED")
            if reason != "FINISH_REASON_UNSPECIFIED":
                self._finish = reason
        return events

    def _text_delta(self, text: str) -> list[Json]:
        events: list[Json] = []
        if self._text is None:
            self._text = ""
            self._text_index = len(self._output)
            item = _message_item(_output_item_id(self._id, "msg", self._text_index), "", "in_progress")
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
                item_id=_output_item_id(self._id, "msg", self._text_index),
                output_index=self._text_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _call_delta(self, delta: Json) -> list[Json]:
        events: list[Json] = []
        state = self._calls.get(_int(delta.get("index")))
        if state is None:
            events += self._close_text()
            index = len(self._output)
            state = [index, delta.get("id", ""), delta.get("name", ""), ""]
            self._calls[_int(delta.get("index"))] = state
            self._output.append(None)
            call = {"id": state[1], "function": {"name": state[2], "arguments": ""}}
            item = _function_call_item(_output_item_id(self._id, "fc", index), call, "in_progress")
            events.append(self._event("response.output_item.added", output_index=index, item=item))
        if delta.get("arguments"):
            state[3] += delta["arguments"]
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=_output_item_id(self._id, "fc", state[0]),
                    output_index=state[0],
                    delta=delta["arguments"],
                )
            )
        return events

    def _close_text(self) -> list[Json]:
        if self._text is None or self._output[self._text_index] is not None:
            return []
        item_id = _output_item_id(self._id, "msg", self._text_index)
        status = "incomplete" if self._finish in _INCOMPLETE else "completed"
        item = _message_item(item_id, self._text, status)
        self._output[self._text_index] = item
        where = {"item_id": item_id, "output_index": self._text_index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=self._text, logprobs=[]),
            self._event("response.content_part.done", **where, part=_output_text_part(self._text)),
            self._event("response.output_item.done", output_index=self._text_index, item=item),
        ]

    def _close_calls(self) -> list[Json]:
        events: list[Json] = []
        for index, call_id, name, arguments in self._calls.values():
            if self._output[index] is not None:
                continue
            call = {"id": call_id, "function": {"name": name, "arguments": arguments}}
            item = _function_call_item(_output_item_id(self._id, "fc", index), call, "completed")
            self._output[index] = item
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=name,
                    arguments=arguments,
                )
            )
            events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def finish(self) -> list[Json]:
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

    def fail(self, error: APIError) -> list[Json]:
        """Ends a broken stream: ``error`` then ``response.failed``, with the code the edge would give."""
        events: list[Json] = []
        if not self._started:
            events += self.start(None)
        code = error.code
        failure = {"code": "rate_limit_exceeded" if code == "rate_limit_exceeded" else "server_error"}
        failure["message"] = error.message
        events.append(self._event("error", code=code, message=error.message, param=error.param))
        events.append(self._event("response.failed", response=self._snapshot("failed", error=failure)))
        return events


# ---------------------------------------------------------------------------------------------
# Chat Completions' chat.completion object (a succeeded chat completions job's result)
# ---------------------------------------------------------------------------------------------


def _tool_call_to_openai(call: Json) -> Json:
    if call.get("type") == "custom":
        custom = call.get("custom") or {}
        return {
            "id": call.get("id", ""),
            "type": "custom",
            "custom": {"name": custom.get("name", ""), "input": custom.get("input", "")},
        }
    function = call.get("function") or {}
    return {
        "id": call.get("id", ""),
        "type": call.get("type") or "function",
        "function": {"name": function.get("name", ""), "arguments": function.get("arguments", "")},
    }


def _usage_to_openai(usage: Json) -> Json:
    out: Json = {
        "prompt_tokens": _int(usage.get("prompt_tokens")),
        "completion_tokens": _int(usage.get("completion_tokens")),
        "total_tokens": _int(usage.get("total_tokens")),
    }
    for name in ("prompt_tokens_details", "completion_tokens_details"):
        if name in usage:
            out[name] = {k: _int(v) for k, v in usage[name].items()}
    return out


def completion_to_openai(completion: Json) -> Json:
    """A canonical completion as OpenAI's ``chat.completion`` object."""
    choices = []
    for choice in completion.get("choices") or ():
        message = choice.get("message") or {}
        out_message: Json = {"role": "assistant", "content": message.get("text"), "refusal": message.get("refusal")}
        if message.get("tool_calls"):
            out_message["tool_calls"] = [_tool_call_to_openai(c) for c in message["tool_calls"]]
        if "extra" in message:
            out_message.update(plain(message["extra"]))
        out_choice: Json = {
            "index": _int(choice.get("index")),
            "message": out_message,
            "logprobs": plain(choice["logprobs"]) if "logprobs" in choice else None,
            "finish_reason": _FINISH_REASON_NAMES.get(choice.get("finish_reason", ""), "stop"),
        }
        for key, value in plain(choice.get("extra") or {}).items():
            out_choice.setdefault(key, value)
        choices.append(out_choice)
    out: Json = {
        "id": completion.get("id", ""),
        "object": "chat.completion",
        "created": _int(completion.get("created")),
        "model": completion.get("model", ""),
        "choices": choices,
        "usage": _usage_to_openai(completion.get("usage") or {}),
    }
    if completion.get("service_tier"):
        out["service_tier"] = completion["service_tier"]
    if completion.get("system_fingerprint"):
        out["system_fingerprint"] = completion["system_fingerprint"]
    for key, value in plain(completion.get("extra") or {}).items():
        out.setdefault(key, value)
    return out


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------

_JOB_STATUS = {
    "JOB_STATUS_QUEUED": "queued",
    "JOB_STATUS_RUNNING": "running",
    "JOB_STATUS_SUCCEEDED": "succeeded",
    "JOB_STATUS_FAILED": "failed",
    "JOB_STATUS_CANCELLED": "cancelled",
}
_JOB_FORMAT = {"INGRESS_FORMAT_CHAT_COMPLETIONS": "chat.completions", "INGRESS_FORMAT_RESPONSES": "responses"}

# The edge's error wording (edge/errors.py): each reason's OpenAI error type and code; a reason
# without a row is worded by its HTTP status alone, and a reason the gateway does not know is INTERNAL.
_TYPE_AND_CODE: dict[str, tuple[str, str | None]] = {
    "INVALID_REQUEST": ("invalid_request_error", None),
    "MODEL_NOT_FOUND": ("invalid_request_error", "model_not_found"),
    "MISSING_API_KEY": ("invalid_request_error", "missing_api_key"),
    "INVALID_API_KEY": ("invalid_request_error", "invalid_api_key"),
    "PERMISSION_DENIED": ("permission_error", "insufficient_permissions"),
    "MODEL_NOT_ALLOWED": ("permission_error", "model_not_allowed"),
    "RATE_LIMITED": ("rate_limit_exceeded", "rate_limit_exceeded"),
    "BUDGET_EXCEEDED": ("insufficient_quota", "insufficient_quota"),
    "COST_LIMIT_EXCEEDED": ("invalid_request_error", "cost_limit_exceeded"),
    "POLICY_VIOLATION": ("invalid_request_error", "policy_violation"),
    "UNSUPPORTED_FIELD": ("invalid_request_error", "unsupported_parameter"),
    "CONTENT_FILTERED": ("invalid_request_error", "content_filter"),
    "CONTEXT_LENGTH_EXCEEDED": ("invalid_request_error", "context_length_exceeded"),
    "PROVIDER_NOT_CONFIGURED": ("server_error", "provider_not_configured"),
    "DEPENDENCY_UNAVAILABLE": ("server_error", "service_unavailable"),
    "UPSTREAM_TIMEOUT": ("server_error", "timeout"),
    "UPSTREAM_STREAM_BROKEN": ("server_error", "upstream_stream_broken"),
    "ALL_CANDIDATES_FAILED": ("server_error", "all_candidates_failed"),
    "INTERNAL": ("server_error", "internal_error"),
}
_KNOWN_REASONS = frozenset({*_TYPE_AND_CODE, "UPSTREAM_ERROR", "MISSING_SERVICE_IDENTITY", "CALLER_NOT_ALLOWED"})
_UPSTREAM_REASONS = frozenset({"UPSTREAM_ERROR", "UPSTREAM_STREAM_BROKEN", "ALL_CANDIDATES_FAILED", "UPSTREAM_TIMEOUT"})
_UPSTREAM_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}
# google.rpc.Code (as a job's error stores its status) -> the edge's HTTP status; others are 500.
_HTTP_STATUS = {
    3: 400,
    9: 400,
    11: 400,
    12: 400,
    16: 401,
    7: 403,
    5: 404,
    6: 409,
    10: 409,
    8: 429,
    1: 499,
    14: 503,
    4: 504,
}
_UNAVAILABLE = 14


def _job_error(error: Json) -> Json:
    """A failed job's stored error as the edge's OpenAI error object."""
    grpc_code = _int(error.get("grpc_code"))
    reason = str(error.get("reason", ""))
    if reason not in _KNOWN_REASONS:
        reason = "INTERNAL"
    status = 502 if grpc_code == _UNAVAILABLE and reason in _UPSTREAM_REASONS else _HTTP_STATUS.get(grpc_code, 500)
    kind, code = _TYPE_AND_CODE.get(reason, ("server_error" if status >= 500 else "invalid_request_error", None))
    if reason == "UPSTREAM_ERROR":
        # A stored job error keeps no upstream code; the type follows the status, as the edge's.
        code = None
        kind = _UPSTREAM_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"message": error.get("message", ""), "type": kind, "param": error.get("param") or None, "code": code}


def _seconds(timestamp: Any) -> int:
    return int(datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp())


def job_to_json(job: Json) -> Json:
    """The job as ``GET /v1/jobs/{id}`` shows it; a succeeded job's result in its format's shape."""
    request = job.get("request") or {}
    fmt = job.get("format", "")
    body: Json = {
        "id": job.get("id", ""),
        "object": "job",
        "status": _JOB_STATUS.get(job.get("status", ""), "queued"),
        "format": _JOB_FORMAT.get(fmt, "chat.completions"),
        "model": request.get("model", ""),
        "created_at": _seconds(job["create_time"]) if "create_time" in job else 0,
        "started_at": _seconds(job["start_time"]) if "start_time" in job else None,
        "finished_at": _seconds(job["finish_time"]) if "finish_time" in job else None,
        "attempts": _int(job.get("attempts")),
        "max_attempts": _int(job.get("max_attempts")),
        "error": _job_error(job["error"]) if "error" in job else None,
        "result": None,
    }
    if body["status"] == "succeeded" and "result" in job:
        result = job["result"]
        if fmt == "INGRESS_FORMAT_RESPONSES":
            # The router set the completion's id to the response id, and its created time to the turn's.
            body["result"] = response_object(request, result.get("id", ""), completion=result)
        else:
            body["result"] = completion_to_openai(result)
    url = (job.get("webhook") or {}).get("url")
    if url:
        body["webhook"] = {"url": url}
    return body
