"""Streaming results that release their connection however they are left.

A stream holds an open HTTP response or a gRPC call. Leaving it early — ``close()``, the end of a
``with`` block, ``break`` out of a loop followed by the stream being dropped, or garbage collection
— closes the response or cancels the call, and the gateway carries that cancellation down to the
upstream, so an abandoned stream stops costing tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

_PENDING: set[asyncio.Task[None]] = set()
"""Closes scheduled by a garbage-collected async stream (held so the loop does not drop them)."""


class Stream(Generic[T]):
    """An iterator of chunks over one open call; close it (or use ``with``) to stop early."""

    def __init__(self, items: Iterator[T], close: Callable[[], None], request_id: str) -> None:
        self._items = items
        self._close = close
        self._closed = False
        self.request_id = request_id
        """The request id the gateway logged this call under."""

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return next(self._items)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection (HTTP) or cancel the call (gRPC); the gateway stops the upstream."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class AsyncStream(Generic[T]):
    """An async iterator of chunks over one open call; ``await stream.aclose()`` (or ``async with``)."""

    def __init__(
        self,
        items: AsyncIterator[T],
        aclose: Callable[[], Awaitable[None]],
        request_id: str,
        cancel: Callable[[], None] | None = None,
    ) -> None:
        self._items = items
        self._aclose = aclose
        self._cancel = cancel
        self._closed = False
        self.request_id = request_id
        """The request id the gateway logged this call under."""

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await anext(self._items)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the connection (HTTP) or cancel the call (gRPC); the gateway stops the upstream."""
        if self._closed:
            return
        self._closed = True
        if self._cancel is not None:
            self._cancel()
        try:
            await self._aclose()
        finally:
            close = getattr(self._items, "aclose", None)
            if close is not None:
                await close()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._closed:
            return
        if self._cancel is not None:
            # A gRPC call cancels synchronously: nothing needs the loop.
            self._cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.aclose())
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)
