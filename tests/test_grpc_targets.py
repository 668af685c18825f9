"""Service addresses listing several replicas: parsed into gRPC targets, dialled over mutual TLS, balanced."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from gateway_common.config import ConfigError, TlsConfig, load_config
from gateway_common.grpc_client import open_channel
from gateway_common.targets import GrpcTarget, parse_target
from gateway_common.tls import channel_credentials, load_material, server_credentials, write_local_ca


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:5001", GrpcTarget("127.0.0.1:5001")),
        ("router:50051", GrpcTarget("router:50051")),
        ("127.0.0.1:5001,127.0.0.1:5002", GrpcTarget("ipv4:127.0.0.1:5001,127.0.0.1:5002", "127.0.0.1")),
        (" 127.0.0.1:5001 , 127.0.0.2:5002 ", GrpcTarget("ipv4:127.0.0.1:5001,127.0.0.2:5002", "127.0.0.1")),
        ("ipv4:127.0.0.1:5001,127.0.0.1:5002", GrpcTarget("ipv4:127.0.0.1:5001,127.0.0.1:5002", "127.0.0.1")),
        ("[::1]:5001,[::1]:5002", GrpcTarget("ipv6:[::1]:5001,[::1]:5002", "::1")),
        ("dns:///router.gateway.svc:50051", GrpcTarget("dns:///router.gateway.svc:50051")),
        ("unix:///run/router.sock", GrpcTarget("unix:///run/router.sock")),
    ],
)
def test_accepted_forms(address: str, expected: GrpcTarget) -> None:
    assert parse_target(address) == expected


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("router-1:50051,router-2:50051", "IP literals"),
        ("127.0.0.1:5001,[::1]:5002", "mixes IPv4 and IPv6"),
        ("ipv6:127.0.0.1:5001", "lists IPv4"),
        ("127.0.0.1,127.0.0.2", "not host:port"),
        ("127.0.0.1:5001,", "not host:port"),
        ("", "empty"),
    ],
)
def test_refused_forms(address: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_target(address)


def test_a_bad_replica_list_stops_the_config() -> None:
    with pytest.raises(ConfigError, match=r"services\.ratelimit\.address.*IP literals"):
        load_config(env={"GATEWAY_RATELIMIT_ADDR": "ratelimit-a:1,ratelimit-b:2"})


class _Counting(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts the calls one server received."""

    def __init__(self) -> None:
        self.calls = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        self.calls += 1
        return await continuation(details)


async def test_a_replica_list_is_dialled_over_mutual_tls_and_balanced(tmp_path: Path) -> None:
    # The certificates are the suite's (SAN 127.0.0.1); without an authority override gRPC would
    # check the whole list "127.0.0.1:p1,127.0.0.1:p2" as a host name and refuse every replica.
    write_local_ca(tmp_path, ["ratelimit", "router"])
    tls = TlsConfig(dir=str(tmp_path))
    server_material, client_material = load_material(tls, "ratelimit"), load_material(tls, "router")
    assert server_material is not None and client_material is not None
    counters, servers, addresses = [], [], []
    for _ in range(2):
        counter = _Counting()
        server = grpc.aio.server(interceptors=[counter])
        health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(server_material, require_client_cert=True))
        await server.start()
        counters.append(counter)
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    try:
        async with open_channel(",".join(addresses), credentials=channel_credentials(client_material)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await channel.channel_ready()
            for _ in range(40):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for server in servers:
            await server.stop(None)
    # round_robin: both replicas served, neither all of it.
    assert all(10 <= counter.calls <= 30 for counter in counters), [c.calls for c in counters]


async def _health_server(port: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


async def test_a_new_channel_does_not_inherit_another_channels_backoff() -> None:
    """A server started on a port a dead one had (the kernel hands ports out again) answers a new
    channel's first call, though an older channel to the dead server is still backing off.

    With gRPC's process-wide subchannel pool both channels shared one connection, in backoff
    after "connection refused", and the new channel's calls failed UNAVAILABLE for up to the
    backoff. A CI run failed with exactly that error: a router's first calls to a fake auth."""
    server, port = await _health_server(0)
    async with open_channel(f"127.0.0.1:{port}") as old:
        await health_pb2_grpc.HealthStub(old).Check(health_pb2.HealthCheckRequest(), timeout=5)
        await server.stop(None)
        async with asyncio.timeout(5):
            while (state := old.get_state(try_to_connect=True)) != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                await old.wait_for_state_change(state)
        restarted, _ = await _health_server(port)
        try:
            async with open_channel(f"127.0.0.1:{port}") as new:
                reply = await health_pb2_grpc.HealthStub(new).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await restarted.stop(None)
