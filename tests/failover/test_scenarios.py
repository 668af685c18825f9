"""The failover scenarios (issue 10), streaming and not, against the fault-injecting upstream.

Each test asserts what the client received (the complete answer or the exact error), how many
requests each upstream behaviour saw, the time taken, and what the ledger recorded. A stream that
"ends normally" is one whose router call ended without an error: the edge then sends ``[DONE]``;
after an error it sends an in-band error event and no ``[DONE]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2
from gateway.router.v1 import router_pb2
from gateway_common.errors import GatewayError, Reason
from services.router.continuation import CONTINUE_INSTRUCTION
from tests.failover.conftest import (
    ATTEMPT_TIMEOUT_S,
    FIRST_CONTENT_TIMEOUT_S,
    NO_CONTINUE_KEY,
    STREAM_IDLE_TIMEOUT_S,
    Clock,
    Rig,
    metadata,
    request,
)
from tests.failover.upstream import ANSWER

STREAMING = pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])


@dataclass
class Result:
    """What the client got from one call."""

    text: str = ""
    error: GatewayError | None = None
    chunks: list[chat_pb2.ChatCompletionChunk] = field(default_factory=list)
    completion: chat_pb2.ChatCompletion | None = None
    trailers: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def finish_reasons(self) -> list[int]:
        if self.completion is not None:
            return [c.finish_reason for c in self.completion.choices]
        return [c.finish_reason for k in self.chunks for c in k.choices if c.finish_reason]

    @property
    def usage(self) -> chat_pb2.Usage:
        if self.completion is not None:
            return self.completion.usage
        return next(k.usage for k in reversed(self.chunks) if k.HasField("usage"))


async def call(
    rig: Rig, alias: str, request_id: str, *, streaming: bool, key: str | None = None, **fields: Any
) -> Result:
    """One chat call through the router (with the default key, or ``key``); errors are captured, not raised."""
    result = Result()
    call_metadata = metadata(request_id) if key is None else metadata(request_id, key)
    with Clock() as clock:
        try:
            if streaming:
                stream = rig.router.StreamChat(
                    router_pb2.StreamChatRequest(completion=request(alias, **fields)), metadata=call_metadata
                )
                async for item in stream:
                    result.chunks.append(item.chunk)
                    result.text += "".join(c.delta.content for c in item.chunk.choices if c.index == 0)
                result.trailers = {k: v for k, v in await stream.trailing_metadata() or () if isinstance(v, str)}
            else:
                response = await rig.router.Chat(
                    router_pb2.ChatRequest(completion=request(alias, **fields)), metadata=call_metadata
                )
                result.completion = response.completion
                result.text = response.completion.choices[0].message.text
        except grpc.aio.AioRpcError as exc:
            result.error = GatewayError.from_rpc_error(exc)
    result.elapsed = clock.elapsed
    return result


def complete(result: Result) -> None:
    """The client got the whole answer, ending normally with a finish reason and usage."""
    assert result.error is None, result.error
    assert result.text == ANSWER
    assert result.finish_reasons == [chat_pb2.FINISH_REASON_STOP]
    assert result.usage.completion_tokens > 0


# -- 1, 2: rate limited ---------------------------------------------------------------------------


@STREAMING
async def test_429_with_retry_after_is_waited_out_on_the_same_deployment(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "ra-same", "ra", streaming=streaming)
    complete(result)
    assert rig.upstream.requests == {"ratelimited-after": 2}
    assert 1.0 <= result.elapsed < 2.0  # Retry-After: 1 honoured, bounded
    event = await rig.event("ra")
    assert (event.outcome, event.attempts) == (metering_pb2.OUTCOME_SUCCESS, 2)


@STREAMING
async def test_429_with_long_retry_after_moves_on_without_waiting(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "ra-elsewhere", "ra2", streaming=streaming)
    complete(result)
    assert rig.upstream.requests == {"ratelimited-long": 1, "ok": 1}
    assert result.elapsed < 1.0  # the other deployment does not wait out Retry-After: 30
    assert (await rig.event("ra2")).attempts == 2


@STREAMING
async def test_429_without_retry_after_moves_on(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "rl-elsewhere", "rl", streaming=streaming)
    complete(result)
    assert rig.upstream.requests == {"ratelimited": 1, "ok": 1}
    assert result.elapsed < 1.0
    event = await rig.event("rl")
    assert (event.provider, event.upstream_model, event.attempts) == ("up", "ok", 2)


# -- 3, 4, 5: transient and persistent errors -------------------------------------------------------


@STREAMING
async def test_500_once_is_retried_on_the_same_deployment(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "once", "once", streaming=streaming)
    complete(result)
    assert rig.upstream.requests == {"error-once": 2}
    assert result.elapsed < 1.0
    event = await rig.event("once")
    assert (event.upstream_model, event.attempts) == ("error-once", 2)


@STREAMING
async def test_persistent_503_falls_to_the_next_deployment(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "persistent", "p503", streaming=streaming)
    complete(result)
    assert rig.upstream.requests == {"unavailable": 2, "ok": 1}  # retried once, then moved on
    assert result.elapsed < 1.0
    event = await rig.event("p503")
    assert (event.upstream_model, event.attempts) == ("ok", 3)


@STREAMING
async def test_tcp_reset_is_retried(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "reset", "reset", streaming=streaming)
    complete(result)
    assert rig.upstream.requests == {"reset-once": 2}
    assert result.elapsed < 1.0
    assert (await rig.event("reset")).attempts == 2


# -- 6, 7: silence -----------------------------------------------------------------------------------


@STREAMING
async def test_black_hole_times_out_and_moves_on(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "blackhole", "bh", streaming=streaming)
    complete(result)
    assert rig.upstream.requests == {"blackhole": 1, "ok": 1}  # a timeout is not retried in place
    # Streams give up at the first-content timeout, unary calls at the attempt timeout.
    limit = FIRST_CONTENT_TIMEOUT_S if streaming else ATTEMPT_TIMEOUT_S
    assert limit <= result.elapsed < limit + 1.0
    event = await rig.event("bh")
    assert (event.upstream_model, event.attempts) == ("ok", 2)


async def test_slow_first_token_within_the_window_is_waited_for(rig: Rig) -> None:
    result = await call(rig, "slow-within", "slow1", streaming=True)
    complete(result)
    assert rig.upstream.requests == {"slow-200": 1}
    assert 0.2 <= result.elapsed < FIRST_CONTENT_TIMEOUT_S + 0.3
    assert (await rig.event("slow1")).upstream_model == "slow-200"


async def test_slow_first_token_beyond_the_window_fails_over(rig: Rig) -> None:
    result = await call(rig, "slow-beyond", "slow2", streaming=True)
    complete(result)
    assert rig.upstream.requests == {"slow-3000": 1, "ok": 1}
    assert FIRST_CONTENT_TIMEOUT_S <= result.elapsed < 2.0
    event = await rig.event("slow2")
    assert (event.upstream_model, event.attempts) == ("ok", 2)


async def test_role_chunk_then_stall_is_failed_over_not_an_in_band_timeout(rig: Rig) -> None:
    result = await call(rig, "roleonly", "role", streaming=True)
    complete(result)
    assert rig.upstream.requests == {"roleonly-stall": 1, "ok": 1}
    assert FIRST_CONTENT_TIMEOUT_S <= result.elapsed < 2.0
    roles = [c.delta.role for k in result.chunks for c in k.choices if c.delta.role]
    assert roles == [chat_pb2.ROLE_ASSISTANT]  # the held role chunk was not passed on twice


# -- 8, 9, 10: streams that break after content reached the client ----------------------------------


# A cut or a malformed chunk is transient: continued once on the same deployment (which breaks
# again, three words later), then on the next. A stall is a timeout: continued on the next at once.
BROKEN = [
    ("cut", 2, "The quick brown fox jumps over ", "up:cut@16; up:cut@31"),
    ("malformed", 2, "The quick brown fox jumps over ", "up:malformed@16; up:malformed@31"),
    ("stall", 1, "The quick brown ", "up:stall@16"),
]


@pytest.mark.parametrize(("alias", "tries", "partial", "continued_from"), BROKEN, ids=[b[0] for b in BROKEN])
async def test_broken_stream_is_continued_into_one_coherent_answer(
    rig: Rig, alias: str, tries: int, partial: str, continued_from: str
) -> None:
    result = await call(rig, alias, f"broken-{alias}", streaming=True)
    complete(result)
    assert rig.upstream.requests == {alias: tries, "ok": 1}
    continued = rig.upstream.bodies_for("ok")[0]["messages"]
    assert continued[-2] == {"role": "assistant", "content": partial}
    assert continued[-1] == {"role": "user", "content": CONTINUE_INSTRUCTION}
    assert len({k.id for k in result.chunks}) == 1  # one stream, one id, one role
    assert [c.delta.role for k in result.chunks for c in k.choices if c.delta.role] == [chat_pb2.ROLE_ASSISTANT]
    assert result.elapsed < (STREAM_IDLE_TIMEOUT_S + 1.0 if alias == "stall" else 1.0)
    event = await rig.event(f"broken-{alias}")
    assert event.outcome == metering_pb2.OUTCOME_SUCCESS
    assert (event.attempts, event.continuations, event.continued_from) == (
        tries + 1,
        continued_from.count("@"),
        continued_from,
    )


@pytest.mark.parametrize("alias", ["cut", "malformed"])
async def test_broken_unary_answer_is_retried(rig: Rig, alias: str) -> None:
    result = await call(rig, alias, f"u-{alias}", streaming=False)
    complete(result)
    assert rig.upstream.requests == {alias: 2, "ok": 1}
    assert (await rig.event(f"u-{alias}")).attempts == 3


async def test_stream_that_cannot_be_continued_ends_with_an_in_band_error(rig: Rig) -> None:
    result = await call(rig, "cut", "n2", streaming=True, n=2)
    assert result.error is not None and result.error.code == grpc.StatusCode.UNAVAILABLE
    assert "n > 1" in result.error.message and "attempts" in result.error.metadata
    assert result.text == "The quick brown "
    assert not result.finish_reasons  # never a truncated answer that looks complete
    assert rig.upstream.requests == {"cut": 1}
    event = await rig.event("n2")
    assert (event.outcome, event.continuations) == (metering_pb2.OUTCOME_ERROR, 0)


# -- 11: the end is recognised by its content --------------------------------------------------------


@STREAMING
async def test_missing_done_after_finish_is_a_complete_answer(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "nodone", "nodone", streaming=streaming)
    complete(result)
    assert result.usage.estimated  # the upstream sent none: the gateway counted
    assert rig.upstream.requests == {"nodone": 1}
    assert result.elapsed < 1.0
    event = await rig.event("nodone")
    assert event.outcome == metering_pb2.OUTCOME_SUCCESS and event.usage_estimated


# -- 12, 13, 14: refusals ----------------------------------------------------------------------------


@STREAMING
async def test_context_length_exceeded_moves_to_a_larger_window(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "toolong", "ctx", streaming=streaming)
    complete(result)
    assert rig.upstream.requests == {"toolong": 1, "ok": 1}
    assert (await rig.event("ctx")).upstream_model == "ok"


@STREAMING
async def test_context_length_exceeded_everywhere_is_a_400_naming_messages(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "toolong-only", "ctx2", streaming=streaming)
    assert result.error is not None
    assert (result.error.code, result.error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.CONTEXT_LENGTH_EXCEEDED,
    )
    assert result.error.metadata["param"] == "messages"
    assert rig.upstream.requests == {"toolong": 1}
    assert (await rig.event("ctx2")).outcome == metering_pb2.OUTCOME_ERROR


@STREAMING
async def test_content_filter_is_not_retried(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "filtered", "cf", streaming=streaming)
    assert result.error is not None
    assert (result.error.code, result.error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.CONTENT_FILTERED)
    assert rig.upstream.requests == {"filtered": 1}
    assert (await rig.event("cf")).attempts == 1


@STREAMING
async def test_fallback_rejecting_the_request_reports_the_primary_failure(rig: Rig, streaming: bool) -> None:
    result = await call(rig, "rejects", "rej", streaming=streaming)
    assert result.error is not None
    assert result.error.code == grpc.StatusCode.UNAVAILABLE  # the primary's 503, not the fallback's 400
    assert result.error.metadata["upstream_status"] == "503"
    attempts = result.error.metadata["attempts"].split("; ")
    assert attempts == [
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503)",
        "up:unavailable: UNAVAILABLE UPSTREAM_ERROR (HTTP 503)",
        "up:rejects: INVALID_ARGUMENT UPSTREAM_ERROR (HTTP 400)",
    ]
    assert rig.upstream.requests == {"unavailable": 2, "rejects": 1}
    assert (await rig.event("rej")).attempts == 3


# -- 15: flapping ------------------------------------------------------------------------------------


@STREAMING
async def test_flapping_primary_always_answers_with_bounded_retries(rig: Rig, streaming: bool) -> None:
    for i in range(6):
        complete(await call(rig, "flapping", f"flap{i}", streaming=streaming))
    assert rig.upstream.requests == {"flapping": 12}  # every other request fails: one retry each
    assert {(await rig.event(f"flap{i}")).attempts for i in range(6)} == {2}


# -- 16: accounting across attempts ------------------------------------------------------------------


async def test_fail_over_accounting_counts_every_attempt(rig: Rig) -> None:
    result = await call(rig, "priced", "acct", streaming=True)
    complete(result)
    event = await rig.event("acct")
    assert (event.attempts, event.continuations, event.continued_from) == (3, 2, "up:cut@16; up:cut@31")
    # The client's and the ledger's usage: the answering attempt's own (11 + 9) plus the two broken
    # ones counted by the gateway as ceilings: their prompts, and the 16 + 15 bytes they streamed
    # plus one token for each one's role chunk.
    broken_completion = (16 + 1) + (15 + 1)
    assert result.usage.completion_tokens == event.completion_tokens == 9 + broken_completion
    assert result.usage.prompt_tokens == event.prompt_tokens > 11
    broken_prompts = event.prompt_tokens - 11
    # $1 per token on the deployment that broke, $2 on the one that answered.
    assert event.cost_micro_usd == (broken_prompts + broken_completion) * 1_000_000 + (11 + 9) * 2_000_000


# -- tool calls cut mid-arguments ----------------------------------------------------------------------


async def test_tool_call_cut_mid_arguments_is_restarted_cleanly(rig: Rig) -> None:
    tool = chat_pb2.Tool(type="function")
    tool.function.name = "get_weather"
    result = await call(rig, "toolcut", "tools", streaming=True, tools=[tool])
    assert result.error is None, result.error
    calls = [t for k in result.chunks for c in k.choices for t in c.delta.tool_calls]
    assert [t.name for t in calls if t.name] == ["get_weather"]  # one call, never a half one
    assert "".join(t.arguments for t in calls) == '{"city": "Paris"}'
    assert result.finish_reasons == [chat_pb2.FINISH_REASON_TOOL_CALLS]
    assert rig.upstream.requests == {"toolcut": 2, "ok": 1}
    assert result.elapsed < 1.0
    event = await rig.event("tools")
    assert (event.attempts, event.continuations, event.upstream_model) == (3, 0, "ok")


async def test_a_tenant_that_disables_continuation_gets_an_in_band_error(rig: Rig) -> None:
    result = await call(rig, "cut", "strict", streaming=True, key=NO_CONTINUE_KEY)
    assert result.error is not None and result.error.code == grpc.StatusCode.UNAVAILABLE
    assert "continuation of broken streams is disabled" in result.error.message
    assert result.text == "The quick brown "
    assert not result.finish_reasons  # never a truncated answer that looks complete
    assert rig.upstream.requests == {"cut": 1}
    event = await rig.event("strict")
    assert (event.outcome, event.attempts, event.continuations) == (metering_pb2.OUTCOME_ERROR, 1, 0)
    # The same request from a tenant without the policy is continued (the router's setting is on).
    complete(await call(rig, "cut", "lenient", streaming=True))


async def test_a_vllm_fallback_continues_the_final_message_as_a_prefill(rig: Rig) -> None:
    result = await call(rig, "cut-vllm", "vllm", streaming=True)
    complete(result)  # the spliced prefill repeats nothing: exactly the answer
    assert rig.upstream.requests == {"cut": 2, "ok": 1}
    # The same-deployment retry (plain openai_compatible) got the explicit instruction ...
    assert rig.upstream.bodies_for("cut")[1]["messages"][-1] == {"role": "user", "content": CONTINUE_INSTRUCTION}
    # ... the vLLM deployment the partial answer as the final message to extend, and vLLM's parameters.
    body = rig.upstream.bodies_for("ok")[0]
    assert body["messages"][-1] == {"role": "assistant", "content": "The quick brown fox jumps over "}
    assert CONTINUE_INSTRUCTION not in json.dumps(body)
    assert (body["continue_final_message"], body["add_generation_prompt"]) == (True, False)
    event = await rig.event("vllm")
    assert (event.attempts, event.continuations, event.continued_from) == (3, 2, "up:cut@16; up:cut@31")


async def test_a_stream_that_took_several_attempts_lists_them_in_its_trailers(rig: Rig) -> None:
    result = await call(rig, "cut", "listed", streaming=True)
    complete(result)
    attempts = result.trailers["x-gateway-attempts"].split("; ")
    assert len(attempts) == 3 and attempts[-1] == "up:ok: answered"
    assert all(
        a.startswith("up:cut: ") and a.endswith("continued after " + n + " characters")
        for a, n in zip(attempts[:2], ("16", "31"), strict=True)
    )
    first = await call(rig, "up:ok", "first", streaming=True)
    complete(first)
    assert "x-gateway-attempts" not in first.trailers  # one attempt: nothing to list


async def test_a_fallback_refusing_the_continuation_ends_with_an_in_band_error(rig: Rig) -> None:
    result = await call(rig, "cut-rejects", "refused", streaming=True)
    assert result.error is not None and result.error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.error.metadata["attempts"].count("continued after") == 2
    assert result.text == "The quick brown fox jumps over "
    assert not result.finish_reasons  # no finish, no usage: the edge ends it without [DONE]
    assert rig.upstream.requests == {"cut": 2, "rejects": 1}
    event = await rig.event("refused")
    assert (event.outcome, event.attempts, event.continuations) == (metering_pb2.OUTCOME_ERROR, 3, 2)


def test_continuation_is_refused_where_it_would_lie() -> None:
    from services.router.continuation import why_not_continuable

    plain = request("cut")
    assert why_not_continuable(plain, enabled=True) is None
    assert why_not_continuable(plain, enabled=False) == "continuation of broken streams is disabled"
    assert "n > 1" in str(why_not_continuable(request("cut", n=2), enabled=True))
    with_logprobs = request("cut")
    with_logprobs.extra.update({"logprobs": True})
    assert "log probabilities" in str(why_not_continuable(with_logprobs, enabled=True))


def test_continue_final_message_is_only_for_openai_compatible_servers() -> None:
    from pydantic import ValidationError

    from gateway_common.config import HttpProviderConfig

    assert HttpProviderConfig(type="openai_compatible", continue_final_message=True).continue_final_message
    assert not HttpProviderConfig(type="openai_compatible").continue_final_message  # off by default
    with pytest.raises(ValidationError, match="continue_final_message is for openai_compatible"):
        HttpProviderConfig(type="anthropic", continue_final_message=True)
