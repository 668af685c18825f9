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
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

import grpc
from google.protobuf import duration_pb2, json_format, timestamp_pb2

from gateway.auth.v1 import auth_pb2
from gateway.chat.v1 import chat_pb2
from gateway.metering.v1 import metering_pb2
from gateway.providers.v1 import providers_pb2, providers_pb2_grpc
from gateway.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from gateway_common.config import GatewayConfig, HttpProviderConfig, effective_providers
from gateway_common.errors import GatewayError, Reason
from gateway_common.redaction import Redactor
from gateway_common.tokens import completion_token_ceiling, embedding_token_ceiling, prompt_token_ceiling
from services.router import metrics, policy, quotas, validation
from services.router.anonymous import AnonymousAccess
from services.router.attempts import AttemptPolicy, Attempts
from services.router.auth_cache import AuthCache
from services.router.background import BackgroundTasks
from services.router.breaker import Breakers
from services.router.continuation import (
    PREFILL_TYPES,
    Splice,
    carries_content,
    only_tool_calls,
    why_not_continuable,
)
from services.router.leases import Leases
from services.router.observed import ObservedProviders
from services.router.planner import Candidate, Planner
from services.router.pricing import cost_micro_usd
from services.router.quota_blocks import QuotaBlocks, Ticket
from services.router.route_health import RouteHealth
from services.router.strategies import RouteStats, Strategy, allow_only, rank, route
from services.router.usage_intent import intent_event
from services.router.usage_spool import UsageSpool

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")
HeaderSink = Callable[[list[tuple[str, str]]], Awaitable[None]]

ATTEMPTS_HEADER = "x-gateway-attempts"
"""Trailing metadata of an answer that took more than one attempt: each attempt and its result."""

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
    client_ip: str = ""
    """The client's address as the edge saw it (or the gRPC peer's); names anonymous callers."""
    client_id: str = ""
    """The request's ``gateway.client_id``; names anonymous callers."""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    """Trailing metadata the answer gets once it is complete (a unary answer's ``x-gateway-attempts``)."""
    upstream_authorization: str = field(default="", repr=False)
    """The client's own upstream key (``x-upstream-authorization``), passed to providers for
    bring-your-own-key; never logged (kept out of repr) or stored."""
    cost_micro_usd: int | None = None
    """Set when the request is settled: its actual cost, which the servicer returns in trailers."""
    principal: auth_pb2.Principal | None = None
    """Already resolved (an async job's worker re-resolves its submitter's key by id): no key to check."""


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
    strategy: str = "ordered"
    """The routing strategy that ordered the candidates (for ``x-gateway-route``)."""
    ticket: Ticket | None = None
    """Set when the quota came from a block (no reservation of its own: ``reservation_id`` unused)."""


@dataclass(frozen=True)
class Routing:
    """A request's own routing choice: a strategy (None for the model's) and providers to keep."""

    strategy: Strategy | None = None
    allow_providers: tuple[str, ...] = ()


_STRATEGY_NAMES: dict[int, Strategy] = {
    chat_pb2.ROUTING_STRATEGY_ORDERED: "ordered",
    chat_pb2.ROUTING_STRATEGY_WEIGHTED: "weighted",
    chat_pb2.ROUTING_STRATEGY_COST: "cost",
    chat_pb2.ROUTING_STRATEGY_LATENCY: "latency",
    chat_pb2.ROUTING_STRATEGY_RELIABILITY: "reliability",
    chat_pb2.ROUTING_STRATEGY_LEAST_BUSY: "least-busy",
}


def routing_of(options: chat_pb2.GatewayOptions) -> Routing:
    """The routing a request's gateway options ask for."""
    return Routing(_STRATEGY_NAMES.get(options.strategy), tuple(options.allow_providers))


