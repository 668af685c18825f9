"""``python -m bench.router_logic``: what the router's own decisions cost per chat, with no gRPC.

``make bench`` measures the whole suite, and ``bench.grpc_floor`` the transport under it; this
measures the part in between that is the router's own code: ``Orchestrator.chat`` run in one
process, 8 at a time, with auth, ratelimit and providers replaced by in-memory answers, and
everything else real (the usage spool on SQLite with its writer thread, quota blocks, leases,
planning, validation, metrics, the request log when ``--log on``).

On a shared machine, CPU time moves by 10-20% between runs, more than most changes to this code;
``--callgrind`` counts instructions instead (valgrind runs this twice, with ``--chats`` more chats
the second time, and the difference per chat is printed), which repeats to within about 0.5%.
It is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from google.protobuf import duration_pb2

from bench.args import positive_int
from gateway.auth.v1 import auth_pb2
from gateway.chat.v1 import chat_pb2
from gateway.providers.v1 import providers_pb2
from gateway.ratelimit.v1 import ratelimit_pb2
from gateway_common.config import GatewayConfig
from services.router.auth_cache import AuthCache
from services.router.background import BackgroundTasks
from services.router.leases import Leases
from services.router.orchestrator import CallContext, Orchestrator
from services.router.planner import Planner
from services.router.quota_blocks import QuotaBlocks
from services.router.usage_spool import UsageSpool

CONFIG: dict[str, Any] = {
    "providers": {"fake": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1"}},
    "limits": {"requests_per_minute": 100_000_000, "tokens_per_minute": 100_000_000_000},
}
"""As ``make bench`` configures the suite: one OpenAI-compatible provider, limits far away."""

_REQUEST = chat_pb2.ChatCompletionRequest(
    model="fake:bench", messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text="hi")]
)
_ANSWER = providers_pb2.ChatResponse(
    completion=chat_pb2.ChatCompletion(
        id="chatcmpl-bench",
        model="bench",
        choices=[
            chat_pb2.Choice(
                message=chat_pb2.Message(role=chat_pb2.ROLE_ASSISTANT, text="Hello! How can I help?"),
                finish_reason=chat_pb2.FINISH_REASON_STOP,
            )
        ],
        usage=chat_pb2.Usage(prompt_tokens=9, completion_tokens=7, total_tokens=16),
    )
)
_CONCURRENCY = 8
_CALLGRIND_BASE = 16
"""Chats of the shorter valgrind run, whose count (imports, start-up) the longer one's is compared to."""


class _Auth:
    async def Authenticate(self, request: auth_pb2.AuthenticateRequest, **_: Any) -> auth_pb2.AuthenticateResponse:
        principal = auth_pb2.Principal(tenant_id="bench", key_id="k1", scopes=["chat"])
        return auth_pb2.AuthenticateResponse(principal=principal, cache_ttl_seconds=30)


class _RateLimit:
    """Allows everything and shows plenty left, so quota blocks serve most requests as in the suite."""

    def __init__(self) -> None:
        self.acquires = 0

    async def Acquire(self, request: ratelimit_pb2.AcquireRequest, **_: Any) -> ratelimit_pb2.AcquireResponse:
        self.acquires += 1
        statuses = [
            ratelimit_pb2.QuotaStatus(
                descriptor=limits.descriptor,
                quota=quota,
                remaining=quota.limit - 1,
                reset_after=duration_pb2.Duration(seconds=50),
            )
            for limits in request.limits
            for quota in limits.quotas
        ]
        return ratelimit_pb2.AcquireResponse(allowed=True, statuses=statuses, epoch="bench")

    async def Settle(self, request: ratelimit_pb2.SettleRequest, **_: Any) -> ratelimit_pb2.SettleResponse:
        return ratelimit_pb2.SettleResponse(found=True)

    async def RenewLeases(
        self, request: ratelimit_pb2.RenewLeasesRequest, **_: Any
    ) -> ratelimit_pb2.RenewLeasesResponse:
        return ratelimit_pb2.RenewLeasesResponse()


class _Providers:
    async def Chat(self, request: providers_pb2.ChatRequest, **_: Any) -> providers_pb2.ChatResponse:
        await asyncio.sleep(0)  # one turn of the loop, as an answer arriving would take
        return _ANSWER


