"""Embeddings requests and responses, and model objects."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any

from gateway.chat.v1 import chat_pb2
from gateway_common.errors import invalid_argument
from gateway_common.openai_wire.responses import usage_from_openai
from gateway_common.openai_wire.values import (
    Json,
    from_struct,
    read_array,
    read_int,
    read_name,
    read_str,
    upstream_shape_error,
)

# ---------------------------------------------------------------------------------------------
# Embeddings and models
# ---------------------------------------------------------------------------------------------

_EMBEDDING_FIELDS = frozenset({"model", "input", "dimensions", "user", "encoding_format"})


def parse_embedding_request(body: Any) -> tuple[chat_pb2.EmbeddingRequest, str]:
    """Parse an OpenAI embeddings request; returns it and the encoding format ("float" or "base64")."""
    if not isinstance(body, dict):
        raise invalid_argument("The request body must be a JSON object.", "body")
    request = chat_pb2.EmbeddingRequest()
    if body.get("model") is not None:
        request.model = read_name(body["model"], "model")
    raw = body.get("input")
    if raw is None:
        raise invalid_argument("Missing required parameter: 'input'.", "input")
    _parse_input(raw, request)
    if body.get("dimensions") is not None:
        request.dimensions = read_int(body["dimensions"], "dimensions", 1)
    if body.get("user") is not None:
        request.user = read_str(body["user"], "user")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise invalid_argument(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.", "encoding_format"
        )
    extra = {k: v for k, v in body.items() if k not in _EMBEDDING_FIELDS}
    if extra:
        request.extra.update(extra)
    return request, str(encoding)


def _parse_input(raw: Any, request: chat_pb2.EmbeddingRequest) -> None:
    """The spec's four input shapes: a string, strings, one token array, or token arrays."""
    if isinstance(raw, str):
        request.input.append(raw)
        return
    items = read_array(raw, "input")
    if not items:
        raise invalid_argument("Invalid 'input': empty array. Expected at least one string or token.", "input")
    if isinstance(items[0], str):
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise invalid_argument(
                    f"Invalid type for 'input[{i}]': expected a string like 'input[0]'.", f"input[{i}]"
                )
            request.input.append(item)
    elif isinstance(items[0], list):
        for i, item in enumerate(items):
            tokens = read_array(item, f"input[{i}]")
            if not tokens:
                raise invalid_argument(
                    f"Invalid 'input[{i}]': empty array. Expected at least one token.", f"input[{i}]"
                )
            request.token_inputs.add(tokens=[_token(t, f"input[{i}][{j}]") for j, t in enumerate(tokens)])
    else:
        request.token_inputs.add(tokens=[_token(t, f"input[{i}]") for i, t in enumerate(items)])


def _token(value: Any, path: str) -> int:
    # bool is an int to Python, never a token id.
    if isinstance(value, bool):
        raise invalid_argument(f"Invalid type for '{path}': expected a token id (an integer).", path)
    return read_int(value, path, 0)


def embedding_inputs(request: chat_pb2.EmbeddingRequest) -> list[str] | list[list[int]]:
    """The inputs as OpenAI's ``input`` array: strings, or token arrays when the client sent tokens."""
    if request.token_inputs:
        return [list(item.tokens) for item in request.token_inputs]
    return list(request.input)


def embedding_request_to_openai(request: chat_pb2.EmbeddingRequest, model: str) -> Json:
    """The upstream body for an OpenAI-style ``/embeddings`` (always float vectors)."""
    body: Json = {"model": model, "input": embedding_inputs(request), "encoding_format": "float"}
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.user:
        body["user"] = request.user
    if request.HasField("extra"):
        for key, value in from_struct(request.extra).items():
            body.setdefault(key, value)
    return body


def embedding_response_from_openai(data: Any, provider: str) -> chat_pb2.EmbeddingResponse:
    """Canonical embeddings from an OpenAI-style response (float or base64 vectors)."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise upstream_shape_error("upstream returned embeddings without a 'data' array")
    response = chat_pb2.EmbeddingResponse(model=str(data.get("model") or ""), provider=provider)
    for i, item in enumerate(data["data"]):
        vector = item.get("embedding")
        if isinstance(vector, str):
            raw = base64.b64decode(vector)
            values: Sequence[float] = struct.unpack(f"<{len(raw) // 4}f", raw)
        else:
            values = vector or []
        response.data.add(index=int(item.get("index", i)), vector=values)
    response.usage.CopyFrom(usage_from_openai(data.get("usage")))
    return response


def embedding_response_to_openai(response: chat_pb2.EmbeddingResponse, encoding_format: str) -> Json:
    """Canonical embeddings as OpenAI's list object, vectors as floats or base64 float32."""
    data = []
    for item in response.data:
        vector: Any
        if encoding_format == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(item.vector)}f", *item.vector)).decode()
        else:
            vector = list(item.vector)
        data.append({"object": "embedding", "index": item.index, "embedding": vector})
    return {
        "object": "list",
        "data": data,
        "model": response.model,
        "usage": {"prompt_tokens": response.usage.prompt_tokens, "total_tokens": response.usage.total_tokens},
    }


def model_to_openai(model: chat_pb2.Model) -> Json:
    """A model as OpenAI's ``model`` object, with the gateway's price of it as an extension.

    ``pricing`` is null for an unpriced model (its usage costs $0 and budgets cannot count it).
    """
    pricing: Json | None = None
    if not model.unpriced and model.HasField("input_usd_per_million"):
        pricing = {
            "input_usd_per_million": model.input_usd_per_million,
            "output_usd_per_million": model.output_usd_per_million,
        }
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "priced": not model.unpriced,
        "pricing": pricing,
    }
