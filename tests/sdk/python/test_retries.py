"""Retry decisions over a scripted HTTP transport (httpx.MockTransport): no suite needed."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import llm_gateway
import pytest
from llm_gateway import Client
from llm_gateway._retries import RetryPolicy

CHAT_BODY = {
    "id": "c1",
    "model": "mock:demo",
    "provider": "mock",
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    "message": {"role": "assistant", "content": "hi"},
    "finish_reason": "stop",
    "created": 1,
}
LIMITED = {"error": {"message": "Rate limit reached.", "type": "rate_limit_exceeded", "code": "rate_limit_exceeded"}}
HELLO = [{"role": "user", "content": "hi"}]


def _scripted(answers: list[httpx.Response]) -> tuple[list[httpx.Request], Callable[..., Client]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    def make(**kwargs: object) -> Client:
        http = httpx.Client(transport=httpx.MockTransport(handle), base_url="http://gateway.test")
        return Client("gw-key", base_url="http://gateway.test", http_client=http, **kwargs)  # type: ignore[arg-type]

    return seen, make


def _limited(retry_after: str = "1") -> httpx.Response:
    return httpx.Response(429, json=LIMITED, headers={"retry-after": retry_after, "x-request-id": "req_1"})


def test_a_429_waits_its_retry_after_then_succeeds_when_retries_are_on() -> None:
    seen, make = _scripted([_limited("1"), httpx.Response(200, json=CHAT_BODY)])
    started = time.monotonic()
    reply = make().chat("mock:demo", HELLO, retry=True)
    assert time.monotonic() - started >= 1.0
    assert reply.text == "hi" and len(seen) == 2
    # The retry is the same request, with the same request id.
    assert seen[0].headers["x-request-id"] == seen[1].headers["x-request-id"]
    assert seen[0].headers["authorization"] == "Bearer gw-key"


def test_a_post_is_not_retried_by_default() -> None:
    seen, make = _scripted([_limited("1"), httpx.Response(200, json=CHAT_BODY)])
    with pytest.raises(llm_gateway.RateLimitError) as info:
        make().chat("mock:demo", HELLO)
    assert len(seen) == 1
    assert info.value.retry_after == 1.0 and info.value.request_id == "req_1" and info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"


def test_the_client_can_opt_in_to_retrying_posts() -> None:
    seen, make = _scripted(
        [httpx.Response(503, json={"error": {"message": "busy"}}), httpx.Response(200, json=CHAT_BODY)]
    )
    client = make(retry_non_idempotent=True)
    client.retries = RetryPolicy(max_retries=1, backoff_s=0.01)
    assert client.chat("mock:demo", HELLO).text == "hi" and len(seen) == 2


def test_a_get_is_retried_by_default_and_gives_up_after_max_retries() -> None:
    seen, make = _scripted([_limited("0"), _limited("0"), _limited("0")])
    with pytest.raises(llm_gateway.RateLimitError):
        make(max_retries=2).models()
    assert len(seen) == 3


def test_a_get_can_opt_out() -> None:
    seen, make = _scripted([_limited("0"), httpx.Response(200, json={"models": []})])
    with pytest.raises(llm_gateway.RateLimitError):
        make().models(retry=False)
    assert len(seen) == 1


def test_a_retry_after_beyond_the_cap_is_not_waited_for() -> None:
    seen, make = _scripted([_limited("3600")])
    started = time.monotonic()
    with pytest.raises(llm_gateway.RateLimitError):
        make().models()
    assert time.monotonic() - started < 1 and len(seen) == 1


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, None, llm_gateway.BadRequestError),
        (401, "invalid_api_key", llm_gateway.AuthenticationError),
        (403, "model_not_allowed", llm_gateway.PermissionDeniedError),
        (404, "model_not_found", llm_gateway.NotFoundError),
        (409, None, llm_gateway.ConflictError),
        (429, "insufficient_quota", llm_gateway.BudgetExceededError),
        (500, "internal_error", llm_gateway.APIError),
        (504, "timeout", llm_gateway.APITimeoutError),
    ],
)
def test_each_status_has_its_class_and_client_errors_are_never_retried(
    status: int, code: str | None, cls: type[llm_gateway.APIError]
) -> None:
    body = {"error": {"message": "no", "type": "t", "param": "model", "code": code}}
    seen, make = _scripted([httpx.Response(status, json=body, headers={"retry-after": "0"})] * 3)
    with pytest.raises(cls) as info:
        make(max_retries=2).models()
    assert type(info.value) is cls
    assert info.value.param == "model" and info.value.code == code and info.value.status_code == status
    retried = cls in (llm_gateway.APITimeoutError,)
    assert len(seen) == (3 if retried else 1)


def test_a_stream_that_fails_after_its_first_chunk_raises_the_in_band_error() -> None:
    lines = (
        b'{"id": "c1", "model": "m", "provider": "p", "delta": {"role": "assistant", "content": "Hel"}}\n'
        b'{"error": {"message": "The upstream broke.", "type": "server_error", "code": "upstream_stream_broken"}}\n'
    )
    _, make = _scripted([httpx.Response(200, content=lines, headers={"content-type": "application/x-ndjson"})])
    stream = make().chat_stream("m", HELLO)
    assert next(stream).delta.content == "Hel"
    with pytest.raises(llm_gateway.APIError) as info:
        next(stream)
    assert info.value.code == "upstream_stream_broken"
