"""With ``transport="grpc"`` the Responses API and jobs go to the router over gRPC — never to the
edge — and answer the same values as over HTTP.

The gRPC clients here get an ``http_client`` whose transport records every request and answers
none, so a method that fell back to HTTP fails the test (and is named in its message). The parity
tests make a call over one transport and read it back over the other: the SDK renders the router's
canonical answers as the edge does, so the dataclasses (``raw`` included) must be equal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import llm_gateway
import pytest
from llm_gateway import AsyncClient, Client

from tests.e2e.conftest import Gateway
from tests.sdk.python.conftest import client_kwargs

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello from the SDK"}]


class _Refused:
    """An httpx transport (sync and async) that records each request and answers none of them."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def _record(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        raise httpx.ConnectError("this client must not use HTTP", request=request)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self._record))

    def async_client(self) -> httpx.AsyncClient:
        async def record(request: httpx.Request) -> httpx.Response:
            return self._record(request)

        return httpx.AsyncClient(transport=httpx.MockTransport(record))


@pytest.fixture
def refused() -> _Refused:
    """The HTTP requests a gRPC client made (there must be none)."""
    return _Refused()


@pytest.fixture
def grpc_client(gateway: Gateway, refused: _Refused) -> Iterator[Client]:
    """A gRPC client whose HTTP transport refuses (and records) every request."""
    http = refused.client()
    with Client(gateway.key, max_retries=0, http_client=http, **client_kwargs(gateway, "grpc")) as client:  # type: ignore[arg-type]
        yield client
    http.close()


@pytest.fixture
def http_client(gateway: Gateway) -> Iterator[Client]:
    """A client of the edge."""
    with Client(gateway.key, max_retries=0, **client_kwargs(gateway, "http")) as client:  # type: ignore[arg-type]
        yield client


