"""What each SDK method sends, independent of the transport and of sync/async.

A :class:`Call` is one HTTP route of the edge and, where the router's public gRPC API has the same
operation, its RPC (:class:`Rpc`, described by message names so this module needs no protobuf).
Both clients build calls here and hand them to a transport, so the sync and async clients and the
HTTP and gRPC transports cannot disagree about a request's shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from llm_gateway.types import (
    ApiKey,
    ChatChunk,
    ChatResponse,
    CreatedKey,
    Credential,
    Embeddings,
    Job,
    JobList,
    Message,
    Model,
    Response,
    ResponseEvent,
    Tenant,
    UsageRow,
    from_json,
)

T = TypeVar("T")
Decode = Callable[[Any, str], T]
"""Turns the answer's JSON (and the request id) into the result."""

ROUTER = "gateway.router.v1.RouterService"


@dataclass(frozen=True)
class Rpc:
    """The gRPC form of a call: the method, its request as proto JSON, and where the result sits."""

    method: str
    request_type: str
    response_type: str
    body: dict[str, Any]
    pick: Callable[[dict[str, Any]], Any] = lambda d: d


@dataclass(frozen=True)
class Call(Generic[T]):
    """One operation: its HTTP route, its RPC (None when only HTTP has it), and how to decode it."""

    method: str
    path: str
    decode: Decode[T]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    idempotent: bool = False
    rpc: Rpc | None = None
    stream: str | None = None
    """For a streaming call, its HTTP framing: "ndjson" or "sse"."""


def to_json(value: Any) -> Any:
    """A request value as JSON: dataclasses as dicts without their unset fields, datetimes as RFC 3339."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def _set(body: dict[str, Any], **values: Any) -> dict[str, Any]:
    """``body`` plus every value that is set (None, and empty sequences, mean "not given")."""
    for name, value in values.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        body[name] = to_json(value)
    return body


def unified_body(**values: Any) -> dict[str, Any]:
    """A request body of the values that are set."""
    return _set({}, **values)


def _decoder(cls: type[T]) -> Decode[T]:
    return lambda data, _rid: from_json(cls, data)


def _items(cls: type[T], key: str) -> Decode[list[T]]:
    return lambda data, _rid: [from_json(cls, item) for item in data.get(key) or ()]


def _one(cls: type[T], key: str) -> Decode[T]:
    return lambda data, _rid: from_json(cls, data.get(key) or {})


def _chat_response(data: Any, request_id: str) -> ChatResponse:
    return dataclasses.replace(from_json(ChatResponse, data), request_id=request_id)


def _response(data: Any, _rid: str) -> Response:
    return dataclasses.replace(from_json(Response, data), raw=data)


def _event(data: Any, _rid: str) -> ResponseEvent:
    return ResponseEvent(type=str(data.get("type", "")), data=data)


def unified_request(
    model: str,
    messages: Sequence[Message | Mapping[str, Any]],
    **options: Any,
) -> dict[str, Any]:
    """The ``UnifiedChatRequest`` JSON."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.to_json() if isinstance(m, Message) else dict(m) for m in messages],
    }
    return _set(body, **options)


def chat(body: dict[str, Any]) -> Call[ChatResponse]:
    """``POST /v1/chat`` / ``RouterService.Chat``."""
    rpc = Rpc(
        f"/{ROUTER}/Chat",
        "gateway.router.v1.ChatRequest",
        "gateway.router.v1.ChatResponse",
        {"unified": body},
        lambda d: d.get("unified") or {},
    )
    return Call("POST", "/v1/chat", _chat_response, json=body, rpc=rpc)


def chat_stream(body: dict[str, Any]) -> Call[ChatChunk]:
    """``POST /v1/chat:stream`` / ``RouterService.StreamChat``."""
    rpc = Rpc(
        f"/{ROUTER}/StreamChat",
        "gateway.router.v1.StreamChatRequest",
        "gateway.router.v1.StreamChatResponse",
        {"unified": body},
        lambda d: d.get("unified") or {},
    )
    return Call("POST", "/v1/chat:stream", _decoder(ChatChunk), json=body, rpc=rpc, stream="ndjson")


