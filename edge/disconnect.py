"""Cancel the router call when the HTTP client goes away before the response has started.

Starlette runs a handler to its end whether or not its client is still connected, and until a
response (or a stream's first chunk) exists nobody reads the ASGI ``receive`` channel, so a client
that leaves while the router is still working goes unnoticed: the upstream request, its retries and
its concurrency slot all live on. :func:`unless_disconnected` races the awaited router call against
the ``http.disconnect`` message and cancels the gRPC call the moment the client leaves; the
cancellation then travels router -> providers -> the upstream HTTP connection.

Once a streamed response has started, ``edge.sse.EventStream`` (and Starlette's ``StreamingResponse``
for the native stream) watch for the disconnect themselves and close the response generator, which
cancels the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi.responses import Response
from starlette.requests import Request
from starlette.types import Receive

_T = TypeVar("_T")

CLIENT_CLOSED_REQUEST = 499
"""The status recorded for a request its client abandoned (nginx's convention); nobody receives it."""


class ClientDisconnected(Exception):
    """The client closed the connection before the response started; the router call was cancelled."""


async def _disconnected(receive: Receive) -> None:
    # The body was read already, so what arrives now is the disconnect (uvicorn delivers nothing
    # else until the response is complete). A handler that did not read its body (a GET) sees its
    # empty body message first.
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, call: Any, awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable`` (the router call, or its stream's first message) unless the client leaves first.

    ``call`` is the gRPC call behind it. When the client disconnects first, the call is cancelled and
    :class:`ClientDisconnected` raised; when this coroutine itself is cancelled, the call is cancelled too.

    The awaitable runs in this task, raced by one watcher task that cancels this task when the
    disconnect arrives (the way ``asyncio.timeout`` cancels, and takes back, its own cancellation):
    no future wraps the call and no ``asyncio.wait`` runs per request.
    """
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await _disconnected(request.receive)
        left = True
        call.cancel()
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await awaitable
    except asyncio.CancelledError:
        call.cancel()
        # Ours (the client left) unless someone else cancelled this task as well.
        if left and task.uncancel() == 0:
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()
        if watcher.done() and not watcher.cancelled():
            # A broken receive channel ends the watcher, not the call: retrieved, so it is not logged.
            watcher.exception()


def abandoned_response() -> Response:
    """What a handler returns for a client that left: nothing is sent, the status shows in the metrics."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)
