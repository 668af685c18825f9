"""End to end: keys, scopes, allowlists, expiry, revocation, budgets, token and concurrency limits,
per-request cost caps and tenant policy, through the edge of the real suite with the official SDK.

Every key here is created through the admin HTTP API (``/admin/v1/...``, transcoded from the auth
service's ``google.api.http`` annotations) and remembered, so the last test can grep the suite's
logs and databases for every key of the session. Keep that test last in the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from gateway.metering.v1 import metering_pb2, metering_pb2_grpc
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there, gateway!"}]
# The mock answers "Mock reply to: Hello there, gateway!" (6 words); max_tokens=5 cuts it to 5, so
# the actual completion equals the reserved completion budget and settlement frees nothing.
MAX_TOKENS = 5
# Prices of the `fast` alias (mock:fast-demo) in the e2e config, micro-USD per token.
FAST_INPUT, FAST_OUTPUT = 1, 2

# Every key the tests of this module created (and one that never existed), for the last test.
_SECRETS: list[str] = []
_KEY_IDS: list[str] = []


# -- helpers -------------------------------------------------------------------------------------


def _admin(gateway: Gateway, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(
        method,
        f"{gateway.url}{path}",
        headers={"Authorization": f"Bearer {gateway.admin_key}"},
        json=body,
        timeout=10,
    )


def _create_key(gateway: Gateway, name: str, tenant_id: str = "acme", **fields: Any) -> tuple[str, str]:
    """(secret, key_id) of a new key made through ``POST /admin/v1/keys``."""
    created = _admin(gateway, "POST", "/admin/v1/keys", {"tenant_id": tenant_id, "name": name, **fields})
    assert created.status_code == 200, created.text
    body = created.json()
    secret, key_id = body["secret"], body["key"]["key_id"]
    assert secret.startswith("gw-") and len(secret) >= 43
    assert secret not in str(body["key"])
    _SECRETS.append(secret)
    _KEY_IDS.append(key_id)
    return secret, key_id


def _quota(unit: str, window: str, limit: int) -> dict[str, Any]:
    return {"unit": unit, "window": window, "limit": limit}


def _async_client(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def _poll_until_unauthenticated(client: openai.OpenAI, timeout_s: float) -> float:
    """Seconds until a request with ``client``'s key gets 401; fails after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            client.chat.completions.create(model="mock:demo", messages=HELLO)
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401 and exc.code == "invalid_api_key"
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the key still worked after {timeout_s}s")


async def _usage(gateway: Gateway, key_id: str, at_least: int, timeout_s: float = 10.0) -> metering_pb2.UsageRow:
    """The ledger's totals for ``key_id`` once it holds ``at_least`` requests (metering is batched)."""
    deadline = time.monotonic() + timeout_s
    # Metering answers only known service identities; the CLI's may read by key across tenants.
    async with gateway.suite.channel("metering", identity="cli") as channel:
        metering = metering_pb2_grpc.MeteringServiceStub(channel)
        while True:
            answer = await metering.QueryUsage(metering_pb2.QueryUsageRequest(key_id=key_id), timeout=5)
            row = answer.rows[0] if answer.rows else metering_pb2.UsageRow()
            if row.requests >= at_least:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"the ledger holds {row.requests} requests of {key_id}, expected {at_least}")
            await asyncio.sleep(0.05)


def _wait_for_fresh_minute(margin_s: float = 8.0) -> None:
    """Minute quotas reset on the UTC minute: a test that counts up to a minute limit starts only
    when at least ``margin_s`` of the current minute remain, or its counter could reset midway."""
    left = 60 - time.time() % 60
    if left < margin_s:
        time.sleep(left + 0.05)


# -- allowlists and scopes ----------------------------------------------------------------------


def test_model_allowlist(gateway: Gateway) -> None:
    secret, _ = _create_key(gateway, "mock-only", allowed_models=["mock:*"])
    client = gateway.client(key=secret)
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="fake:x", messages=HELLO)
    assert info.value.status_code == 403
    assert info.value.code == "model_not_allowed"
    assert secret not in str(info.value.body)
    reply = client.chat.completions.create(model="mock:demo", messages=HELLO)
    assert reply.choices[0].message.content
    # The list shows exactly what admission allows: the alias `fast` is served by mock:fast-demo,
    # which the allowlist matches; `upstream` (fake:plain) is hidden.
    listed = [m.id for m in client.models.list()]
    assert {"mock:gateway-demo", "mock:fast-demo", "fast"} <= set(listed)
    assert "upstream" not in listed and "fake:plain" not in listed, listed
    assert client.chat.completions.create(model="fast", messages=HELLO).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="upstream", messages=HELLO)
    # The same catalog for a key without an allowlist shows what was hidden.
    assert {"upstream", "fake:plain"} <= {m.id for m in gateway.client().models.list()}


