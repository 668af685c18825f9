"""gateway_common.coalesce: what was ready leaves together, in order, and nothing waits for company."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway_common.coalesce import ready_batches


async def _burst(items: list[int]) -> AsyncIterator[int]:
    for item in items:
        yield item


async def test_a_burst_leaves_in_few_batches_in_order() -> None:
    batches = [batch async for batch in ready_batches(_burst(list(range(50))))]
    assert [item for batch in batches for item in batch] == list(range(50))
    assert len(batches) < 50, "items that were ready together must share a batch"


async def test_an_item_that_arrives_alone_is_handed_over_without_waiting_for_more() -> None:
    release = asyncio.Event()

    async def slow() -> AsyncIterator[int]:
        yield 1
        await release.wait()
        yield 2

    batches = ready_batches(slow())
    assert await asyncio.wait_for(anext(batches), 2) == [1]
    release.set()
    assert await anext(batches) == [2]
    with pytest.raises(StopAsyncIteration):
        await anext(batches)


async def test_an_error_arrives_after_the_items_before_it() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ValueError("cut")

    received: list[int] = []
    with pytest.raises(ValueError, match="cut"):
        async for batch in ready_batches(failing()):
            received.extend(batch)
    assert received == [1, 2]


async def test_the_pump_reads_no_further_ahead_than_its_buffer() -> None:
    produced = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal produced
        while True:
            produced += 1
            yield produced

    batches = ready_batches(endless(), buffer=4)
    first = await anext(batches)
    for _ in range(20):
        await asyncio.sleep(0)
    # What the consumer holds, what the queue holds, and one the pump waits to put.
    assert produced <= len(first) + 4 + 1
    await batches.aclose()


async def test_leaving_closes_the_source() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.Event().wait()  # never comes
            yield 2
        finally:
            closed.set()

    batches = ready_batches(source())
    assert await anext(batches) == [1]
    await batches.aclose()
    await asyncio.wait_for(closed.wait(), 2)


async def test_cancelling_the_consumer_closes_the_source() -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.Event().wait()
        finally:
            closed.set()

    async def consume() -> None:
        async for _ in ready_batches(source()):
            pass

    task = asyncio.create_task(consume())
    for _ in range(10):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(closed.wait(), 2)
