"""Upstream HTTP plumbing every HTTP adapter shares: the pooled client, error mapping, the SSE reader.

One error table for every upstream (DESIGN.md, "Errors"):

========================  ===================  =========  ==========================
upstream                  gRPC code            retryable  reason
========================  ===================  =========  ==========================
400, 413, 422             INVALID_ARGUMENT     no         UPSTREAM_ERROR (CONTENT_FILTERED for a
                                                          content-filter refusal,
                                                          CONTEXT_LENGTH_EXCEEDED for a prompt
                                                          over the context window)
401                       UNAUTHENTICATED      no         UPSTREAM_ERROR
403                       PERMISSION_DENIED    no         UPSTREAM_ERROR
404                       NOT_FOUND            no         UPSTREAM_ERROR
408, read timeout         DEADLINE_EXCEEDED    yes        UPSTREAM_TIMEOUT
429                       RESOURCE_EXHAUSTED   yes        UPSTREAM_ERROR (+ retry_after_s)
5xx, 529, connect error   UNAVAILABLE          yes        UPSTREAM_ERROR (UPSTREAM_TIMEOUT when
                                                          connecting timed out)
other 4xx                 FAILED_PRECONDITION  no         UPSTREAM_ERROR
3xx (no redirects)        UNAVAILABLE          no         UPSTREAM_ERROR
stream cut / malformed    UNAVAILABLE          yes        UPSTREAM_STREAM_BROKEN
stream idle too long      DEADLINE_EXCEEDED    yes        UPSTREAM_TIMEOUT
========================  ===================  =========  ==========================

ErrorInfo metadata: ``retryable`` ("true"/"false"), ``provider``, and when the upstream answered,
``upstream_status`` plus what its body said: ``upstream_code``, ``upstream_type`` and
``upstream_param`` (the field an OpenAI-style body blames). For
OpenAI-style bodies (``{"error": {"message", "type", "code"}}``) the code is ``error.code``, or
``error.type`` when the code is null; for Anthropic (``{"type": "error", "error": {"type",
"message"}}``) both are ``error.type``; for Google (``{"error": {"code", "message", "status"}}``)
both are ``error.status`` and ``upstream_reason`` is the ``google.rpc.ErrorInfo`` reason when
the body has one. The status message is the upstream's own message; it and every field above
that comes from the body have anything that looks like an API key (or is a configured secret)
removed, since all of them can reach the client.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import grpc

from gateway_common.config import HttpProviderConfig
from gateway_common.errors import GatewayError, Reason
from services.providers.client import UpstreamClient
from services.providers.sse import ServerSentEvent, SSEParser
from services.providers.tenant_credentials import current_secret

_RETRYABLE_STATUS: dict[int, tuple[grpc.StatusCode, bool]] = {
    400: (grpc.StatusCode.INVALID_ARGUMENT, False),
    401: (grpc.StatusCode.UNAUTHENTICATED, False),
    403: (grpc.StatusCode.PERMISSION_DENIED, False),
    404: (grpc.StatusCode.NOT_FOUND, False),
    408: (grpc.StatusCode.DEADLINE_EXCEEDED, True),
    413: (grpc.StatusCode.INVALID_ARGUMENT, False),
    422: (grpc.StatusCode.INVALID_ARGUMENT, False),
    429: (grpc.StatusCode.RESOURCE_EXHAUSTED, True),
}

# Content-filter refusals (Azure's 400 "content_filter"), matched on codes, never on message text.
_CONTENT_FILTER_CODES = frozenset({"content_filter", "ResponsibleAIPolicyViolation"})
# A prompt longer than the model's context window (OpenAI, Azure, DeepSeek, vLLM's code), matched on codes.
_CONTEXT_LENGTH_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})

# Keys echoed back by upstreams, masked or not: "sk-…" and "not-a-re*****ized". A key glued to
# an identifier ("invalid_key_sk-…") counts too, so the look-behind excludes letters and digits only.
_KEY_PATTERN = re.compile(r"(?<![A-Za-z0-9])sk-[\w\-*]{4,}|[\w\-]*\*{4,}[\w\-]*")
_REDACTED = "[REDACTED]"
_MAX_PLAIN_BODY = 300
# How long to wait for the end of a response after its terminating event (see drain()).
_DRAIN_TIMEOUT_S = 0.25


def build_client(
    config: HttpProviderConfig,
    base_url: str,
    headers: Mapping[str, str],
    *,
    key_header: str = "Authorization",
    key_prefix: str = "Bearer ",
) -> UpstreamClient:
    """The one pooled client of a provider: its base URL, auth and extra headers, timeouts and limits.

    ``key_header`` and ``key_prefix`` say how this upstream takes an API key: a tenant's own key
    replaces the provider's there for the calls made with it.

    ``read_timeout_s`` bounds the wait for each read (for a stream, the response headers; after
    that the stream idle timeout of :func:`iter_sse` applies too); ``total_timeout_s`` is applied
    per call by :func:`send` and :func:`iter_sse`.
    """
    return UpstreamClient(config, base_url, headers, key_header=key_header, key_prefix=key_prefix)


class UpstreamResponse:
    """A non-streamed upstream answer: status, headers and the whole body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        """The body parsed as JSON (ValueError when it is not)."""
        return json.loads(self.content)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given secrets (and the current tenant credential's) or anything shaped
    like an API key."""
    for secret in (*secrets, *current_secret()):
        if secret and len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    return _KEY_PATTERN.sub(_REDACTED, text)


def _metadata(provider: str, retryable: bool, **fields: str | int | None) -> dict[str, str]:
    metadata = {"retryable": "true" if retryable else "false", "provider": provider}
    metadata.update({key: str(value) for key, value in fields.items() if value is not None and value != ""})
    return metadata


# ---------------------------------------------------------------------------------------------
# Errors the adapters raise themselves
# ---------------------------------------------------------------------------------------------


def stream_broken(provider: str, message: str) -> GatewayError:
    """A stream cut before its terminating event, or carrying a chunk that cannot be parsed."""
    return GatewayError(grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_STREAM_BROKEN, message, _metadata(provider, True))


def upstream_timeout(provider: str, message: str) -> GatewayError:
    """The upstream took too long: a read, the whole call, or the gap between stream events."""
    return GatewayError(grpc.StatusCode.DEADLINE_EXCEEDED, Reason.UPSTREAM_TIMEOUT, message, _metadata(provider, True))


def not_configured(provider: str, variable: str, what: str = "API key") -> GatewayError:
    """A provider that cannot be called because an environment variable is unset (the edge answers 503)."""
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        Reason.PROVIDER_NOT_CONFIGURED,
        f"provider '{provider}' is not configured: set the environment variable {variable} (its {what})",
        _metadata(provider, False, missing_variable=variable),
    )


def content_filtered(
    provider: str,
    message: str,
    *,
    upstream_status: int | None = None,
    upstream_code: str | None = None,
    upstream_type: str | None = None,
) -> GatewayError:
    """The upstream refused the prompt or the answer on content-policy grounds (not retryable)."""
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.CONTENT_FILTERED,
        message,
        _metadata(
            provider,
            False,
            upstream_status=upstream_status,
            upstream_code=_redacted(upstream_code, ()),
            upstream_type=_redacted(upstream_type, ()),
        ),
    )


def unimplemented(provider: str, operation: str) -> GatewayError:
    """An operation this provider's API does not offer (for example embeddings on Anthropic)."""
    return GatewayError(
        grpc.StatusCode.UNIMPLEMENTED,
        Reason.UNSUPPORTED_FIELD,
        f"provider '{provider}' does not support {operation}",
        _metadata(provider, False),
    )


def bad_response(provider: str, message: str) -> GatewayError:
    """A successful status with a body the adapter cannot understand (retryable: it may be transient)."""
    return GatewayError(grpc.StatusCode.UNAVAILABLE, Reason.UPSTREAM_ERROR, message, _metadata(provider, True))


# ---------------------------------------------------------------------------------------------
# Upstream error responses
# ---------------------------------------------------------------------------------------------


def _duration_s(value: Any) -> float | None:
    # google.protobuf.Duration in JSON: "34.4s".
    if isinstance(value, str) and value.endswith("s"):
        try:
            seconds = float(value[:-1])
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def retry_after_s(headers: Mapping[str, str], body: Any = None, now: float | None = None) -> float | None:
    """Seconds to wait before retrying: ``retry-after-ms``, ``Retry-After`` (seconds or HTTP date),
    or a ``google.rpc.RetryInfo`` in a Google error body; None when the upstream said nothing."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is not None:
        try:
            value = float(raw)
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            try:
                when = parsedate_to_datetime(raw).timestamp()
            except (TypeError, ValueError):
                pass
            else:
                return max(0.0, when - (time.time() if now is None else now))
    error = _error_object(body)
    if error is not None:
        for detail in error.get("details") or []:
            if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
                return _duration_s(detail.get("retryDelay"))
    return None


def _error_object(body: Any) -> dict[str, Any] | None:
    # Gemini's non-SSE stream wraps the error in a JSON array.
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error: dict[str, Any] = body["error"]
        return error
    return None


def _fields(body: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, code, type, google reason) from any of the three error body styles."""
    error = _error_object(body)
    if error is not None:
        message = error.get("message") if isinstance(error.get("message"), str) else None
        if isinstance(error.get("status"), str) and isinstance(error.get("code"), int):
            reason = None
            for detail in error.get("details") or []:
                if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo"):
                    reason = str(detail.get("reason") or "") or None
            return message, error["status"], error["status"], reason
        kind = error.get("type") if isinstance(error.get("type"), str) else None
        code = error.get("code")
        return message, str(code) if code is not None else kind, kind, None
    if isinstance(body, dict):
        # vLLM-style flat errors ({"object": "error", "message", "type", "code"}) and {"error": "text"}.
        message = body.get("message") if isinstance(body.get("message"), str) else None
        if message is None and isinstance(body.get("error"), str):
            message = body["error"]
        if message is None and isinstance(body.get("detail"), str):
            message = body["detail"]
        kind = body.get("type") if isinstance(body.get("type"), str) else None
        code = body.get("code")
        return message, str(code) if code is not None else kind, kind, None
    return None, None, None, None


def _param(body: Any) -> str | None:
    """The request field an OpenAI-style error body blames (``error.param``), when it names one."""
    error = _error_object(body)
    source = error if error is not None else body
    param = source.get("param") if isinstance(source, dict) else None
    return param if isinstance(param, str) and param else None


def _redacted(value: str | None, secrets: Iterable[str | None]) -> str | None:
    return None if value is None else redact(value, secrets)


def _is_content_filter(body: Any, code: str | None) -> bool:
    if code in _CONTENT_FILTER_CODES:
        return True
    error = _error_object(body)
    inner = error.get("innererror") if error else None
    return isinstance(inner, dict) and inner.get("code") in _CONTENT_FILTER_CODES


def upstream_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Iterable[str | None] = (),
) -> GatewayError:
    """The GatewayError for an upstream's error response (status, headers, raw body), per the table above."""
    secrets = tuple(secrets)  # read once per field below
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    message, code, kind, google_reason = _fields(parsed)
    # Every string of the body that reaches the client is redacted alike: an upstream that echoes
    # the key it refused may put it in ``code`` or ``param`` as readily as in ``message``.
    code, kind, google_reason = (_redacted(value, secrets) for value in (code, kind, google_reason))
    param = _redacted(_param(parsed), secrets)
    if message is None:
        text = body.decode("utf-8", "replace").strip()
        message = f"{provider} answered HTTP {status}"
        if text and len(text) <= _MAX_PLAIN_BODY and not text.lstrip().startswith("<"):
            message += f": {text}"
    message = redact(message, secrets)
    if status in _RETRYABLE_STATUS:
        grpc_code, retryable = _RETRYABLE_STATUS[status]
    elif status >= 500:
        grpc_code, retryable = grpc.StatusCode.UNAVAILABLE, True
    elif status >= 400:
        grpc_code, retryable = grpc.StatusCode.FAILED_PRECONDITION, False
    else:
        grpc_code, retryable = grpc.StatusCode.UNAVAILABLE, False
    reason: Reason = Reason.UPSTREAM_TIMEOUT if status == 408 else Reason.UPSTREAM_ERROR
    if status < 500 and _is_content_filter(parsed, code):
        grpc_code, retryable, reason = grpc.StatusCode.INVALID_ARGUMENT, False, Reason.CONTENT_FILTERED
    elif status < 500 and code in _CONTEXT_LENGTH_CODES:
        # Not retryable here, but a deployment with a larger context window may take it.
        grpc_code, retryable, reason = grpc.StatusCode.INVALID_ARGUMENT, False, Reason.CONTEXT_LENGTH_EXCEEDED
    metadata = _metadata(
        provider,
        retryable,
        upstream_status=status,
        upstream_code=code,
        upstream_type=kind,
        upstream_reason=google_reason,
        upstream_param=param,
    )
    return GatewayError(grpc_code, reason, message, metadata, retry_after_s=retry_after_s(headers, parsed))