def _embeddings(data: Any, request_id: str) -> Embeddings:
    return dataclasses.replace(from_json(Embeddings, data.get("embedding") or {}), request_id=request_id)


def embed(body: dict[str, Any]) -> Call[Embeddings]:
    """``POST /v1/embed`` / ``RouterService.Embed``; ``body`` is the ``EmbeddingRequest`` JSON."""
    wrapped = {"embedding": body}
    rpc = Rpc(f"/{ROUTER}/Embed", "gateway.router.v1.EmbedRequest", "gateway.router.v1.EmbedResponse", wrapped)
    return Call("POST", "/v1/embed", _embeddings, json=wrapped, rpc=rpc)


def models(model_id: str = "") -> Call[list[Model]]:
    """``GET /v1/catalog/models`` / ``RouterService.ListModels``."""
    body = _set({}, model_id=model_id or None)
    rpc = Rpc(
        f"/{ROUTER}/ListModels", "gateway.router.v1.ListModelsRequest", "gateway.router.v1.ListModelsResponse", body
    )
    return Call("GET", "/v1/catalog/models", _items(Model, "models"), params=body, idempotent=True, rpc=rpc)


def usage(
    tenant_id: str = "",
    key_id: str = "",
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    group_by: str | None = None,
) -> Call[list[UsageRow]]:
    """``GET /v1/usage`` / ``RouterService.GetUsage``; ``group_by`` is "tenant", "key", "model",
    "provider" or a ``GROUP_BY_…`` name."""
    grouping = None
    if group_by:
        grouping = group_by if group_by.startswith("GROUP_BY_") else f"GROUP_BY_{group_by.upper()}"
    body = _set(
        {},
        tenant_id=tenant_id or None,
        key_id=key_id or None,
        start_time=start_time,
        end_time=end_time,
        group_by=grouping,
    )
    params = {{"start_time": "from", "end_time": "to"}.get(k, k): str(v) for k, v in body.items()}
    rpc = Rpc(f"/{ROUTER}/GetUsage", "gateway.router.v1.GetUsageRequest", "gateway.router.v1.GetUsageResponse", body)
    return Call("GET", "/v1/usage", _items(UsageRow, "rows"), params=params, idempotent=True, rpc=rpc)


def responses(body: dict[str, Any]) -> Call[Response]:
    """``POST /v1/responses`` (HTTP only: the edge parses the Responses format)."""
    return Call("POST", "/v1/responses", _response, json={**body, "stream": False})


def responses_stream(body: dict[str, Any]) -> Call[ResponseEvent]:
    """``POST /v1/responses/stream``: the typed events (HTTP only)."""
    return Call("POST", "/v1/responses/stream", _event, json=body, stream="sse")


def get_response(response_id: str) -> Call[Response]:
    """``GET /v1/responses/{id}``."""
    return Call("GET", f"/v1/responses/{response_id}", _response, idempotent=True)


def delete_response(response_id: str) -> Call[bool]:
    """``DELETE /v1/responses/{id}``."""
    return Call("DELETE", f"/v1/responses/{response_id}", lambda d, _r: bool(d.get("deleted")), idempotent=True)


def submit_job(request: Mapping[str, Any], webhook_url: str | None = None) -> Call[Job]:
    """``POST /v1/jobs``: ``request`` is a chat completions (``messages``) or responses (``input``) body."""
    body: dict[str, Any] = {"request": to_json(dict(request))}
    if webhook_url:
        body["webhook"] = {"url": webhook_url}
    return Call("POST", "/v1/jobs", _decoder(Job), json=body)


def get_job(job_id: str) -> Call[Job]:
    """``GET /v1/jobs/{id}``."""
    return Call("GET", f"/v1/jobs/{job_id}", _decoder(Job), idempotent=True)


def list_jobs(limit: int | None = None, after: str | None = None) -> Call[JobList]:
    """``GET /v1/jobs``."""
    params = {k: str(v) for k, v in (("limit", limit), ("after", after)) if v is not None}
    return Call("GET", "/v1/jobs", _decoder(JobList), params=params, idempotent=True)


