"""Canonical chat and embeddings <-> the Gemini API, both directions, streaming included. No I/O.

Request translation (canonical -> ``models/{model}:generateContent``):

- system and developer messages -> ``systemInstruction``; user -> ``user`` contents, assistant ->
  ``model`` contents (tool calls as ``functionCall`` parts, arguments parsed into ``args``); tool
  messages -> ``functionResponse`` parts in a user turn, named after the earlier assistant tool
  call they answer (Gemini matches results by name, not id); consecutive turns of one role merge.
- images: data URLs -> ``inlineData``, http(s) URLs -> ``fileData`` (MIME type from the URL's
  extension); ``input_audio`` -> ``inlineData`` (audio/wav, audio/mp3); ``file`` parts with a data
  URL -> ``inlineData``.
- tool results: a JSON object is sent as the ``response`` itself, anything else as
  ``{"result": <text>}`` (``response`` must be an object).
- replayed tool calls on Gemini 3 and later carry the ``skip_thought_signature_validator``
  sentinel as ``thoughtSignature``: OpenAI-shaped history cannot hold the real signatures, and
  without one those models refuse the request.

Field support:

===================================  ===========================================================
field                                decision
===================================  ===========================================================
temperature, top_p, n, seed,         -> ``generationConfig`` temperature, topP, candidateCount,
stop, max_(completion_)tokens,       seed, stopSequences, maxOutputTokens, presencePenalty,
presence/frequency_penalty           frequencyPenalty
response_format json_object /        -> responseMimeType ``application/json`` (+
json_schema                          ``responseJsonSchema``: the schema as given, plain JSON Schema)
tools                                -> one ``functionDeclarations`` entry, parameters as
                                     ``parametersJsonSchema`` (plain JSON Schema: OpenAI schemas
                                     with additionalProperties, $defs… are accepted as they are)
tool_choice                          -> ``toolConfig.functionCallingConfig`` AUTO / ANY / NONE, a
                                     function -> ANY + ``allowedFunctionNames``
logprobs, top_logprobs               -> ``responseLogprobs``, ``logprobs``; the answer's
                                     ``logprobsResult`` comes back as OpenAI ``logprobs.content``
top_k (extra)                        -> ``generationConfig.topK``
generationConfig (extra)             merged into ours (thinkingConfig, responseModalities, …)
parallel_tool_calls=false            ignored: Gemini has no such switch (documented limitation:
                                     the model may still return several calls)
user, metadata, service_tier,        ignored: no equivalent, no effect on the answer
store, prediction, prompt_cache_key,
prompt_cache_retention,
safety_identifier, reasoning_effort,
verbosity, function.strict,
image_url.detail, message name and
other per-message fields
logit_bias, audio, modalities        refused when set (UNSUPPORTED_FIELD): no equivalent, and
(beyond text), web_search_options,   dropping them changes the answer
functions, function_call
file parts with a file_id, other     refused (UNSUPPORTED_FIELD) naming the part: an OpenAI file
unknown content parts, non-text      id means nothing upstream, and Gemini parts have no shape
system content                       a client could send in OpenAI's format
anything else in ``extra``           forwarded unchanged (safetySettings, cachedContent, labels,
                                     …); Gemini rejects what it does not know, with its message
===================================  ===========================================================

Response translation: each candidate -> a choice; text parts -> content (``thought`` parts ->
``reasoning_content``), ``functionCall`` parts -> tool calls with generated ids (``call_…``) and
the compact JSON of ``args``; finishReason STOP -> stop (tool_calls when the candidate called
functions), MAX_TOKENS -> length, SAFETY/RECITATION/LANGUAGE/BLOCKLIST/PROHIBITED_CONTENT/SPII/
IMAGE_SAFETY -> content_filter, anything else -> stop. A prompt blocked outright
(``promptFeedback.blockReason`` and no candidates) is INVALID_ARGUMENT with reason
CONTENT_FILTERED. Usage: prompt = promptTokenCount + toolUsePromptTokenCount, completion =
candidatesTokenCount + thoughtsTokenCount (thoughts also as ``reasoning_tokens``, as OpenAI counts
reasoning), cachedContentTokenCount -> ``cached_tokens``.
"""

