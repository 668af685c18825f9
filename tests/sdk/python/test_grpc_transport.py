"""With ``transport="grpc"`` the Responses API and jobs go to the router over gRPC — never to the
edge — and answer the same values as over HTTP.

The gRPC clients here get an ``http_client`` whose transport records every request and answers
none, so a method that fell back to HTTP fails the test (and is named in its message). The parity
tests make a call over one transport and read it back over the other: the SDK renders the router's
canonical answers as the edge does, so the dataclasses (``raw`` included) must be equal.
"""

from __future__ import annotations

import dataclasses
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


def test_a_conversation_reads_the_same_over_both_transports(grpc_client: Client, http_client: Client) -> None:
    """The same two turns over each transport answer the same; each stored response, read over
    the other transport, is what its call answered."""
    over_grpc, over_http = _two_turns(grpc_client), _two_turns(http_client)
    assert _blank(over_grpc) == _blank(over_http)
    first, second = over_grpc
    assert second.previous_response_id == first.id and second.output_text == "Mock reply to: And again"
    assert first.raw["instructions"] == "Be brief." and first.raw["metadata"] == {"topic": "sdk"}
    for created, reader in ((over_grpc, http_client), (over_http, grpc_client)):
        for response in created:
            assert reader.get_response(response.id) == response
    assert http_client.delete_response(over_grpc[1].id) is True
    assert grpc_client.delete_response(over_http[1].id) is True
    for response_id, reader in ((over_grpc[1].id, grpc_client), (over_http[1].id, http_client)):
        with pytest.raises(llm_gateway.NotFoundError):
            reader.get_response(response_id)


_IDS = re.compile(r'"(id|call_id|item_id|first_id|last_id|previous_response_id)": "[^"]*"')
_TIMES = re.compile(r'"(created|created_at|completed_at|started_at|finished_at)": \d+')


def _as_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON: {value!r}")


def _blank(value: Any) -> Any:
    """``value`` (dataclasses, lists of them, JSON) with what differs between two equal calls
    blanked: ids the gateway makes up and the clock's times. Everything else must be the same."""
    text = json.dumps(value, sort_keys=True, default=_as_json)
    text = re.sub(r"(msg|fc)_[0-9a-f]+_", r"\1__", _TIMES.sub(r'"\1": 0', _IDS.sub(r'"\1": ""', text)))
    return json.loads(text)


def test_a_stream_has_the_same_events_over_both_transports(grpc_client: Client, http_client: Client) -> None:
    kwargs: dict[str, Any] = {"store": False, "instructions": "Be brief.", "metadata": {"topic": "sdk"}}
    with grpc_client.responses_stream("mock:demo", "Hello from the SDK", **kwargs) as stream:
        over_grpc = list(stream)
    with http_client.responses_stream("mock:demo", "Hello from the SDK", **kwargs) as stream:
        over_http = list(stream)
    assert [e.data["sequence_number"] for e in over_grpc] == list(range(len(over_grpc)))
    assert "response.output_text.delta" in [e.type for e in over_grpc]
    assert _blank(over_grpc) == _blank(over_http)


JOBS = [
    {"model": "mock:demo", "messages": HELLO, "temperature": 0.2, "stop": ["END"], "user": "ann"},
    {"model": "mock:demo", "input": "Hello from the SDK", "instructions": "Be brief.", "metadata": {"k": "v"}},
    {"model": "mock:demo", "input": "Hello from the SDK", "store": False, "max_output_tokens": 3},
    {"model": "mock:error-400", "messages": HELLO},
]


def test_jobs_read_the_same_over_both_transports(grpc_client: Client, http_client: Client) -> None:
    """The same jobs submitted over each transport end the same (results in their format's shape,
    errors in the edge's words); each job reads the same over both."""
    ended: dict[str, list[llm_gateway.Job]] = {}
    for name, client in (("grpc", grpc_client), ("http", http_client)):
        submitted = [client.jobs.submit(body) for body in JOBS]
        ended[name] = [client.jobs.wait(job.id, poll_interval=0.05, timeout=60) for job in submitted]
    assert [job.status for job in ended["grpc"]] == ["succeeded", "succeeded", "succeeded", "failed"]
    assert ended["grpc"][2].result is not None and ended["grpc"][2].result["status"] == "incomplete"
    assert ended["grpc"][3].error is not None and ended["grpc"][3].error.message
    assert _blank(ended["grpc"]) == _blank(ended["http"])
    for job in ended["grpc"] + ended["http"]:
        assert http_client.jobs.get(job.id) == grpc_client.jobs.get(job.id) == job
    assert grpc_client.jobs.list(limit=3) == http_client.jobs.list(limit=3)
    after = ended["http"][-2].id
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
    assert _blank(over_grpc) == _blank(over_http)


def test_abandoning_a_responses_stream_closes_the_upstream_request(gateway: Gateway, grpc_client: Client) -> None:
    stats = gateway.upstream.stats
    before = stats.streams_disconnected
    with grpc_client.responses_stream("fake:slow-200", "Hello from the SDK", store=False) as stream:
        assert next(stream).type == "response.created"
    deadline = time.monotonic() + 15
    while stats.streams_disconnected != before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats.streams_disconnected == before + 1


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 7}},
    },
    "strict": False,
}


def _tool_turns(client: Client) -> list[llm_gateway.Response]:
    called = client.responses(
        "mock:tools",
        "Weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        top_p=0.9,
        text={"format": {"type": "json_object"}},
    )
    calls = [item for item in called.output if item["type"] == "function_call"]
    answered = client.responses(
        "mock:demo",
        [{"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "Sunny"}],
        previous_response_id=called.id,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    return [called, answered]


def test_tool_calls_read_the_same_over_both_transports(grpc_client: Client, http_client: Client) -> None:
    """Tools, tool choices, text formats and function call items map and render as the edge's do."""
    over_grpc, over_http = _tool_turns(grpc_client), _tool_turns(http_client)
    called, answered = over_grpc
    assert [c["name"] for c in called.output if c["type"] == "function_call"] == ["get_weather"]
    assert called.raw["tools"][0]["parameters"]["properties"]["days"] == {"type": "integer", "maximum": 7}
    assert answered.status == "completed" and answered.previous_response_id == called.id
    assert _blank(over_grpc) == _blank(over_http)
    for response in over_grpc:
        assert http_client.get_response(response.id) == response

    with grpc_client.responses_stream("mock:tools", "Weather in Paris?", tools=[WEATHER], store=False) as stream:
        events_grpc = list(stream)
    with http_client.responses_stream("mock:tools", "Weather in Paris?", tools=[WEATHER], store=False) as stream:
        events_http = list(stream)
    assert "response.function_call_arguments.done" in [e.type for e in events_grpc]
    assert _blank(events_grpc) == _blank(events_http)

    function = {k: v for k, v in WEATHER.items() if k != "type"}
    body = {
        "model": "mock:tools",
        "messages": [{"role": "system", "content": "Be brief."}, *HELLO],
        "tools": [{"type": "function", "function": function}],
        "tool_choice": "auto",
        "seed": 7,
        "max_tokens": 20,
    }
    jobs = [c.jobs.wait(c.jobs.submit(body).id, poll_interval=0.05, timeout=60) for c in (grpc_client, http_client)]
    result = jobs[0].result
    assert result is not None and result["choices"][0]["finish_reason"] == "tool_calls"
    assert result["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert _blank(jobs[0]) == _blank(jobs[1])