def cancel_job(job_id: str) -> Call[Job]:
    """``POST /v1/jobs/{id}/cancel``; cancelling twice is harmless, so it counts as idempotent."""
    return Call("POST", f"/v1/jobs/{job_id}/cancel", _decoder(Job), json={}, idempotent=True)


# Admin: the auth service's RPCs are internal (mutual TLS, service identities), so admin is HTTP only.


def create_tenant(**fields: Any) -> Call[Tenant]:
    """``POST /admin/v1/tenants``."""
    return Call("POST", "/admin/v1/tenants", _one(Tenant, "tenant"), json={"tenant": _set({}, **fields)})


def list_tenants() -> Call[list[Tenant]]:
    """``GET /admin/v1/tenants``."""
    return Call("GET", "/admin/v1/tenants", _items(Tenant, "tenants"), idempotent=True)


def update_tenant(tenant_id: str, **fields: Any) -> Call[Tenant]:
    """``PATCH /admin/v1/tenants/{id}``."""
    return Call("PATCH", f"/admin/v1/tenants/{tenant_id}", _one(Tenant, "tenant"), json=_set({}, **fields))


def create_key(**fields: Any) -> Call[CreatedKey]:
    """``POST /admin/v1/keys``."""
    return Call("POST", "/admin/v1/keys", _decoder(CreatedKey), json=_set({}, **fields))


def list_keys(tenant_id: str = "", include_revoked: bool = False) -> Call[list[ApiKey]]:
    """``GET /admin/v1/keys``."""
    params = {"tenant_id": tenant_id} if tenant_id else {}
    if include_revoked:
        params["include_revoked"] = "true"
    return Call("GET", "/admin/v1/keys", _items(ApiKey, "keys"), params=params, idempotent=True)


def update_key(key_id: str, **fields: Any) -> Call[ApiKey]:
    """``PATCH /admin/v1/keys/{id}``."""
    return Call("PATCH", f"/admin/v1/keys/{key_id}", _one(ApiKey, "key"), json=_set({}, **fields))


def revoke_key(key_id: str) -> Call[ApiKey]:
    """``POST /admin/v1/keys/{id}:revoke``."""
    return Call("POST", f"/admin/v1/keys/{key_id}:revoke", _one(ApiKey, "key"), json={}, idempotent=True)


def _secret(secret: str | Mapping[str, Any]) -> dict[str, Any]:
    return {"api_key": secret} if isinstance(secret, str) else {"oauth": to_json(dict(secret))}


def create_credential(secret: str | Mapping[str, Any], **fields: Any) -> Call[Credential]:
    """``POST /admin/v1/credentials``; ``secret`` is an API key, or an OAuth token set as a dict."""
    body = _set({"secret": _secret(secret)}, **fields)
    return Call("POST", "/admin/v1/credentials", _one(Credential, "credential"), json=body)


def list_credentials(tenant_id: str = "", provider: str = "") -> Call[list[Credential]]:
    """``GET /admin/v1/credentials``."""
    params = {k: v for k, v in (("tenant_id", tenant_id), ("provider", provider)) if v}
    return Call("GET", "/admin/v1/credentials", _items(Credential, "credentials"), params=params, idempotent=True)


def update_credential(credential_id: str, **fields: Any) -> Call[Credential]:
    """``PATCH /admin/v1/credentials/{id}``."""
    path = f"/admin/v1/credentials/{credential_id}"
    return Call("PATCH", path, _one(Credential, "credential"), json=_set({}, **fields))


def rotate_credential(credential_id: str, secret: str | Mapping[str, Any]) -> Call[Credential]:
    """``POST /admin/v1/credentials/{id}:rotate``."""
    path = f"/admin/v1/credentials/{credential_id}:rotate"
    return Call("POST", path, _one(Credential, "credential"), json={"secret": _secret(secret)})


def delete_credential(credential_id: str) -> Call[None]:
    """``DELETE /admin/v1/credentials/{id}``."""
    return Call("DELETE", f"/admin/v1/credentials/{credential_id}", lambda _d, _r: None, idempotent=True)
