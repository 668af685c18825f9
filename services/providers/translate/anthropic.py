"""Canonical chat <-> Anthropic Messages API, both directions, streaming included. No I/O.

Request translation (canonical -> ``POST /v1/messages``):

- system and developer messages, wherever they appear, become the top-level ``system`` (in order);
  user and tool messages become user turns (tool results as ``tool_result`` blocks, first in their
  turn), assistant messages assistant turns (tool calls as ``tool_use`` blocks, arguments parsed into
  ``input``); consecutive turns of one role are merged, as Anthropic requires alternation.
- ``max_tokens`` is required upstream: ``max_completion_tokens``, else ``max_tokens``, else the
  provider's configured ``default_max_tokens``.
- images: data URLs -> base64 source, http(s) URLs -> url source; ``file`` parts with a data URL ->
  ``document`` blocks; content parts in Anthropic's own shape are forwarded as sent.

Field support (what happens to each OpenAI field Anthropic has no direct equivalent for):

====================================  ==========================================================
field                                 decision
====================================  ==========================================================
stop                                  -> ``stop_sequences``
temperature, top_p                    forwarded; temperature above 1 is refused (Anthropic's range
                                      is 0-1 and rescaling would change the sampling asked for)
tools / tool_choice                   -> ``{name, description, input_schema}`` / auto, any
                                      (required), tool (a function), none
parallel_tool_calls=false             -> ``tool_choice.disable_parallel_tool_use``
user (or safety_identifier)           -> ``metadata.user_id``
n > 1                                 refused: one answer would come back where n were asked for
response_format json_object /         refused: Anthropic has no JSON mode, so valid JSON would
json_schema                           not be guaranteed
presence_penalty, frequency_penalty   refused when non-zero (no equivalent); zero is ignored
logprobs, top_logprobs, logit_bias    refused when set: Anthropic returns no log probabilities and
                                      takes no logit bias
audio, modalities (beyond text),      refused when set: audio output, web search and the legacy
web_search_options, functions,        functions API have no equivalent here
function_call
input_audio content parts             refused: Anthropic takes no audio input
file parts with a file_id             refused: an OpenAI file id means nothing upstream
seed                                  ignored: OpenAI itself only promises best effort
function.strict                       ignored: Claude follows tool schemas without the
                                      constrained-decoding guarantee
image_url.detail, message name and    ignored: Anthropic turns hold only role and content, and
other per-message fields              the content is sent unchanged
reasoning_effort, verbosity           ignored: hints about length and effort only
store, prediction, prompt_cache_key,  ignored: OpenAI-side features with no effect on the answer
prompt_cache_retention
anything else in ``extra``            forwarded unchanged (top_k, thinking, metadata,
                                      service_tier, container, mcp_servers, …); Anthropic
                                      rejects what it does not know, with its own message
====================================  ==========================================================

Response translation: text blocks -> message text, ``tool_use`` -> tool calls (arguments are the
compact JSON of ``input``), ``thinking`` -> ``reasoning_content`` (a message extra, as DeepSeek and
vLLM send it); stop_reason end_turn/stop_sequence/pause_turn -> stop, max_tokens and
model_context_window_exceeded -> length, tool_use -> tool_calls, refusal -> content_filter; usage:
prompt = input + cache creation + cache read tokens (cache reads also as ``cached_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import invalid_argument
from gateway_common.openai_wire import from_struct
from services.providers.http import upstream_error
from services.providers.schemas import anthropic as wire
from services.providers.translate.common import (
    ExtraPolicy,
    Json,
    arguments_object,
    broken_stream,
    dump_json,
    function_tools,
    int_of,
    loads_object,
    malformed_response,
    obj,
    parse_data_url,
    refuse_custom_tool_calls,
    text_content,
    unsupported,
)

UPSTREAM = "Anthropic Messages"

STOP_REASONS: dict[str, int] = {
    "end_turn": chat_pb2.FINISH_REASON_STOP,
    "stop_sequence": chat_pb2.FINISH_REASON_STOP,
    "pause_turn": chat_pb2.FINISH_REASON_STOP,
    "max_tokens": chat_pb2.FINISH_REASON_LENGTH,
    "model_context_window_exceeded": chat_pb2.FINISH_REASON_LENGTH,
    "tool_use": chat_pb2.FINISH_REASON_TOOL_CALLS,
    "refusal": chat_pb2.FINISH_REASON_CONTENT_FILTER,
}

EXTRA_POLICY = ExtraPolicy(
    upstream=UPSTREAM,
    ignore=frozenset(
        {
            "store",
            "prediction",
            "prompt_cache_key",
            "prompt_cache_retention",
            "safety_identifier",
            "reasoning_effort",
            "verbosity",
        }
    ),
    refuse={
        "logprobs": "Anthropic returns no log probabilities",
        "top_logprobs": "Anthropic returns no log probabilities",
        "logit_bias": "Anthropic takes no logit bias",
        "audio": "Anthropic produces no audio",
        "modalities": "Anthropic produces text only",
        "web_search_options": "use Anthropic's web search tool instead",
        "functions": "the legacy functions API is not translated; use tools",
        "function_call": "the legacy functions API is not translated; use tool_choice",
    },
)

Role = Literal["user", "assistant"]


# ---------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------


def chat_request_to_anthropic(
    request: chat_pb2.ChatCompletionRequest, model: str, *, stream: bool, default_max_tokens: int
) -> Json:
    """The ``/v1/messages`` body for ``request`` on ``model``.

    Raises INVALID_ARGUMENT (UNSUPPORTED_FIELD) for fields Anthropic cannot honour, naming the field.
    """
    _refuse_unsupported(request)
    system, messages = _conversation(request)
    if request.HasField("max_completion_tokens"):
        max_tokens = request.max_completion_tokens
    elif request.HasField("max_tokens"):
        max_tokens = request.max_tokens
    else:
        max_tokens = default_max_tokens
    body: wire.MessagesRequest = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if system:
        body["system"] = system[0]["text"] if len(system) == 1 else system
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.HasField("temperature"):
        body["temperature"] = request.temperature
    if request.HasField("top_p"):
        body["top_p"] = request.top_p
    tools = function_tools(request, UPSTREAM)
    if tools:
        body["tools"] = [_tool(tool) for tool in tools]
        choice = _tool_choice(request)
        if choice is not None:
            body["tool_choice"] = choice
    if stream:
        body["stream"] = True
    out: Json = dict(body)
    extra = from_struct(request.extra) if request.HasField("extra") else {}
    user_id = request.user or extra.get("safety_identifier")
    for key, value in EXTRA_POLICY.apply(extra).items():
        out.setdefault(key, value)
    if user_id:
        metadata = out.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        metadata.setdefault("user_id", user_id)
        out["metadata"] = metadata
    return out


def _refuse_unsupported(request: chat_pb2.ChatCompletionRequest) -> None:
    if request.HasField("n") and request.n > 1:
        raise unsupported(UPSTREAM, "n", "Anthropic returns one choice per request")
    if request.HasField("temperature") and request.temperature > 1:
        raise unsupported(UPSTREAM, "temperature", f"Anthropic accepts 0 to 1, got {request.temperature:g}")
    for name in ("presence_penalty", "frequency_penalty"):
        if request.HasField(name) and getattr(request, name) != 0:
            raise unsupported(UPSTREAM, name, "Anthropic has no sampling penalties")
    kind = request.response_format.type if request.HasField("response_format") else ""
    if kind in ("json_object", "json_schema"):
        raise unsupported(UPSTREAM, "response_format", "Anthropic has no JSON mode, so valid JSON is not guaranteed")


def _conversation(request: chat_pb2.ChatCompletionRequest) -> tuple[list[wire.TextBlock], list[wire.MessageParam]]:
    system: list[wire.TextBlock] = []
    turns: list[tuple[Role, list[wire.ContentBlock]]] = []
    for i, message in enumerate(request.messages):
        path = f"messages[{i}]"
        role = message.role
        if role in (chat_pb2.ROLE_SYSTEM, chat_pb2.ROLE_DEVELOPER):
            text = text_content(message, path, UPSTREAM)
            if text:
                system.append({"type": "text", "text": text})
            continue
        if role == chat_pb2.ROLE_USER:
            _append(turns, "user", _user_blocks(message, path))
        elif role == chat_pb2.ROLE_ASSISTANT:
            _append(turns, "assistant", _assistant_blocks(message, path))
        elif role == chat_pb2.ROLE_TOOL:
            _append(turns, "user", [_tool_result(message, path)])
        elif role == chat_pb2.ROLE_FUNCTION:
            # A tool_result must name the tool_use it answers; a legacy function result names none.
            raise unsupported(UPSTREAM, f"{path}.role", "a 'function' result names no tool call to answer; use 'tool'")
        else:
            raise invalid_argument(f"Missing required parameter: '{path}.role'.", f"{path}.role")
    return system, [_finish_turn(role, blocks) for role, blocks in turns]


def _append(turns: list[tuple[Role, list[wire.ContentBlock]]], role: Role, blocks: list[wire.ContentBlock]) -> None:
    if not blocks:
        # An empty message carries nothing; keeping it would only break Anthropic's alternation rule.
        return
    if turns and turns[-1][0] == role:
        turns[-1][1].extend(blocks)
    else:
        turns.append((role, blocks))


def _finish_turn(role: Role, blocks: list[wire.ContentBlock]) -> wire.MessageParam:
    if role == "user":
        # Anthropic wants the tool results answering the previous turn before anything else in a turn.
        blocks.sort(key=lambda block: block.get("type") != "tool_result")
    only: dict[str, Any] = dict(blocks[0]) if len(blocks) == 1 else {}
    if only.keys() == {"type", "text"} and only["type"] == "text":
        return {"role": role, "content": str(only["text"])}
    return {"role": role, "content": blocks}


def _user_blocks(message: chat_pb2.Message, path: str) -> list[wire.ContentBlock]:
    if message.HasField("text"):
        return [{"type": "text", "text": message.text}] if message.text else []
    blocks: list[wire.ContentBlock] = []
    for j, part in enumerate(message.parts):
        block = _part(part, f"{path}.content[{j}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _part(part: chat_pb2.ContentPart, path: str) -> wire.ContentBlock | None:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text} if part.text else None
    if kind == "image_url":
        return _image(part.image_url.url, f"{path}.image_url.url")
    if kind == "input_audio":
        raise unsupported(UPSTREAM, path, "Anthropic takes no audio input")
    other = from_struct(part.other)
    if other.get("type") == "file":
        return _document(other, path)
    # A block in Anthropic's own shape (document, search_result, a block with cache_control, …).
    return other


def _image(url: str, path: str) -> wire.ImageBlock:
    data_url = parse_data_url(url)
    if data_url is not None:
        mime, data = data_url
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid_argument(f"Invalid '{path}': expected an http(s) URL or a base64 data URL.", path)


def _document(part: Json, path: str) -> wire.DocumentBlock:
    data_url = parse_data_url(str(obj(part.get("file")).get("file_data") or ""))
    if data_url is None:
        raise unsupported(UPSTREAM, f"{path}.file", "only files given inline as a base64 data URL are supported")
    mime, data = data_url
    return {"type": "document", "source": {"type": "base64", "media_type": mime, "data": data}}


def _assistant_blocks(message: chat_pb2.Message, path: str) -> list[wire.ContentBlock]:
    blocks: list[wire.ContentBlock] = []
    if message.HasField("text"):
        if message.text:
            blocks.append({"type": "text", "text": message.text})
    else:
        for j, part in enumerate(message.parts):
            if part.WhichOneof("part") != "text":
                raise unsupported(UPSTREAM, f"{path}.content[{j}]", "assistant messages hold text only")
            if part.text:
                blocks.append({"type": "text", "text": part.text})
    if message.HasField("refusal") and message.refusal and not blocks:
        blocks.append({"type": "text", "text": message.refusal})
    refuse_custom_tool_calls(message, path, UPSTREAM)
    for j, call in enumerate(message.tool_calls):
        arguments = arguments_object(call.function.arguments, f"{path}.tool_calls[{j}].function.arguments")
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    return blocks


def _tool_result(message: chat_pb2.Message, path: str) -> wire.ToolResultBlock:
    block: wire.ToolResultBlock = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    if message.HasField("text"):
        if message.text:
            block["content"] = message.text
        return block
    content: list[wire.TextBlock | wire.ImageBlock] = []
    for j, part in enumerate(message.parts):
        part_path = f"{path}.content[{j}]"
        kind = part.WhichOneof("part")
        if kind == "text":
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif kind == "image_url":
            content.append(_image(part.image_url.url, f"{part_path}.image_url.url"))
        else:
            raise unsupported(UPSTREAM, part_path, "tool results hold text and images only")
    if content:
        block["content"] = content
    return block


def _tool(tool: chat_pb2.Tool) -> wire.ToolParam:
    schema = from_struct(tool.function.parameters) if tool.function.HasField("parameters") else {}
    if not schema:
        schema = {"type": "object", "properties": {}}
    out: wire.ToolParam = {"name": tool.function.name, "input_schema": schema}
    if tool.function.HasField("description"):
        out["description"] = tool.function.description
    return out


def _tool_choice(request: chat_pb2.ChatCompletionRequest) -> wire.ToolChoiceParam | None:
    choice: wire.ToolChoiceParam | None = None
    kind = request.tool_choice.WhichOneof("choice")
    if kind == "mode":
        mode = request.tool_choice.mode
        if mode == chat_pb2.TOOL_CHOICE_MODE_NONE:
            choice = {"type": "none"}
        elif mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED:
            choice = {"type": "any"}
        elif mode == chat_pb2.TOOL_CHOICE_MODE_AUTO:
            choice = {"type": "auto"}
    elif kind == "function_name":
        choice = {"type": "tool", "name": request.tool_choice.function_name}
    elif kind == "allowed_tools":
        # The allowed tools are the only ones declared (function_tools), so only the mode is left.
        required = request.tool_choice.allowed_tools.mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED
        choice = {"type": "any"} if required else {"type": "auto"}
    if request.HasField("parallel_tool_calls") and not request.parallel_tool_calls:
        if choice is None:
            choice = {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    return choice


# ---------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------


def usage_from_anthropic(data: Any) -> chat_pb2.Usage:
    """Canonical usage: the prompt counts cached and cache-writing input tokens too."""
    usage = chat_pb2.Usage()
    if not isinstance(data, dict):
        return usage
    _fill_usage(usage, data, int_of(data.get("output_tokens")))
    return usage


def _fill_usage(usage: chat_pb2.Usage, data: Json, output_tokens: int) -> None:
    cache_read = int_of(data.get("cache_read_input_tokens"))
    cache_write = int_of(data.get("cache_creation_input_tokens"))
    usage.prompt_tokens = int_of(data.get("input_tokens")) + cache_read + cache_write
    usage.completion_tokens = output_tokens
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    if "cache_read_input_tokens" in data or "cache_creation_input_tokens" in data:
        usage.prompt_tokens_details.cached_tokens = cache_read


def finish_reason(stop_reason: Any) -> int:
    """The canonical finish reason of an Anthropic ``stop_reason`` (unknown or missing: stop)."""
    return STOP_REASONS.get(str(stop_reason), chat_pb2.FINISH_REASON_STOP)


def completion_from_anthropic(data: Any, provider: str, *, created: int) -> chat_pb2.ChatCompletion:
    """A canonical completion from a ``/v1/messages`` response body."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise malformed_response(provider, f"{provider} returned a message without a 'content' array")
    completion = chat_pb2.ChatCompletion(
        id=str(data.get("id") or ""), created=created, model=str(data.get("model") or ""), provider=provider
    )
    choice = completion.choices.add(index=0, finish_reason=finish_reason(data.get("stop_reason")))
    message = choice.message
    message.role = chat_pb2.ROLE_ASSISTANT
    texts: list[str] = []
    thinking: list[str] = []
    for block in data["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            message.tool_calls.add(
                id=str(block.get("id") or ""),
                type="function",
                function=chat_pb2.FunctionCall(
                    name=str(block.get("name") or ""), arguments=dump_json(block.get("input") or {})
                ),
            )
        elif kind == "thinking":
            thinking.append(str(block.get("thinking") or ""))
        # Other blocks (redacted_thinking, server tool results) have no OpenAI equivalent.
    if texts:
        message.text = "".join(texts)
    if thinking:
        message.extra.update({"reasoning_content": "".join(thinking)})
    completion.usage.CopyFrom(usage_from_anthropic(data.get("usage")))
    return completion