from __future__ import annotations

import json
import mimetypes
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import GatewayError, invalid_argument
from gateway_common.openai_wire import from_struct
from gateway_common.tokens import estimate_embedding_tokens
from services.providers.http import content_filtered, upstream_error
from services.providers.schemas import gemini as wire
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

UPSTREAM = "Gemini"

_CF = chat_pb2.FINISH_REASON_CONTENT_FILTER
FINISH_REASONS: dict[str, int] = {
    "STOP": chat_pb2.FINISH_REASON_STOP,
    "MAX_TOKENS": chat_pb2.FINISH_REASON_LENGTH,
    "SAFETY": _CF,
    "RECITATION": _CF,
    "LANGUAGE": _CF,
    "BLOCKLIST": _CF,
    "PROHIBITED_CONTENT": _CF,
    "SPII": _CF,
    "IMAGE_SAFETY": _CF,
}

EXTRA_POLICY = ExtraPolicy(
    upstream=UPSTREAM,
    ignore=frozenset(
        {
            "metadata",
            "service_tier",
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
        "logit_bias": "Gemini takes no logit bias",
        "audio": "audio output is not translated",
        "modalities": "audio output is not translated",
        "web_search_options": "use Gemini's googleSearch tool instead",
        "functions": "the legacy functions API is not translated; use tools",
        "function_call": "the legacy functions API is not translated; use tool_choice",
    },
)

_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}

# Gemini 3 and later reject a replayed functionCall part without the thoughtSignature they sent
# with it (HTTP 400 "Function call is missing a thought_signature"). OpenAI-shaped history cannot
# carry signatures, so such parts get the sentinel Google documents for this case
# (ai.google.dev/gemini-api/docs/thought-signatures); earlier models do not validate them.
SKIP_SIGNATURE_VALIDATION = "skip_thought_signature_validator"
_GEMINI_VERSION = re.compile(r"^gemini-(\d+)")

Role = Literal["user", "model"]
IdFactory = Callable[[], str]


def new_call_id() -> str:
    """A fresh tool call id: Gemini gives its calls none, OpenAI clients need one to answer."""
    return f"call_{uuid.uuid4().hex[:24]}"


# ---------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------


def chat_request_to_gemini(request: chat_pb2.ChatCompletionRequest, model: str) -> Json:
    """The ``generateContent`` / ``streamGenerateContent`` body for ``request`` on ``model`` (which
    goes in the URL; the body depends on it only for thought signatures).

    Raises INVALID_ARGUMENT (UNSUPPORTED_FIELD) for fields Gemini cannot honour, naming the field.
    """
    system, contents = _conversation(request, _needs_thought_signatures(model))
    body: wire.GenerateContentRequest = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    extra = from_struct(request.extra) if request.HasField("extra") else {}
    config = _generation_config(request, extra)
    tools = function_tools(request, UPSTREAM)
    if tools:
        declarations: list[wire.FunctionDeclaration] = []
        for tool in tools:
            declaration: wire.FunctionDeclaration = {"name": tool.function.name}
            if tool.function.HasField("description"):
                declaration["description"] = tool.function.description
            if tool.function.HasField("parameters") and tool.function.parameters.fields:
                declaration["parametersJsonSchema"] = from_struct(tool.function.parameters)
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
        calling = _function_calling(request.tool_choice)
        if calling is not None:
            body["toolConfig"] = {"functionCallingConfig": calling}
    out: Json = dict(body)
    merged: Json = dict(config)
    extra_config = extra.pop("generationConfig", None)
    if isinstance(extra_config, dict):
        for key, value in extra_config.items():
            merged.setdefault(key, value)
    if merged:
        out["generationConfig"] = merged
    for key, value in EXTRA_POLICY.apply(extra).items():
        out.setdefault(key, value)
    return out


