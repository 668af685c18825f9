"""``Client`` and ``AsyncClient``: the same methods, over HTTP (default) or the router's gRPC API.

Every method of the native API uses the chosen transport: chat, streams, embeddings, models,
usage and the Responses API on the router's ``RouterService``, jobs on its ``JobService``. Only
admin goes to the edge over HTTP in both modes (the auth service's RPCs are internal, behind
mutual TLS and service identities).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from llm_gateway import _calls
from llm_gateway._calls import Call
from llm_gateway._http import AsyncHttpTransport, HttpTransport
from llm_gateway._retries import RetryPolicy
from llm_gateway._streams import AsyncStream, Stream
from llm_gateway.errors import APIError, APITimeoutError
from llm_gateway.types import (
    ApiKey,
    ChatChunk,
    ChatResponse,
    CreatedKey,
    Credential,
    Embeddings,
    Job,
    JobList,
    Limits,
    Message,
    Model,
    Policy,
    Quota,
    Response,
    ResponseEvent,
    Tenant,
    UsageRow,
)

T = TypeVar("T")
Transport = Literal["http", "grpc"]
Messages = Sequence[Message | Mapping[str, Any]]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S = 60.0


def _request_id(given: str | None) -> str:
    return given or f"req_{uuid.uuid4().hex}"


class _Base:
    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        transport: Transport,
        grpc_target: str | None,
        timeout: float | None,
        max_retries: int,
        retry_non_idempotent: bool,
    ) -> None:
        if transport not in ("http", "grpc"):
            raise ValueError(f"transport must be 'http' or 'grpc', not {transport!r}")
        self.api_key = api_key if api_key is not None else os.environ.get("LLM_GATEWAY_API_KEY")
        self.base_url = (base_url or os.environ.get("LLM_GATEWAY_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.transport: Transport = transport
        self.grpc_target = grpc_target or os.environ.get("LLM_GATEWAY_GRPC_TARGET") or "127.0.0.1:50051"
        self.timeout = timeout
        self.retries = RetryPolicy(max_retries=max_retries)
        self.retry_non_idempotent = retry_non_idempotent

    def _retries_for(self, call: Call[Any], retry: bool | None) -> bool:
        if retry is not None:
            return retry
        return call.idempotent or self.retry_non_idempotent

    def _over_grpc(self, call: Call[Any]) -> bool:
        return self.transport == "grpc" and call.rpc is not None

    def _timeout(self, timeout: float | None, stream: bool) -> float | None:
        if timeout is not None:
            return timeout
        # A deadline on a whole stream would cut long answers; over HTTP it bounds each read.
        return None if stream and self.transport == "grpc" else self.timeout


class Client(_Base):
    """A blocking client of the gateway's native API."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        transport: Transport = "http",
        grpc_target: str | None = None,
        grpc_credentials: Any = None,
        grpc_options: Sequence[tuple[str, Any]] = (),
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        retry_non_idempotent: bool = False,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        """``api_key`` defaults to ``$LLM_GATEWAY_API_KEY``, ``base_url`` (the edge) to
        ``$LLM_GATEWAY_BASE_URL``, ``grpc_target`` (the router, ``host:port``) to
        ``$LLM_GATEWAY_GRPC_TARGET``. ``grpc_credentials`` are ``grpc.ChannelCredentials``
        (``grpc.ssl_channel_credentials(root_certificates=ca)``); None dials plaintext."""
        super().__init__(api_key, base_url, transport, grpc_target, timeout, max_retries, retry_non_idempotent)
        self._http = HttpTransport(self.base_url, self.api_key, dict(default_headers or {}), http_client)
        self._grpc: Any = None
        if transport == "grpc":
            from llm_gateway._grpc import GrpcTransport

            self._grpc = GrpcTransport(self.grpc_target, self.api_key, grpc_credentials, list(grpc_options))
        self.jobs = Jobs(self)
        """Async jobs: submit, get, list, cancel, wait."""
        self.admin = Admin(self)
        """Admin helpers (an admin key): tenants, keys, credentials."""

    def _run(self, call: Call[T], timeout: float | None, retry: bool | None, request_id: str | None) -> T:
        rid = _request_id(request_id)
        transport = self._grpc if self._over_grpc(call) else self._http
        retries = 0
        while True:
            try:
                result: T = transport.request(call, self._timeout(timeout, False), rid)
                return result
            except APIError as error:
                delay = self.retries.delay(retries, error) if self._retries_for(call, retry) else None
                if delay is None:
                    raise
            time.sleep(delay)
            retries += 1

    def _stream(self, call: Call[T], timeout: float | None, retry: bool | None, request_id: str | None) -> Stream[T]:
        rid = _request_id(request_id)
        transport = self._grpc if self._over_grpc(call) else self._http
        retries = 0
        while True:
            try:
                stream: Stream[T] = transport.stream(call, self._timeout(timeout, True), rid)
                return stream
            except APIError as error:
                delay = self.retries.delay(retries, error) if self._retries_for(call, retry) else None
                if delay is None:
                    raise
            time.sleep(delay)
            retries += 1

    def chat(
        self,
        model: str,
        messages: Messages,
        *,
        client_id: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        user: str | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        seed: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_cost_usd: float | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
    ) -> ChatResponse:
        """A completion (``POST /v1/chat`` / ``RouterService.Chat``); not retried unless ``retry=True``."""
        body = _calls.unified_request(
            model,
            messages,
            client_id=client_id,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            user=user,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            seed=seed,
            metadata=metadata,
            max_cost_usd=max_cost_usd,
        )
        return self._run(_calls.chat(body), timeout, retry, request_id)

    def chat_stream(
        self,
        model: str,
        messages: Messages,
        *,
        client_id: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        user: str | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        seed: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_cost_usd: float | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
    ) -> Stream[ChatChunk]:
        """A streamed completion (``POST /v1/chat:stream`` / ``RouterService.StreamChat``): iterate it;
        close it (or leave its ``with`` block) to stop early."""
        body = _calls.unified_request(
            model,
            messages,
            client_id=client_id,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            user=user,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            seed=seed,
            metadata=metadata,
            max_cost_usd=max_cost_usd,
        )
        return self._stream(_calls.chat_stream(body), timeout, retry, request_id)

    def responses(
        self,
        model: str,
        input: Any,
        *,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> Response:
        """An OpenAI Responses API response (``POST /v1/responses`` / ``RouterService.Chat``); ``fields``
        are the API's other parameters (``instructions``, ``previous_response_id``, ``store``,
        ``max_output_tokens``, ``temperature``, ``tools``, ``metadata``…)."""
        return self._run(_calls.responses({"model": model, "input": input, **fields}), timeout, retry, request_id)

    def responses_stream(
        self,
        model: str,
        input: Any,
        *,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> Stream[ResponseEvent]:
        """The typed events of a streamed response (``POST /v1/responses/stream`` / ``RouterService.StreamChat``)."""
        call = _calls.responses_stream({"model": model, "input": input, **fields})
        return self._stream(call, timeout, retry, request_id)

    def get_response(self, response_id: str, *, timeout: float | None = None) -> Response:
        """A stored response (``GET /v1/responses/{id}`` / ``RouterService.GetResponse``)."""
        return self._run(_calls.get_response(response_id), timeout, None, None)

    def delete_response(self, response_id: str, *, timeout: float | None = None) -> bool:
        """Delete a stored response (``DELETE /v1/responses/{id}`` / ``RouterService.DeleteResponse``)."""
        return self._run(_calls.delete_response(response_id), timeout, None, None)

    def embed(
        self,
        model: str,
        input: str | Sequence[str] = (),
        *,
        dimensions: int | None = None,
        user: str | None = None,
        token_inputs: Sequence[Sequence[int]] = (),
        extra: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
    ) -> Embeddings:
        """Embeddings of ``input`` (texts), or of ``token_inputs`` (token id arrays)
        (``POST /v1/embed`` / ``RouterService.Embed``)."""
        texts = [input] if isinstance(input, str) else list(input)
        tokens = [{"tokens": list(t)} for t in token_inputs]
        body = _calls.unified_body(
            model=model, input=texts, dimensions=dimensions, user=user, token_inputs=tokens, extra=extra
        )
        return self._run(_calls.embed(body), timeout, retry, request_id)

    def models(self, model_id: str = "", *, timeout: float | None = None, retry: bool | None = None) -> list[Model]:
        """The models the key may use (or the one ``model_id`` names)."""
        return self._run(_calls.models(model_id), timeout, retry, None)

    def usage(
        self,
        *,
        tenant_id: str = "",
        key_id: str = "",
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        group_by: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> list[UsageRow]:
        """The tenant's usage sums (needs the "usage:read" scope); ``group_by``: "tenant", "key",
        "model" or "provider"."""
        call = _calls.usage(tenant_id, key_id, start_time, end_time, group_by)
        return self._run(call, timeout, retry, None)

    def close(self) -> None:
        """Close the connection pool and the gRPC channel."""
        self._http.close()
        if self._grpc is not None:
            self._grpc.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncClient(_Base):
    """An asyncio client of the gateway's native API, with the same methods as :class:`Client`."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        transport: Transport = "http",
        grpc_target: str | None = None,
        grpc_credentials: Any = None,
        grpc_options: Sequence[tuple[str, Any]] = (),
        timeout: float | None = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        retry_non_idempotent: bool = False,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """The same settings as :class:`Client`."""
        super().__init__(api_key, base_url, transport, grpc_target, timeout, max_retries, retry_non_idempotent)
        self._http = AsyncHttpTransport(self.base_url, self.api_key, dict(default_headers or {}), http_client)
        self._grpc: Any = None
        if transport == "grpc":
            from llm_gateway._grpc import AsyncGrpcTransport

            self._grpc = AsyncGrpcTransport(self.grpc_target, self.api_key, grpc_credentials, list(grpc_options))
        self.jobs = AsyncJobs(self)
        """Async jobs: submit, get, list, cancel, wait."""
        self.admin = AsyncAdmin(self)
        """Admin helpers (an admin key): tenants, keys, credentials."""

    async def _run(self, call: Call[T], timeout: float | None, retry: bool | None, request_id: str | None) -> T:
        rid = _request_id(request_id)
        transport = self._grpc if self._over_grpc(call) else self._http
        retries = 0
        while True:
            try:
                result: T = await transport.request(call, self._timeout(timeout, False), rid)
                return result
            except APIError as error:
                delay = self.retries.delay(retries, error) if self._retries_for(call, retry) else None
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            retries += 1

    async def _stream(
        self, call: Call[T], timeout: float | None, retry: bool | None, request_id: str | None
    ) -> AsyncStream[T]:
        rid = _request_id(request_id)
        transport = self._grpc if self._over_grpc(call) else self._http
        retries = 0
        while True:
            try:
                stream: AsyncStream[T] = await transport.stream(call, self._timeout(timeout, True), rid)
                return stream
            except APIError as error:
                delay = self.retries.delay(retries, error) if self._retries_for(call, retry) else None
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            retries += 1

    async def chat(
        self,
        model: str,
        messages: Messages,
        *,
        client_id: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        user: str | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        seed: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_cost_usd: float | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
    ) -> ChatResponse:
        """A completion (``POST /v1/chat`` / ``RouterService.Chat``); not retried unless ``retry=True``."""
        body = _calls.unified_request(
            model,
            messages,
            client_id=client_id,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            user=user,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            seed=seed,
            metadata=metadata,
            max_cost_usd=max_cost_usd,
        )
        return await self._run(_calls.chat(body), timeout, retry, request_id)

    async def chat_stream(
        self,
        model: str,
        messages: Messages,
        *,
        client_id: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        user: str | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        seed: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_cost_usd: float | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
    ) -> AsyncStream[ChatChunk]:
        """A streamed completion: ``async for`` it; ``await stream.aclose()`` (or ``async with``) to stop early."""
        body = _calls.unified_request(
            model,
            messages,
            client_id=client_id,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            user=user,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            seed=seed,
            metadata=metadata,
            max_cost_usd=max_cost_usd,
        )
        return await self._stream(_calls.chat_stream(body), timeout, retry, request_id)

    async def responses(
        self,
        model: str,
        input: Any,
        *,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> Response:
        """An OpenAI Responses API response (``POST /v1/responses`` / ``RouterService.Chat``)."""
        call = _calls.responses({"model": model, "input": input, **fields})
        return await self._run(call, timeout, retry, request_id)

    async def responses_stream(
        self,
        model: str,
        input: Any,
        *,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> AsyncStream[ResponseEvent]:
        """The typed events of a streamed response (``POST /v1/responses/stream`` / ``RouterService.StreamChat``)."""
        call = _calls.responses_stream({"model": model, "input": input, **fields})
        return await self._stream(call, timeout, retry, request_id)

    async def get_response(self, response_id: str, *, timeout: float | None = None) -> Response:
        """A stored response (``GET /v1/responses/{id}`` / ``RouterService.GetResponse``)."""
        return await self._run(_calls.get_response(response_id), timeout, None, None)

    async def delete_response(self, response_id: str, *, timeout: float | None = None) -> bool:
        """Delete a stored response (``DELETE /v1/responses/{id}`` / ``RouterService.DeleteResponse``)."""
        return await self._run(_calls.delete_response(response_id), timeout, None, None)

    async def embed(
        self,
        model: str,
        input: str | Sequence[str] = (),
        *,
        dimensions: int | None = None,
        user: str | None = None,
        token_inputs: Sequence[Sequence[int]] = (),
        extra: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
        request_id: str | None = None,
    ) -> Embeddings:
        """Embeddings of ``input`` (texts), or of ``token_inputs`` (token id arrays)
        (``POST /v1/embed`` / ``RouterService.Embed``)."""
        texts = [input] if isinstance(input, str) else list(input)
        tokens = [{"tokens": list(t)} for t in token_inputs]
        body = _calls.unified_body(
            model=model, input=texts, dimensions=dimensions, user=user, token_inputs=tokens, extra=extra
        )
        return await self._run(_calls.embed(body), timeout, retry, request_id)

    async def models(
        self, model_id: str = "", *, timeout: float | None = None, retry: bool | None = None
    ) -> list[Model]:
        """The models the key may use (or the one ``model_id`` names)."""
        return await self._run(_calls.models(model_id), timeout, retry, None)

    async def usage(
        self,
        *,
        tenant_id: str = "",
        key_id: str = "",
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        group_by: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> list[UsageRow]:
        """The tenant's usage sums (needs the "usage:read" scope)."""
        call = _calls.usage(tenant_id, key_id, start_time, end_time, group_by)
        return await self._run(call, timeout, retry, None)

    async def aclose(self) -> None:
        """Close the connection pool and the gRPC channel."""
        await self._http.aclose()
        if self._grpc is not None:
            await self._grpc.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Jobs:
    """``client.jobs``: requests run asynchronously by the gateway (``/v1/jobs`` / ``JobService``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(
        self,
        request: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> Job:
        """Queue ``request`` (a chat completions body with ``messages``, or a responses body with
        ``input``); answers at once with the queued job."""
        return self._client._run(_calls.submit_job(request, webhook_url), timeout, retry, None)

    def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job as it is now."""
        return self._client._run(_calls.get_job(job_id), timeout, None, None)

    def list(self, *, limit: int | None = None, after: str | None = None, timeout: float | None = None) -> JobList:
        """A page of the tenant's jobs, newest first."""
        return self._client._run(_calls.list_jobs(limit, after), timeout, None, None)

    def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Cancel the job (a finished job comes back as it ended)."""
        return self._client._run(_calls.cancel_job(job_id), timeout, None, None)

    def wait(self, job_id: str, *, poll_interval: float = 0.5, timeout: float = 300.0) -> Job:
        """Poll the job until it ends; :class:`APITimeoutError` when it has not after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.done:
                return job
            if time.monotonic() + poll_interval > deadline:
                raise APITimeoutError(f"Job {job_id} is still {job.status} after {timeout:g}s.")
            time.sleep(poll_interval)


class AsyncJobs:
    """``client.jobs`` of the :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def submit(
        self,
        request: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> Job:
        """Queue ``request``; answers at once with the queued job."""
        return await self._client._run(_calls.submit_job(request, webhook_url), timeout, retry, None)

    async def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job as it is now."""
        return await self._client._run(_calls.get_job(job_id), timeout, None, None)

    async def list(
        self, *, limit: int | None = None, after: str | None = None, timeout: float | None = None
    ) -> JobList:
        """A page of the tenant's jobs, newest first."""
        return await self._client._run(_calls.list_jobs(limit, after), timeout, None, None)

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Cancel the job (a finished job comes back as it ended)."""
        return await self._client._run(_calls.cancel_job(job_id), timeout, None, None)

    async def wait(self, job_id: str, *, poll_interval: float = 0.5, timeout: float = 300.0) -> Job:
        """Poll the job until it ends; :class:`APITimeoutError` when it has not after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if job.done:
                return job
            if time.monotonic() + poll_interval > deadline:
                raise APITimeoutError(f"Job {job_id} is still {job.status} after {timeout:g}s.")
            await asyncio.sleep(poll_interval)


LimitsArg = Limits | Mapping[str, Any] | None
PolicyArg = Policy | Mapping[str, Any] | None
QuotasArg = Sequence[Quota | Mapping[str, Any]]


class _Tenants:
    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        tenant_id: str,
        *,
        display_name: str = "",
        limits: LimitsArg = None,
        key_defaults: LimitsArg = None,
        policy: PolicyArg = None,
    ) -> Tenant:
        """Create a tenant."""
        call = _calls.create_tenant(
            tenant_id=tenant_id,
            display_name=display_name or None,
            limits=limits,
            key_defaults=key_defaults,
            policy=policy,
        )
        return self._c._run(call, None, None, None)

    def list(self) -> list[Tenant]:
        """Every tenant."""
        return self._c._run(_calls.list_tenants(), None, None, None)

    def update(
        self, tenant_id: str, *, limits: LimitsArg = None, key_defaults: LimitsArg = None, policy: PolicyArg = None
    ) -> Tenant:
        """Replace a tenant's limits, key defaults or policy (those given)."""
        call = _calls.update_tenant(tenant_id, limits=limits, key_defaults=key_defaults, policy=policy)
        return self._c._run(call, None, None, None)


class _Keys:
    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        tenant_id: str,
        *,
        name: str = "",
        scopes: Sequence[str] = (),
        allowed_models: Sequence[str] = (),
        limits: LimitsArg = None,
        expire_time: datetime | None = None,
    ) -> CreatedKey:
        """Create a key; the answer holds its secret, this once."""
        call = _calls.create_key(
            tenant_id=tenant_id,
            name=name or None,
            scopes=list(scopes),
            allowed_models=list(allowed_models),
            limits=limits,
            expire_time=expire_time,
        )
        return self._c._run(call, None, None, None)

    def list(self, *, tenant_id: str = "", include_revoked: bool = False) -> list[ApiKey]:
        """Keys, without their secrets."""
        return self._c._run(_calls.list_keys(tenant_id, include_revoked), None, None, None)

    def update(
        self, key_id: str, *, limits: LimitsArg = None, scopes: Sequence[str] = (), allowed_models: Sequence[str] = ()
    ) -> ApiKey:
        """Replace a key's limits, scopes or allowed models (those given)."""
        call = _calls.update_key(key_id, limits=limits, scopes=list(scopes), allowed_models=list(allowed_models))
        return self._c._run(call, None, None, None)

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key for good."""
        return self._c._run(_calls.revoke_key(key_id), None, None, None)


class _Credentials:
    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        provider: str,
        secret: str | Mapping[str, Any],
        *,
        tenant_id: str = "",
        name: str = "",
        priority: int = 0,
        limits: QuotasArg = (),
    ) -> Credential:
        """Store an upstream credential: ``secret`` is an API key, or an OAuth token set as a dict."""
        call = _calls.create_credential(
            secret,
            tenant_id=tenant_id or None,
            provider=provider,
            name=name or None,
            priority=priority or None,
            limits=list(limits),
        )
        return self._c._run(call, None, None, None)

    def list(self, *, tenant_id: str = "", provider: str = "") -> list[Credential]:
        """Credentials, without their secrets."""
        return self._c._run(_calls.list_credentials(tenant_id, provider), None, None, None)

    def update(
        self,
        credential_id: str,
        *,
        name: str | None = None,
        priority: int | None = None,
        state: str | None = None,
        replace_limits: bool = False,
        limits: QuotasArg = (),
    ) -> Credential:
        """Change a credential's settings (those given); ``state``: "CREDENTIAL_STATE_ACTIVE" / "…_DISABLED"."""
        call = _calls.update_credential(
            credential_id,
            name=name,
            priority=priority,
            state=state,
            replace_limits=replace_limits or None,
            limits=list(limits),
        )
        return self._c._run(call, None, None, None)

    def rotate(self, credential_id: str, secret: str | Mapping[str, Any]) -> Credential:
        """Replace a credential's secret."""
        return self._c._run(_calls.rotate_credential(credential_id, secret), None, None, None)

    def delete(self, credential_id: str) -> None:
        """Delete a credential."""
        self._c._run(_calls.delete_credential(credential_id), None, None, None)


class Admin:
    """``client.admin``: tenants, keys and credentials (needs an admin key)."""

    def __init__(self, client: Client) -> None:
        self.tenants = _Tenants(client)
        self.keys = _Keys(client)
        self.credentials = _Credentials(client)


class _AsyncTenants:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(
        self,
        tenant_id: str,
        *,
        display_name: str = "",
        limits: LimitsArg = None,
        key_defaults: LimitsArg = None,
        policy: PolicyArg = None,
    ) -> Tenant:
        """Create a tenant."""
        call = _calls.create_tenant(
            tenant_id=tenant_id,
            display_name=display_name or None,
            limits=limits,
            key_defaults=key_defaults,
            policy=policy,
        )
        return await self._c._run(call, None, None, None)

    async def list(self) -> list[Tenant]:
        """Every tenant."""
        return await self._c._run(_calls.list_tenants(), None, None, None)

    async def update(
        self, tenant_id: str, *, limits: LimitsArg = None, key_defaults: LimitsArg = None, policy: PolicyArg = None
    ) -> Tenant:
        """Replace a tenant's limits, key defaults or policy (those given)."""
        call = _calls.update_tenant(tenant_id, limits=limits, key_defaults=key_defaults, policy=policy)
        return await self._c._run(call, None, None, None)


class _AsyncKeys:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(
        self,
        tenant_id: str,
        *,
        name: str = "",
        scopes: Sequence[str] = (),
        allowed_models: Sequence[str] = (),
        limits: LimitsArg = None,
        expire_time: datetime | None = None,
    ) -> CreatedKey:
        """Create a key; the answer holds its secret, this once."""
        call = _calls.create_key(
            tenant_id=tenant_id,
            name=name or None,
            scopes=list(scopes),
            allowed_models=list(allowed_models),
            limits=limits,
            expire_time=expire_time,
        )
        return await self._c._run(call, None, None, None)

    async def list(self, *, tenant_id: str = "", include_revoked: bool = False) -> list[ApiKey]:
        """Keys, without their secrets."""
        return await self._c._run(_calls.list_keys(tenant_id, include_revoked), None, None, None)

    async def update(
        self, key_id: str, *, limits: LimitsArg = None, scopes: Sequence[str] = (), allowed_models: Sequence[str] = ()
    ) -> ApiKey:
        """Replace a key's limits, scopes or allowed models (those given)."""
        call = _calls.update_key(key_id, limits=limits, scopes=list(scopes), allowed_models=list(allowed_models))
        return await self._c._run(call, None, None, None)

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key for good."""
        return await self._c._run(_calls.revoke_key(key_id), None, None, None)


class _AsyncCredentials:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(
        self,
        provider: str,
        secret: str | Mapping[str, Any],
        *,
        tenant_id: str = "",
        name: str = "",
        priority: int = 0,
        limits: QuotasArg = (),
    ) -> Credential:
        """Store an upstream credential: ``secret`` is an API key, or an OAuth token set as a dict."""
        call = _calls.create_credential(
            secret,
            tenant_id=tenant_id or None,
            provider=provider,
            name=name or None,
            priority=priority or None,
            limits=list(limits),
        )
        return await self._c._run(call, None, None, None)

    async def list(self, *, tenant_id: str = "", provider: str = "") -> list[Credential]:
        """Credentials, without their secrets."""
        return await self._c._run(_calls.list_credentials(tenant_id, provider), None, None, None)

    async def update(
        self,
        credential_id: str,
        *,
        name: str | None = None,
        priority: int | None = None,
        state: str | None = None,
        replace_limits: bool = False,
        limits: QuotasArg = (),
    ) -> Credential:
        """Change a credential's settings (those given)."""
        call = _calls.update_credential(
            credential_id,
            name=name,
            priority=priority,
            state=state,
            replace_limits=replace_limits or None,
            limits=list(limits),
        )
        return await self._c._run(call, None, None, None)

    async def rotate(self, credential_id: str, secret: str | Mapping[str, Any]) -> Credential:
        """Replace a credential's secret."""
        return await self._c._run(_calls.rotate_credential(credential_id, secret), None, None, None)

    async def delete(self, credential_id: str) -> None:
        """Delete a credential."""
        await self._c._run(_calls.delete_credential(credential_id), None, None, None)


class AsyncAdmin:
    """``client.admin`` of the :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient) -> None:
        self.tenants = _AsyncTenants(client)
        self.keys = _AsyncKeys(client)
        self.credentials = _AsyncCredentials(client)
