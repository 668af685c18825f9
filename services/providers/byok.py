"""Bring-your-own-key: the client's own upstream key for the current call, if it sent one.

The router passes the client's ``X-Upstream-Authorization`` as the ``x-upstream-authorization``
metadata; the servicer puts the key here for the call's duration, and an adapter whose provider has
``forward_client_key`` and no key of its own sends it upstream. It is never logged or stored, and
every error an adapter builds redacts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar

import grpc

from gateway_common.errors import GatewayError, Reason

METADATA_KEY = "x-upstream-authorization"
"""The gRPC metadata (and HTTP header, at the edge) carrying the client's upstream key."""

client_key_var: ContextVar[str | None] = ContextVar("client_upstream_key", default=None)
"""The client's upstream key for the current call; None when it sent none."""


def client_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The key from ``x-upstream-authorization: Bearer <key>`` (or a bare key); None when absent."""
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = (value.decode() if isinstance(value, bytes) else value).strip()
            scheme, _, token = text.partition(" ")
            found = token.strip() if scheme.lower() == "bearer" else text
            return found or None
    return None


def missing_client_key(provider: str) -> GatewayError:
    """The refusal when a forwarding provider has no key of its own and the client sent none."""
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        Reason.PROVIDER_NOT_CONFIGURED,
        f"provider '{provider}' has no API key configured and forwards the client's own: send it as "
        "the 'X-Upstream-Authorization: Bearer <key>' header",
        {"provider": provider, "retryable": "false"},
    )
