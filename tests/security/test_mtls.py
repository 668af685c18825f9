"""Internal services accept only callers whose certificate the gateway's CA signed and whose service
identity the allowlist names; the router, edge, CLI and probes keep working. Real processes."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway.router.v1 import router_pb2, router_pb2_grpc
from gateway_cli.main import main as gateway_cli
from gateway_common.errors import GatewayError, Reason
from tests.providers.harness import chunks_in
from tests.security.conftest import Secured

pytestmark = pytest.mark.e2e

Call = Callable[[grpc.aio.Channel], Awaitable[Any]]

# One representative RPC per internal service, as a stranger would try it.
CALLS: dict[str, Call] = {
    "auth": lambda ch: auth_pb2_grpc.AuthServiceStub(ch).Authenticate(
        auth_pb2.AuthenticateRequest(api_key="gw-guess"), timeout=5
    ),
    "ratelimit": lambda ch: ratelimit_pb2_grpc.RateLimitServiceStub(ch).Acquire(
        ratelimit_pb2.AcquireRequest(reservation_id="stranger"), timeout=5
    ),
    "providers": lambda ch: providers_pb2_grpc.ProviderServiceStub(ch).ListModels(
        providers_pb2.ListModelsRequest(), timeout=5
    ),
    "metering": lambda ch: metering_pb2_grpc.MeteringServiceStub(ch).QueryUsage(
        metering_pb2.QueryUsageRequest(), timeout=5
    ),
}
INTERNAL = sorted(CALLS)


async def _refused(channel: grpc.aio.Channel, call: Call) -> grpc.aio.AioRpcError:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(channel)
    return info.value


@pytest.mark.parametrize("service", INTERNAL)
async def test_a_caller_without_a_client_certificate_is_refused(secured: Secured, service: str) -> None:
    # gRPC Python can only require a client certificate in the handshake or never ask for one (see
    # gateway_common/tls.server_credentials), so the refusal is the handshake's: UNAVAILABLE.
    tls_only = await _refused(secured.channel(service, None), CALLS[service])
    assert tls_only.code() == grpc.StatusCode.UNAVAILABLE
    plaintext = await _refused(secured.plaintext(service), CALLS[service])
    assert plaintext.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("service", INTERNAL)
async def test_a_certificate_from_another_ca_is_refused(secured: Secured, service: str) -> None:
    # Same identity as the real router, but a CA the gateway does not trust.
    error = await _refused(secured.foreign_channel(service, "router"), CALLS[service])
    assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("service", "identity"),
    [("metering", "edge"), ("ratelimit", "edge"), ("providers", "edge"), ("auth", "edge"), ("ratelimit", "cli")],
)
async def test_a_valid_certificate_with_the_wrong_identity_is_refused(
    secured: Secured, service: str, identity: str
) -> None:
    error = GatewayError.from_rpc_error(await _refused(secured.channel(service, identity), CALLS[service]))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == Reason.CALLER_NOT_ALLOWED
    assert f"'{identity}'" in error.message and "allowed callers: " in error.message
    assert error.metadata["identity"] == identity


async def test_a_stream_from_the_wrong_identity_is_refused_before_it_starts(secured: Secured) -> None:
    request = providers_pb2.StreamChatRequest(
        target=providers_pb2.Target(provider="mock", model="demo"),
        completion=chat_pb2.ChatCompletionRequest(messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]),
    )
    async with secured.channel("providers", "edge") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [item async for item in providers_pb2_grpc.ProviderServiceStub(channel).StreamChat(request, timeout=5)]
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with secured.channel("providers", "router") as channel:
        items = [item async for item in providers_pb2_grpc.ProviderServiceStub(channel).StreamChat(request, timeout=5)]
    assert items and chunks_in(items[-1])[-1].HasField("usage")


def _nameless_credentials(secured: Secured) -> grpc.ChannelCredentials:
    """A certificate the suite's own CA signed, naming no service (DNS SAN only, no SPIFFE ID)."""
    tls = secured.suite.tls_dir
    ca_key = serialization.load_pem_private_key((tls / "ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "router")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("router")]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return grpc.ssl_channel_credentials(
        root_certificates=(tls / "ca.crt").read_bytes(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
    )


@pytest.mark.parametrize("service", INTERNAL)
async def test_a_certificate_of_the_ca_naming_no_service_is_unauthenticated(secured: Secured, service: str) -> None:
    channel = grpc.aio.secure_channel(f"127.0.0.1:{secured.suite.ports[service]}", _nameless_credentials(secured))
    error = GatewayError.from_rpc_error(await _refused(channel, CALLS[service]))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == Reason.MISSING_SERVICE_IDENTITY
    assert "spiffe://llm-gateway/<service>" in error.message


async def test_authenticate_is_no_key_oracle(secured: Secured) -> None:
    """Only the router may ask auth whether a key is valid; the edge and the CLI may not."""
    for identity in ("edge", "cli"):
        async with secured.channel("auth", identity) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await auth_pb2_grpc.AuthServiceStub(channel).Authenticate(
                    auth_pb2.AuthenticateRequest(api_key=secured.key), timeout=5
                )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with secured.channel("auth", "router") as channel:
        reply = await auth_pb2_grpc.AuthServiceStub(channel).Authenticate(
            auth_pb2.AuthenticateRequest(api_key=secured.key), timeout=5
        )
    assert reply.principal.tenant_id == "acme"


@pytest.mark.parametrize("service", [*INTERNAL, "router"])
async def test_health_answers_every_verified_peer(secured: Secured, service: str) -> None:
    async with secured.channel(service, "edge") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_metering_refuses_the_router_an_unscoped_read(secured: Secured) -> None:
    """The check lives with the data: a router identity reads one named tenant, never all of them."""
    async with secured.channel("metering", "router") as channel:
        metering = metering_pb2_grpc.MeteringServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await metering.QueryUsage(metering_pb2.QueryUsageRequest(group_by=metering_pb2.GROUP_BY_TENANT), timeout=5)
        error = GatewayError.from_rpc_error(info.value)
        assert error.code == grpc.StatusCode.PERMISSION_DENIED and "tenant_id" in error.message
        # The documented trust: the router names the principal's tenant, and may read that one.
        await metering.QueryUsage(metering_pb2.QueryUsageRequest(tenant_id="beta"), timeout=5)
    async with secured.channel("metering", "cli") as channel:
        await metering_pb2_grpc.MeteringServiceStub(channel).QueryUsage(
            metering_pb2.QueryUsageRequest(group_by=metering_pb2.GROUP_BY_TENANT), timeout=5
        )


def _hello() -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(
        model="mock:demo", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="Hi from a service")]
    )