# ---------------------------------------------------------------------------------------------
# Stream
# ---------------------------------------------------------------------------------------------


@dataclass
class _ToolCall:
    position: int  # among the message's tool calls, which is what OpenAI's index counts
    has_arguments: bool = False


class AnthropicStream:
    """Turns Anthropic stream events into canonical chunks, one event at a time.

    The first chunk carries the assistant role; text deltas become content; each ``tool_use`` block
    becomes a tool call (index counted among tool calls only) whose first fragment carries id, type
    and name and whose later fragments carry argument pieces; ``message_stop`` yields the finish
    chunk and then one usage chunk. Prompt tokens come from ``message_start`` (input plus cache
    tokens), replaced by the cumulative counts of a later ``message_delta`` when it carries them;
    completion tokens are the last ``message_delta``'s ``output_tokens``.
    """

    def __init__(self, provider: str, *, created: int) -> None:
        self._provider = provider
        self._created = created
        self._id = ""
        self._model = ""
        self._started = False
        self._stopped = False
        self._stop_reason: Any = None
        self._input: Json = {}
        self._output_tokens = 0
        self._tools: dict[int, _ToolCall] = {}  # by Anthropic content block index

    @property
    def done(self) -> bool:
        """Whether ``message_stop`` arrived."""
        return self._stopped

    def feed(self, event: str, data: str) -> list[chat_pb2.ChatCompletionChunk]:
        """The chunks one SSE event (its ``event:`` name and ``data:`` text) produces."""
        if self._stopped:
            return []
        payload = loads_object(data, self._provider, f"'{event or 'message'}' event")
        kind = str(payload.get("type") or event)
        if kind == "error":
            status = wire.ERROR_TYPE_STATUS.get(str(obj(payload.get("error")).get("type")), 500)
            # Mapped like the error response of the same type (overloaded_error is a 529: retryable).
            raise upstream_error(self._provider, status, {}, data.encode())
        if kind == "ping":
            return []
        if kind == "message_start":
            return self._message_start(payload)
        if not self._started:
            raise broken_stream(self._provider, f"{self._provider} sent '{kind}' before 'message_start'")
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "content_block_delta":
            return self._block_delta(payload)
        if kind == "message_delta":
            self._message_delta(payload)
            return []
        if kind == "content_block_stop":
            return self._block_stop(payload)
        if kind == "message_stop":
            self._stopped = True
            return self._finish()
        # Unknown event types are skipped, as Anthropic's versioning policy asks of clients.
        return []

    def close(self) -> None:
        """Called when the upstream stream ended: raises unless it ended with ``message_stop``."""
        if not self._stopped:
            raise broken_stream(self._provider, f"the stream from {self._provider} ended before 'message_stop'")

    def _chunk(self) -> chat_pb2.ChatCompletionChunk:
        return chat_pb2.ChatCompletionChunk(
            id=self._id, created=self._created, model=self._model, provider=self._provider
        )

    def _delta_chunk(self) -> tuple[chat_pb2.ChatCompletionChunk, chat_pb2.Delta]:
        chunk = self._chunk()
        choice = chunk.choices.add(index=0)
        return chunk, choice.delta

    def _message_start(self, payload: Json) -> list[chat_pb2.ChatCompletionChunk]:
        message = payload.get("message")
        if not isinstance(message, dict):
            raise broken_stream(self._provider, f"{self._provider} sent 'message_start' without a message")
        self._started = True
        self._id = str(message.get("id") or "")
        self._model = str(message.get("model") or "")
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._input = usage
            self._output_tokens = int_of(usage.get("output_tokens"))
        chunk, delta = self._delta_chunk()
        delta.role = chat_pb2.ROLE_ASSISTANT
        delta.content = ""
        return [chunk]

    def _block_start(self, payload: Json) -> list[chat_pb2.ChatCompletionChunk]:
        block = payload.get("content_block")
        if not isinstance(block, dict):
            raise broken_stream(self._provider, f"{self._provider} sent 'content_block_start' without a block")
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            chunk, delta = self._delta_chunk()
            delta.content = str(block["text"])
            return [chunk]
        if kind == "tool_use":
            tool = _ToolCall(position=len(self._tools))
            self._tools[int_of(payload.get("index"))] = tool
            chunk, delta = self._delta_chunk()
            fragment = delta.tool_calls.add(index=tool.position, id=str(block.get("id") or ""), type="function")
            fragment.name = str(block.get("name") or "")
            fragment.arguments = ""
            if block.get("input"):
                # Anthropic normally streams the input; a start block that already holds it is sent whole.
                fragment.arguments = dump_json(block["input"])
                tool.has_arguments = True
            return [chunk]
        return []

    def _block_delta(self, payload: Json) -> list[chat_pb2.ChatCompletionChunk]:
        delta_in = payload.get("delta")
        if not isinstance(delta_in, dict):
            raise broken_stream(self._provider, f"{self._provider} sent 'content_block_delta' without a delta")
        kind = delta_in.get("type")
        if kind == "text_delta":
            text = str(delta_in.get("text") or "")
            if not text:
                return []
            chunk, delta = self._delta_chunk()
            delta.content = text
            return [chunk]
        if kind == "input_json_delta":
            tool = self._tools.get(int_of(payload.get("index")))
            piece = str(delta_in.get("partial_json") or "")
            if tool is None:
                raise broken_stream(
                    self._provider, f"{self._provider} sent tool input for a block that is not a tool call"
                )
            if not piece:
                return []
            tool.has_arguments = True
            chunk, delta = self._delta_chunk()
            delta.tool_calls.add(index=tool.position, arguments=piece)
            return [chunk]
        if kind == "thinking_delta":
            thinking = str(delta_in.get("thinking") or "")
            if not thinking:
                return []
            chunk, delta = self._delta_chunk()
            delta.extra.update({"reasoning_content": thinking})
            return [chunk]
        return []

    def _block_stop(self, payload: Json) -> list[chat_pb2.ChatCompletionChunk]:
        tool = self._tools.get(int_of(payload.get("index")))
        if tool is None or tool.has_arguments:
            return []
        # A call without arguments streams no input at all; OpenAI clients expect "{}", not "".
        tool.has_arguments = True
        chunk, delta = self._delta_chunk()
        delta.tool_calls.add(index=tool.position, arguments="{}")
        return [chunk]

    def _message_delta(self, payload: Json) -> None:
        delta = payload.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self._stop_reason = delta["stop_reason"]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            if "output_tokens" in usage:
                self._output_tokens = int_of(usage["output_tokens"])
            if "input_tokens" in usage:
                # Cumulative counts (newer API versions, server tools) supersede message_start's.
                self._input = usage

    def _finish(self) -> list[chat_pb2.ChatCompletionChunk]:
        finish = self._chunk()
        finish.choices.add(index=0, finish_reason=finish_reason(self._stop_reason))
        usage_chunk = self._chunk()
        usage_chunk.usage.SetInParent()
        _fill_usage(usage_chunk.usage, self._input, self._output_tokens)
        return [finish, usage_chunk]
