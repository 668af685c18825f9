"""Bounds on request headers, checked (by ``edge.middleware``) before a route runs or a body is read.

uvicorn's default HTTP parser (httptools) sets no limit on header size, so a 1 MB header reaches
the app; the headers the edge forwards to the router become gRPC metadata, which must be printable
ASCII and fit gRPC's metadata limit (8 KiB soft, 16 KiB hard by default). Anything past that would
fail inside the gRPC call, as an error that is the gateway's fault; here it is the client's, named.
"""

from __future__ import annotations

import re

from gateway_common.errors import GatewayError, invalid_argument

# All request headers together, like h11's and nginx's usual bound (uvicorn's h11 mode: 16 KiB).
MAX_HEADER_BYTES = 16 * 1024

# The headers forwarded as gRPC metadata, each with its own bound, together under gRPC's 8 KiB.
# A W3C traceparent is 55 characters and a tracestate at most 512; a bearer key or a JWT fits 4 KiB.
FORWARDED_HEADER_LIMITS: dict[bytes, int] = {
    b"authorization": 4096,
    # The Anthropic façade's key header, forwarded as "authorization".
    b"x-api-key": 4096,
    b"x-upstream-authorization": 2048,
    b"traceparent": 512,
    b"tracestate": 512,
}


def check_headers(headers: list[tuple[bytes, bytes]]) -> tuple[int, GatewayError] | None:
    """The HTTP status and error for headers the edge will not take, or None when they are fine."""
    total = 0
    for name, value in headers:
        total += len(name) + len(value) + 4
        limit = FORWARDED_HEADER_LIMITS.get(name)
        if limit is None:
            continue
        shown = name.decode("latin-1")
        if len(value) > limit:
            return 431, invalid_argument(f"The '{shown}' header is longer than {limit} bytes.", shown)
        if not _printable_ascii(value):
            return 400, invalid_argument(
                f"The '{shown}' header must be printable ASCII (as HTTP and gRPC metadata require).", shown
            )
    if total > MAX_HEADER_BYTES:
        return 431, invalid_argument(f"The request headers are larger than {MAX_HEADER_BYTES} bytes.", "headers")
    return None


_NOT_PRINTABLE_ASCII = re.compile(rb"[^\x20-\x7e]")


def _printable_ascii(value: bytes) -> bool:
    return _NOT_PRINTABLE_ASCII.search(value) is None
