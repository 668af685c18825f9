"""One request's lifecycle: authenticate, check, reserve, call with retries and fallbacks, settle, meter.

The order matters: everything that can refuse a request without cost (key, scope, body, model,
policy, per-request cost cap) runs before quota is reserved, so bad input never consumes quota.
Once reserved, the reservation is always settled — on success, on failure and on cancellation —
with what was really used, and one usage event is queued for metering. Settlement and metering
run after the response, off its critical path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf import duration_pb2, json_format, timestamp_pb2

from gateway.auth.v1 import auth_pb2
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig, effective_providers
from gateway_common.errors import GatewayError, Reason
from gateway_common.redaction import Redactor
from gateway_common.tokens import completion_token_ceiling, embedding_token_ceiling, prompt_token_ceiling
from services.router import metrics, policy, quotas, validation
from services.router.auth_cache import AuthCache
from services.router.background import BackgroundTasks
from services.router.leases import Leases
from services.router.planner import Candidate, Planner
from services.router.pricing import cost_micro_usd
from services.router.route_health import RouteHealth
from services.router.usage_intent import intent_event
from services.router.usage_spool import UsageSpool

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")
HeaderSink = Callable[[list[tuple[str, str]]], Awaitable[None]]

# A Retry-After longer than this is not waited out inside one request: the next candidate is
# tried at once, or the error goes back to the client with its Retry-After.
_MAX_RETRY_WAIT_S = 2.0

UPSTREAM_AUTHORIZATION_KEY = "x-upstream-authorization"
"""Metadata: the client's own upstream key, for providers that forward it (bring-your-own-key)."""

CAPPED_HEADER = "x-gateway-max-tokens-capped"
"""Response header: the max_tokens the gateway set upstream for a request that gave none."""

# Metering refuses a prompt-log field over 1 MiB; stay under it.
_MAX_LOG_FIELD_BYTES = 1_000_000


@dataclass
class CallContext:
    """What the transport knows about the call: the key, the request id, the remaining deadline."""

    api_key: str
    request_id: str
    time_remaining: Callable[[], float | None] = lambda: None
    upstream_authorization: str = field(default="", repr=False)
    """The client's own upstream key (``x-upstream-authorization``), passed to providers for
    bring-your-own-key; never logged (kept out of repr) or stored."""
    cost_micro_usd: int | None = None
    """Set when the request is settled: its actual cost, which the servicer returns in trailers."""


@dataclass
class _Admission:
    principal: auth_pb2.Principal
    model: str
    candidates: tuple[Candidate, ...]
    reservation_id: str
    reserved: ratelimit_pb2.Amounts
    prompt_estimate: int
    started: float
    received: timestamp_pb2.Timestamp
    limits: list[ratelimit_pb2.DescriptorLimits] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)
    """Reservations added while a stream outgrew the first one; settled at zero with it."""
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """The usage event's identity in the ledger: the gateway's own, never the client's request id."""


@dataclass
class _Outcome:
    """What happened, filled in as the request runs and read when it is settled."""

    candidate: Candidate | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    outcome: int = metering_pb2.OUTCOME_ERROR
    error_code: str = ""
    first_chunk_s: float | None = None
    streamed_chars: int = 0
    completion_ceiling: int = 0
    """Completion tokens streamed so far, counted as a ceiling (one per UTF-8 byte)."""
    attempt_log: list[str] = field(default_factory=list)
    prompt_log: metering_pb2.PromptLog | None = None
    """Set when the tenant's policy marks calls for logging; the answer's text accumulates in it."""