def _generation_config(request: chat_pb2.ChatCompletionRequest, extra: Json) -> wire.GenerationConfig:
    config: wire.GenerationConfig = {}
    if request.HasField("temperature"):
        config["temperature"] = request.temperature
    if request.HasField("top_p"):
        config["topP"] = request.top_p
    if request.HasField("max_completion_tokens"):
        config["maxOutputTokens"] = request.max_completion_tokens
    elif request.HasField("max_tokens"):
        config["maxOutputTokens"] = request.max_tokens
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.HasField("n"):
        config["candidateCount"] = request.n
    if request.HasField("seed"):
        config["seed"] = request.seed
    if request.HasField("presence_penalty"):
        config["presencePenalty"] = request.presence_penalty
    if request.HasField("frequency_penalty"):
        config["frequencyPenalty"] = request.frequency_penalty
    if request.HasField("response_format"):
        kind = request.response_format.type
        if kind in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
        if kind == "json_schema":
            schema = from_struct(request.response_format.json_schema).get("schema")
            if isinstance(schema, dict):
                config["responseJsonSchema"] = schema
    top_k = extra.pop("top_k", None)
    if top_k is not None:
        config["topK"] = int_of(top_k)
    logprobs = extra.pop("logprobs", None)
    top_logprobs = extra.pop("top_logprobs", None)
    if logprobs:
        config["responseLogprobs"] = True
        if top_logprobs:
            config["logprobs"] = int_of(top_logprobs)
    elif top_logprobs:
        raise invalid_argument("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    return config


def _function_calling(choice: chat_pb2.ToolChoice) -> wire.FunctionCallingConfig | None:
    kind = choice.WhichOneof("choice")
    if kind == "function_name":
        return {"mode": "ANY", "allowedFunctionNames": [choice.function_name]}
    if kind == "allowed_tools":
        # Only the allowed tools are declared (function_tools), so only the mode is left.
        required = choice.allowed_tools.mode == chat_pb2.TOOL_CHOICE_MODE_REQUIRED
        return {"mode": "ANY" if required else "AUTO"}
    if kind == "mode":
        modes: dict[int, Literal["AUTO", "ANY", "NONE"]] = {
            chat_pb2.TOOL_CHOICE_MODE_AUTO: "AUTO",
            chat_pb2.TOOL_CHOICE_MODE_REQUIRED: "ANY",
            chat_pb2.TOOL_CHOICE_MODE_NONE: "NONE",
        }
        if choice.mode in modes:
            return {"mode": modes[choice.mode]}
    return None


def _needs_thought_signatures(model: str) -> bool:
    match = _GEMINI_VERSION.match(model.removeprefix("models/"))
    return match is not None and int(match.group(1)) >= 3


def _conversation(request: chat_pb2.ChatCompletionRequest, sign_calls: bool) -> tuple[list[str], list[wire.Content]]:
    system: list[str] = []
    turns: list[wire.Content] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(request.messages):
        path = f"messages[{i}]"
        role = message.role
        if role in (chat_pb2.ROLE_SYSTEM, chat_pb2.ROLE_DEVELOPER):
            text = text_content(message, path, UPSTREAM)
            if text:
                system.append(text)
            continue
        if role == chat_pb2.ROLE_USER:
            _append(turns, "user", _user_parts(message, path))
        elif role == chat_pb2.ROLE_ASSISTANT:
            _append(turns, "model", _model_parts(message, path, call_names, sign_calls))
        elif role == chat_pb2.ROLE_TOOL:
            name = call_names.get(message.tool_call_id)
            if name is None:
                raise invalid_argument(
                    f"Invalid '{path}.tool_call_id': '{message.tool_call_id}' does not answer a tool call of an "
                    "earlier assistant message.",
                    f"{path}.tool_call_id",
                )
            _append(turns, "user", [{"functionResponse": {"name": name, "response": _tool_response(message, path)}}])
        elif role == chat_pb2.ROLE_FUNCTION:
            # Gemini answers a call by function name, which is all a legacy function result carries.
            response = _tool_response(message, path) if message.HasField("text") or message.parts else {}
            _append(turns, "user", [{"functionResponse": {"name": message.name, "response": response}}])
        else:
            raise invalid_argument(f"Missing required parameter: '{path}.role'.", f"{path}.role")
    return system, turns


def _append(turns: list[wire.Content], role: Role, parts: list[wire.Part]) -> None:
    if not parts:
        return
    if turns and turns[-1].get("role") == role:
        turns[-1]["parts"].extend(parts)
    else:
        turns.append({"role": role, "parts": parts})


def _user_parts(message: chat_pb2.Message, path: str) -> list[wire.Part]:
    if message.HasField("text"):
        return [{"text": message.text}] if message.text else []
    parts: list[wire.Part] = []
    for j, part in enumerate(message.parts):
        part_path = f"{path}.content[{j}]"
        kind = part.WhichOneof("part")
        if kind == "text":
            if part.text:
                parts.append({"text": part.text})
        elif kind == "image_url":
            parts.append(_media(part.image_url.url, f"{part_path}.image_url.url"))
        elif kind == "input_audio":
            mime = _AUDIO_TYPES.get(part.input_audio.format.lower())
            if mime is None:
                raise invalid_argument(
                    f"Invalid '{part_path}.input_audio.format': expected 'wav' or 'mp3'.",
                    f"{part_path}.input_audio.format",
                )
            parts.append({"inlineData": {"mimeType": mime, "data": part.input_audio.data}})
        else:
            other = from_struct(part.other)
            data_url = parse_data_url(str(obj(other.get("file")).get("file_data") or ""))
            if other.get("type") != "file" or data_url is None:
                raise unsupported(
                    UPSTREAM, part_path, "only text, image_url, input_audio and inline file parts are translated"
                )
            parts.append({"inlineData": {"mimeType": data_url[0], "data": data_url[1]}})
    return parts


def _media(url: str, path: str) -> wire.Part:
    data_url = parse_data_url(url)
    if data_url is not None:
        return {"inlineData": {"mimeType": data_url[0], "data": data_url[1]}}
    if url.startswith(("http://", "https://")):
        mime, _ = mimetypes.guess_type(url.split("?", 1)[0])
        return {"fileData": {"mimeType": mime or "image/jpeg", "fileUri": url}}
    raise invalid_argument(f"Invalid '{path}': expected an http(s) URL or a base64 data URL.", path)


def _model_parts(message: chat_pb2.Message, path: str, call_names: dict[str, str], sign_calls: bool) -> list[wire.Part]:
    refuse_custom_tool_calls(message, path, UPSTREAM)
    parts: list[wire.Part] = []
    if message.HasField("text"):
        if message.text:
            parts.append({"text": message.text})
    else:
        for j, part in enumerate(message.parts):
            if part.WhichOneof("part") != "text":
                raise unsupported(UPSTREAM, f"{path}.content[{j}]", "assistant messages hold text only")
            if part.text:
                parts.append({"text": part.text})
    if message.HasField("refusal") and message.refusal and not parts:
        parts.append({"text": message.refusal})
    for j, call in enumerate(message.tool_calls):
        args = arguments_object(call.function.arguments, f"{path}.tool_calls[{j}].function.arguments")
        call_part: wire.Part = {"functionCall": {"name": call.function.name, "args": args}}
        if sign_calls:
            call_part["thoughtSignature"] = SKIP_SIGNATURE_VALIDATION
        parts.append(call_part)
        call_names[call.id] = call.function.name
    return parts


def _tool_response(message: chat_pb2.Message, path: str) -> Json:
    text = text_content(message, path, UPSTREAM)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


# ---------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------


def usage_from_gemini(data: Any) -> chat_pb2.Usage:
    """Canonical usage from ``usageMetadata`` (thoughts count as completion, like OpenAI's reasoning)."""
    usage = chat_pb2.Usage()
    meta = obj(data)
    usage.prompt_tokens = int_of(meta.get("promptTokenCount")) + int_of(meta.get("toolUsePromptTokenCount"))
    thoughts = int_of(meta.get("thoughtsTokenCount"))
    usage.completion_tokens = int_of(meta.get("candidatesTokenCount")) + thoughts
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
    if "cachedContentTokenCount" in meta:
        usage.prompt_tokens_details.cached_tokens = int_of(meta["cachedContentTokenCount"])
    if "thoughtsTokenCount" in meta:
        usage.completion_tokens_details.reasoning_tokens = thoughts
    return usage


def finish_reason(reason: Any, called_functions: bool) -> int:
    """The canonical finish reason of a Gemini ``finishReason``."""
    result = FINISH_REASONS.get(str(reason), chat_pb2.FINISH_REASON_STOP)
    if result == chat_pb2.FINISH_REASON_STOP and called_functions:
        return chat_pb2.FINISH_REASON_TOOL_CALLS
    return result


def _check_blocked(data: Json, provider: str) -> None:
    if data.get("candidates"):
        return
    reason = obj(data.get("promptFeedback")).get("blockReason")
    if reason:
        raise content_filtered(
            provider,
            f"{provider} blocked the prompt (blockReason {reason})",
            upstream_status=200,
            upstream_code=str(reason),
        )


def logprobs_from_gemini(result: Any) -> Json | None:
    """OpenAI's ``{"content": [{token, logprob, bytes, top_logprobs}]}`` from a ``logprobsResult``."""
    data = obj(result)
    chosen = data.get("chosenCandidates")
    if not isinstance(chosen, list):
        return None
    raw_tops = data.get("topCandidates")
    tops: list[Any] = raw_tops if isinstance(raw_tops, list) else []
    content = []
    for i, item in enumerate(chosen):
        entry = _token_logprob(item)
        alternatives = obj(tops[i]).get("candidates") if i < len(tops) else None
        entry["top_logprobs"] = [_token_logprob(a) for a in alternatives] if isinstance(alternatives, list) else []
        content.append(entry)
    return {"content": content}


def _token_logprob(item: Any) -> Json:
    token = str(obj(item).get("token") or "")
    logprob = obj(item).get("logProbability")
    return {
        "token": token,
        "logprob": float(logprob) if isinstance(logprob, int | float) else 0.0,
        "bytes": list(token.encode()),
    }


@dataclass
class _Parts:
    text: list[str]
    thoughts: list[str]
    calls: list[Json]


def _read_parts(candidate: Json) -> _Parts:
    out = _Parts([], [], [])
    parts = obj(candidate.get("content")).get("parts")
    for part in parts if isinstance(parts, list) else []:
        part = obj(part)
        if isinstance(part.get("text"), str):
            (out.thoughts if part.get("thought") else out.text).append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            out.calls.append(part["functionCall"])
    return out


def completion_from_gemini(
    data: Any, provider: str, *, model: str, created: int, new_id: IdFactory = new_call_id
) -> chat_pb2.ChatCompletion:
    """A canonical completion from a ``generateContent`` response body."""
    if not isinstance(data, dict):
        raise malformed_response(provider, f"{provider} returned a response that is not a JSON object")
    _check_blocked(data, provider)
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise malformed_response(provider, f"{provider} returned no candidates")
    completion = chat_pb2.ChatCompletion(
        id=str(data.get("responseId") or f"chatcmpl-{uuid.uuid4().hex}"),
        created=created,
        model=str(data.get("modelVersion") or model),
        provider=provider,
    )
    for position, raw in enumerate(candidates):
        candidate = obj(raw)
        parts = _read_parts(candidate)
        choice = completion.choices.add(
            index=int_of(candidate.get("index", position)),
            finish_reason=finish_reason(candidate.get("finishReason"), bool(parts.calls)),
        )
        message = choice.message
        message.role = chat_pb2.ROLE_ASSISTANT
        if parts.text:
            message.text = "".join(parts.text)
        if parts.thoughts:
            message.extra.update({"reasoning_content": "".join(parts.thoughts)})
        for call in parts.calls:
            message.tool_calls.add(
                id=str(call.get("id") or new_id()),
                type="function",
                function=chat_pb2.FunctionCall(
                    name=str(call.get("name") or ""), arguments=dump_json(obj(call.get("args")))
                ),
            )
        logprobs = logprobs_from_gemini(candidate.get("logprobsResult"))
        if logprobs is not None:
            choice.logprobs.update(logprobs)
    completion.usage.CopyFrom(usage_from_gemini(data.get("usageMetadata")))
    return completion


# ---------------------------------------------------------------------------------------------
# Stream
# ---------------------------------------------------------------------------------------------


@dataclass
class _CandidateState:
    tool_calls: int = 0
    finished: bool = False


class GeminiStream:
    """Turns ``streamGenerateContent`` events (each a whole response) into canonical chunks.

    Per candidate: a role chunk when it first appears, text deltas as content, each function call
    as one complete tool-call delta (Gemini never splits a call), and a finish chunk at its
    ``finishReason``. :meth:`close` raises unless every candidate finished, and otherwise returns
    the usage chunk, built from the last ``usageMetadata`` (Gemini repeats it on every event).
    """

    def __init__(self, provider: str, *, model: str, created: int, new_id: IdFactory = new_call_id) -> None:
        self._provider = provider
        self._model = model
        self._created = created
        self._new_id = new_id
        self._id = ""
        self._candidates: dict[int, _CandidateState] = {}
        self._usage: Any = None

    def feed(self, data: str) -> list[chat_pb2.ChatCompletionChunk]:
        """The chunks one SSE event's data produces."""
        return self.feed_object(loads_object(data, self._provider, "stream event"))

    def feed_object(self, payload: Json) -> list[chat_pb2.ChatCompletionChunk]:
        """The chunks one parsed ``GenerateContentResponse`` produces (the JSON-array stream form)."""
        if isinstance(payload.get("error"), dict):
            raise error_from_payload(self._provider, payload)
        _check_blocked(payload, self._provider)
        if not self._id:
            self._id = str(payload.get("responseId") or f"chatcmpl-{uuid.uuid4().hex}")
        if payload.get("modelVersion"):
            self._model = str(payload["modelVersion"])
        if isinstance(payload.get("usageMetadata"), dict):
            self._usage = payload["usageMetadata"]
        chunks: list[chat_pb2.ChatCompletionChunk] = []
        candidates = payload.get("candidates")
        for position, raw in enumerate(candidates if isinstance(candidates, list) else []):
            chunks.extend(self._candidate(obj(raw), position))
        return chunks

    def close(self) -> list[chat_pb2.ChatCompletionChunk]:
        """Called when the upstream stream ended: the usage chunk, or a broken-stream error."""
        if not self._candidates:
            raise broken_stream(self._provider, f"the stream from {self._provider} ended without any candidate")
        if not all(state.finished for state in self._candidates.values()):
            raise broken_stream(self._provider, f"the stream from {self._provider} ended before a finishReason")
        chunk = self._chunk()
        chunk.usage.CopyFrom(usage_from_gemini(self._usage))
        return [chunk]

    def _chunk(self) -> chat_pb2.ChatCompletionChunk:
        return chat_pb2.ChatCompletionChunk(
            id=self._id, created=self._created, model=self._model, provider=self._provider
        )

    def _delta(self, index: int) -> tuple[chat_pb2.ChatCompletionChunk, chat_pb2.ChunkChoice]:
        chunk = self._chunk()
        return chunk, chunk.choices.add(index=index)

    def _candidate(self, candidate: Json, position: int) -> list[chat_pb2.ChatCompletionChunk]:
        index = int_of(candidate.get("index", position))
        chunks: list[chat_pb2.ChatCompletionChunk] = []
        state = self._candidates.get(index)
        if state is None:
            state = self._candidates[index] = _CandidateState()
            chunk, choice = self._delta(index)
            choice.delta.role = chat_pb2.ROLE_ASSISTANT
            choice.delta.content = ""
            chunks.append(chunk)
        if state.finished:
            return chunks
        parts = _read_parts(candidate)
        logprobs = logprobs_from_gemini(candidate.get("logprobsResult"))
        if parts.thoughts:
            chunk, choice = self._delta(index)
            choice.delta.extra.update({"reasoning_content": "".join(parts.thoughts)})
            chunks.append(chunk)
        if parts.text:
            chunk, choice = self._delta(index)
            choice.delta.content = "".join(parts.text)
            if logprobs is not None:
                choice.logprobs.update(logprobs)
            chunks.append(chunk)
        if parts.calls:
            chunk, choice = self._delta(index)
            for call in parts.calls:
                choice.delta.tool_calls.add(
                    index=state.tool_calls,
                    id=str(call.get("id") or self._new_id()),
                    type="function",
                    name=str(call.get("name") or ""),
                    arguments=dump_json(obj(call.get("args"))),
                )
                state.tool_calls += 1
            chunks.append(chunk)
        if candidate.get("finishReason"):
            state.finished = True
            chunk, choice = self._delta(index)
            choice.finish_reason = finish_reason(candidate["finishReason"], state.tool_calls > 0)  # type: ignore[assignment]
            chunks.append(chunk)
        return chunks


# ---------------------------------------------------------------------------------------------
# Embeddings and models
# ---------------------------------------------------------------------------------------------


def embedding_request_to_gemini(request: chat_pb2.EmbeddingRequest, model: str) -> Json:
    """The ``batchEmbedContents`` body: one request per input; ``extra`` fields (taskType, title)
    go into each request, ``user`` has no equivalent and is dropped."""
    extra = from_struct(request.extra) if request.HasField("extra") else {}
    if request.token_inputs:
        raise unsupported(UPSTREAM, "input", "Gemini embeds text only, not token ids of another tokenizer")
    requests: list[Json] = []
    for text in request.input:
        item: wire.EmbedContentRequest = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if request.HasField("dimensions"):
            item["outputDimensionality"] = request.dimensions
        out: Json = dict(item)
        for key, value in extra.items():
            out.setdefault(key, value)
        requests.append(out)
    return {"requests": requests}


def embeddings_from_gemini(
    data: Any, provider: str, *, model: str, request: chat_pb2.EmbeddingRequest
) -> chat_pb2.EmbeddingResponse:
    """Canonical embeddings from a ``batchEmbedContents`` answer (vectors in input order).

    Gemini reports no token counts for embeddings, so usage is estimated and marked as such.
    """
    embeddings = obj(data).get("embeddings")
    if not isinstance(embeddings, list) or len(embeddings) != len(request.input):
        raise malformed_response(
            provider, f"{provider} returned {_count(embeddings)} embeddings for {len(request.input)} inputs"
        )
    response = chat_pb2.EmbeddingResponse(model=model, provider=provider)
    for i, item in enumerate(embeddings):
        values = obj(item).get("values")
        if not isinstance(values, list):
            raise malformed_response(provider, f"{provider} returned an embedding without 'values'")
        response.data.add(index=i, vector=values)
    tokens = estimate_embedding_tokens(request)
    response.usage.prompt_tokens = tokens
    response.usage.total_tokens = tokens
    response.usage.estimated = True
    return response


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 0


def models_from_gemini(data: Any, provider: str) -> list[chat_pb2.Model]:
    """The chat and embedding models of a ``GET models`` page, as ``provider:model`` ids."""
    models: list[chat_pb2.Model] = []
    items = obj(data).get("models")
    for item in items if isinstance(items, list) else []:
        item = obj(item)
        name = str(item.get("name") or "").removeprefix("models/")
        methods = item.get("supportedGenerationMethods") or []
        if name and ("generateContent" in methods or "embedContent" in methods):
            models.append(chat_pb2.Model(id=f"{provider}:{name}", owned_by="google", provider=provider))
    return models


def error_from_payload(provider: str, payload: Json) -> GatewayError:
    """The error of a Google error body (``{"error": {"code", "message", "status"}}``) seen in a stream."""
    return upstream_error(
        provider, int_of(obj(payload.get("error")).get("code")) or 500, {}, json.dumps(payload).encode()
    )