async def _no_headers(headers: list[tuple[str, str]]) -> None:
    pass


async def _run(chats: int, rounds: int, warm: int, data: Path) -> tuple[list[float], int]:
    """CPU µs per chat of each round, and how many Acquires the fake limiter answered."""
    config = GatewayConfig.model_validate(CONFIG)
    spool = UsageSpool(data / "spool.db")
    await spool.open()
    background = BackgroundTasks()
    ratelimit = _RateLimit()
    leases = Leases(ratelimit, config.ratelimit.lease_s)  # type: ignore[arg-type]
    blocks = QuotaBlocks(ratelimit, config.router.quota_blocks, background, leases, connected=lambda: True)  # type: ignore[arg-type]
    orchestrator = Orchestrator(
        config,
        AuthCache(_Auth(), ttl_s=30),  # type: ignore[arg-type]
        ratelimit,  # type: ignore[arg-type]
        _Providers(),  # type: ignore[arg-type]
        spool,
        background,
        leases,
        planner=Planner(config),
        quota_blocks=blocks,
    )
    sent = 0

    async def wave() -> None:
        nonlocal sent
        calls = [CallContext(api_key="gw-bench", request_id=f"r{sent + i}") for i in range(_CONCURRENCY)]
        sent += _CONCURRENCY
        await asyncio.gather(*(orchestrator.chat(_REQUEST, call, _no_headers) for call in calls))

    try:
        for _ in range(max(1, warm // _CONCURRENCY)):
            await wave()
        per_chat: list[float] = []
        for _ in range(rounds):
            waves = max(1, chats // _CONCURRENCY)
            started = time.process_time()  # every thread: the spool's writer too
            for _ in range(waves):
                await wave()
            per_chat.append((time.process_time() - started) / (waves * _CONCURRENCY) * 1e6)
        return per_chat, ratelimit.acquires
    finally:
        await spool.close()


def _measure(chats: int, rounds: int, warm: int, log: bool) -> tuple[list[float], int]:
    if log:
        # The request log on, as in production, into a handler that drops it (its formatting and
        # file writes are the logging setup's cost, which make bench's two columns show).
        logger = logging.getLogger("services.router.orchestrator")
        logger.setLevel(logging.INFO)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    with tempfile.TemporaryDirectory(prefix="router-logic-") as data:
        return uvloop.run(_run(chats, rounds, warm, Path(data)))


def _instructions(chats: int, log: str) -> int:
    argv = [sys.executable, "-m", "bench.router_logic", "--chats", str(chats), "--rounds", "1", "--warm", "8"]
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv, "--log", log],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"valgrind printed no instruction count:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    """Print the CPU per chat of each round (or, with ``--callgrind``, the instructions per chat)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--chats", type=positive_int, help="chats per round (4000); with --callgrind, the extra chats (400)"
    )
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--warm", type=positive_int, default=160, help="chats before the first round")
    parser.add_argument("--log", choices=("on", "off"), default="on", help="the request log (INFO) on or off")
    parser.add_argument("--callgrind", action="store_true", help="count instructions under valgrind instead")
    args = parser.parse_args()
    if args.chats is None:
        args.chats = 400 if args.callgrind else 4000
    if args.callgrind:
        if shutil.which("valgrind") is None:
            sys.exit("--callgrind needs valgrind (Debian: apt-get install valgrind)")
        base = _instructions(_CALLGRIND_BASE, args.log)
        more = _instructions(_CALLGRIND_BASE + args.chats, args.log)
        print(f"router logic, log {args.log}: {(more - base) / args.chats:,.0f} instructions per chat (callgrind)")
        return
    per_chat, acquires = _measure(args.chats, args.rounds, args.warm, args.log == "on")
    rounds = " ".join(f"{value:.0f}" for value in per_chat)
    print(
        f"router logic, log {args.log}: CPU per chat {statistics.median(per_chat):.0f} µs median, "
        f"{min(per_chat):.0f} µs best (rounds: {rounds}); {acquires} Acquires for "
        f"{args.warm + args.rounds * args.chats} chats"
    )


if __name__ == "__main__":
    main()