def test_admin_api_needs_admin_scope(gateway: Gateway) -> None:
    tenant_key = httpx.get(f"{gateway.url}/admin/v1/keys", headers={"Authorization": f"Bearer {gateway.key}"})
    assert tenant_key.status_code == 403, tenant_key.text
    assert tenant_key.json()["error"]["type"] == "permission_error"
    no_key = httpx.get(f"{gateway.url}/admin/v1/keys")
    assert no_key.status_code == 401, no_key.text
    assert no_key.json()["error"]["code"] == "missing_api_key"
    created = httpx.post(
        f"{gateway.url}/admin/v1/keys",
        headers={"Authorization": f"Bearer {gateway.other_key}"},
        json={"tenant_id": "beta", "name": "sneaky"},
    )
    assert created.status_code == 403, created.text
    assert "secret" not in created.json()
    admin = _admin(gateway, "GET", "/admin/v1/keys")
    assert admin.status_code == 200, admin.text
    keys = admin.json()["keys"]
    assert {"acme", "beta", "admin"} <= {k["tenant_id"] for k in keys}
    # A listing shows prefixes, never secrets or their hashes.
    listing = admin.text
    for secret in (gateway.key, gateway.other_key, gateway.admin_key):
        assert secret not in listing and hashlib.sha256(secret.encode()).hexdigest() not in listing
    assert all("secret" not in k and len(k["prefix"]) <= 8 for k in keys)


# -- expiry and revocation ----------------------------------------------------------------------


def test_expired_key_stops_working(gateway: Gateway) -> None:
    expire = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    secret, _ = _create_key(gateway, "short-lived", expire_time=expire)
    client = gateway.client(key=secret)
    assert client.chat.completions.create(model="mock:demo", messages=HELLO).choices[0].message.content
    # Expiry (3 s) plus at most one router cache lifetime (<= 5 s) bounds this.
    _poll_until_unauthenticated(client, timeout_s=10.0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="mock:demo", messages=HELLO)


def test_revoked_key_fails_within_five_seconds(gateway: Gateway) -> None:
    secret, key_id = _create_key(gateway, "to-revoke")
    client = gateway.client(key=secret)
    # Used once, so the router has it cached when it is revoked.
    assert client.chat.completions.create(model="mock:demo", messages=HELLO).choices[0].message.content
    revoked = _admin(gateway, "POST", f"/admin/v1/keys/{key_id}:revoke", {})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["key"]["revoke_time"]
    elapsed = _poll_until_unauthenticated(client, timeout_s=10.0)
    assert elapsed < 5.0, f"the revoked key worked for {elapsed:.2f}s"
    active = _admin(gateway, "GET", "/admin/v1/keys?tenant_id=acme").json()["keys"]
    assert key_id not in [k["key_id"] for k in active]
    everything = _admin(gateway, "GET", "/admin/v1/keys?tenant_id=acme&include_revoked=true").json()["keys"]
    assert key_id in [k["key_id"] for k in everything]


# -- budgets and limits -------------------------------------------------------------------------


async def test_spend_budget_holds(gateway: Gateway) -> None:
    budget = 60
    secret, key_id = _create_key(
        gateway, "budget", limits={"quotas": [_quota("UNIT_COST_MICRO_USD", "WINDOW_DAY", budget)]}
    )
    admitted: list[int] = []
    estimate = 0
    async with _async_client(gateway, secret) as client:
        for _ in range(20):
            try:
                reply = await client.chat.completions.create(model="fast", messages=HELLO, max_tokens=MAX_TOKENS)
            except openai.RateLimitError as exc:
                refusal = exc
                break
            assert reply.usage is not None
            # The mock reports the router's own prompt estimate as prompt tokens, so this is the
            # reservation: the prompt estimate plus max_tokens, priced.
            estimate = reply.usage.prompt_tokens * FAST_INPUT + MAX_TOKENS * FAST_OUTPUT
            admitted.append(reply.usage.prompt_tokens * FAST_INPUT + reply.usage.completion_tokens * FAST_OUTPUT)
        else:
            raise AssertionError("20 requests passed a 60 micro-USD budget")
    assert refusal.status_code == 429
    assert refusal.code == "insufficient_quota"
    assert int(refusal.response.headers["retry-after"]) >= 1
    assert admitted and all(cost == estimate for cost in admitted)
    # Reserved spend never exceeded the budget, and the refusal came only when the next
    # reservation no longer fitted.
    assert len(admitted) * estimate <= budget < (len(admitted) + 1) * estimate
    ledger = await _usage(gateway, key_id, at_least=len(admitted))
    assert ledger.requests == len(admitted)
    assert ledger.cost_micro_usd == sum(admitted) <= budget