def test_responses_and_jobs_send_no_http_request(grpc_client: Client, refused: _Refused) -> None:
    client = grpc_client
    first = client.responses("mock:demo", "Hello from the SDK", instructions="Be brief.", store=True)
    assert first.id.startswith("resp_") and first.output_text == "Mock reply to: Hello from the SDK"
    follow_up = client.responses("mock:demo", "And again", previous_response_id=first.id)
    assert follow_up.previous_response_id == first.id and follow_up.output_text == "Mock reply to: And again"
    with client.responses_stream("mock:demo", "Hello from the SDK", store=False) as stream:
        kinds = [event.type for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert client.get_response(first.id) == first
    assert client.delete_response(first.id) is True
    with pytest.raises(llm_gateway.NotFoundError):
        client.get_response(first.id)

    job = client.jobs.submit({"model": "mock:demo", "messages": HELLO})
    assert job.id.startswith("job_") and job.format == "chat.completions"
    done = client.jobs.wait(job.id, poll_interval=0.05, timeout=60)
    assert done.status == "succeeded" and done.result is not None
    assert done.result["choices"][0]["message"]["content"] == "Mock reply to: Hello from the SDK"
    assert client.jobs.get(job.id) == done
    assert job.id in [j.id for j in client.jobs.list(limit=100).data]
    assert client.jobs.cancel(job.id).status == "succeeded"
    # mock:timeout never answers: the job is queued or running when it is cancelled.
    slow = client.jobs.submit({"model": "mock:timeout", "input": "Take your time"})
    assert slow.format == "responses"
    assert client.jobs.cancel(slow.id).status == "cancelled"
    assert client.jobs.wait(slow.id, poll_interval=0.05, timeout=30).status == "cancelled"
    with pytest.raises(llm_gateway.NotFoundError):
        client.jobs.get("job_does_not_exist")
    assert refused.sent == []


async def test_the_async_client_sends_no_http_request(gateway: Gateway, refused: _Refused) -> None:
    http = refused.async_client()
    settings = client_kwargs(gateway, "grpc")
    async with AsyncClient(gateway.key, max_retries=0, http_client=http, **settings) as client:  # type: ignore[arg-type]
        first = await client.responses("mock:demo", "Hello from the SDK")
        follow_up = await client.responses("mock:demo", "And again", previous_response_id=first.id)
        assert follow_up.previous_response_id == first.id
        assert await client.get_response(follow_up.id) == follow_up
        stream = await client.responses_stream("mock:demo", "Hello from the SDK", store=False)
        deltas = [event.data["delta"] async for event in stream if event.type == "response.output_text.delta"]
        assert "".join(deltas) == "Mock reply to: Hello from the SDK"
        assert await client.delete_response(follow_up.id) is True
        job = await client.jobs.submit({"model": "mock:demo", "input": "Hello from the SDK"})
        done = await client.jobs.wait(job.id, poll_interval=0.05, timeout=60)
        assert done.status == "succeeded" and done.result is not None
        assert done.result["object"] == "response" and done.result["output_text"] == "Mock reply to: Hello from the SDK"
        assert (await client.jobs.get(job.id)) == done
        assert (await client.jobs.list(limit=1)).data == [done]
        assert (await client.jobs.cancel(job.id)) == done
    await http.aclose()
    assert refused.sent == []


def _two_turns(client: Client) -> tuple[llm_gateway.Response, llm_gateway.Response]:
    first = client.responses(
        "mock:demo",
        [{"role": "user", "content": [{"type": "input_text", "text": "Hello from the SDK"}]}],
        instructions="Be brief.",
        metadata={"topic": "sdk"},
        temperature=0.5,
        max_output_tokens=64,
    )
    second = client.responses("mock:demo", "And again", previous_response_id=first.id, user="ann")
    return first, second


@pytest.mark.parametrize("created_over", ["grpc", "http"])
def test_a_conversation_reads_the_same_over_both_transports(
    grpc_client: Client, http_client: Client, created_over: str
) -> None:
    creator, reader = (grpc_client, http_client) if created_over == "grpc" else (http_client, grpc_client)
    first, second = _two_turns(creator)
    assert second.previous_response_id == first.id and second.output_text == "Mock reply to: And again"
    assert first.raw["instructions"] == "Be brief." and first.raw["metadata"] == {"topic": "sdk"}
    # The stored responses, read over the other transport, are what the call answered.
    assert reader.get_response(first.id) == first
    assert reader.get_response(second.id) == second
    assert creator.get_response(second.id) == reader.get_response(second.id)
    assert reader.delete_response(second.id) is True
    with pytest.raises(llm_gateway.NotFoundError):
        creator.get_response(second.id)


def _normalized(events: list[llm_gateway.ResponseEvent]) -> list[Any]:
    """The events with the response id and the clock's times blanked (they differ between two calls)."""
    text = json.dumps([[e.type, e.data] for e in events])
    text = re.sub(r"resp_[0-9a-f]+", "resp_", text)
    text = re.sub(r"(msg|fc)_[0-9a-f]+_", r"\1__", text)
    return json.loads(re.sub(r'"(created_at|completed_at)": \d+', r'"\1": 0', text))  # type: ignore[no-any-return]


def test_a_stream_has_the_same_events_over_both_transports(grpc_client: Client, http_client: Client) -> None:
    kwargs: dict[str, Any] = {"store": False, "instructions": "Be brief.", "metadata": {"topic": "sdk"}}
    with grpc_client.responses_stream("mock:demo", "Hello from the SDK", **kwargs) as stream:
        over_grpc = list(stream)
    with http_client.responses_stream("mock:demo", "Hello from the SDK", **kwargs) as stream:
        over_http = list(stream)
    assert [e.data["sequence_number"] for e in over_grpc] == list(range(len(over_grpc)))
    assert "response.output_text.delta" in [e.type for e in over_grpc]
    assert _normalized(over_grpc) == _normalized(over_http)


def test_jobs_read_the_same_over_both_transports(grpc_client: Client, http_client: Client) -> None:
    submitted = [
        grpc_client.jobs.submit({"model": "mock:demo", "messages": HELLO, "temperature": 0.2}),
        grpc_client.jobs.submit({"model": "mock:demo", "input": "Hello from the SDK", "instructions": "Be brief."}),
        grpc_client.jobs.submit({"model": "mock:error-400", "messages": HELLO}),
        http_client.jobs.submit({"model": "mock:demo", "input": "Hello from the SDK", "store": False}),
    ]
    ended = [grpc_client.jobs.wait(job.id, poll_interval=0.05, timeout=60) for job in submitted]
    assert [job.status for job in ended] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert ended[2].error is not None and ended[2].error.message
    for job in ended:
        assert http_client.jobs.get(job.id) == job
    assert grpc_client.jobs.list(limit=3) == http_client.jobs.list(limit=3)
    after = ended[-1].id
    assert grpc_client.jobs.list(limit=2, after=after) == http_client.jobs.list(limit=2, after=after)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_an_unknown_parameter_is_refused_the_same(gateway: Gateway, refused: _Refused, transport: str) -> None:
    settings: dict[str, Any] = client_kwargs(gateway, transport)
    if transport == "grpc":
        settings["http_client"] = refused.client()
    with Client(gateway.key, max_retries=0, **settings) as client:
        with pytest.raises(llm_gateway.BadRequestError) as response_error:
            client.responses("mock:demo", "Hello", bogus=1)
        with pytest.raises(llm_gateway.BadRequestError) as job_error:
            client.jobs.submit({"model": "mock:demo", "input": "Hello", "bogus": 1})
        with pytest.raises(llm_gateway.BadRequestError) as list_error:
            client.jobs.list(limit=0)
    assert response_error.value.param == "bogus" and response_error.value.type == "invalid_request_error"
    assert job_error.value.param == "request.bogus"
    assert list_error.value.param == "limit"
    assert refused.sent == []


def test_a_broken_stream_ends_in_band_the_same_over_both_transports(grpc_client: Client, http_client: Client) -> None:
    """After its first chunk a failure cannot be a status any more: both end with ``error`` and
    ``response.failed``, never ``response.completed`` (the edge's SSE; the SDK's own rendering)."""
    with grpc_client.responses_stream("mock:stream-break", "Hello from the SDK", store=False) as stream:
        over_grpc = list(stream)
    with http_client.responses_stream("mock:stream-break", "Hello from the SDK", store=False) as stream:
        over_http = list(stream)
    kinds = [e.type for e in over_grpc]
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
    assert _normalized(over_grpc) == _normalized(over_http)


def test_abandoning_a_responses_stream_closes_the_upstream_request(gateway: Gateway, grpc_client: Client) -> None:
    stats = gateway.upstream.stats
    before = stats.streams_disconnected
    with grpc_client.responses_stream("fake:slow-200", "Hello from the SDK", store=False) as stream:
        assert next(stream).type == "response.created"
    deadline = time.monotonic() + 15
    while stats.streams_disconnected != before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats.streams_disconnected == before + 1
