"""The HTTP transport (httpx): the edge's native routes, NDJSON and SSE streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx
import httpx_sse

from llm_gateway._calls import Call
from llm_gateway._streams import AsyncStream, Stream
from llm_gateway.errors import APIConnectionError, APIError, APITimeoutError, from_http, from_stream_line

T = TypeVar("T")


def _headers(api_key: str | None, request_id: str, extra: dict[str, str]) -> dict[str, str]:
    headers = {**extra, "x-request-id": request_id}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _transport_error(exc: httpx.HTTPError, request_id: str) -> APIError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"No answer in time: {exc!r}", request_id=request_id)
    return APIConnectionError(f"Could not reach the gateway: {exc!r}", request_id=request_id)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _decode_line(call: Call[T], line: str, request_id: str) -> T | None:
    if not line.strip():
        return None
    data = json.loads(line)
    if isinstance(data, dict) and set(data) == {"error"}:
        # The stream failed after its first chunk: the edge ends it with one error line.
        raise from_stream_line(data["error"], request_id)
    return call.decode(data, request_id)


def _decode_event(call: Call[T], event: httpx_sse.ServerSentEvent, request_id: str) -> T | None:
    if not event.data:
        return None
    data = json.loads(event.data)
    if isinstance(data, dict) and event.event and "type" not in data:
        data = {"type": event.event, **data}
    return call.decode(data, request_id)


class HttpTransport:
    """Blocking calls over one pooled ``httpx.Client``."""

    def __init__(
        self, base_url: str, api_key: str | None, headers: dict[str, str], client: httpx.Client | None
    ) -> None:
        self._api_key = api_key
        self._extra = headers
        self._owned = client is None
        self._client = client or httpx.Client(base_url=base_url)
        if client is not None and not str(client.base_url):
            client.base_url = httpx.URL(base_url)

    def request(self, call: Call[T], timeout: float | None, request_id: str) -> T:
        """Run a unary call."""
        try:
            response = self._client.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                headers=_headers(self._api_key, request_id, self._extra),
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, request_id) from exc
        if response.status_code >= 400:
            raise from_http(response.status_code, _body(response), response.headers, request_id)
        return call.decode(response.json(), response.headers.get("x-request-id") or request_id)

    def stream(self, call: Call[T], timeout: float | None, request_id: str) -> Stream[T]:
        """Open a streaming call; the status is known once the first chunk is ready."""
        request = self._client.build_request(
            call.method,
            call.path,
            json=call.json,
            headers=_headers(self._api_key, request_id, self._extra),
            timeout=timeout,
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, request_id) from exc
        if response.status_code >= 400:
            try:
                response.read()
                raise from_http(response.status_code, _body(response), response.headers, request_id)
            finally:
                response.close()
        rid = response.headers.get("x-request-id") or request_id

        def items() -> Iterator[T]:
            try:
                if call.stream == "sse":
                    for event in httpx_sse.EventSource(response).iter_sse():
                        item = _decode_event(call, event, rid)
                        if item is not None:
                            yield item
                else:
                    for line in response.iter_lines():
                        item = _decode_line(call, line, rid)
                        if item is not None:
                            yield item
            except httpx.HTTPError as exc:
                raise _transport_error(exc, rid) from exc
            finally:
                response.close()

        return Stream(items(), response.close, rid)

    def close(self) -> None:
        """Close the connection pool (when this transport opened it)."""
        if self._owned:
            self._client.close()


class AsyncHttpTransport:
    """Async calls over one pooled ``httpx.AsyncClient``."""

    def __init__(
        self, base_url: str, api_key: str | None, headers: dict[str, str], client: httpx.AsyncClient | None
    ) -> None:
        self._api_key = api_key
        self._extra = headers
        self._owned = client is None
        self._client = client or httpx.AsyncClient(base_url=base_url)
        if client is not None and not str(client.base_url):
            client.base_url = httpx.URL(base_url)

    async def request(self, call: Call[T], timeout: float | None, request_id: str) -> T:
        """Run a unary call."""
        try:
            response = await self._client.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                headers=_headers(self._api_key, request_id, self._extra),
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc, request_id) from exc
        if response.status_code >= 400:
            raise from_http(response.status_code, _body(response), response.headers, request_id)
        return call.decode(response.json(), response.headers.get("x-request-id") or request_id)

    async def stream(self, call: Call[T], timeout: float | None, request_id: str) -> AsyncStream[T]:
        """Open a streaming call; the status is known once the first chunk is ready."""
        request = self._client.build_request(
            call.method,
            call.path,
            json=call.json,
            headers=_headers(self._api_key, request_id, self._extra),
            timeout=timeout,
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, request_id) from exc
        if response.status_code >= 400:
            try:
                await response.aread()
                raise from_http(response.status_code, _body(response), response.headers, request_id)
            finally:
                await response.aclose()
        rid = response.headers.get("x-request-id") or request_id

        async def items() -> AsyncIterator[T]:
            try:
                if call.stream == "sse":
                    async for event in httpx_sse.EventSource(response).aiter_sse():
                        item = _decode_event(call, event, rid)
                        if item is not None:
                            yield item
                else:
                    async for line in response.aiter_lines():
                        item = _decode_line(call, line, rid)
                        if item is not None:
                            yield item
            except httpx.HTTPError as exc:
                raise _transport_error(exc, rid) from exc
            finally:
                await response.aclose()

        return AsyncStream(items(), response.aclose, rid)

    async def aclose(self) -> None:
        """Close the connection pool (when this transport opened it)."""
        if self._owned:
            await self._client.aclose()