async def test_the_router_serves_tls_to_internal_services_with_tenant_keys(secured: Secured) -> None:
    metadata = (("authorization", f"Bearer {secured.key}"),)
    # No client certificate: the router's callers authenticate with tenant keys.
    async with secured.channel("router", None) as channel:
        router = router_pb2_grpc.RouterServiceStub(channel)
        reply = await router.Chat(router_pb2.ChatRequest(completion=_hello()), metadata=metadata, timeout=10)
        assert reply.completion.choices[0].message.text
        usage = await router.GetUsage(
            router_pb2.GetUsageRequest(group_by=metering_pb2.GROUP_BY_TENANT), metadata=metadata, timeout=10
        )
        # GetUsage is scoped to the key's own tenant, however the ledger is grouped.
        assert {row.group for row in usage.rows} <= {"acme"}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await router.GetUsage(router_pb2.GetUsageRequest(tenant_id="beta"), metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    plaintext = await _refused(
        secured.plaintext("router"),
        lambda ch: router_pb2_grpc.RouterServiceStub(ch).Chat(
            router_pb2.ChatRequest(completion=_hello()), metadata=metadata, timeout=5
        ),
    )
    assert plaintext.code() == grpc.StatusCode.UNAVAILABLE


def test_chat_through_the_edge(secured: Secured) -> None:
    client = openai.OpenAI(base_url=f"{secured.suite.edge_url}/v1", api_key=secured.key, max_retries=0)
    reply = client.chat.completions.create(model="mock:demo", messages=[{"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.content


def test_the_cli_works_with_its_own_certificate(
    secured: Secured, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = secured.suite.tls_dir
    address = f"127.0.0.1:{secured.suite.ports['auth']}"
    base = ["tenants", "list", "--address", address, "--admin-key", secured.admin_key]
    for name in ("GATEWAY_TLS_DIR", "GATEWAY_TLS_CA", "GATEWAY_TLS_CERT", "GATEWAY_TLS_KEY", "GATEWAY_INTERNAL_TLS"):
        monkeypatch.delenv(name, raising=False)
    flags = ["--tls-ca", str(tls / "ca.crt"), "--tls-cert", str(tls / "cli.crt"), "--tls-key", str(tls / "cli.key")]
    assert gateway_cli([*base, *flags]) == 0
    assert "acme" in capsys.readouterr().out
    # The default: the folder `make up` minted, found through the data dir.
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(secured.suite.data_dir))
    assert gateway_cli(base) == 0
    # No certificate at all: refused in the handshake, and the CLI says what it showed.
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(secured.suite.data_dir / "nothing-here"))
    assert gateway_cli(base) == 1
    assert "this call showed no client certificate" in capsys.readouterr().err
    # Another identity's certificate is refused by name.
    router_flags = ["--tls-ca", str(tls / "ca.crt"), "--tls-cert", str(tls / "router.crt")]
    router_flags += ["--tls-key", str(tls / "router.key")]
    assert gateway_cli([*base, *router_flags]) == 1
    assert "'router' may not call /gateway.auth.v1.AuthService/ListTenants" in capsys.readouterr().err
