"""A client that leaves costs nothing more, and a dead router's slots come back within a lease.

Against the real processes: the edge, the five services, and an upstream that never answers
(tests/faults/cancel_harness.py). Every key may run one request at a time (max_concurrent=1), so
"the slot is free again" means the same key's next request is admitted at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from gateway.chat.v1 import chat_pb2
from gateway.router.v1 import router_pb2, router_pb2_grpc
from tests.faults.cancel_harness import CancelSuite, start, until

pytestmark = pytest.mark.e2e

LEASE_S = 3.0
LEAVE_AFTER_S = 0.5
# How soon after the client left the upstream connection must be closed and the request metered.
PROMPTLY_S = 2.0
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CancelSuite]:
    data: Path = tmp_path_factory.mktemp("cancel")
    yield from start(data, LEASE_S)


def _openai(gw: CancelSuite, tenant: str, timeout: float | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.keys[tenant], max_retries=0, timeout=timeout)


def _leave_chat(stream: bool) -> Callable[[CancelSuite, str, str], None]:
    def leave(gw: CancelSuite, tenant: str, model: str) -> None:
        with _openai(gw, tenant, LEAVE_AFTER_S) as client, pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model=model, messages=HI, stream=stream)  # type: ignore[call-overload]

    return leave


def _leave_embed(gw: CancelSuite, tenant: str, model: str) -> None:
    with _openai(gw, tenant, LEAVE_AFTER_S) as client, pytest.raises(openai.APITimeoutError):
        client.embeddings.create(model=model, input="hi")


def _leave_native(route: str) -> Callable[[CancelSuite, str, str], None]:
    def leave(gw: CancelSuite, tenant: str, model: str) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {gw.keys[tenant]}"}
        with httpx.Client(timeout=LEAVE_AFTER_S) as client, pytest.raises(httpx.ReadTimeout):
            with client.stream("POST", f"{gw.url}{route}", json=body, headers=headers) as response:
                response.read()

    return leave


def _admitted_at_once(gw: CancelSuite, tenant: str) -> None:
    """The key's one slot is free: its next request (to the mock) is served, not refused with 429."""
    with _openai(gw, tenant, 30) as client:
        reply = client.chat.completions.create(model="mock:fast", messages=HI)
    assert reply.choices[0].message.content


CASES = [
    ("chatjson", "hole-chat", "chat-json", _leave_chat(stream=False)),
    ("chatsse", "hole-stream", "chat-sse", _leave_chat(stream=True)),
    ("embed", "hole-embed", "embed", _leave_embed),
    ("native", "hole-native", "native-json", _leave_native("/v1/chat")),
    ("nativestream", "hole-native-stream", "native-stream", _leave_native("/v1/chat:stream")),
]


@pytest.mark.parametrize(("tenant", "model", "upstream_model", "leave"), CASES, ids=[c[0] for c in CASES])
def test_a_client_that_leaves_before_the_first_byte_cancels_the_chain(
    gw: CancelSuite, tenant: str, model: str, upstream_model: str, leave: Callable[[CancelSuite, str, str], None]
) -> None:
    leave(gw, tenant, model)
    left = time.monotonic()
    (held,) = gw.hole.for_model(upstream_model)  # the request reached the upstream, once
    assert held.opened_at < left - LEAVE_AFTER_S / 2

    closed = until(lambda: held.closed_at is not None, PROMPTLY_S + 5, "upstream connection closed")
    assert closed - left < PROMPTLY_S, f"the upstream connection stayed open {closed - left:.1f}s"
    metered = until(lambda: gw.ledger(tenant), PROMPTLY_S + 5, "the request in the ledger")
    assert metered - left < PROMPTLY_S + 1
    assert [outcome for outcome, _, _ in gw.ledger(tenant)] == ["CANCELLED"]

    _admitted_at_once(gw, tenant)
    # No retry, no fallback after the client left: still the one upstream connection.
    assert len(gw.hole.for_model(upstream_model)) == 1
    until(lambda: len(gw.ledger(tenant)) == 2, 10, "the second request in the ledger")
    assert sorted(outcome for outcome, _, _ in gw.ledger(tenant)) == ["CANCELLED", "SUCCESS"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_client_that_leaves_a_mock_timeout_stops_router_and_provider(gw: CancelSuite, stream: bool) -> None:
    tenant = "mocksse" if stream else "mockjson"
    _leave_chat(stream)(gw, tenant, "mock:timeout")
    left = time.monotonic()
    # The router ends the request (and meters it) only once its provider call has ended.
    metered = until(lambda: gw.ledger(tenant), PROMPTLY_S + 5, "the request in the ledger")
    assert metered - left < PROMPTLY_S
    ((outcome, streamed, latency_ms),) = gw.ledger(tenant)
    assert (outcome, streamed) == ("CANCELLED", stream)
    assert latency_ms < (LEAVE_AFTER_S + PROMPTLY_S) * 1000
    _admitted_at_once(gw, tenant)


def _chat_on(address: str, key: str, credentials: grpc.ChannelCredentials | None) -> bool:
    """One completion through the router at ``address`` over gRPC (TLS when ``credentials``); False
    when refused for concurrency."""
    request = chat_pb2.ChatCompletionRequest(
        model="mock:fast", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]
    )
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        try:
            router_pb2_grpc.RouterServiceStub(channel).Chat(
                router_pb2.ChatRequest(completion=request), metadata=(("authorization", f"Bearer {key}"),), timeout=30
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                return False
            raise
    return True


def test_a_killed_routers_slot_comes_back_within_a_lease(gw: CancelSuite) -> None:
    tenant = "killed"
    key = gw.keys[tenant]
    streaming = threading.Event()

    def long_stream() -> None:
        # mock:slow-1000 sends a word a second; the answer has 20 words: this stream outlives the
        # lease, and holds its slot past it only by renewal.
        words = [{"role": "user", "content": " ".join(["word"] * 20)}]
        try:
            with _openai(gw, tenant, 60) as client:
                for _ in client.chat.completions.create(model="mock:slow-1000", messages=words, stream=True):
                    streaming.set()
        except (openai.APIError, httpx.HTTPError):
            pass  # its router is killed under it

    with gw.second_router() as second:
        thread = threading.Thread(target=long_stream, daemon=True)
        thread.start()
        try:
            assert streaming.wait(30), "the long stream did not start"
            time.sleep(LEASE_S + 1)  # time passing is the point: past a lease, only renewal holds the slot
            assert not _chat_on(second, key, gw.suite.credentials(None)), "the slot of the running stream was not held"

            gw.suite.processes["router"].kill()
            killed = time.monotonic()
            back = until(
                lambda: _chat_on(second, key, gw.suite.credentials(None)), 30, "a request admitted after the kill"
            )
            assert back - killed < LEASE_S + 1.5, f"the dead router's slot came back after {back - killed:.1f}s"
        finally:
            thread.join(30)