def error_from_response(
    response: UpstreamResponse, provider: str, *, secrets: Iterable[str | None] = ()
) -> GatewayError:
    """The GatewayError for a response that is not 2xx, its body read (a redirect is not followed:
    it means a wrong base URL, so it is not retryable)."""
    return upstream_error(provider, response.status_code, response.headers, response.content, secrets=secrets)


def transport_error(
    exc: aiohttp.ClientError,
    provider: str,
    *,
    during_stream: bool = False,
    secrets: Iterable[str | None] = (),
) -> GatewayError:
    """The GatewayError for a client failure: no HTTP answer, or a body that broke off.

    All are retryable except a base URL the client cannot use (a configuration mistake).
    """
    detail = redact(str(exc) or type(exc).__name__, secrets)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # Connecting, or waiting for a pooled connection: nothing reached the upstream, so
        # UNAVAILABLE like a refused connection, but named a timeout.
        return GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.UPSTREAM_TIMEOUT,
            f"timed out connecting to {provider}: {detail}",
            _metadata(provider, True),
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return upstream_timeout(provider, f"timed out waiting for {provider}: {detail}")
    if during_stream:
        return stream_broken(provider, f"the stream from {provider} broke off: {detail}")
    if isinstance(exc, aiohttp.InvalidURL):
        return GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            Reason.PROVIDER_NOT_CONFIGURED,
            f"provider '{provider}' has an unusable base URL: {detail}",
            _metadata(provider, False),
        )
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        Reason.UPSTREAM_ERROR,
        f"cannot reach {provider}: {detail}",
        _metadata(provider, True),
    )


