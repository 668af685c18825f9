"""A cancelled router call stops at once: no further attempt, no backoff, settled and metered as cancelled."""

from __future__ import annotations

import asyncio

import pytest

from gateway.metering.v1 import metering_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway.router.v1 import router_pb2
from tests.router.test_orchestration import MD, Rig, _request, _until, rig

__all__ = ["rig"]  # the fixture, shared with the orchestration tests


async def test_a_cancelled_unary_call_cancels_the_provider_call_and_is_metered_as_cancelled(rig: Rig) -> None:
    call = rig.router.Chat(router_pb2.ChatRequest(completion=_request("p2:hang")), metadata=MD)
    await _until(lambda: rig.providers.attempts)
    call.cancel()
    await asyncio.wait_for(rig.providers.cancelled.wait(), 5)
    await _until(lambda: rig.metering.events and rig.ratelimit.settled)
    (event,) = rig.metering.events
    assert event.outcome == metering_pb2.OUTCOME_CANCELLED and event.attempts == 1
    # The prompt went upstream: metered (estimated), and settled, so the reservation is not refunded in full.
    assert event.prompt_tokens > 0 and event.completion_tokens == 0 and event.usage_estimated
    assert rig.ratelimit.settled[0].actual.tokens == event.prompt_tokens
    assert rig.providers.attempts == ["p2:hang"]
    assert rig.ratelimit.settled[0].reservation_id == rig.ratelimit.acquired[0].reservation_id


async def test_cancelling_during_a_retry_backoff_ends_the_retries(rig: Rig) -> None:
    call = rig.router.Chat(router_pb2.ChatRequest(completion=_request("p1:fail-wait")), metadata=MD)
    await _until(lambda: rig.providers.attempts)
    await asyncio.sleep(0.2)  # now in the 2 s wait before the second attempt
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _until(lambda: rig.metering.events)
    assert rig.metering.events[0].outcome == metering_pb2.OUTCOME_CANCELLED
    await asyncio.sleep(2.2)  # past the backoff: had it survived, the second attempt would be here
    assert rig.providers.attempts == ["p1:fail-wait"]
    assert len(rig.metering.events) == 1


async def test_reservations_ask_for_the_configured_lease(rig: Rig) -> None:
    response = await rig.router.Chat(router_pb2.ChatRequest(completion=_request("p2:ok")), metadata=MD)
    assert response.completion.choices
    (acquired,) = rig.ratelimit.acquired
    assert acquired.reservation_ttl.ToMilliseconds() == 30_000  # ratelimit.lease_s's default


async def test_a_client_that_leaves_during_acquire_gives_the_reservation_back(rig: Rig) -> None:
    rig.ratelimit.hold = asyncio.Event()
    call = rig.router.Chat(router_pb2.ChatRequest(completion=_request("p2:ok")), metadata=MD)
    await _until(lambda: rig.ratelimit.acquired)
    call.cancel()
    # Settled at zero, whether or not the Acquire the client abandoned had reserved anything.
    await _until(lambda: rig.ratelimit.settled)
    (settled,) = rig.ratelimit.settled
    assert settled.reservation_id == rig.ratelimit.acquired[0].reservation_id
    assert settled.actual == ratelimit_pb2.Amounts()
    rig.ratelimit.hold.set()
    assert rig.providers.attempts == []
