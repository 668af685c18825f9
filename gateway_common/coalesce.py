"""Batches of what a stream has ready: one message on the wire for several chunks that arrived together.

A gRPC message costs the same CPU on both sides whether it carries one chunk or twenty, and most of
a relayed chunk's cost is its message. Upstreams send chunks in bursts (a fast model, a proxy that
buffers, a slow reader catching up): :func:`ready_batches` reads the source in its own task and,
each time the consumer asks, hands over everything that has arrived by then — never waiting for
more. A chunk that arrives alone leaves alone, at once: batching adds no latency.

The source's order is kept, its error arrives after the chunks that came before it, and the pump
reads at most ``buffer`` chunks ahead, so a slow consumer still slows the upstream read (the
backpressure a plain ``async for`` has). Closing or cancelling the consumer cancels the pump and
closes the source, as leaving an ``async for`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _pump(source: AsyncIterator[T], queue: asyncio.Queue[object]) -> None:
    try:
        async for item in source:
            await queue.put(item)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # delivered to the consumer, in order
        await queue.put(_Failed(exc))
        return
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):  # already running: it is closing itself
                await aclose()
    await queue.put(_END)


async def ready_batches(source: AsyncIterator[T], buffer: int = 64) -> AsyncGenerator[list[T], None]:
    """``source``'s items, in order, as lists of whatever was ready each time the consumer asked."""
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=buffer)
    pump = asyncio.ensure_future(_pump(source, queue))
    try:
        while True:
            batch: list[T] = []
            item = await queue.get()
            while True:
                if item is _END:
                    if batch:
                        yield batch
                    return
                if isinstance(item, _Failed):
                    if batch:
                        yield batch
                    raise item.error
                batch.append(item)  # type: ignore[arg-type]
                if queue.empty():
                    break
                item = queue.get_nowait()
            yield batch
    finally:
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