# ---------------------------------------------------------------------------------------------
# Calls
# ---------------------------------------------------------------------------------------------


async def send(
    client: UpstreamClient,
    method: str,
    url: str,
    *,
    provider: str,
    total_timeout_s: float,
    secrets: Iterable[str | None] = (),
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    params: Mapping[str, Any] | None = None,
) -> UpstreamResponse:
    """One non-streaming call: the whole exchange bounded by ``total_timeout_s``, failures mapped.

    Returns a successful response with its body read; raises GatewayError otherwise.
    """
    try:
        async with asyncio.timeout(total_timeout_s):
            async with client.request(method, url, headers=headers, json=json, params=params) as raw:
                response = UpstreamResponse(raw.status, raw.headers, await raw.read())
    except aiohttp.ClientError as exc:
        # Before TimeoutError: aiohttp's own read and connect timeouts are TimeoutErrors too.
        raise transport_error(exc, provider, secrets=secrets) from exc
    except TimeoutError:
        raise upstream_timeout(provider, f"{provider} did not answer within {total_timeout_s:g}s") from None
    if not response.is_success:
        raise error_from_response(response, provider, secrets=secrets)
    return response


def read_json(response: UpstreamResponse, provider: str) -> Any:
    """The JSON body of a successful response; an unparseable one is a retryable upstream error."""
    try:
        return response.json()
    except ValueError:
        raise bad_response(
            provider, f"{provider} answered HTTP {response.status_code} with a body that is not JSON"
        ) from None


