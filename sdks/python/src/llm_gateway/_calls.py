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
from typing import Any, Generic, Protocol, TypeVar

from llm_gateway import _wire_render, _wire_requests
from llm_gateway._wire_requests import invalid
from llm_gateway.errors import APIError
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
JOBS = "gateway.jobs.v1.JobService"


@dataclass(frozen=True)
class Rpc:
    """The gRPC form of a call: the method, its request as proto JSON, and where the result sits."""

    method: str
    request_type: str
    response_type: str
    body: dict[str, Any]
    pick: Callable[[dict[str, Any]], Any] = lambda d: d
    """The result's JSON (what the HTTP route answers) from the answer's proto JSON."""
    events: Callable[[], StreamEvents] | None = None
    """For a stream whose HTTP form is not one item per message (the Responses API's typed events):
    a new renderer per call, fed each message's picked JSON."""


class StreamEvents(Protocol):
    """Turns one stream's messages into the items its HTTP route sends (see ``_wire_render``)."""

    def start(self, first: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The items before the first message's own (``first`` is None for an empty stream)."""
        ...

    def feed(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """The items one message adds."""
        ...

    def finish(self) -> list[dict[str, Any]]:
        """The items that end a stream that ran to its end."""
        ...

    def fail(self, error: APIError) -> list[dict[str, Any]]:
        """The in-band items that end a stream broken after it started."""
        ...


@dataclass(frozen=True)
class Call(Generic[T]):
    """One operation: its HTTP route, its RPC (None when only HTTP has it), and how to decode it."""

    method: str
    path: str
    decode: Decode[T]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    idempotent: bool = False
    rpc: Rpc | Callable[[], Rpc] | None = None
    """The gRPC form, or what builds it: built only when the call goes over gRPC, because mapping
    an OpenAI-shaped body onto the canonical request (the edge's job over HTTP) can refuse it."""
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
    """``POST /v1/responses`` / ``RouterService.Chat`` with the canonical request the edge would make."""

    def rpc() -> Rpc:
        request = _wire_requests.responses_request(body, stream=False)
        return Rpc(
            f"/{ROUTER}/Chat",
            "gateway.router.v1.ChatRequest",
            "gateway.router.v1.ChatResponse",
            {"completion": request},
            # The router names the response: the completion's id is the response id.
            lambda d: _wire_render.response_object(request, d["completion"].get("id", ""), completion=d["completion"]),
        )

    return Call("POST", "/v1/responses", _response, json={**body, "stream": False}, rpc=rpc)


def responses_stream(body: dict[str, Any]) -> Call[ResponseEvent]:
    """``POST /v1/responses/stream`` / ``RouterService.StreamChat``: the typed events."""

    def rpc() -> Rpc:
        request = _wire_requests.responses_request(body, stream=True)
        return Rpc(
            f"/{ROUTER}/StreamChat",
            "gateway.router.v1.StreamChatRequest",
            "gateway.router.v1.StreamChatResponse",
            {"completion": request},
            lambda d: d.get("chunk") or {},
            lambda: _wire_render.ResponseEvents(request),
        )

    return Call("POST", "/v1/responses/stream", _event, json=body, rpc=rpc, stream="sse")


def _stored_response(response_id: str) -> Callable[[dict[str, Any]], Any]:
    return lambda d: _wire_render.response_object(
        d.get("request") or {}, response_id, completion=d.get("completion") or {}
    )


def get_response(response_id: str) -> Call[Response]:
    """``GET /v1/responses/{id}`` / ``RouterService.GetResponse``."""
    rpc = Rpc(
        f"/{ROUTER}/GetResponse",
        "gateway.router.v1.GetResponseRequest",
        "gateway.router.v1.GetResponseResponse",
        {"response_id": response_id},
        _stored_response(response_id),
    )
    return Call("GET", f"/v1/responses/{response_id}", _response, idempotent=True, rpc=rpc)


def delete_response(response_id: str) -> Call[bool]:
    """``DELETE /v1/responses/{id}`` / ``RouterService.DeleteResponse`` (NOT_FOUND when absent)."""
    rpc = Rpc(
        f"/{ROUTER}/DeleteResponse",
        "gateway.router.v1.DeleteResponseRequest",
        "gateway.router.v1.DeleteResponseResponse",
        {"response_id": response_id},
        lambda _d: {"deleted": True},
    )
    path = f"/v1/responses/{response_id}"
    return Call("DELETE", path, lambda d, _r: bool(d.get("deleted")), idempotent=True, rpc=rpc)


_JOB_FORMATS = {"messages": "INGRESS_FORMAT_CHAT_COMPLETIONS", "input": "INGRESS_FORMAT_RESPONSES"}
"""The key a job's request carries -> its ingress format (as the edge chooses the parser)."""


def _job_request(request: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The canonical request of a job and its format; errors name the parameter under ``request``."""
    found = [key for key in _JOB_FORMATS if key in request]
    if len(found) != 1:
        raise invalid("request must have either messages (chat completions) or input (responses).", "request")
    if request.get("stream"):
        raise invalid("A job's result is not streamed: leave stream unset or false.", "request.stream")
    try:
        if found[0] == "messages":
            canonical = _wire_requests.chat_completions_request(request)
        else:
            canonical = _wire_requests.responses_request(request, stream=False)
    except APIError as error:
        if error.param and not error.param.startswith("request"):
            error.param = f"request.{error.param}"
        raise
    return canonical, _JOB_FORMATS[found[0]]


def _job(d: dict[str, Any]) -> Any:
    return _wire_render.job_to_json(d.get("job") or {})


def submit_job(request: Mapping[str, Any], webhook_url: str | None = None) -> Call[Job]:
    """``POST /v1/jobs`` / ``JobService.SubmitJob``: ``request`` is a chat completions (``messages``)
    or responses (``input``) body."""
    body: dict[str, Any] = {"request": to_json(dict(request))}
    if webhook_url:
        body["webhook"] = {"url": webhook_url}

    def rpc() -> Rpc:
        canonical, ingress = _job_request(body["request"])
        submit: dict[str, Any] = {"request": canonical, "format": ingress}
        if webhook_url:
            submit["webhook"] = {"url": webhook_url}
        return Rpc(
            f"/{JOBS}/SubmitJob", "gateway.jobs.v1.SubmitJobRequest", "gateway.jobs.v1.SubmitJobResponse", submit, _job
        )

    return Call("POST", "/v1/jobs", _decoder(Job), json=body, rpc=rpc)


def get_job(job_id: str) -> Call[Job]:
    """``GET /v1/jobs/{id}`` / ``JobService.GetJob``."""
    rpc = Rpc(
        f"/{JOBS}/GetJob", "gateway.jobs.v1.GetJobRequest", "gateway.jobs.v1.GetJobResponse", {"job_id": job_id}, _job
    )
    return Call("GET", f"/v1/jobs/{job_id}", _decoder(Job), idempotent=True, rpc=rpc)


def _job_list(d: dict[str, Any]) -> dict[str, Any]:
    data = [_wire_render.job_to_json(job) for job in d.get("jobs") or ()]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": bool(d.get("has_more")),
    }


def list_jobs(limit: int | None = None, after: str | None = None) -> Call[JobList]:
    """``GET /v1/jobs`` / ``JobService.ListJobs``."""
    params = {k: str(v) for k, v in (("limit", limit), ("after", after)) if v is not None}

    def rpc() -> Rpc:
        if limit is not None and not 1 <= limit <= 100:
            raise invalid("limit must be an integer between 1 and 100.", "limit")
        body = {"limit": limit or 0, "after": after or ""}
        return Rpc(
            f"/{JOBS}/ListJobs", "gateway.jobs.v1.ListJobsRequest", "gateway.jobs.v1.ListJobsResponse", body, _job_list
        )

    return Call("GET", "/v1/jobs", _decoder(JobList), params=params, idempotent=True, rpc=rpc)


def cancel_job(job_id: str) -> Call[Job]:
    """``POST /v1/jobs/{id}/cancel`` / ``JobService.CancelJob``; cancelling twice is harmless, so it
    counts as idempotent."""
    rpc = Rpc(
        f"/{JOBS}/CancelJob",
        "gateway.jobs.v1.CancelJobRequest",
        "gateway.jobs.v1.CancelJobResponse",
        {"job_id": job_id},
        _job,
    )
    return Call("POST", f"/v1/jobs/{job_id}/cancel", _decoder(Job), json={}, idempotent=True, rpc=rpc)


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