async def test_spend_budget_holds_under_concurrency(gateway: Gateway) -> None:
    budget = 60
    secret, key_id = _create_key(
        gateway, "budget-burst", limits={"quotas": [_quota("UNIT_COST_MICRO_USD", "WINDOW_DAY", budget)]}
    )
    async with _async_client(gateway, secret) as client:
        results = await asyncio.gather(
            *(client.chat.completions.create(model="fast", messages=HELLO, max_tokens=MAX_TOKENS) for _ in range(10)),
            return_exceptions=True,
        )
    passed = [r for r in results if isinstance(r, ChatCompletion)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(passed) + len(refused) == len(results), results
    assert passed and all(r.code == "insufficient_quota" for r in refused), results
    usage = passed[0].usage
    assert usage is not None
    estimate = usage.prompt_tokens * FAST_INPUT + MAX_TOKENS * FAST_OUTPUT
    assert len(passed) == budget // estimate
    ledger = await _usage(gateway, key_id, at_least=len(passed))
    assert ledger.requests == len(passed) and ledger.cost_micro_usd <= budget


def test_token_limit_reserves_the_estimate(gateway: Gateway) -> None:
    limit = 100
    secret, _ = _create_key(gateway, "tokens", limits={"quotas": [_quota("UNIT_TOKENS", "WINDOW_MINUTE", limit)]})
    client = gateway.client(key=secret)
    _wait_for_fresh_minute()

    def ask(max_tokens: int) -> tuple[int, int]:
        raw = client.chat.completions.with_raw_response.create(model="mock:demo", messages=HELLO, max_tokens=max_tokens)
        headers = raw.headers
        assert headers["x-ratelimit-limit-tokens"] == str(limit)
        assert re.fullmatch(r"(\d+h)?(\d+m)?\d+(ms|s)", headers["x-ratelimit-reset-tokens"]), headers
        usage = raw.parse().usage
        assert usage is not None
        return int(headers["x-ratelimit-remaining-tokens"]), usage.prompt_tokens + max_tokens

    remaining, estimate = ask(MAX_TOKENS)
    assert remaining == limit - estimate
    # A request whose reservation (prompt ceiling + max_tokens) is larger than the whole window can
    # never fit: it is a bad request naming the parameter (not "try again"), refused before anything
    # is reserved (the next request below finds the same remaining tokens).
    with pytest.raises(openai.BadRequestError) as too_big:
        client.chat.completions.create(model="mock:demo", messages=HELLO, max_tokens=limit)
    assert too_big.value.status_code == 400
    assert too_big.value.param == "max_tokens"
    assert "can never fit" in too_big.value.message and "tokens/minute" in too_big.value.message
    admitted = 1
    while True:
        try:
            now_remaining, _ = ask(MAX_TOKENS)
        except openai.RateLimitError as exc:
            refusal = exc
            break
        admitted += 1
        assert now_remaining == remaining - estimate
        remaining = now_remaining
        assert admitted <= limit // estimate, "more tokens were reserved than the limit holds"
    assert admitted == limit // estimate
    assert int(refusal.response.headers["retry-after"]) >= 1
    assert refusal.response.headers["x-ratelimit-limit-tokens"] == str(limit)


async def test_per_request_cost_cap(gateway: Gateway) -> None:
    secret, key_id = _create_key(gateway, "capped", limits={"quotas": [_quota("UNIT_REQUESTS", "WINDOW_DAY", 100)]})
    client = gateway.client(key=secret)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="fast", messages=HELLO, max_tokens=MAX_TOKENS, extra_body={"gateway": {"max_cost_usd": 0.0000001}}
        )
    assert info.value.status_code == 400
    assert info.value.code == "cost_limit_exceeded"
    assert info.value.param == "gateway.max_cost_usd"
    raw = client.chat.completions.with_raw_response.create(
        model="fast", messages=HELLO, max_tokens=MAX_TOKENS, extra_body={"gateway": {"max_cost_usd": 0.01}}
    )
    assert raw.parse().choices[0].message.content
    # The refused request reserved nothing (one request counted) and never reached a provider:
    # the ledger, which records every admitted request, holds only the second one.
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"
    ledger = await _usage(gateway, key_id, at_least=1)
    assert ledger.requests == 1 and ledger.errors == 0