class UpstreamStream:
    """A streamed upstream answer: status and headers, the body read as it arrives."""

    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = response.headers

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it arrived (b"" at its clean end); aiohttp errors as they come."""
        return await self._response.content.readany()

    async def read_all(self, *, provider: str, timeout_s: float, secrets: Iterable[str | None] = ()) -> bytes:
        """The rest of the body, within ``timeout_s``; a broken or late body raises GatewayError."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._response.read()
        except aiohttp.ClientError as exc:
            raise transport_error(exc, provider, during_stream=True, secrets=secrets) from exc
        except TimeoutError:
            raise upstream_timeout(
                provider, f"the stream from {provider} did not finish within {timeout_s:g}s"
            ) from None

    def close(self) -> None:
        """Give the connection back to the pool when the body was read to its end, else close it
        (which is how the upstream learns that the caller went away)."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


@asynccontextmanager
async def open_stream(
    client: UpstreamClient,
    method: str,
    url: str,
    *,
    provider: str,
    secrets: Iterable[str | None] = (),
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    params: Mapping[str, Any] | None = None,
) -> AsyncIterator[UpstreamStream]:
    """A streaming call: yields the successful response with its body unread and closes it on exit.

    Leaving the block for any reason (the stream ended, an error, the caller cancelled) closes the
    upstream response, so a cancelled client never leaves an upstream request running. Waiting for
    the response headers is bounded by the read timeout.
    """
    request = client.request(method, url, headers=headers, json=json, params=params)
    try:
        raw: aiohttp.ClientResponse = await request.__aenter__()
    except aiohttp.ClientError as exc:
        raise transport_error(exc, provider, secrets=secrets) from exc
    stream = UpstreamStream(raw)
    try:
        if not 200 <= raw.status < 300:
            try:
                body = await raw.read()
            except aiohttp.ClientError as exc:
                raise transport_error(exc, provider, secrets=secrets) from exc
            raise error_from_response(UpstreamResponse(raw.status, raw.headers, body), provider, secrets=secrets)
        yield stream
    finally:
        stream.close()
        await request.__aexit__(None, None, None)


def provider_events(
    response: UpstreamStream, *, provider: str, config: HttpProviderConfig, secrets: Iterable[str | None] = ()
) -> AsyncGenerator[ServerSentEvent, None]:
    """:func:`iter_sse` with the provider's configured idle and total stream timeouts."""
    return iter_sse(
        response,
        provider=provider,
        idle_timeout_s=config.stream_idle_timeout_s,
        total_timeout_s=config.total_timeout_s,
        secrets=secrets,
    )


