"""The edge says which attempts an answer took: ``x-gateway-attempts``, and the error body's list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from edge.app import create_app
from edge.state import EdgeState
from gateway_common.config import GatewayConfig
from tests.failover.conftest import Rig
from tests.failover.upstream import ANSWER
from tests.router.test_orchestration import KEY

AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
async def edge(rig: Rig) -> AsyncIterator[httpx.AsyncClient]:
    """The edge app in-process (same event loop as the rig), dialling the rig's router."""
    config = GatewayConfig.model_validate(
        {"services": {"router": {"listen": rig.router_address, "address": rig.router_address}}}
    )
    app = create_app(config)
    app.state.edge = EdgeState(config)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            yield client
    finally:
        await app.state.edge.close()


def _body(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Say the pangram."}]}


async def test_an_answer_after_failures_lists_its_attempts(rig: Rig, edge: httpx.AsyncClient) -> None:
    response = await edge.post("/v1/chat/completions", json=_body("persistent"), headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-attempts"] == (
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503); "
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503); up:ok: answered"
    )
    assert response.headers["x-gateway-provider"] == "up"


async def test_a_first_attempt_answer_has_no_attempts_header(rig: Rig, edge: httpx.AsyncClient) -> None:
    response = await edge.post("/v1/chat/completions", json=_body("up:ok"), headers=AUTH)
    assert response.status_code == 200, response.text
    assert "x-gateway-attempts" not in response.headers


async def test_every_attempt_failed_names_the_primary_cause_and_lists_them(rig: Rig, edge: httpx.AsyncClient) -> None:
    response = await edge.post("/v1/chat/completions", json=_body("rejects"), headers=AUTH)
    assert response.status_code == 502  # the primary's 503 (an upstream outage), not the fallback's 400
    error = response.json()["error"]
    assert error["code"] == "overloaded"
    assert error["attempts"] == [
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503)",
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503)",
        "up:rejects: INVALID_ARGUMENT UPSTREAM_ERROR (HTTP 400)",
    ]
    assert response.headers["x-gateway-attempts"] == "; ".join(error["attempts"])


async def test_a_continued_stream_lists_its_attempts_in_the_final_usage_chunk(
    rig: Rig, edge: httpx.AsyncClient
) -> None:
    # Through the OpenAI SDK: the extension must not stop it parsing the chunk.
    client = openai.AsyncOpenAI(base_url="http://edge/v1", api_key=KEY, http_client=edge)
    stream = await client.chat.completions.create(
        model="cut",
        messages=[{"role": "user", "content": "Say the pangram."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.delta.content or "" for k in chunks for c in k.choices) == ANSWER
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices and usage.completion_tokens > 0
    attempts = (usage.model_extra or {})["gateway_attempts"]
    assert [a.split(": ")[0] for a in attempts] == ["up:cut", "up:cut", "up:ok"]
    assert attempts[0].endswith("continued after 16 characters") and attempts[-1] == "up:ok: answered"


async def test_a_first_attempt_stream_has_no_attempts_in_its_usage(rig: Rig, edge: httpx.AsyncClient) -> None:
    body = {**_body("up:ok"), "stream": True, "stream_options": {"include_usage": True}}
    response = await edge.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    assert usage["completion_tokens"] > 0 and "gateway_attempts" not in usage