class Orchestrator:
    """Runs requests through the downstream services; one instance per router process."""

    def __init__(
        self,
        config: GatewayConfig,
        auth: AuthCache,
        ratelimit: ratelimit_pb2_grpc.RateLimitServiceAsyncStub,
        providers: providers_pb2_grpc.ProviderServiceAsyncStub,
        metering: UsageSpool,
        background: BackgroundTasks,
        leases: Leases | None = None,
    ) -> None:
        self._config = config
        self._auth = auth
        self._ratelimit = ratelimit
        self._providers = providers
        self._metering = metering
        self._background = background
        # None: reservations get the service's default lease and nothing renews them.
        self._leases = leases
        self.planner = Planner(config)
        self._redact = Redactor(config.prompt_log.redact_patterns)
        self._labels = metrics.MetricLabels(config)
        self._health = RouteHealth(config.router.unhealthy_after_failures, config.router.unhealthy_cooldown_s)
        self._default_limits = quotas.default_limits(config.limits)
        self._model_limits = {
            name: quotas.model_limits(model.limits) for name, model in config.models.items() if model.limits
        }
        # OpenAI-compatible servers (vLLM, Ollama, llama.cpp…) all read max_tokens, not all read
        # max_completion_tokens; OpenAI's reasoning models refuse max_tokens. Each gets its own.
        self._legacy_max_tokens = {
            name for name, provider in effective_providers(config).items() if provider.type == "openai_compatible"
        }
        self._max_output = {
            (d.provider, d.model): d.max_output_tokens
            for model in config.models.values()
            for d in model.deployments
            if d.max_output_tokens is not None
        }

    # -- admission ------------------------------------------------------------------------------

    async def authenticate(self, call: CallContext) -> auth_pb2.Principal:
        """The caller's principal (cached briefly)."""
        return await self._auth.authenticate(call.api_key, call.request_id)

    def may_use(self, principal: auth_pb2.Principal, model: str) -> bool:
        """Whether ``principal`` may use ``model``: the same checks admission makes (plan, allowlist, policy)."""
        try:
            policy.allowed_candidates(principal, self.planner.plan(model))
        except GatewayError:
            return False
        return True

    async def _admit(
        self,
        call: CallContext,
        scope: str,
        validate: Callable[[], None],
        model: str,
        prompt_tokens: int,
        completion_budget: Callable[[tuple[Candidate, ...]], tuple[int, list[tuple[str, str]], str]],
        max_cost_usd: float | None,
        on_headers: HeaderSink,
    ) -> _Admission:
        started = time.monotonic()
        received = timestamp_pb2.Timestamp()
        received.GetCurrentTime()
        principal = await self.authenticate(call)
        policy.require_scope(principal, scope)
        validate()
        plan = self.planner.plan(model)
        candidates = self._health.order(policy.allowed_candidates(principal, plan))
        policy.check_prompt_size(principal, prompt_tokens)
        completion_tokens, response_headers, completion_param = completion_budget(candidates)
        # Priced at the dearest candidate: a fallback must never settle above what was reserved.
        estimate = ratelimit_pb2.Amounts(
            requests=1,
            tokens=prompt_tokens + completion_tokens,
            cost_micro_usd=max(cost_micro_usd(c, prompt_tokens, completion_tokens) for c in candidates),
        )
        if max_cost_usd is not None and estimate.cost_micro_usd > max_cost_usd * 1_000_000:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.COST_LIMIT_EXCEEDED,
                f"The estimated cost of this request (${estimate.cost_micro_usd / 1_000_000:.6f}) exceeds "
                f"gateway.max_cost_usd (${max_cost_usd:.6f}).",
                {"param": "gateway.max_cost_usd"},
            )
        # Never the client's request id alone: concurrent requests reusing one id would share a
        # reservation and be counted once.
        reservation_id = f"{call.request_id}:{uuid.uuid4().hex}"
        limits = quotas.descriptor_limits(
            principal, self._default_limits, plan.model, self._model_limits.get(plan.model)
        )
        # A request larger than a whole window would be refused forever; "try again" would be a lie.
        prompt_only = ratelimit_pb2.Amounts(
            tokens=prompt_tokens, cost_micro_usd=max(cost_micro_usd(c, prompt_tokens, 0) for c in candidates)
        )
        prompt_param = "input" if scope == "embeddings" else "messages"
        quotas.check_fits(limits, estimate, prompt_only, prompt_param, completion_param)
        if limits:
            try:
                acquire = ratelimit_pb2.AcquireRequest(reservation_id=reservation_id, limits=limits, amounts=estimate)
                if self._leases is not None:
                    acquire.reservation_ttl.CopyFrom(self._leases.lease)
                decision = await self._ratelimit.Acquire(
                    acquire,
                    timeout=5.0,
                    metadata=(("x-request-id", call.request_id),),
                )
            except grpc.aio.AioRpcError as exc:
                raise GatewayError.from_rpc_error(exc, "rate limit") from None
            except asyncio.CancelledError:
                # The client left with Acquire in flight: whatever it reserved is given back.
                self._release_unused(reservation_id, call)
                raise
            try:
                await on_headers(response_headers + quotas.headers(list(decision.statuses)))
            except asyncio.CancelledError:
                if decision.allowed:
                    self._release_unused(reservation_id, call)
                raise
            if not decision.allowed:
                refused = quotas.refusal(decision)
                metrics.REJECTIONS.labels(str(refused.reason)).inc()
                raise refused
            if self._leases is not None:
                # Renewed until _finish; were this process to die, the slot comes back in one lease.
                self._leases.hold(reservation_id)
        elif response_headers:
            await on_headers(response_headers)
        admission = _Admission(
            principal,
            plan.model,
            candidates,
            reservation_id,
            estimate if limits else ratelimit_pb2.Amounts(),
            prompt_tokens,
            started,
            received,
            limits,
        )
        # On disk before any provider is called: a router killed from here on still meters the request.
        intent = intent_event(
            event_id=admission.event_id,
            request_id=call.request_id,
            principal=principal,
            model=plan.model,
            operation=scope,
            prompt_tokens=prompt_tokens,
            estimate=estimate,
            received=received,
        )
        try:
            await self._metering.admit(intent)
        except BaseException as exc:
            # Nothing was sent: return the reservation, and replace an intent that may have been
            # written by an event without usage, so that it is never billed as a restart.
            cancelled = isinstance(exc, asyncio.CancelledError)
            outcome = _Outcome(outcome=metering_pb2.OUTCOME_CANCELLED if cancelled else metering_pb2.OUTCOME_ERROR)
            self._finish(admission, outcome, call, operation=scope, streamed=False)
            if cancelled:
                raise
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                Reason.DEPENDENCY_UNAVAILABLE,
                "The gateway cannot record usage right now, so the request was not sent; try again.",
                {"retryable": "true"},
            ) from exc
        return admission

    def _release_unused(self, reservation_id: str, call: CallContext) -> None:
        """Settle a reservation the request never used at zero (a no-op if it was never made)."""
        self._background.spawn(self._settle_one(reservation_id, ratelimit_pb2.Amounts(), call.request_id))

    def _completion_budget(
        self, request: chat_pb2.ChatCompletionRequest, candidates: tuple[Candidate, ...]
    ) -> tuple[int, list[tuple[str, str]], str]:
        """The completion tokens to reserve for ``request``, the response headers that say so, and
        the parameter that sets them.

        A request without max_tokens could otherwise answer as long as the model allows, so its
        upstream max_tokens is capped at what is reserved: the smallest ``max_output_tokens`` of
        its deployments (a larger value would be refused by that upstream), else the configured
        default. The cap is reported in ``x-gateway-max-tokens-capped``, never applied silently.
        """
        n = request.n if request.HasField("n") else 1
        if request.HasField("max_completion_tokens"):
            return request.max_completion_tokens * n, [], "max_completion_tokens"
        if request.HasField("max_tokens"):
            return request.max_tokens * n, [], "max_tokens"
        known = [m for c in candidates if (m := self._max_output.get((c.provider, c.model))) is not None]
        cap = min(known) if known else self._config.limits.default_completion_tokens
        if any(c.provider in self._legacy_max_tokens for c in candidates):
            request.max_tokens = cap
        else:
            request.max_completion_tokens = cap
        return cap * n, [(CAPPED_HEADER, str(cap))], "n" if n > 1 else "max_tokens"

    # -- chat -----------------------------------------------------------------------------------

    async def chat(
        self, request: chat_pb2.ChatCompletionRequest, call: CallContext, on_headers: HeaderSink
    ) -> chat_pb2.ChatCompletion:
        """A unary completion with retries and fallbacks."""
        admission = await self._admit_chat(request, call, on_headers)
        outcome = _Outcome(prompt_log=_prompt_log(admission, request, self._config.prompt_log.mode))

        def succeeded(response: providers_pb2.ChatResponse) -> chat_pb2.ChatCompletion:
            result = response.completion
            outcome.prompt_tokens = result.usage.prompt_tokens
            outcome.completion_tokens = result.usage.completion_tokens
            outcome.usage_estimated = result.usage.estimated
            if not result.model and outcome.candidate is not None:
                result.model = outcome.candidate.model
            if outcome.prompt_log is not None and result.choices:
                outcome.prompt_log.response_text = result.choices[0].message.text
            return result

        return await self._unary(
            admission,
            outcome,
            call,
            "chat",
            lambda c, timeout: self._providers.Chat(
                providers_pb2.ChatRequest(target=_target(c), completion=request),
                timeout=timeout,
                metadata=_metadata(call),
            ),
            succeeded,
        )

    async def _admit_chat(
        self, request: chat_pb2.ChatCompletionRequest, call: CallContext, on_headers: HeaderSink
    ) -> _Admission:
        max_cost = request.gateway.max_cost_usd if request.gateway.HasField("max_cost_usd") else None
        return await self._admit(
            call,
            "chat",
            lambda: validation.validate_chat(request),
            request.model,
            prompt_token_ceiling(request),
            lambda candidates: self._completion_budget(request, candidates),
            max_cost,
            on_headers,
        )

    async def stream_chat(
        self, request: chat_pb2.ChatCompletionRequest, call: CallContext, on_headers: HeaderSink
    ) -> AsyncGenerator[chat_pb2.ChatCompletionChunk, None]:
        """A streamed completion. Fallback happens only before the first chunk is passed on."""
        admission = await self._admit_chat(request, call, on_headers)
        outcome = _Outcome(prompt_log=_prompt_log(admission, request, self._config.prompt_log.mode))
        try:
            async for chunk in self._stream_attempts(request, admission, outcome, call):
                yield chunk
            outcome.outcome = metering_pb2.OUTCOME_SUCCESS
        except (asyncio.CancelledError, GeneratorExit):
            outcome.outcome = metering_pb2.OUTCOME_CANCELLED
            raise
        except GatewayError as exc:
            outcome.error_code = exc.code.name
            raise
        finally:
            if not outcome.prompt_tokens and not outcome.completion_tokens:
                # The stream ended without a usage chunk (cancelled, or broken): count it ourselves.
                outcome.prompt_tokens = admission.prompt_estimate if outcome.attempts else 0
                outcome.completion_tokens = outcome.completion_ceiling
                outcome.usage_estimated = True
            self._finish(admission, outcome, call, operation="chat", streamed=True)

    async def _stream_attempts(
        self,
        request: chat_pb2.ChatCompletionRequest,
        admission: _Admission,
        outcome: _Outcome,
        call: CallContext,
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        sequence = _attempt_sequence(admission.candidates, self._config.router.max_attempts)
        index: int | None = 0
        while index is not None:
            candidate = sequence[index]
            outcome.attempts += 1
            outcome.candidate = candidate
            stream = self._providers.StreamChat(
                providers_pb2.StreamChatRequest(target=_target(candidate), completion=request),
                timeout=call.time_remaining(),
                metadata=_metadata(call),
            )
            chunks = aiter(stream)
            try:
                try:
                    first = await asyncio.wait_for(anext(chunks), self._attempt_timeout(call))
                except StopAsyncIteration:
                    return
                except grpc.aio.AioRpcError as exc:
                    error = GatewayError.from_rpc_error(exc, "providers")
                except TimeoutError:
                    error = _attempt_timeout_error(candidate)
                else:
                    self._health.record_success(candidate)
                    outcome.first_chunk_s = time.monotonic() - admission.started
                    await self._within_reservation(first.chunk, admission, outcome, call)
                    yield self._observe(first.chunk, outcome)
                    try:
                        async for item in chunks:
                            await self._within_reservation(item.chunk, admission, outcome, call)
                            yield self._observe(item.chunk, outcome)
                    except grpc.aio.AioRpcError as exc:
                        raise _annotate(GatewayError.from_rpc_error(exc, "providers"), outcome) from None
                    return
                outcome.attempt_log.append(f"{candidate.id}: {error.code.name}")
                metrics.UPSTREAM_ERRORS.labels(candidate.provider, error.code.name).inc()
                if error.retryable:
                    self._health.record_failure(candidate)
                index = _next_attempt(sequence, index, error)
                if index is None:
                    raise _annotate(error, outcome)
                await self._backoff(outcome.attempts, error, call)
            finally:
                stream.cancel()

    async def _within_reservation(
        self, chunk: chat_pb2.ChatCompletionChunk, admission: _Admission, outcome: _Outcome, call: CallContext
    ) -> None:
        """Count ``chunk`` against the reservation; grow the reservation or stop the stream first.

        The answer is counted as a ceiling (a byte a token), so an upstream that ignores max_tokens
        cannot stream past what was reserved. When the next chunk would pass the reservation, more
        is acquired on the same limits; when the limits refuse, the stream ends with an error
        (in-band after the first chunk), never with a truncated answer that looks complete.
        """
        outcome.completion_ceiling += completion_token_ceiling(chunk)
        reserved = admission.reserved
        candidate = outcome.candidate
        if not reserved.requests or candidate is None or not quotas.counts_usage(admission.limits):
            return
        tokens = admission.prompt_estimate + outcome.completion_ceiling
        cost = cost_micro_usd(candidate, admission.prompt_estimate, outcome.completion_ceiling)
        if tokens <= reserved.tokens and cost <= reserved.cost_micro_usd:
            return
        step = max(self._config.limits.stream_extension_tokens, tokens - reserved.tokens)
        more = ratelimit_pb2.Amounts(
            tokens=step, cost_micro_usd=max(cost_micro_usd(candidate, 0, step), cost - reserved.cost_micro_usd)
        )
        extension_id = f"{admission.reservation_id}:x{len(admission.extensions)}"
        acquire = ratelimit_pb2.AcquireRequest(
            reservation_id=extension_id, limits=quotas.without_concurrency(admission.limits), amounts=more
        )
        if self._leases is not None:
            acquire.reservation_ttl.CopyFrom(self._leases.lease)
        try:
            decision = await self._ratelimit.Acquire(
                acquire, timeout=5.0, metadata=(("x-request-id", call.request_id),)
            )
        except grpc.aio.AioRpcError as exc:
            raise _annotate(GatewayError.from_rpc_error(exc, "rate limit"), outcome) from None
        if not decision.allowed:
            metrics.REJECTIONS.labels("STREAM_STOPPED").inc()
            raise quotas.stream_stopped(decision, outcome.completion_ceiling)
        admission.extensions.append(extension_id)
        if self._leases is not None:
            # Renewed with the stream's own reservation: a stream may outlive one lease.
            self._leases.hold(extension_id)
        reserved.tokens += more.tokens
        reserved.cost_micro_usd += more.cost_micro_usd

    @staticmethod
    def _observe(chunk: chat_pb2.ChatCompletionChunk, outcome: _Outcome) -> chat_pb2.ChatCompletionChunk:
        if chunk.HasField("usage"):
            outcome.prompt_tokens = chunk.usage.prompt_tokens
            outcome.completion_tokens = chunk.usage.completion_tokens
            outcome.usage_estimated = chunk.usage.estimated
        for choice in chunk.choices:
            delta = choice.delta
            if outcome.prompt_log is not None and choice.index == 0:
                outcome.prompt_log.response_text += delta.content
            outcome.streamed_chars += len(delta.content) + len(delta.refusal)
            outcome.streamed_chars += sum(len(t.arguments) + len(t.name) for t in delta.tool_calls)
        return chunk

    # -- embeddings -----------------------------------------------------------------------------

    async def embed(
        self, request: chat_pb2.EmbeddingRequest, call: CallContext, on_headers: HeaderSink
    ) -> chat_pb2.EmbeddingResponse:
        """Embeddings with retries and fallbacks."""
        admission = await self._admit(
            call,
            "embeddings",
            lambda: validation.validate_embedding(request),
            request.model,
            embedding_token_ceiling(request),
            lambda _candidates: (0, [], "input"),
            None,
            on_headers,
        )
        outcome = _Outcome()

        def succeeded(response: providers_pb2.EmbedResponse) -> chat_pb2.EmbeddingResponse:
            result = response.embedding
            outcome.prompt_tokens = result.usage.prompt_tokens or admission.prompt_estimate
            outcome.usage_estimated = not result.usage.prompt_tokens
            return result

        return await self._unary(
            admission,
            outcome,
            call,
            "embeddings",
            lambda c, timeout: self._providers.Embed(
                providers_pb2.EmbedRequest(target=_target(c), embedding=request),
                timeout=timeout,
                metadata=_metadata(call),
            ),
            succeeded,
        )

    # -- shared machinery -----------------------------------------------------------------------

    async def _unary(
        self,
        admission: _Admission,
        outcome: _Outcome,
        call: CallContext,
        operation: str,
        attempt: Callable[[Candidate, float], Awaitable[_R]],
        succeeded: Callable[[_R], _T],
    ) -> _T:
        """Run a unary call through the attempts; whatever happens, settle and meter it."""
        try:
            result = succeeded(await self._with_attempts(admission, outcome, call, attempt))
            outcome.outcome = metering_pb2.OUTCOME_SUCCESS
            return result
        except asyncio.CancelledError:
            outcome.outcome = metering_pb2.OUTCOME_CANCELLED
            if outcome.attempts and not outcome.prompt_tokens:
                # The prompt reached an upstream, which may bill it: count our estimate, as a stream does.
                outcome.prompt_tokens = admission.prompt_estimate
                outcome.usage_estimated = True
            raise
        except GatewayError as exc:
            outcome.error_code = exc.code.name
            raise
        finally:
            self._finish(admission, outcome, call, operation=operation, streamed=False)

    def _attempt_timeout(self, call: CallContext) -> float:
        remaining = call.time_remaining()
        limit = self._config.router.attempt_timeout_s
        return limit if remaining is None else max(0.001, min(limit, remaining))

    async def _with_attempts(
        self,
        admission: _Admission,
        outcome: _Outcome,
        call: CallContext,
        attempt: Callable[[Candidate, float], Awaitable[_T]],
    ) -> _T:
        sequence = _attempt_sequence(admission.candidates, self._config.router.max_attempts)
        index: int | None = 0
        while index is not None:
            candidate = sequence[index]
            outcome.attempts += 1
            outcome.candidate = candidate
            try:
                result = await attempt(candidate, self._attempt_timeout(call))
                self._health.record_success(candidate)
                return result
            except grpc.aio.AioRpcError as exc:
                error = GatewayError.from_rpc_error(exc, "providers")
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and error.reason == Reason.INTERNAL:
                    error = _attempt_timeout_error(candidate)
            outcome.attempt_log.append(f"{candidate.id}: {error.code.name}")
            metrics.UPSTREAM_ERRORS.labels(candidate.provider, error.code.name).inc()
            if error.retryable:
                self._health.record_failure(candidate)
            index = _next_attempt(sequence, index, error)
            if index is None:
                raise _annotate(error, outcome)
            await self._backoff(outcome.attempts, error, call)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _backoff(self, attempt: int, error: GatewayError, call: CallContext) -> None:
        wait = self._config.router.retry_backoff_s * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if error.retry_after_s is not None:
            wait = max(wait, min(error.retry_after_s, _MAX_RETRY_WAIT_S))
        remaining = call.time_remaining()
        if remaining is not None:
            wait = min(wait, max(0.0, remaining - 0.05))
        await asyncio.sleep(wait)

    def _finish(
        self, admission: _Admission, outcome: _Outcome, call: CallContext, *, operation: str, streamed: bool
    ) -> None:
        """Settle the reservation and spool the final usage event (replacing the intent), in the background."""
        candidate = outcome.candidate
        cost = cost_micro_usd(candidate, outcome.prompt_tokens, outcome.completion_tokens) if candidate else 0
        call.cost_micro_usd = cost
        if admission.reserved.requests:
            if self._leases is not None:
                for reservation_id in (admission.reservation_id, *admission.extensions):
                    self._leases.release(reservation_id)
            actual = ratelimit_pb2.Amounts(
                requests=1,
                tokens=outcome.prompt_tokens + outcome.completion_tokens,
                cost_micro_usd=cost,
            )
            self._background.spawn(self._settle(admission, actual, call.request_id))
        latency = time.monotonic() - admission.started
        event = metering_pb2.UsageEvent(
            event_id=admission.event_id,
            request_id=call.request_id,
            tenant_id=admission.principal.tenant_id,
            key_id=admission.principal.key_id,
            model=admission.model,
            provider=candidate.provider if candidate else "",
            upstream_model=candidate.model if candidate else "",
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            cost_micro_usd=cost,
            latency=_duration(latency),
            outcome=outcome.outcome,  # type: ignore[arg-type]
            error_code=outcome.error_code,
            streamed=streamed,
            attempts=outcome.attempts,
            time=admission.received,
            operation=operation,
            usage_estimated=outcome.usage_estimated,
        )
        if outcome.first_chunk_s is not None:
            event.time_to_first_chunk.CopyFrom(_duration(outcome.first_chunk_s))
        if outcome.prompt_log is not None:
            # Redacted before the spool file: a secret pasted into a prompt reaches no disk.
            event.prompt_log.request_json = _loggable(self._redact(outcome.prompt_log.request_json))
            event.prompt_log.response_text = _loggable(self._redact(outcome.prompt_log.response_text))
        self._metering.complete(event)
        provider = candidate.provider if candidate else ""
        outcome_name = metering_pb2.Outcome.Name(event.outcome).removeprefix("OUTCOME_").lower()
        model_label, provider_label = self._labels.model(admission.model), self._labels.provider(provider)
        metrics.REQUESTS.labels(operation, model_label, provider_label, outcome_name).inc()
        metrics.DURATION.labels(operation, str(streamed).lower()).observe(latency)
        metrics.TOKENS.labels("prompt", model_label, provider_label).inc(outcome.prompt_tokens)
        metrics.TOKENS.labels("completion", model_label, provider_label).inc(outcome.completion_tokens)
        metrics.COST.labels(model_label, provider_label).inc(cost)
        if outcome.first_chunk_s is not None:
            metrics.FIRST_CHUNK.labels(model_label).observe(outcome.first_chunk_s)
        log.info(
            "%s %s via %s: %s",
            operation,
            admission.model,
            provider or "-",
            outcome_name,
            extra={
                "tenant_id": admission.principal.tenant_id,
                "key_id": admission.principal.key_id,
                "model": admission.model,
                "provider": provider,
                "outcome": outcome_name,
                "error_code": outcome.error_code,
                "attempts": outcome.attempts,
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "cost_micro_usd": cost,
                "latency_ms": round(latency * 1000, 2),
                "streamed": streamed,
            },
        )

    async def _settle(self, admission: _Admission, actual: ratelimit_pb2.Amounts, request_id: str) -> None:
        # The first reservation takes the whole actual; the extensions a stream added return theirs,
        # after it, so the counters never dip below what was used in between.
        await self._settle_one(admission.reservation_id, actual, request_id)
        for extension in admission.extensions:
            await self._settle_one(extension, ratelimit_pb2.Amounts(), request_id)

    async def _settle_one(self, reservation_id: str, amounts: ratelimit_pb2.Amounts, request_id: str) -> None:
        try:
            await self._ratelimit.Settle(
                ratelimit_pb2.SettleRequest(reservation_id=reservation_id, actual=amounts),
                timeout=5.0,
                metadata=(("x-request-id", request_id),),
            )
        except grpc.aio.AioRpcError as exc:
            # The reservation expires on its own; the estimate stands until then.
            log.warning("settle failed: %s %s", exc.code().name, exc.details())


def _next_attempt(sequence: list[Candidate], index: int, error: GatewayError) -> int | None:
    """The index of the attempt after a failure at ``index``, or None to give up.

    A retryable failure moves on (the same deployment again, or the next one). An upstream that
    cannot honour a field the request relies on is not worth retrying, but another deployment of
    the same alias may honour it.
    """
    if error.retryable:
        return index + 1 if index + 1 < len(sequence) else None
    if error.reason == Reason.UNSUPPORTED_FIELD:
        failed = sequence[index]
        return next((j for j in range(index + 1, len(sequence)) if sequence[j] != failed), None)
    return None


def _attempt_sequence(candidates: tuple[Candidate, ...], max_attempts: int) -> list[Candidate]:
    """Each candidate once in order, the last one retried until ``max_attempts`` (at least one each)."""
    count = max(max_attempts, len(candidates))
    return [candidates[min(i, len(candidates) - 1)] for i in range(count)]


def _annotate(error: GatewayError, outcome: _Outcome) -> GatewayError:
    if outcome.attempt_log:
        error.metadata = {**error.metadata, "attempts": "; ".join(outcome.attempt_log)}
    return error


def _loggable(text: str) -> str:
    """A prompt-log field metering accepts: no NUL characters, at most ~1 MB (cut with a marker).

    The log is a record, not the request: bounding it keeps one huge prompt from costing the
    usage of a whole metering batch, and the marker says exactly what was left out.
    """
    text = text.replace("\x00", "\ufffd")
    encoded = text.encode()
    if len(encoded) <= _MAX_LOG_FIELD_BYTES:
        return text
    kept = encoded[: _MAX_LOG_FIELD_BYTES - 64].decode("utf-8", "ignore")
    return f"{kept}…[truncated: {len(encoded) - len(kept.encode())} more bytes]"


def _prompt_log(
    admission: _Admission, request: chat_pb2.ChatCompletionRequest, mode: str
) -> metering_pb2.PromptLog | None:
    """An empty prompt log when the call is to be logged (the global mode, else the tenant's policy), else None."""
    if mode == "off" or (mode == "policy" and not admission.principal.policy.log_prompts):
        return None
    return metering_pb2.PromptLog(request_json=json_format.MessageToJson(request, indent=None))


def _attempt_timeout_error(candidate: Candidate) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        Reason.UPSTREAM_TIMEOUT,
        f"The provider `{candidate.provider}` did not answer in time.",
        {"retryable": "true", "provider": candidate.provider},
    )


def _target(candidate: Candidate) -> providers_pb2.Target:
    return providers_pb2.Target(provider=candidate.provider, model=candidate.model)


def _metadata(call: CallContext) -> tuple[tuple[str, str], ...]:
    if call.upstream_authorization:
        return (("x-request-id", call.request_id), (UPSTREAM_AUTHORIZATION_KEY, call.upstream_authorization))
    return (("x-request-id", call.request_id),)


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