async def iter_sse(
    response: UpstreamStream,
    *,
    provider: str,
    idle_timeout_s: float,
    total_timeout_s: float | None = None,
    secrets: Iterable[str | None] = (),
) -> AsyncGenerator[ServerSentEvent, None]:
    """The server-sent events of ``response`` as they arrive (parsed by :class:`SSEParser`).

    Raises GatewayError: DEADLINE_EXCEEDED (UPSTREAM_TIMEOUT) when no event arrives for
    ``idle_timeout_s`` or the stream outlives ``total_timeout_s``; UNAVAILABLE
    (UPSTREAM_STREAM_BROKEN) when the connection breaks or the response is not an event stream.
    Ending without error says nothing about completeness: the adapter checks for its protocol's
    terminating event. A last event not followed by a blank line is dispatched when the body
    ended cleanly (as the official SDKs do; some recordings end that way); a body cut off raises
    instead.
    """
    content_type = response.headers.get("content-type", "").partition(";")[0]
    if "text/event-stream" not in content_type:
        raise stream_broken(
            provider, f"{provider} did not answer with an event stream: its Content-Type is {content_type!r}"
        )
    parser = SSEParser()
    now = time.monotonic()
    deadline = None if total_timeout_s is None else now + total_timeout_s
    # The idle clock restarts at each event, not at each read (a read may carry half an event).
    idle_until = now + idle_timeout_s
    while True:
        now = time.monotonic()
        wait = idle_until - now if deadline is None else min(idle_until, deadline) - now
        try:
            async with asyncio.timeout(max(0.0, wait)):
                chunk = await response.read_chunk()
        except aiohttp.ClientError as exc:
            # Before TimeoutError: aiohttp's own read timeout is a TimeoutError too.
            raise transport_error(exc, provider, during_stream=True, secrets=secrets) from exc
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise upstream_timeout(
                    provider, f"the stream from {provider} did not finish within {total_timeout_s:g}s"
                ) from None
            raise upstream_timeout(
                provider, f"the stream from {provider} sent nothing for {idle_timeout_s:g}s"
            ) from None
        events = parser.feed(chunk) if chunk else parser.end()
        if events:
            for event in events:
                yield event
            idle_until = time.monotonic() + idle_timeout_s
        if not chunk:
            return


async def drain(events: AsyncIterator[ServerSentEvent], timeout_s: float = _DRAIN_TIMEOUT_S) -> None:
    """Read (and ignore) what follows a stream's terminating event, for at most ``timeout_s``.

    A response read to its end returns its connection to the pool; one closed early costs the
    next call a new connection (and TLS handshake). Whatever goes wrong here does not matter any
    more: the answer is complete.
    """
    try:
        async with asyncio.timeout(timeout_s):
            async for _ in events:
                pass
    except (TimeoutError, GatewayError):
        pass