def test_tenant_policy(gateway: Gateway) -> None:
    tenant_id = f"policed-{secrets.token_hex(4)}"
    created = _admin(
        gateway,
        "POST",
        "/admin/v1/tenants",
        {"tenant": {"tenant_id": tenant_id, "policy": {"deny_models": ["mock:fast-*"], "max_prompt_tokens": 50}}},
    )
    assert created.status_code == 200, created.text
    assert created.json()["tenant"]["policy"]["max_prompt_tokens"] == 50
    secret, _ = _create_key(gateway, "policed", tenant_id=tenant_id)
    client = gateway.client(key=secret)
    for model in ("fast", "mock:fast-demo"):
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model=model, messages=HELLO)
        assert denied.value.code == "model_not_allowed", model
    long_prompt: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "word " * 60}
    ]  # 300 characters: about 75 tokens
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="mock:demo", messages=long_prompt)
    assert too_long.value.code == "policy_violation"
    assert client.chat.completions.create(model="mock:demo", messages=HELLO).choices[0].message.content
    # The policy is the tenant's: another tenant's key still reaches the denied model.
    assert gateway.client().chat.completions.create(model="fast", messages=long_prompt).choices


async def test_concurrency_cap(gateway: Gateway) -> None:
    secret, _ = _create_key(gateway, "one-at-a-time", limits={"max_concurrent_requests": 1})
    async with _async_client(gateway, secret) as client:
        first = await client.chat.completions.create(model="mock:slow-200", messages=HELLO, stream=True)
        chunks = aiter(first)
        opening = await anext(chunks)
        assert opening.choices[0].delta.role == "assistant"
        with pytest.raises(openai.RateLimitError) as refused:
            second = await client.chat.completions.create(model="mock:slow-200", messages=HELLO, stream=True)
            await second.close()
        assert refused.value.status_code == 429
        assert refused.value.code == "rate_limit_exceeded"
        rest = [chunk async for chunk in chunks]
        assert [c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason] == ["stop"]
        # The slot is released when the router settles, just after the stream ended.
        deadline = time.monotonic() + 5.0
        while True:
            try:
                reply = await client.chat.completions.create(model="mock:demo", messages=HELLO)
                break
            except openai.RateLimitError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert reply.choices[0].message.content


# -- no secrets in clear (keep last) ------------------------------------------------------------


def _sqlite_dump(path: Path) -> tuple[list[str], str]:
    """(table names, every row of every table as text) of a SQLite database, opened read-only."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = [repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"')]
    return tables, "\n".join(rows)


def _check_data_folder(gateway: Gateway, needles: list[str], stored: list[str], key_id: str) -> None:
    """No needle in any file of the suite's data folder nor in any row of its databases."""
    data = gateway.suite.data_dir
    files = [p for p in data.rglob("*") if p.is_file()]
    logs = [p for p in files if p.parent == gateway.suite.log_dir]
    assert {p.name for p in logs} >= {f"{n}.log" for n in ("auth", "ratelimit", "metering", "providers", "router")}
    assert all(p.stat().st_size > 0 for p in logs), [(p.name, p.stat().st_size) for p in logs]
    for path in files:
        content = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in content, f"a key is in clear in {path.relative_to(data)}"
    # The logs do talk about keys (by id), which is where a leak would show.
    assert key_id in "".join(p.read_text(errors="replace") for p in logs)

    auth_tables, auth_rows = _sqlite_dump(data / "auth.db")
    metering_tables, metering_rows = _sqlite_dump(data / "metering.db")
    assert "auth_api_keys" in auth_tables and "usage_events" in metering_tables
    for needle in needles:
        assert needle not in auth_rows, "a key is in clear in auth.db"
        assert needle not in metering_rows, "a key is in clear in metering.db"
    for key in stored:
        assert hashlib.sha256(key.encode()).hexdigest() in auth_rows
    assert key_id in metering_rows


async def test_no_key_in_clear_anywhere(gateway: Gateway) -> None:
    # Traffic of its own, so this holds even when run alone: a good key, a refusal, an unknown key.
    secret, key_id = _create_key(gateway, "grep-me", allowed_models=["mock:*"])
    # Each SDK client is closed: a dropped one leaks its pooled socket into a later test.
    with gateway.client(key=secret) as client:
        client.chat.completions.create(model="mock:demo", messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="fake:x", messages=HELLO)
    unknown = f"gw-{secrets.token_urlsafe(32)}"
    with gateway.client(key=unknown) as stranger, pytest.raises(openai.AuthenticationError) as info:
        stranger.chat.completions.create(model="mock:demo", messages=HELLO)
    assert unknown not in str(info.value.body)
    await _usage(gateway, key_id, at_least=1)

    stored = [gateway.key, gateway.other_key, gateway.admin_key, *_SECRETS]
    everything = [*stored, unknown, "upstream-secret"]
    # The random part too, in case a key were written without its "gw-" prefix.
    needles = sorted({s for key in everything for s in (key, key.removeprefix("gw-"))}, key=len, reverse=True)
    await asyncio.to_thread(_check_data_folder, gateway, needles, stored, key_id)
