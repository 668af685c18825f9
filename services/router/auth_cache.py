"""Authentication with a short, bounded cache.

The cache turns the auth round trip into a dictionary lookup for repeat callers. Entries live at
most ``ttl`` seconds (at most 5, as the auth service says in ``cache_ttl_seconds``), which bounds
how long a revoked key keeps working on this replica. Failures are never cached.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

import grpc

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway_common.errors import GatewayError, Reason

_MAX_ENTRIES = 10_000


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    """The key from ``authorization: Bearer <key>`` metadata (or the bare value); empty when absent."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else text.strip()
    return ""


class AuthCache:
    """Resolves keys to principals through the auth service, caching answers briefly."""

    def __init__(
        self,
        stub: auth_pb2_grpc.AuthServiceAsyncStub,
        ttl_s: float,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = stub
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, auth_pb2.Principal]] = OrderedDict()

    async def authenticate(self, api_key: str, request_id: str) -> auth_pb2.Principal:
        """The principal of ``api_key``; UNAUTHENTICATED when it is missing, unknown, expired or revoked."""
        if not api_key:
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                Reason.MISSING_API_KEY,
                "You didn't provide an API key. Provide it in the Authorization header (Bearer <key>).",
            )
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        now = self._clock()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            response = await self._stub.Authenticate(
                auth_pb2.AuthenticateRequest(api_key=api_key),
                timeout=self._timeout_s,
                metadata=(("x-request-id", request_id),),
            )
        except grpc.aio.AioRpcError as exc:
            self._entries.pop(digest, None)
            raise GatewayError.from_rpc_error(exc, "auth") from None
        # The auth service bounds the TTL by the key's expiry; 0 means "do not cache".
        ttl = min(self._ttl_s, float(response.cache_ttl_seconds))
        if ttl > 0:
            self._entries[digest] = (now + ttl, response.principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)
        return response.principal
