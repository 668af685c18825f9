"""Credential listings show the cooldown and window usage the rate limit service keeps and the
month's totals the usage ledger keeps, as auth's server wires them (a real rate limit servicer and a
real metering service on loopback); an outage of either leaves its fields unset and the listing
still answers."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc
from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from gateway.quota.v1 import quota_pb2
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_cli.credentials import format_credentials
from gateway_common.config import GatewayConfig, MeteringConfig
from gateway_common.grpc_server import ServiceApp
from services.auth.credentials.keyring import KEK_ENV
from services.auth.settings import AuthSecrets, BootstrapKey
from services.metering.server import build as build_metering
from services.ratelimit.credentials import CredentialSelector
from services.ratelimit.limiter import Limiter
from services.ratelimit.servicer import RateLimitServicer
from services.ratelimit.storage.cooldown import Backoff, MemoryCooldowns
from services.ratelimit.storage.memory import MemoryStore
from tests.auth.helpers import auth_config, bearer, running_auth

ADMIN = "gw-runtime-admin-key-0123456789abcdef"
ACME = "gw-runtime-acme-key-0123456789abcdefgh"
PER_MINUTE = quota_pb2.Quota(unit=quota_pb2.UNIT_REQUESTS, window=quota_pb2.WINDOW_MINUTE, limit=10)
PER_DAY = quota_pb2.Quota(unit=quota_pb2.UNIT_TOKENS, window=quota_pb2.WINDOW_DAY, limit=1_000)


@dataclass
class Rig:
    """Auth (built by its server.py) dialing an in-process rate limit service."""

    credentials: credentials_pb2_grpc.CredentialServiceAsyncStub
    ratelimit: ratelimit_pb2_grpc.RateLimitServiceAsyncStub
    ratelimit_server: grpc.aio.Server
    metering: metering_pb2_grpc.MeteringServiceAsyncStub
    metering_app: ServiceApp


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv(KEK_ENV, base64.b64encode(bytes(range(32))).decode())
    monkeypatch.setenv("GATEWAY_INTERNAL_TLS", "off")
    limiter = Limiter(MemoryStore(), outage_policy="fail_closed", default_ttl_s=30)
    server = grpc.aio.server()
    selector = CredentialSelector(limiter, MemoryCooldowns(Backoff(base_ms=60_000, cap_ms=600_000)))
    ratelimit_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(limiter, selector), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    metering = build_metering(
        GatewayConfig(metering=MeteringConfig(database_url=f"sqlite:///{tmp_path / 'ledger.db'}")),
        listen="127.0.0.1:0",
    )
    metering_address = f"127.0.0.1:{await metering.start()}"
    config = auth_config(f"sqlite:///{tmp_path / 'auth.db'}", tmp_path)
    services = config.services.model_copy(
        update={
            "ratelimit": config.services.ratelimit.model_copy(update={"address": address}),
            "metering": config.services.metering.model_copy(update={"address": metering_address}),
        }
    )
    config = config.model_copy(update={"services": services})
    try:
        async with (
            running_auth(config, AuthSecrets((BootstrapKey("acme", ACME),), ADMIN)) as auth,
            grpc.aio.insecure_channel(address) as ratelimit_channel,
            grpc.aio.insecure_channel(metering_address) as metering_channel,
        ):
            yield Rig(
                credentials_pb2_grpc.CredentialServiceStub(auth.channel),
                ratelimit_pb2_grpc.RateLimitServiceStub(ratelimit_channel),
                server,
                metering_pb2_grpc.MeteringServiceStub(metering_channel),
                metering,
            )
    finally:
        await server.stop(None)
        await metering.stop(0)


async def _create(rig: Rig, priority: int) -> credentials_pb2.Credential:
    created = await rig.credentials.CreateCredential(
        credentials_pb2.CreateCredentialRequest(
            provider="openai",
            priority=priority,
            limits=[PER_MINUTE, PER_DAY],
            secret=credentials_pb2.CredentialSecret(api_key=f"upstream-key-{priority}-abcdef"),
        ),
        metadata=bearer(ACME),
    )
    return created.credential


async def _listed(rig: Rig) -> list[credentials_pb2.Credential]:
    response = await rig.credentials.ListCredentials(
        credentials_pb2.ListCredentialsRequest(), metadata=bearer(ACME), timeout=10
    )
    return sorted(response.credentials, key=lambda c: c.priority)


async def test_a_listing_shows_each_credentials_cooldown_and_window_usage_from_ratelimit(rig: Rig) -> None:
    used, refused = await _create(rig, 0), await _create(rig, 1)
    candidate = ratelimit_pb2.CredentialCandidate(credential_id=used.credential_id, limits=used.limits)
    for n in range(2):
        answer = await rig.ratelimit.AcquireCredential(
            ratelimit_pb2.AcquireCredentialRequest(reservation_id=f"r{n}", candidates=[candidate], estimated_tokens=50)
        )
        assert answer.credential_id == used.credential_id
    await rig.ratelimit.ReportCredentialFailure(
        ratelimit_pb2.ReportCredentialFailureRequest(credential_id=refused.credential_id, upstream_status=429)
    )
    now = int(time.time())
    events = [
        metering_pb2.UsageEvent(
            event_id=f"e{n}",
            tenant_id="acme",
            credential_id=credential,
            prompt_tokens=10,
            completion_tokens=5,
            cost_micro_usd=7,
            outcome=metering_pb2.OUTCOME_SUCCESS,
            time=timestamp_pb2.Timestamp(seconds=now),
        )
        for n, credential in enumerate([used.credential_id, used.credential_id, "", "cred_elsewhere"])
    ]
    await rig.metering.RecordEvents(metering_pb2.RecordEventsRequest(events=events))

    first, second = await _listed(rig)

    assert [(w.quota.unit, w.used, w.remaining) for w in first.window_usage] == [
        (quota_pb2.UNIT_REQUESTS, 2, 8),
        (quota_pb2.UNIT_TOKENS, 100, 900),
    ]
    assert all(w.reset_after.seconds > 0 or w.reset_after.nanos > 0 for w in first.window_usage)
    assert not first.HasField("cooldown_until")
    assert second.HasField("cooldown_until") and second.cooldown_until.ToSeconds() > time.time()
    assert [w.used for w in second.window_usage] == [0, 0]
    usage = first.month_usage
    assert (usage.requests, usage.prompt_tokens, usage.completion_tokens, usage.cost_micro_usd) == (2, 20, 10, 14)
    assert usage.since.ToDatetime().day == 1 and second.HasField("month_usage") and not second.month_usage.requests
    table = format_credentials([first, second]).splitlines()
    assert "2/10 req/min, 100/1000 tok/day  2 req, 30 tok" in table[1] and table[1].endswith("active")
    assert "cooling down until" in table[2]


async def test_with_ratelimit_down_the_listing_still_answers_without_runtime_state(rig: Rig) -> None:
    created = await _create(rig, 0)
    await rig.ratelimit_server.stop(None)
    await rig.metering_app.stop(0)

    started = time.monotonic()
    (listed,) = await _listed(rig)

    assert listed.credential_id == created.credential_id and list(listed.limits) == [PER_MINUTE, PER_DAY]
    assert not listed.HasField("cooldown_until") and not listed.window_usage
    assert not listed.HasField("month_usage")
    assert time.monotonic() - started < 5
    assert "  -  " in format_credentials([listed]).splitlines()[1]
