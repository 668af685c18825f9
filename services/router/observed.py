"""The providers stub, timed: what the latency and least-busy strategies learn from.

Every attempt is counted in flight from the call until it ends (answered, failed, cancelled, or a
stream read to its end), and its time to first token — the whole answer for a unary call, the first
chunk for a stream — feeds the deployment's moving average. Wrapping the stub keeps this out of the
attempt loops: they call it as they call the stub.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from services.router.planner import Candidate
from services.router.strategies import RouteStats


def _candidate(target: providers_pb2.Target) -> Candidate:
    return Candidate(target.provider, target.model)


class _ObservedStream:
    """A StreamChat call that reports its first chunk and its end, and yields a message's
    ``more_chunks`` as messages of their own; everything else is the call's."""

    def __init__(self, call: Any, candidate: Candidate, stats: RouteStats, clock: Callable[[], float]) -> None:
        self._call = call
        self._candidate = candidate
        self._stats = stats
        self._clock = clock
        self._started = clock()
        self._ended = False
        stats.started(candidate)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._stats.ended(self._candidate)

    def __aiter__(self) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[providers_pb2.StreamChatResponse]:
        first = True
        try:
            async for item in self._call:
                if first:
                    first = False
                    self._stats.first_token(self._candidate, self._clock() - self._started)
                yield item
                # Chunks the providers service sent in the same message: one by one, as if apart.
                for chunk in item.more_chunks:
                    yield providers_pb2.StreamChatResponse(chunk=chunk)
        finally:
            self._end()

    def cancel(self) -> bool:
        """Cancel the call; the attempt is no longer in flight."""
        self._end()
        return bool(self._call.cancel())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class ObservedProviders:
    """Forwards to the providers stub, recording each Chat and StreamChat attempt in ``stats``."""

    def __init__(
        self,
        stub: providers_pb2_grpc.ProviderServiceAsyncStub,
        stats: RouteStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = stub
        self._stats = stats
        self._clock = clock

    async def Chat(self, request: providers_pb2.ChatRequest, **kwargs: Any) -> providers_pb2.ChatResponse:
        """``Chat``, timed and counted in flight."""
        candidate = _candidate(request.target)
        started = self._clock()
        self._stats.started(candidate)
        try:
            response: providers_pb2.ChatResponse = await self._stub.Chat(request, **kwargs)
        finally:
            self._stats.ended(candidate)
        self._stats.first_token(candidate, self._clock() - started)
        return response

    def StreamChat(self, request: providers_pb2.StreamChatRequest, **kwargs: Any) -> Any:
        """``StreamChat``, with its first chunk timed and the stream counted in flight until it ends."""
        call = self._stub.StreamChat(request, **kwargs)
        return _ObservedStream(call, _candidate(request.target), self._stats, self._clock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)