@dataclass
class _Outcome:
    """What happened, filled in as the request runs and read when it is settled."""

    candidate: Candidate | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens the upstream served from its cache (priced as cache reads where known)."""
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
    splice: Splice | None = None
    """For a stream: what reached the client, and the continuations that made it whole."""
    carried_cost_micro_usd: int = 0
    """The cost of attempts that broke off after streaming, at their own deployment's price."""
    credential_id: str = ""
    """The tenant's own upstream credential that served the answer (empty: the provider's key)."""


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
        planner: Planner | None = None,
        breakers: Breakers | None = None,
        quota_blocks: QuotaBlocks | None = None,
    ) -> None:
        self._config = config
        self._auth = auth
        self._ratelimit = ratelimit
        router = config.router
        self._stats = RouteStats(router.stats_half_life_s)
        self._health = RouteHealth(
            router.unhealthy_after_failures,
            router.unhealthy_cooldown_s,
            window_s=router.breaker_window_s,
            probe_timeout_s=router.breaker_probe_timeout_s,
            breakers=breakers,
            stats=self._stats,
        )
        # Typed as the stub it forwards to: the attempt loops call it exactly as they would the stub.
        self._providers = cast("providers_pb2_grpc.ProviderServiceAsyncStub", ObservedProviders(providers, self._stats))
        self._metering = metering
        self._background = background
        # None: reservations get the service's default lease and nothing renews them.
        self._leases = leases
        # None: every request makes its own Acquire and Settle.
        self._blocks = quota_blocks
        # None: the config alone (no route overrides); the server passes one reading auth's table.
        self.planner = planner or Planner(config)
        self._anonymous = AnonymousAccess(config.anonymous)
        self._redact = Redactor(config.prompt_log.redact_patterns)
        self._labels = metrics.MetricLabels(config)
        self._default_limits = quotas.default_limits(config.limits)
        self._model_limits = {
            name: quotas.model_limits(model.limits) for name, model in config.models.items() if model.limits
        }
        # OpenAI-compatible servers (vLLM, Ollama, llama.cpp…) all read max_tokens, not all read
        # max_completion_tokens; OpenAI's reasoning models refuse max_tokens. Each gets its own.
        self._legacy_max_tokens = {
            name for name, provider in effective_providers(config).items() if provider.type == "openai_compatible"
        }
        self._prefill = {name for name, p in effective_providers(config).items() if p.type in PREFILL_TYPES}
        self._continue_final_message = {
            name
            for name, p in effective_providers(config).items()
            if isinstance(p, HttpProviderConfig) and p.continue_final_message
        }
        self._context_windows = {
            (d.provider, d.model): d.context_window
            for model in config.models.values()
            for d in model.deployments
            if d.context_window is not None
        }
        router = config.router
        self._attempt_policy = AttemptPolicy(
            max_attempts=router.max_attempts,
            retries_per_deployment=router.retries_per_deployment,
            retry_backoff_s=router.retry_backoff_s,
            max_retry_wait_s=router.max_retry_wait_s,
            retry_content_filter=router.retry_content_filter,
        )
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

    def usable_candidates(self, principal: auth_pb2.Principal, model: str) -> tuple[Candidate, ...]:
        """The deployments ``principal`` may use for ``model``, by the checks admission makes before
        the request's own content (plan, allowlist, deny lists, unpriced policy); raises as admission
        would (NOT_FOUND, PERMISSION_DENIED). A request's own ``max_cost_usd`` is not known here."""
        plan = self.planner.plan(model)
        candidates = policy.allowed_candidates(principal, plan)
        limits = quotas.descriptor_limits(
            principal, self._default_limits, plan.model, self._model_limits.get(plan.model)
        )
        return policy.priced_candidates(principal, plan.model, candidates, policy.has_budget(limits, None))

    async def _caller(self, call: CallContext) -> auth_pb2.Principal:
        """The principal of a request to serve: the key's, or an anonymous caller's when the
        request has no key and the deployment serves such requests (never for admin or usage)."""
        if call.principal is not None:
            return call.principal
        if not call.api_key:
            anonymous = self._anonymous.principal(call.client_id, call.client_ip)
            if anonymous is not None:
                return anonymous
        return await self.authenticate(call)

    def may_use(self, principal: auth_pb2.Principal, model: str) -> bool:
        """Whether ``principal`` may use ``model``: the same checks admission makes (plan, allowlist, policy)."""
        try:
            self.usable_candidates(principal, model)
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
        routing: Routing = Routing(),
        check_only: bool = False,
    ) -> _Admission:
        started = time.monotonic()
        received = timestamp_pb2.Timestamp()
        # The same instant GetCurrentTime gives, without its trip through a datetime.
        received.FromNanoseconds(time.time_ns())
        principal = await self._caller(call)
        policy.require_scope(principal, scope)
        validate()
        plan = self.planner.plan(model, routing.strategy)
        # Within what the key and tenant allow, the request may only narrow.
        candidates = allow_only(policy.allowed_candidates(principal, plan), routing.allow_providers, plan.model)
        limits = quotas.descriptor_limits(
            principal, self._default_limits, plan.model, self._model_limits.get(plan.model)
        )
        candidates = policy.priced_candidates(
            principal, plan.model, candidates, policy.has_budget(limits, max_cost_usd)
        )
        policy.check_prompt_size(principal, prompt_tokens)
        prompt_param = "input" if scope == "embeddings" else "messages"
        policy.check_prompt_cap(self._config.max_prompt_tokens, prompt_tokens, prompt_param)
        completion_tokens, response_headers, completion_param = completion_budget(candidates)
        ranked = rank(cast(Strategy, plan.strategy), candidates, self._stats, prompt_tokens, completion_tokens)
        candidates = await self._health.order(ranked)
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
        # A request larger than a whole window would be refused forever; "try again" would be a lie.
        prompt_only = ratelimit_pb2.Amounts(
            tokens=prompt_tokens, cost_micro_usd=max(cost_micro_usd(c, prompt_tokens, 0) for c in candidates)
        )
        quotas.check_fits(limits, estimate, prompt_only, prompt_param, completion_param)
        ticket: Ticket | None = None
        if limits and self._blocks is not None and not check_only and self._blocks.applies(limits):
            # From a block this router holds: no round trip (see quota_blocks.py); None: as before.
            ticket = await self._blocks.take(limits, estimate, call.request_id)
        if ticket is not None:
            try:
                await on_headers(response_headers + ticket.headers)
            except asyncio.CancelledError:
                self._blocks_release(ticket, ratelimit_pb2.Amounts())
                raise
        elif limits:
            try:
                acquire = ratelimit_pb2.AcquireRequest(reservation_id=reservation_id, limits=limits, amounts=estimate)
                if self._leases is not None:
                    acquire.reservation_ttl.CopyFrom(self._leases.lease)
                sent = time.monotonic()
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
            if self._blocks is not None:
                self._blocks.observe(limits, decision, sent)
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
            if check_only:
                # Reserve-then-release: the ratelimit service's own atomic decision, given back at once.
                self._release_unused(reservation_id, call)
            elif self._leases is not None:
                # Renewed until _finish; were this process to die, the slot comes back in one lease.
                self._leases.hold(reservation_id)
        elif response_headers:
            await on_headers(response_headers)
        if check_only:
            return _Admission(
                principal, plan.model, candidates, "", ratelimit_pb2.Amounts(), prompt_tokens, started, received
            )
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
            strategy=plan.strategy,
            ticket=ticket,
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

    def _blocks_release(
        self, ticket: Ticket, actual: ratelimit_pb2.Amounts, extensions: tuple[str, ...] | list[str] = ()
    ) -> None:
        if self._blocks is not None:
            self._blocks.release(ticket, actual, extensions)

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
            outcome.credential_id = response.credential_id
            outcome.prompt_tokens = result.usage.prompt_tokens
            outcome.completion_tokens = result.usage.completion_tokens
            outcome.cached_tokens = result.usage.prompt_tokens_details.cached_tokens
            outcome.usage_estimated = result.usage.estimated
            # The id the client can send back: the upstream's own name ("demo" for mock:demo, a
            # dated snapshot for OpenAI) would not route. The ledger keeps the upstream model.
            result.model = admission.model
            if outcome.candidate is not None:
                result.route = route(outcome.candidate, admission.strategy)
            if outcome.prompt_log is not None and result.choices:
                outcome.prompt_log.response_text = result.choices[0].message.text
            return result

        return await self._unary(
            admission,
            outcome,
            call,
            "chat",
            lambda c, timeout: self._providers.Chat(
                providers_pb2.ChatRequest(
                    target=_target(c), completion=request, tenant_id=admission.principal.tenant_id
                ),
                timeout=timeout,
                metadata=_metadata(call),
            ),
            succeeded,
        )

    async def check_chat(self, request: chat_pb2.ChatCompletionRequest, call: CallContext) -> auth_pb2.Principal:
        """Admission of ``request`` without running it (an async job at submit): refuses exactly as
        :meth:`chat` would, reserving quota and giving it back at once; the caller's principal."""

        async def no_headers(headers: list[tuple[str, str]]) -> None:
            return None

        admission = await self._admit_chat(request, call, no_headers, check_only=True)
        return admission.principal

    async def _admit_chat(
        self,
        request: chat_pb2.ChatCompletionRequest,
        call: CallContext,
        on_headers: HeaderSink,
        check_only: bool = False,
    ) -> _Admission:
        max_cost = request.gateway.max_cost_usd if request.gateway.HasField("max_cost_usd") else None
        call.client_id = request.gateway.client_id
        return await self._admit(
            call,
            "chat",
            lambda: validation.validate_chat(request),
            request.model,
            prompt_token_ceiling(request),
            lambda candidates: self._completion_budget(request, candidates),
            max_cost,
            on_headers,
            routing_of(request.gateway),
            check_only,
        )

    async def stream_chat(
        self, request: chat_pb2.ChatCompletionRequest, call: CallContext, on_headers: HeaderSink
    ) -> AsyncGenerator[chat_pb2.ChatCompletionChunk, None]:
        """A streamed completion. Fallback happens only before the first chunk is passed on."""
        admission = await self._admit_chat(request, call, on_headers)
        outcome = _Outcome(prompt_log=_prompt_log(admission, request, self._config.prompt_log.mode))
        try:
            first = True
            async for chunk in self._stream_attempts(request, admission, outcome, call):
                if first and outcome.candidate is not None:
                    # The edge commits its headers with the first chunk: the route travels on it.
                    chunk.route = route(outcome.candidate, admission.strategy)
                first = False
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

    def _attempts(self, admission: _Admission, outcome: _Outcome) -> Attempts:
        attempts = Attempts(
            admission.candidates, self._attempt_policy, admission.prompt_estimate, self._context_windows
        )
        outcome.attempt_log = attempts.log
        return attempts

    def _failed(self, candidate: Candidate, error: GatewayError) -> None:
        metrics.UPSTREAM_ERRORS.labels(candidate.provider, error.code.name).inc()
        if error.retryable:
            self._health.record_failure(candidate)

    async def _stream_attempts(
        self,
        request: chat_pb2.ChatCompletionRequest,
        admission: _Admission,
        outcome: _Outcome,
        call: CallContext,
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """The chunks of the first attempt that streams content; a later attempt continues it if it breaks.

        The fallback window stays open until a chunk carries content (a role-only chunk is held
        back), bounded by ``first_content_timeout_s``. After that a broken attempt is continued
        by the next one (see continuation.py) or, where that is impossible, ends in-band.
        """
        attempts = self._attempts(admission, outcome)
        splice = outcome.splice = Splice()
        window = self._config.router.first_content_timeout_s or self._config.router.attempt_timeout_s
        attempt_request = request
        while True:
            candidate = attempts.start()
            outcome.attempts, outcome.candidate = attempts.count, candidate
            ceiling_before = outcome.completion_ceiling
            stream = self._providers.StreamChat(
                providers_pb2.StreamChatRequest(
                    target=_target(candidate), completion=attempt_request, tenant_id=admission.principal.tenant_id
                ),
                timeout=call.time_remaining(),
                metadata=_metadata(call),
            )
            chunks = aiter(stream)
            held: list[chat_pb2.ChatCompletionChunk] = []
            error: GatewayError | None = None
            try:
                try:
                    async with asyncio.timeout(min(window, self._attempt_timeout(call))):
                        while not held or not carries_content(held[-1]):
                            message = await anext(chunks)
                            if not held:  # the first message names the credential serving this attempt
                                outcome.credential_id = message.credential_id
                            held.append(message.chunk)
                    # A tool call is held back until it is whole: one cut mid-arguments is then
                    # restarted cleanly by the next attempt instead of reaching the client half-done.
                    while only_tool_calls(held[-1]):
                        held.append((await anext(chunks)).chunk)
                except StopAsyncIteration:
                    pass  # an answer without content (or an empty stream) is still the answer
                except grpc.aio.AioRpcError as exc:
                    error = GatewayError.from_rpc_error(exc, "providers")
                except TimeoutError:
                    error = _attempt_timeout_error(candidate, "sent no content")
                if error is None:
                    self._health.record_success(candidate)
                    if outcome.first_chunk_s is None:
                        outcome.first_chunk_s = time.monotonic() - admission.started
                    try:
                        for chunk in held:
                            await self._within_reservation(chunk, admission, outcome, call)
                            yield self._observe(splice.pass_on(chunk), outcome, admission.model)
                        async for item in chunks:
                            await self._within_reservation(item.chunk, admission, outcome, call)
                            yield self._observe(splice.pass_on(item.chunk), outcome, admission.model)
                    except grpc.aio.AioRpcError as exc:
                        error = GatewayError.from_rpc_error(exc, "providers")
                    else:
                        if attempts.log:
                            # A stream's headers left before its attempts were known: the edge
                            # lists them in-band, in the final usage chunk, from this trailer.
                            call.trailers.append(
                                (ATTEMPTS_HEADER, "; ".join([*attempts.log, f"{candidate.id}: answered"]))
                            )
                        return
            finally:
                stream.cancel()
            self._failed(candidate, error)
            next_attempt = attempts.failed(error)
            if splice.started:
                if next_attempt is None:
                    raise _annotate(error, outcome)  # in-band: the client has part of an answer
                attempt_request = self._continuation(
                    request,
                    attempt_request,
                    admission,
                    next_attempt.candidate,
                    splice,
                    outcome,
                    error,
                    candidate,
                    ceiling_before,
                )
            elif next_attempt is None:
                raise attempts.final_error()
            await self._wait(next_attempt.wait_s, call)

    def _continuation(
        self,
        request: chat_pb2.ChatCompletionRequest,
        sent: chat_pb2.ChatCompletionRequest,
        admission: _Admission,
        next_candidate: Candidate,
        splice: Splice,
        outcome: _Outcome,
        error: GatewayError,
        broken: Candidate,
        ceiling_before: int,
    ) -> chat_pb2.ChatCompletionRequest:
        """The request that continues a stream broken by ``error``; raises (in-band) when impossible."""
        policy = admission.principal.policy
        # The tenant can only narrow the router's setting: unset follows it, false turns it off.
        tenant_allows = not policy.HasField("continue_broken_streams") or policy.continue_broken_streams
        why_not = why_not_continuable(request, enabled=self._config.router.continue_broken_streams and tenant_allows)
        if why_not is None and splice.tool_calls:
            why_not = "a tool call was under way"
        if why_not is not None:
            error.message = f"{error.message} (the answer could not be continued: {why_not})"
            raise _annotate(error, outcome)
        # The broken attempt's prompt reached its upstream, which bills it: the gateway counts it.
        prompt_estimate = prompt_token_ceiling(sent)
        streamed = outcome.completion_ceiling - ceiling_before
        outcome.carried_cost_micro_usd += cost_micro_usd(broken, prompt_estimate, streamed)
        outcome.attempt_log[-1] += f", continued after {len(splice.text)} characters"
        log.info("continuing a broken stream from %s after %d characters", broken.id, len(splice.text))
        return splice.continue_request(
            request,
            prefill=next_candidate.provider in self._prefill,
            continue_final_message=next_candidate.provider in self._continue_final_message,
            broken=broken.id,
            prompt_tokens=prompt_estimate,
            completion_tokens=streamed,
        )

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
    def _observe(chunk: chat_pb2.ChatCompletionChunk, outcome: _Outcome, model: str) -> chat_pb2.ChatCompletionChunk:
        # Every chunk carries the routable id the client asked for, as a unary answer does.
        chunk.model = model
        if chunk.HasField("usage"):
            outcome.prompt_tokens = chunk.usage.prompt_tokens
            outcome.completion_tokens = chunk.usage.completion_tokens
            outcome.cached_tokens = chunk.usage.prompt_tokens_details.cached_tokens
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
            outcome.credential_id = response.credential_id
            outcome.prompt_tokens = result.usage.prompt_tokens or admission.prompt_estimate
            outcome.usage_estimated = not result.usage.prompt_tokens
            return result

        return await self._unary(
            admission,
            outcome,
            call,
            "embeddings",
            lambda c, timeout: self._providers.Embed(
                providers_pb2.EmbedRequest(
                    target=_target(c), embedding=request, tenant_id=admission.principal.tenant_id
                ),
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
        attempts = self._attempts(admission, outcome)
        while True:
            candidate = attempts.start()
            outcome.attempts, outcome.candidate = attempts.count, candidate
            try:
                result = await attempt(candidate, self._attempt_timeout(call))
                self._health.record_success(candidate)
                if attempts.log:
                    call.trailers.append((ATTEMPTS_HEADER, "; ".join([*attempts.log, f"{candidate.id}: answered"])))
                return result
            except grpc.aio.AioRpcError as exc:
                error = GatewayError.from_rpc_error(exc, "providers")
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and error.reason == Reason.INTERNAL:
                    error = _attempt_timeout_error(candidate)
            self._failed(candidate, error)
            next_attempt = attempts.failed(error)
            if next_attempt is None:
                raise attempts.final_error()
            await self._wait(next_attempt.wait_s, call)

    @staticmethod
    async def _wait(wait_s: float, call: CallContext) -> None:
        """Sleep before the next attempt, never past the call's deadline."""
        remaining = call.time_remaining()
        if remaining is not None:
            wait_s = min(wait_s, max(0.0, remaining - 0.05))
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    def _finish(
        self, admission: _Admission, outcome: _Outcome, call: CallContext, *, operation: str, streamed: bool
    ) -> None:
        """Settle the reservation and spool the final usage event (replacing the intent), in the background."""
        candidate = outcome.candidate
        cost = _attempts_cost(outcome)
        call.cost_micro_usd = cost
        if admission.reserved.requests:
            actual = ratelimit_pb2.Amounts(
                requests=1,
                tokens=outcome.prompt_tokens + outcome.completion_tokens,
                cost_micro_usd=cost,
            )
            if admission.ticket is not None:
                # Back into its block, locally; the block settles once for all its requests, and
                # the stream's extensions after it (they stay leased until then).
                self._blocks_release(admission.ticket, actual, admission.extensions)
            else:
                if self._leases is not None:
                    for reservation_id in (admission.reservation_id, *admission.extensions):
                        self._leases.release(reservation_id)
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
            credential_id=outcome.credential_id,
        )
        if outcome.splice is not None and outcome.splice.continuations:
            event.continuations = outcome.splice.continuations
            event.continued_from = "; ".join(outcome.splice.continued_from)
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
        metrics.REQUESTS_BY(operation, model_label, provider_label, outcome_name).inc()
        metrics.DURATION_BY(operation, "true" if streamed else "false").observe(latency)
        metrics.TOKENS_BY("prompt", model_label, provider_label).inc(outcome.prompt_tokens)
        metrics.TOKENS_BY("completion", model_label, provider_label).inc(outcome.completion_tokens)
        metrics.COST_BY(model_label, provider_label).inc(cost)
        if outcome.first_chunk_s is not None:
            metrics.FIRST_CHUNK_BY(model_label).observe(outcome.first_chunk_s)
        if not log.isEnabledFor(logging.INFO):
            return  # the request log is off: its line's fields are not even gathered
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
                "priced": candidate.price.priced if candidate else True,
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


def _annotate(error: GatewayError, outcome: _Outcome) -> GatewayError:
    if outcome.attempt_log:
        error.metadata = {**error.metadata, "attempts": "; ".join(outcome.attempt_log)}
    return error


def _attempts_cost(outcome: _Outcome) -> int:
    """The cost of every attempt: the answering one at its price, those that broke off at theirs."""
    if outcome.candidate is None:
        return 0
    splice = outcome.splice
    carried = (splice.carried_prompt_tokens, splice.carried_completion_tokens) if splice else (0, 0)
    own_prompt = max(0, outcome.prompt_tokens - carried[0])
    own_completion = max(0, outcome.completion_tokens - carried[1])
    cached = min(outcome.cached_tokens, own_prompt)
    own = cost_micro_usd(outcome.candidate, own_prompt, own_completion, cached)
    return own + outcome.carried_cost_micro_usd


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


def _attempt_timeout_error(candidate: Candidate, what: str = "did not answer") -> GatewayError:
    return GatewayError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        Reason.UPSTREAM_TIMEOUT,
        f"The provider `{candidate.provider}` {what} in time.",
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
