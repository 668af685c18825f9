"""The shared upstream plumbing: the error table, error bodies of every style, Retry-After, the SSE reader."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any

import aiohttp
import grpc
import pytest

from gateway_common.errors import GatewayError
from services.providers.http import iter_sse, retry_after_s, transport_error, upstream_error


def _error(status: int, body: Any = None, headers: dict[str, str] | None = None, **kwargs: Any) -> GatewayError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    return upstream_error("up", status, headers or {}, raw, **kwargs)


@pytest.mark.parametrize(
    ("status", "code", "retryable", "reason"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT, False, "UPSTREAM_ERROR"),
        (401, grpc.StatusCode.UNAUTHENTICATED, False, "UPSTREAM_ERROR"),
        (403, grpc.StatusCode.PERMISSION_DENIED, False, "UPSTREAM_ERROR"),
        (404, grpc.StatusCode.NOT_FOUND, False, "UPSTREAM_ERROR"),
        (408, grpc.StatusCode.DEADLINE_EXCEEDED, True, "UPSTREAM_TIMEOUT"),
        (409, grpc.StatusCode.FAILED_PRECONDITION, False, "UPSTREAM_ERROR"),
        (413, grpc.StatusCode.INVALID_ARGUMENT, False, "UPSTREAM_ERROR"),
        (422, grpc.StatusCode.INVALID_ARGUMENT, False, "UPSTREAM_ERROR"),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED, True, "UPSTREAM_ERROR"),
        (500, grpc.StatusCode.UNAVAILABLE, True, "UPSTREAM_ERROR"),
        (502, grpc.StatusCode.UNAVAILABLE, True, "UPSTREAM_ERROR"),
        (503, grpc.StatusCode.UNAVAILABLE, True, "UPSTREAM_ERROR"),
        (529, grpc.StatusCode.UNAVAILABLE, True, "UPSTREAM_ERROR"),
    ],
)
def test_the_status_table(status: int, code: grpc.StatusCode, retryable: bool, reason: str) -> None:
    error = _error(status, {"error": {"message": "m", "type": "t", "code": "c"}})
    assert (error.code, error.reason, error.retryable) == (code, reason, retryable)
    assert error.metadata == {
        "retryable": "true" if retryable else "false",
        "provider": "up",
        "upstream_status": str(status),
        "upstream_code": "c",
        "upstream_type": "t",
    }
    assert error.message == "m"


def test_anthropic_style_body() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "r"}
    error = _error(529, body)
    assert (error.message, error.metadata["upstream_code"], error.metadata["upstream_type"]) == (
        "Overloaded",
        "overloaded_error",
        "overloaded_error",
    )


def test_google_style_body_with_retry_info_and_reason() -> None:
    body = [
        {
            "error": {
                "code": 429,
                "message": "You exceeded your current quota.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34.4s"},
                ],
            }
        }
    ]
    error = _error(429, body)
    assert error.message == "You exceeded your current quota."
    assert error.metadata["upstream_code"] == error.metadata["upstream_type"] == "RESOURCE_EXHAUSTED"
    assert error.metadata["upstream_reason"] == "RATE_LIMIT_EXCEEDED"
    assert error.retry_after_s == pytest.approx(34.4)


@pytest.mark.parametrize(
    ("body", "message", "upstream_code"),
    [
        (
            {"object": "error", "message": "model too big", "type": "BadRequestError", "code": 400},
            "model too big",
            "400",
        ),
        ({"error": "model 'x' not found"}, "model 'x' not found", None),
        ({"detail": "Not Found"}, "Not Found", None),
        (b"upstream says no", "up answered HTTP 400: upstream says no", None),
        (b"<html><body>Bad Gateway</body></html>", "up answered HTTP 400", None),
        (b"", "up answered HTTP 400", None),
    ],
)
def test_other_bodies_still_give_a_message(body: Any, message: str, upstream_code: str | None) -> None:
    error = _error(400, body)
    assert error.message == message
    assert error.metadata.get("upstream_code") == upstream_code


def test_an_azure_content_filter_error_is_content_filtered() -> None:
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {}},
        }
    }
    error = _error(400, body)
    assert (error.code, error.reason, error.retryable) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTENT_FILTERED", False)
    assert error.metadata["upstream_code"] == "content_filter"


def test_keys_never_reach_the_message() -> None:
    body = {"error": {"message": "Incorrect API key provided: my-secret-key-123. Or sk-proj-abcdef. Or ab****yz."}}
    error = _error(401, body, secrets=("my-secret-key-123",))
    assert "my-secret-key-123" not in error.message
    assert "sk-proj" not in error.message and "****" not in error.message
    assert error.message.startswith("Incorrect API key provided: [REDACTED].")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"Retry-After": formatdate(1_000_030, usegmt=True)}, 30.0),
        ({"Retry-After": formatdate(999_000, usegmt=True)}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(headers, now=1_000_000) == (pytest.approx(expected) if expected is not None else None)


def test_a_429_carries_retry_after() -> None:
    assert _error(429, {"error": {"message": "slow down"}}, {"retry-after": "2"}).retry_after_s == 2.0
    assert _error(429, {"error": {"message": "slow down"}}).retry_after_s is None


@pytest.mark.parametrize(
    ("exc", "during_stream", "code", "reason"),
    [
        (aiohttp.ClientConnectionError("refused"), False, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_ERROR"),
        (aiohttp.ConnectionTimeoutError("slow"), False, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_TIMEOUT"),
        (aiohttp.SocketTimeoutError("slow"), False, grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
        (aiohttp.SocketTimeoutError("slow"), True, grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
        (aiohttp.ServerDisconnectedError("peer closed"), False, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_ERROR"),
        (aiohttp.ServerDisconnectedError("peer closed"), True, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN"),
        (aiohttp.ClientPayloadError("cut"), True, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN"),
    ],
)
def test_transport_errors_are_retryable(
    exc: aiohttp.ClientError, during_stream: bool, code: grpc.StatusCode, reason: str
) -> None:
    error = transport_error(exc, "up", during_stream=during_stream)
    assert (error.code, error.reason, error.retryable) == (code, reason, True)
    assert error.metadata["provider"] == "up"


def test_an_unusable_base_url_is_a_configuration_error() -> None:
    error = transport_error(aiohttp.InvalidUrlClientError("ftp://x"), "up")
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_NOT_CONFIGURED")
    assert not error.retryable


class _Pieces:
    """An UpstreamStream stand-in whose body arrives in the given pieces."""

    def __init__(self, content_type: str, *pieces: bytes) -> None:
        self.headers = {"content-type": content_type}
        self._pieces = list(pieces)

    async def read_chunk(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""


async def _events(body: bytes, content_type: str = "text/event-stream") -> list[str]:
    response = _Pieces(content_type, body[:7], body[7:])
    return [event.data async for event in iter_sse(response, provider="up", idle_timeout_s=5)]  # type: ignore[arg-type]


async def test_the_sse_reader_dispatches_a_last_event_without_a_blank_line() -> None:
    assert await _events(b"event: a\ndata: 1\n\ndata: 2\r\n\r\n: comment\n\ndata: 3") == ["1", "2", "3"]
    assert await _events(b"data: 1\n\ndata: 2\n") == ["1", "2"]


async def test_the_sse_reader_refuses_a_body_that_is_not_an_event_stream() -> None:
    with pytest.raises(GatewayError) as raised:
        await _events(b'{"id": 1}', "application/json")
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_BROKEN")
