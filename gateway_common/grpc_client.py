"""Client-side plumbing: one long-lived channel per downstream service, and error translation."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from gateway_common import tracing
from gateway_common.targets import parse_target

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message a service sends or accepts (servers use the same ceiling)."""

# Spread calls over every resolved replica (compose/Kubernetes DNS names resolve to several).
# Calls fail fast when a service is down rather than waiting for it: the caller maps UNAVAILABLE.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def open_channel(
    address: str,
    extra_options: Sequence[tuple[str, object]] = (),
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel to ``address`` for the life of the process (round-robin over resolved replicas).

    ``address`` is any form :func:`gateway_common.targets.parse_target` accepts: ``host:port``, a
    comma-separated list of replicas, or a gRPC target URI such as ``dns:///router.ns.svc:50051``.
    With ``credentials`` (``tls.client_credentials``) the channel speaks TLS, verifies the server
    against the CA and shows this process's certificate; without, it is plaintext.
    """
    options: list[tuple[str, object]] = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.keepalive_time_ms", 30_000),
        # gRPC's reconnect backoff grows to 120 s: a restarted downstream would keep failing every
        # call fast for up to two minutes after it came back. Internal peers are on the same
        # network, so retry the connection within a second.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
        # Despite its name, gRPC core reads this as the minimum *connect timeout* (subchannel.cc,
        # ParseArgsForBackoffValues): at 100 ms a TLS handshake with a busy replica timed out
        # ("connection attempt timed out before receiving SETTINGS frame") and, with every
        # replica's subchannel failing at once, calls failed UNAVAILABLE. A refused connection
        # (a restarting peer) still fails at once and is retried within the backoff above.
        ("grpc.min_reconnect_backoff_ms", 5_000),
        # gRPC shares connections between a process's channels to one address. A channel here is
        # the process's one link to its peer: sharing gains nothing, and a new channel would take
        # over an older one's backoff ("connection refused" from a peer that has since restarted
        # on the same port) and fail its first calls.
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *extra_options,
    ]
    target = parse_target(address)
    if target.authority is not None:
        # A list of addresses names no host: the TLS check (and :authority) use the first one's,
        # which every replica's certificate carries.
        options.append(("grpc.default_authority", target.authority))
    interceptors = tracing.client_interceptors()
    if credentials is None:
        return grpc.aio.insecure_channel(target.target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target.target, credentials, options=options, interceptors=interceptors)
