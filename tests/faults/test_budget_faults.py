"""Budgets and token limits are ceilings, against the real suite, a real Redis and a hostile upstream.

Concurrent bursts of requests whose prompt the upstream counts at one token per byte (four times the
old estimate), without max_tokens, unary answers of a fixed length and streams that ignore max_tokens,
and Redis killed and restarted empty mid-run: the spend and tokens in the ledger and in the counters
may exceed each limit by at most one request's reservation.

One request's reservation, for these requests:
- unary `priced`, 8,000-byte prompt, no max_tokens: 8,016 prompt tokens (ceiling) + 1,024 completion
  (the cap sent upstream) = 9,040 tokens, 80,160 + 30,720 = 110,880 micro-USD;
- streamed `cheap`, max_tokens 50: the first reservation or one extension of 1,024 tokens, whichever is
  larger, plus the one chunk that did not fit (5 tokens as a ceiling).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.faults.budget_harness import (
    BUDGET_USD_PER_DAY,
    CHEAP_OUTPUT_MICRO_USD,
    INPUT_MICRO_USD,
    OUTPUT_MICRO_USD,
    TOKENS_PER_DAY,
    BudgetGateway,
    budget_gateway,
)
from tests.servers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

BUDGET = round(BUDGET_USD_PER_DAY * 1_000_000)
PROMPT = "lorem ipsum " * 666 + "dolor si"  # 8,000 bytes
assert len(PROMPT.encode()) == 8000
UNARY_RESERVATION_TOKENS = 8 + 8 + 8000 + 1024
UNARY_RESERVATION_COST = (8 + 8 + 8000) * INPUT_MICRO_USD + 1024 * OUTPUT_MICRO_USD
STREAM_RESERVATION_TOKENS = 1024 + 5
WORKERS = 12
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BudgetGateway]:
    with budget_gateway(tmp_path_factory.mktemp("budget-suite")) as running:
        yield running


def _headers(gateway: BudgetGateway, tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {gateway.keys[tenant]}"}


async def _unary_until_refused(
    gateway: BudgetGateway,
    tenant: str,
    *,
    max_requests: int,
    workers: int = WORKERS,
    served: list[httpx.Response] | None = None,
) -> list[httpx.Response]:
    """Concurrent clients sending until each is refused (429), riding out 503s (Redis down, a
    rebuild); the answers are appended to ``served`` as they come."""
    body = {"model": "priced", "messages": [{"role": "user", "content": PROMPT}]}
    served = [] if served is None else served
    deadline = time.monotonic() + DEADLINE_S
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, headers=_headers(gateway, tenant)) as client:

        async def worker() -> None:
            while len(served) < max_requests and time.monotonic() < deadline:
                response = await client.post("/v1/chat/completions", json=body)
                if response.status_code == 200:
                    served.append(response)
                elif response.status_code == 503:
                    await asyncio.sleep(0.1)
                else:
                    assert response.status_code == 429, response.text
                    return

        await asyncio.gather(*(worker() for _ in range(workers)))
    return served


def _settled(gateway: BudgetGateway, tenant: str, served: int) -> None:
    """Wait until the ledger holds at least every answered request (metering is asynchronous)."""
    wait_until(lambda: gateway.ledger(tenant)[0] >= served, f"{served} events of {tenant} in the ledger", 20)


def _assert_within(spent: int, tokens: int, *, reservation_cost: int, reservation_tokens: int, what: str) -> None:
    print(
        f"{what}: spent {spent} micro-USD of {BUDGET} (bound {BUDGET + reservation_cost}); "
        f"tokens {tokens} of {TOKENS_PER_DAY} (bound {TOKENS_PER_DAY + reservation_tokens})"
    )
    assert spent <= BUDGET + reservation_cost, f"{what}: spent {spent} on a budget of {BUDGET}"
    assert tokens <= TOKENS_PER_DAY + reservation_tokens, f"{what}: {tokens} tokens on a limit of {TOKENS_PER_DAY}"


async def test_a_burst_without_max_tokens_and_undercounted_prompts_stays_within_the_budget(
    gateway: BudgetGateway,
) -> None:
    served = await _unary_until_refused(gateway, "spend", max_requests=60)

    assert served, "the budget admits some requests"
    assert all(r.headers["x-gateway-max-tokens-capped"] == "1024" for r in served), "the cap is never silent"
    assert set(gateway.upstream.stats.max_tokens_seen) == {1024}
    _settled(gateway, "spend", len(served))
    events, tokens, spent = gateway.ledger("spend")
    assert events == len(served)
    assert spent == len(served) * (8000 * INPUT_MICRO_USD + 800 * OUTPUT_MICRO_USD), "settled at the actual usage"
    _assert_within(
        spent,
        tokens,
        reservation_cost=UNARY_RESERVATION_COST,
        reservation_tokens=UNARY_RESERVATION_TOKENS,
        what="ledger",
    )
    wait_until(lambda: gateway.counters("spend")[1] == spent, "the counters to settle", 10)
    counted_tokens, counted_cost = gateway.counters("spend")
    _assert_within(
        counted_cost,
        counted_tokens,
        reservation_cost=UNARY_RESERVATION_COST,
        reservation_tokens=UNARY_RESERVATION_TOKENS,
        what="counters",
    )


async def _stream(client: httpx.AsyncClient) -> tuple[int, bool, bool]:
    """One stream: (content bytes received, ended with [DONE], ended with an error event), or (-1, …) if refused."""
    body = {"model": "cheap", "stream": True, "max_tokens": 50, "messages": [{"role": "user", "content": "go on"}]}
    received, done, error = 0, False, False
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            assert response.status_code == 429, await response.aread()
            return -1, False, False
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                continue
            event = json.loads(data)
            if "error" in event:
                error = True
                continue
            received += sum(len((c.get("delta") or {}).get("content") or "") for c in event.get("choices", []))
    return received, done, error


async def test_streams_that_ignore_max_tokens_are_stopped_at_the_token_limit(gateway: BudgetGateway) -> None:
    results: list[tuple[int, bool, bool]] = []
    deadline = time.monotonic() + DEADLINE_S
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60, headers=_headers(gateway, "stream")) as client:

        async def worker() -> None:
            while time.monotonic() < deadline and len(results) < 100:
                result = await _stream(client)
                if result[0] < 0:
                    return
                results.append(result)

        await asyncio.gather(*(worker() for _ in range(WORKERS)))

    assert results, "the limit admits some streams"
    stopped = [r for r in results if r[2]]
    assert stopped, "a stream running past the limit is stopped"
    assert all(not done for _, done, error in results if error), "a stopped stream never ends with [DONE]"
    assert all(received < 5 * 5000 for received, _, _ in results), "no stream ran to the upstream's end"
    _settled(gateway, "stream", len(results))
    _, tokens, spent = gateway.ledger("stream")
    reservation_cost = STREAM_RESERVATION_TOKENS * CHEAP_OUTPUT_MICRO_USD
    _assert_within(
        spent, tokens, reservation_cost=reservation_cost, reservation_tokens=STREAM_RESERVATION_TOKENS, what="ledger"
    )
    wait_until(lambda: gateway.counters("stream")[0] == tokens, "the counters to settle", 10)
    counted_tokens, counted_cost = gateway.counters("stream")
    _assert_within(
        counted_cost,
        counted_tokens,
        reservation_cost=reservation_cost,
        reservation_tokens=STREAM_RESERVATION_TOKENS,
        what="counters",
    )


async def test_redis_restarted_empty_mid_burst_does_not_reset_the_budget(gateway: BudgetGateway) -> None:
    served: list[httpx.Response] = []
    burst = asyncio.create_task(_unary_until_refused(gateway, "restart", max_requests=60, served=served))
    async with asyncio.timeout(DEADLINE_S):
        while len(served) < 3:
            await asyncio.sleep(0.01)
    # Killed while the burst runs: requests in flight lose their reservations with it.
    await asyncio.to_thread(gateway.redis.kill)
    await asyncio.to_thread(gateway.redis.start)  # empty: counters, reservations and the marker are gone
    await burst

    _settled(gateway, "restart", len(served))
    events, tokens, spent = gateway.ledger("restart")
    assert events == len(served)
    _assert_within(
        spent,
        tokens,
        reservation_cost=UNARY_RESERVATION_COST,
        reservation_tokens=UNARY_RESERVATION_TOKENS,
        what="ledger after a Redis restart",
    )
    wait_until(
        lambda: gateway.counters("restart")[1] == spent,
        f"the rebuilt counters ({gateway.counters('restart')}) to hold the ledger ({tokens}, {spent})",
        10,
    )
