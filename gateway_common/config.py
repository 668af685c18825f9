"""The gateway's configuration: one YAML file (``GATEWAY_CONFIG``) overlaid by environment variables.

Every service loads the same model and reads the part it needs. The file is parsed strictly: an
unknown key, a wrong type or a bad value stops the service with a message naming the file, the
field and the reason. Secrets never live in the file; providers name the environment variable
that holds their key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway_common.targets import parse_target


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the source, the field and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceAddress(_Strict):
    """Where a gRPC service listens and where its clients reach it."""

    listen: str = Field(description="host:port the service binds.")
    address: str = Field(
        description="What clients dial: host:port, replicas as host:port,host:port (IP literals), "
        "or a gRPC target such as dns:///router.ns.svc:50051 (see gateway_common.targets)."
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """Port of the service's Prometheus /metrics endpoint, on the listen host; 0 for none."""

    @field_validator("address")
    @classmethod
    def _dialable(cls, value: str) -> str:
        # A typo in a replica list would otherwise surface only as every call failing UNAVAILABLE.
        parse_target(value)
        return value


def _local(port: int) -> ServiceAddress:
    return ServiceAddress(listen=f"127.0.0.1:{port}", address=f"127.0.0.1:{port}")


class ServicesConfig(_Strict):
    """Addresses of the five gRPC services."""

    router: ServiceAddress = _local(50051)
    auth: ServiceAddress = _local(50052)
    ratelimit: ServiceAddress = _local(50053)
    providers: ServiceAddress = _local(50054)
    metering: ServiceAddress = _local(50055)

    @model_validator(mode="before")
    @classmethod
    def _fill_partial_entries(cls, data: Any) -> Any:
        # One half of an entry (GATEWAY_X_LISTEN without GATEWAY_X_ADDR, or a partial YAML entry)
        # keeps the default of the other half.
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                entry = data.get(name)
                if isinstance(entry, dict) and isinstance(field.default, ServiceAddress):
                    data[name] = {**field.default.model_dump(), **entry}
        return data


_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+")


class EdgeConfig(_Strict):
    """The HTTP edge."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    """Request bodies larger than this are refused with 413 before they are parsed."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    cors_origins: list[str] = []
    """Browser origins allowed by CORS ("https://app.example.com", or "*" for any); none by default,
    which sends no CORS headers. ``GATEWAY_CORS_ORIGINS`` takes them comma-separated."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        # The environment override arrives as one comma-separated string.
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        # A browser sends "scheme://host[:port]" exactly; anything else (a trailing slash, a path)
        # would silently never match.
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"'{origin}' is not an origin like 'https://app.example.com' (or '*')")
        return value

    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or CIDR networks of reverse proxies whose ``X-Forwarded-For`` is believed; the
    client address of any other peer is the socket's (a client cannot pick its own rate-limit bucket)."""
    gemini_oauth: GeminiOAuthConfig = Field(default_factory=lambda: GeminiOAuthConfig())
    """The ``/ui/gemini`` login page: Google's OAuth client and where the token set is stored."""


GEMINI_CLI_OAUTH_SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
)
"""The scopes the Gemini CLI itself asks for (packages/core/src/code_assist/oauth2.ts)."""


class GeminiOAuthConfig(_Strict):
    """Google's OAuth authorization-code flow (with PKCE) behind ``GET /ui/gemini``.

    The client secret and the cookie key are secrets: only the names of their environment
    variables live here.
    """

    client_id_env: str = "GATEWAY_GEMINI_OAUTH_CLIENT_ID"
    """The variable holding the OAuth client id; the page says it is not configured while unset."""
    client_secret_env: str = "GATEWAY_GEMINI_OAUTH_CLIENT_SECRET"
    """The variable holding the OAuth client secret (installed-app clients have one too)."""
    authorize_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url: str = "https://oauth2.googleapis.com/token"
    scopes: list[str] = Field(default_factory=lambda: list(GEMINI_CLI_OAUTH_SCOPES))
    redirect_url: str | None = None
    """The callback URL registered with the client; empty for ``<this edge>/ui/gemini/callback``."""
    provider: str = "gemini-cli"
    """The provider the token set is stored for (a ``gemini-cli`` provider of the config)."""
    session_secret_env: str = "GATEWAY_UI_SESSION_SECRET"
    """The variable holding the key that seals the login cookie; every edge replica needs the same.
    Unset: a random key per process (fine for one replica)."""
    state_ttl_s: Annotated[float, Field(gt=0, le=3600)] = 600.0
    """How long a started login may take before its callback is refused."""
    http_timeout_s: Annotated[float, Field(gt=0)] = 15.0
    """The token exchange's timeout."""


class MockProviderConfig(_Strict):
    """The built-in mock provider: deterministic answers, for tests, demos and stub mode."""

    type: Literal["mock"] = "mock"
    latency_ms: Annotated[int, Field(ge=0)] = 0
    """Delay before the first chunk (or the whole answer)."""
    chunk_delay_ms: Annotated[int, Field(ge=0)] = 0
    """Delay between streamed chunks."""


class HttpProviderConfig(_Strict):
    """An upstream reached over HTTP with a key from the environment."""

    type: Literal["openai", "openai_compatible", "azure", "anthropic", "gemini"]
    base_url: str | None = None
    """The API's base URL; empty for the provider's public endpoint (or its *_BASE_URL variable)."""
    api_key_env: str | None = None
    """The environment variable holding the key; empty for the provider's usual one."""
    api_version: str | None = None
    """Azure's api-version, Anthropic's anthropic-version."""
    stub: bool | Literal["auto"] = False
    """true: answer like the mock provider (and say so) instead of calling the upstream; auto: do
    so only while the key's environment variable is unset (otherwise a missing key is a 503)."""
    list_models: bool = False
    """Whether the edge's model list includes this upstream's own list."""
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    total_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    stream_idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """A stream that sends nothing for this long is treated as broken."""
    max_connections: Annotated[int, Field(gt=0)] = 100
    default_max_tokens: Annotated[int, Field(gt=0)] = 4096
    """Sent to upstreams that require max_tokens (Anthropic) when the client gave none."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra non-secret headers sent upstream."""
    forward_client_key: bool = False
    """Bring-your-own-key: when no key is configured for this upstream, send it the client's own
    (``X-Upstream-Authorization: Bearer …``), for that request only; never logged or stored."""
    continue_final_message: bool = False
    """An ``openai_compatible`` server that takes vLLM's ``continue_final_message`` (with
    ``add_generation_prompt: false``): a broken stream is continued on it by sending the partial
    answer as a final assistant message to extend, not with an explicit instruction."""
    oauth_token_url: str | None = None
    """The token endpoint where tenants' OAuth credentials for this upstream are refreshed; unset
    when they are never refreshed by the gateway."""
    oauth_client_id_env: str | None = None
    """The environment variable holding the OAuth client id used for refreshing."""
    oauth_client_secret_env: str | None = None
    """The environment variable holding the OAuth client secret (unset for a public client)."""

    @model_validator(mode="after")
    def _continue_final_message_is_vllms(self) -> HttpProviderConfig:
        if self.continue_final_message and self.type != "openai_compatible":
            raise ValueError("continue_final_message is for openai_compatible servers (vLLM)")
        return self


class GeminiCliProviderConfig(_Strict):
    """The Gemini CLI run as a subprocess per request, logged in with the tenant's Google OAuth tokens
    (``services/providers/adapters/gemini_cli.py``)."""

    type: Literal["gemini-cli"] = "gemini-cli"
    executable: str = "gemini"
    """The ``gemini`` executable: a path, or a name looked up on PATH."""
    max_concurrency: Annotated[int, Field(gt=0, le=256)] = 4
    """CLI processes running at once; further requests wait for a slot."""
    timeout_s: Annotated[float, Field(gt=0)] = 300.0
    """A run taking longer is killed (its whole process group) and answered DEADLINE_EXCEEDED."""
    models: list[str] = Field(default_factory=lambda: ["gemini-2.5-pro", "gemini-2.5-flash"])
    """The models this provider lists (any ``gemini-`` model id is passed to ``--model``)."""
    oauth_creds_file_env: str = "GEMINI_CLI_OAUTH_CREDS_FILE"
    """The variable naming an ``oauth_creds.json`` used when the tenant has no credential of its own."""
    extra_args: list[str] = Field(default_factory=list)
    """Extra non-secret arguments for every run (e.g. ``--approval-mode``)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra non-secret environment for the CLI (it gets no other variable of this process but PATH
    and the locale)."""
    stream_json: bool = True
    """False for CLI versions without ``--output-format stream-json``: a stream is then one chunk."""
    list_models: bool = False
    """Whether the edge's model list includes :attr:`models`."""


ProviderConfig = Annotated[
    MockProviderConfig | HttpProviderConfig | GeminiCliProviderConfig, Field(discriminator="type")
]


class Deployment(_Strict):
    """One place a model is served: a provider, its upstream model name and its price."""

    provider: str
    model: str
    input_usd_per_million: Annotated[float, Field(ge=0)] | None = None
    """Overrides the built-in price table (genai-prices) for input tokens; unset to use it."""
    output_usd_per_million: Annotated[float, Field(ge=0)] | None = None
    """Overrides the built-in price table for output tokens; unset to use it. A deployment that
    neither sets nor finds a price is unpriced: it costs $0 and budgets cannot count it."""
    weight: Annotated[int, Field(ge=1)] = 1
    max_output_tokens: Annotated[int, Field(gt=0)] | None = None
    """The most tokens this deployment can answer with; a request without max_tokens reserves (and
    is capped at) this much. Unset: ``limits.default_completion_tokens``."""
    context_window: Annotated[int, Field(gt=0)] | None = None
    """The most tokens (prompt and answer) this deployment accepts; a request whose prompt estimate
    does not fit skips it, and one refused with context_length_exceeded moves to one that fits."""


class ModelLimitsConfig(_Strict):
    """Limits of one model per key (the (key, model) descriptor). 0 disables one."""

    requests_per_minute: Annotated[int, Field(ge=0)] = 0
    requests_per_day: Annotated[int, Field(ge=0)] = 0
    tokens_per_minute: Annotated[int, Field(ge=0)] = 0
    tokens_per_day: Annotated[int, Field(ge=0)] = 0
    max_concurrent_requests: Annotated[int, Field(ge=0)] = 0


class ModelConfig(_Strict):
    """A model clients name (an alias), served by one or more deployments in order of preference."""

    deployments: Annotated[list[Deployment], Field(min_length=1)]
    owned_by: str = "llm-gateway"
    strategy: Literal["ordered", "weighted", "cost", "latency", "reliability", "least-busy"] = "ordered"
    """ordered: deployments in the listed order; weighted: a random order drawn by their weights;
    cost: the cheapest for the request's estimated tokens first; latency: the lowest recent time to
    first token first; reliability: the highest recent success rate first; least-busy: the fewest
    requests in flight in this router first. A request may choose another
    (``gateway.constraints.routing.strategy``)."""
    limits: ModelLimitsConfig | None = None
    """Per-key limits on this model, on top of the key's own."""


class LimitsConfig(_Strict):
    """Default limits of every key that has none of its own (from its tenant or itself). 0 disables one."""

    requests_per_minute: Annotated[int, Field(ge=0)] = 60
    requests_per_day: Annotated[int, Field(ge=0)] = 0
    tokens_per_minute: Annotated[int, Field(ge=0)] = 1_000_000
    tokens_per_day: Annotated[int, Field(ge=0)] = 0
    tokens_per_month: Annotated[int, Field(ge=0)] = 0
    budget_usd_per_day: Annotated[float, Field(ge=0)] = 0.0
    budget_usd_per_month: Annotated[float, Field(ge=0)] = 0.0
    max_concurrent_requests: Annotated[int, Field(ge=0)] = 0
    default_completion_tokens: Annotated[int, Field(gt=0)] = 1024
    """Tokens reserved for the answer when a request sets no max_tokens and its deployments declare
    no ``max_output_tokens``. The upstream's max_tokens is capped at this (and the response says so
    in ``x-gateway-max-tokens-capped``), so the reservation is a ceiling, not a guess."""
    stream_extension_tokens: Annotated[int, Field(gt=0)] = 1024
    """A stream whose counted answer outgrows its reservation asks for this many more tokens (at
    least), and is stopped with an error when the limits cannot grant them."""


class RateLimitConfig(_Strict):
    """The rate limit service's backend."""

    redis_url: str | None = None
    """Redis for counters shared by every replica; unset for in-process memory (one replica only)."""
    outage_policy: Literal["fail_open", "fail_closed"] = "fail_closed"
    """What Acquire answers while Redis is unreachable."""
    lease_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """A reservation's lease: unless its router renews it (every third of the lease, while the
    request runs) or settles it, it expires after this long and frees its concurrency slot (its
    reserved tokens and spend stay counted). Bounds how long a router that died holds slots."""
    rebuild_from_ledger: bool = True
    """Rebuild day and month counters from metering's ledger when they are lost (Redis restarted
    empty, a new memory store), refusing to admit until done. Off only for a limiter without metering."""
    rebuild_grace_s: Annotated[float, Field(ge=0)] = 2.0
    """How long a rebuild waits (refusing) after the loss is seen, at start as at run time, so that
    requests then in flight finish and reach the ledger; longer than the router's metering flush
    interval and than ``quota_blocks.max_age_s``. A limiter on a memory store is not ready until then."""
    credential_cooldown_base_s: Annotated[float, Field(gt=0, le=86400)] = 1.0
    """The cooldown of an upstream credential after its first 429 or 401 in a row; each further
    one doubles it, up to ``credential_cooldown_cap_s``."""
    credential_cooldown_cap_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    """The longest cooldown a failure streak earns (an upstream's longer Retry-After still wins)."""
    credential_failure_memory_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 3600.0
    """How long after its cooldown ended a failure streak is remembered (a success ends it at once)."""


class CredentialsConfig(_Strict):
    """The auth service's store of tenant-owned upstream credentials (keys come from the environment)."""

    kek_file: str = ".gateway/credentials.kek"
    """The embedded default's key-encryption key file, generated once (mode 0600) when neither
    GATEWAY_CREDENTIALS_KEK nor GATEWAY_CREDENTIALS_KEK_FILE is set."""
    cache_ttl_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    """How long a resolved credential list is reused (here and by the providers service)."""
    rewrap_at_start: bool = True
    """Re-wrap, in the background after start, every data key an older KEK wraps."""


class AuthConfig(_Strict):
    """The auth service."""

    cache_ttl_s: Annotated[float, Field(ge=0, le=5)] = 2.0
    """How long a router may reuse an authentication answer; revocation shows within this bound."""
    demo_key_file: str = ".gateway/demo-key"
    """Where the embedded default keeps its generated demo key (used when no keys are configured)."""
    database_url: str = "sqlite+aiosqlite:///.gateway/auth.db"
    credentials: CredentialsConfig = CredentialsConfig()


class MeteringConfig(_Strict):
    """The metering service, and how a router ships usage to it through its local spool."""

    database_url: str = "sqlite+aiosqlite:///.gateway/metering.db"
    batch_size: Annotated[int, Field(gt=0)] = 200
    flush_interval_s: Annotated[float, Field(gt=0)] = 0.5
    spool_path: Annotated[str, Field(min_length=1)] = ".gateway/usage-spool.db"
    """The router's durable usage spool (a SQLite file, locked by one router process). Every router
    needs its own, on storage that outlives the process (on Kubernetes, a volume that survives
    container restarts). Unbounded on purpose: usage is never dropped, however long metering is down.
    ``{hostname}`` in the name gives replicas sharing one volume a file each, and makes every router
    take over the spools that replicas which are gone left there (see ``services.router.spool_adoption``)."""
    response_retention_days: Annotated[int, Field(ge=0)] = 30
    """How long stored Responses API responses (``store: true``) are kept after they were created, as
    OpenAI keeps them; 0 keeps them until deleted. Older ones are purged by metering in the background."""
    response_max_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    """The most one stored response may hold (its serialized answer and input items together); a
    larger one is refused with INVALID_ARGUMENT rather than stored."""


class JobsConfig(_Strict):
    """Async jobs (``/v1/jobs``), a role of every router: a durable queue and workers."""

    workers: Annotated[int, Field(ge=0, le=64)] = 2
    """Worker tasks per router process; 0 accepts jobs without running any here."""
    path: Annotated[str, Field(min_length=1)] = ".gateway/jobs.db"
    """The SQLite queue of the embedded default, one file per router (``{hostname}`` is filled in);
    unused when ``router.redis_url`` is set (the queue is then on Redis, shared by every router)."""
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    """Runs a job gets (retryable failures, runs lost with their router) before it fails."""
    lease_s: Annotated[float, Field(gt=0)] = 30.0
    """How long a claimed job is a worker's without a heartbeat; a dead worker's job is re-queued after."""
    retry_backoff_s: Annotated[float, Field(ge=0)] = 1.0
    """The first wait before a retry (doubled each time, or the error's Retry-After when longer)."""
    poll_s: Annotated[float, Field(gt=0)] = 0.5
    """How often an idle worker looks for due jobs (a submit in the same process wakes it at once)."""
    retention_s: Annotated[float, Field(gt=0)] = 7 * 86400.0
    """How long a finished job (and its result) is kept."""
    webhook_secret: str = Field(default="", repr=False)
    """The HMAC-SHA256 key of ``X-Gateway-Signature`` on completion webhooks
    (``GATEWAY_JOBS_WEBHOOK_SECRET``); empty signs with an empty key, so set it."""
    webhook_allow_private: bool = False
    """Whether webhooks may target loopback or private addresses (tests, closed networks)."""
    webhook_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Deliveries tried per webhook before it is given up (exponential backoff between them)."""
    webhook_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """Per delivery."""


class QuotaBlocksConfig(_Strict):
    """Quota blocks: a router reserves a small block of several requests' worth of quota in one
    Acquire and admits the requests it serves from it locally (``services.router.quota_blocks``)."""

    enabled: bool = True
    """Off: every request makes its own Acquire and Settle, as before blocks."""
    max_requests: Annotated[int, Field(ge=2, le=10_000)] = 64
    """The most requests one block holds."""
    min_requests: Annotated[int, Field(ge=2, le=10_000)] = 4
    """A block smaller than this is not worth it: requests then reserve one at a time (near a limit)."""
    headroom_fraction: Annotated[float, Field(gt=0, le=1)] = 0.1
    """The share of a quota's remaining headroom one block may take, so that several routers
    sharing a limit cannot starve each other and requests near the limit reserve one at a time."""
    max_age_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    """How long a block admits requests after it was reserved (without contact with the service)."""
    refill_below: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """When a block's unused share falls below this, the next one is reserved in the background."""


class RouterConfig(_Strict):
    """The router's request handling."""

    max_attempts: Annotated[int, Field(ge=1)] = 3
    attempt_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    retry_backoff_s: Annotated[float, Field(ge=0)] = 0.2
    unhealthy_after_failures: Annotated[int, Field(ge=1)] = 3
    """Retryable failures within ``breaker_window_s`` that open a deployment's circuit breaker: it is
    then tried only when nothing else is left (see ``services.router.breaker``)."""
    unhealthy_cooldown_s: Annotated[float, Field(ge=0)] = 30.0
    """How long an open breaker skips its deployment before one probe request may try it."""
    retries_per_deployment: Annotated[int, Field(ge=0)] = 0
    """Extra attempts on the same deployment after a transient failure (a 500, a reset connection,
    a short Retry-After) before the next deployment is tried."""
    continue_broken_streams: bool = True
    """Whether a stream that broke after content reached the client is continued by another attempt."""
    retry_content_filter: bool = False
    """Whether a content-filter refusal moves on to the next deployment instead of reaching the client."""
    first_content_timeout_s: Annotated[float, Field(gt=0)] | None = None
    """How long a stream may take to its first chunk carrying content or a tool call before the
    attempt is abandoned for the next one; unset: ``attempt_timeout_s``."""
    max_retry_wait_s: Annotated[float, Field(ge=0)] = 2.0
    """The longest Retry-After waited out before retrying the same deployment; a longer one moves on."""
    breaker_window_s: Annotated[float, Field(gt=0)] = 60.0
    """The window in which a deployment's failures are counted."""
    breaker_probe_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """How long a half-open deployment waits for its probe's outcome before another request may probe."""
    breaker_poll_s: Annotated[float, Field(gt=0)] = 1.0
    """How often a router reads the breakers that other routers opened (shared state only)."""
    redis_url: str | None = None
    """Redis for breaker state shared by every router replica; unset for per-router memory."""
    stats_half_life_s: Annotated[float, Field(gt=0)] = 60.0
    """Half-life of the moving averages the latency and reliability strategies rank by."""
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    """Async jobs: queue and workers."""
    quota_blocks: QuotaBlocksConfig = Field(default_factory=QuotaBlocksConfig)
    """Quota reserved in blocks of requests rather than one Acquire and Settle per request."""


DEFAULT_MODEL_PREFIXES: dict[str, str] = {
    "gpt-": "openai",
    "o1": "openai",
    "o3": "openai",
    "o4": "openai",
    "chatgpt-": "openai",
    "text-embedding-": "openai",
    "claude-": "anthropic",
    "gemini-": "gemini",
}
"""Bare model ids that route themselves, by the prefix their vendor gives them."""


class RoutingConfig(_Strict):
    """How bare model ids (no ``provider:``) find a provider, after route overrides and aliases."""

    prefixes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODEL_PREFIXES))
    """Model id prefix -> provider name; the longest matching prefix wins. Replaces the default table."""
    override_refresh_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    """How often each router reloads the route overrides stored by auth (one call per interval)."""
    mock_mode: bool = False
    """Serve every model from the mock provider (still authenticated, limited and metered);
    ``MOCK_MODE=true`` in the environment sets it."""

    @field_validator("prefixes")
    @classmethod
    def _non_empty_prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        for prefix in value:
            if not prefix or ":" in prefix:
                raise ValueError(f"prefix {prefix!r} must be non-empty and contain no ':'")
        return value


class TlsConfig(_Strict):
    """Service identity on internal gRPC: one CA, and one certificate per process naming its service.

    Auth, ratelimit, providers and metering require a client certificate the CA signed and check its
    identity against ``gateway_common.identity.ALLOWED_CALLERS``; the router serves TLS to anyone
    (tenant keys authenticate there). A service process without material refuses to start unless
    ``internal`` is ``off``.
    """

    internal: Literal["on", "off"] = "on"
    """off: plaintext internal gRPC with no identity checks (tests that start bare processes)."""
    dir: str | None = None
    """A folder holding ca.crt and <process>.crt/<process>.key, as `make up` and compose write it."""
    ca_file: str | None = None
    """The CA certificate (PEM) that signs every service's certificate; wins over ``dir``."""
    cert_file: str | None = None
    """This process's certificate (PEM); wins over ``dir``."""
    key_file: str | None = None
    """This process's private key (PEM); wins over ``dir``."""

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together (GATEWAY_TLS_CERT and GATEWAY_TLS_KEY)")
        return self


class AnonymousConfig(_Strict):
    """Requests without a key, served as one tenant and limited per caller; off unless enabled.

    A caller is its ``client_id`` (the request's top-level or ``gateway.client_id``) or, with
    ``limit_by: ip`` or without a client id, its address. Anonymous callers hold only the chat and
    embeddings scopes, never admin or usage.
    """

    enabled: bool = False
    tenant: Annotated[str, Field(min_length=1)] = "anonymous"
    """The tenant anonymous usage is metered and limited under."""
    limit_by: Literal["client_id", "ip"] = "client_id"
    """What one caller is: its client id (falling back to its address), or always its address."""
    requests_per_minute: Annotated[int, Field(ge=0)] = 20
    """Per caller; 0 for none (with tokens_per_minute 0 too, the ``limits`` defaults apply)."""
    tokens_per_minute: Annotated[int, Field(ge=0)] = 0
    """Per caller; 0 for none."""
    total_requests_per_minute: Annotated[int, Field(ge=0)] = 0
    """All anonymous callers together (a caller can always invent another client id); 0 for none."""
    total_tokens_per_minute: Annotated[int, Field(ge=0)] = 0
    """All anonymous callers together; 0 for none."""
    models: list[str] = Field(default_factory=list)
    """Models (fnmatch patterns) anonymous callers may use; empty for every model."""


class TelemetryConfig(_Strict):
    """Metering's append-only telemetry log: one JSON line per ledger event, never a prompt or a key."""

    log_file: str | None = None
    """The file to append to; unset for none."""


DEFAULT_CHAT_ALIAS = "default-chat"
"""The alias that exists without configuration, naming ``default_model`` (unless defined)."""


class PromptLogConfig(_Strict):
    """Which calls have their prompt and answer logged, and what is redacted before they are stored."""

    mode: Literal["policy", "all", "off"] = "policy"
    """``policy``: tenants whose policy sets ``log_prompts``; ``all``: every call; ``off``: none.
    ``GATEWAY_PROMPT_LOGGING`` (or AI Gateway's ``AI_GATEWAY_PROMPT_LOGGING``) sets it: true/false/policy."""
    redact_patterns: list[str] = Field(default_factory=list)
    """Regular expressions whose matches are replaced by ``[REDACTED]`` before a log is stored,
    on top of the built-in ones (``sk-…`` keys, bearer tokens)."""

    @field_validator("mode", mode="before")
    @classmethod
    def _boolean_names(cls, value: Any) -> Any:
        # AI Gateway's users write true/false; ours are the mode names.
        names = {"true": "all", "1": "all", "yes": "all", "on": "all", "false": "off", "0": "off", "no": "off"}
        return names.get(str(value).strip().lower(), value) if isinstance(value, str | bool) else value

    @field_validator("redact_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {index} ({pattern!r}) is not a valid regular expression: {exc}") from exc
        return value


class GatewayConfig(_Strict):
    """The whole configuration file."""

    services: ServicesConfig = ServicesConfig()
    edge: EdgeConfig = EdgeConfig()
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    """Upstreams by name; mock, openai, azure, anthropic and gemini exist without an entry."""
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)
    """Shorthand aliases, ``name: "provider:model"`` (or another alias); ``models`` wins on a clash."""
    default_model: str = "mock:gateway-demo"
    max_prompt_tokens: Annotated[int, Field(gt=0)] | None = None
    """Prompts estimated larger than this are refused with 400, before any quota; a tenant's own
    policy cap applies as well."""
    providers_stub_when_key_missing: bool = False
    """Every HTTP provider whose key variable is unset answers like the mock (as ``stub: auto``)."""
    anonymous: AnonymousConfig = AnonymousConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    limits: LimitsConfig = LimitsConfig()
    ratelimit: RateLimitConfig = RateLimitConfig()
    auth: AuthConfig = AuthConfig()
    metering: MeteringConfig = MeteringConfig()
    router: RouterConfig = RouterConfig()
    routing: RoutingConfig = RoutingConfig()
    tls: TlsConfig = TlsConfig()
    prompt_log: PromptLogConfig = PromptLogConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name or ":" in name:
                raise ValueError(f"provider name {name!r} must be non-empty and contain no ':'")
        return value

    @model_validator(mode="after")
    def _gemini_prefix_to_the_cli(self) -> GatewayConfig:
        # As in the LLM Proxy Gateway seed: with a Gemini CLI provider configured, bare "gemini-"
        # ids are served by it, unless the file spells out its own prefix table.
        if "prefixes" not in self.routing.model_fields_set:
            cli = sorted(n for n, p in self.providers.items() if isinstance(p, GeminiCliProviderConfig))
            if cli:
                self.routing.prefixes["gemini-"] = cli[0]
        return self

    @model_validator(mode="after")
    def _deployments_name_known_providers(self) -> GatewayConfig:
        known = effective_providers(self)
        for alias, model in self.models.items():
            for i, deployment in enumerate(model.deployments):
                if deployment.provider not in known:
                    raise ValueError(
                        f"models.{alias}.deployments.{i}.provider: unknown provider "
                        f"{deployment.provider!r} (known: {', '.join(sorted(known))})"
                    )
        for prefix, provider in self.routing.prefixes.items():
            if provider not in known:
                raise ValueError(
                    f"routing.prefixes.{prefix}: unknown provider {provider!r} (known: {', '.join(sorted(known))})"
                )
        for alias, target in self.aliases.items():
            provider, sep, upstream = target.partition(":")
            named = target in self.aliases or target in self.models or target == DEFAULT_CHAT_ALIAS
            if not named and not (sep and upstream):
                raise ValueError(f"aliases.{alias}: {target!r} is neither provider:model nor a model or alias")
            if sep and upstream and provider not in known and target not in self.models:
                raise ValueError(f"aliases.{alias}: unknown provider {provider!r} (known: {', '.join(sorted(known))})")
        return self


# Environment variables that override the file, by dotted field path(s).
_ENV_OVERRIDES: dict[str, str | tuple[str, ...]] = {
    "REDIS_URL": ("ratelimit.redis_url", "router.redis_url"),
    "DATABASE_URL": ("auth.database_url", "metering.database_url"),
    "GATEWAY_DEFAULT_MODEL": "default_model",
    "GATEWAY_RATE_LIMIT_RPM": "limits.requests_per_minute",
    "GATEWAY_LOG_LEVEL": "log_level",
    "GATEWAY_EDGE_HOST": "edge.host",
    "GATEWAY_EDGE_PORT": "edge.port",
    "GATEWAY_MAX_BODY_BYTES": "edge.max_body_bytes",
    "GATEWAY_CORS_ORIGINS": "edge.cors_origins",
    "GATEWAY_AUTH_DATABASE_URL": "auth.database_url",
    "GATEWAY_METERING_DATABASE_URL": "metering.database_url",
    "GATEWAY_METERING_SPOOL_PATH": "metering.spool_path",
    "GATEWAY_RESPONSE_RETENTION_DAYS": "metering.response_retention_days",
    "GATEWAY_DEMO_KEY_FILE": "auth.demo_key_file",
    "GATEWAY_AUTH_CACHE_TTL_S": "auth.cache_ttl_s",
    # Where the embedded default generates its credentials KEK file (a suite's data folder, say).
    "GATEWAY_AUTH_CREDENTIALS_KEK_FILE": "auth.credentials.kek_file",
    "GATEWAY_INTERNAL_TLS": "tls.internal",
    "GATEWAY_TLS_DIR": "tls.dir",
    "GATEWAY_TLS_CA": "tls.ca_file",
    "GATEWAY_TLS_CERT": "tls.cert_file",
    "GATEWAY_TLS_KEY": "tls.key_file",
    "GATEWAY_RATELIMIT_LEASE_S": "ratelimit.lease_s",
    "GATEWAY_RATELIMIT_REBUILD_FROM_LEDGER": "ratelimit.rebuild_from_ledger",
    # MOCK_MODE is Unified Model Gateway's own name for it; its users set it unchanged.
    "MOCK_MODE": "routing.mock_mode",
    "GATEWAY_MOCK_MODE": "routing.mock_mode",
    "GATEWAY_ANONYMOUS": "anonymous.enabled",
    "GATEWAY_MAX_PROMPT_TOKENS": "max_prompt_tokens",
    "GATEWAY_STUB_WHEN_KEY_MISSING": "providers_stub_when_key_missing",
    "GATEWAY_TELEMETRY_LOG_FILE": "telemetry.log_file",
    "GATEWAY_PROMPT_LOGGING": "prompt_log.mode",
    "GATEWAY_GEMINI_OAUTH_AUTHORIZE_URL": "edge.gemini_oauth.authorize_url",
    "GATEWAY_GEMINI_OAUTH_TOKEN_URL": "edge.gemini_oauth.token_url",
    "GATEWAY_GEMINI_OAUTH_REDIRECT_URL": "edge.gemini_oauth.redirect_url",
    "GATEWAY_JOBS_PATH": "router.jobs.path",
    "GATEWAY_JOBS_WORKERS": "router.jobs.workers",
    "GATEWAY_JOBS_WEBHOOK_SECRET": "router.jobs.webhook_secret",
    "GATEWAY_JOBS_WEBHOOK_ALLOW_PRIVATE": "router.jobs.webhook_allow_private",
    "GATEWAY_JOBS_LEASE_S": "router.jobs.lease_s",
    "GATEWAY_JOBS_RETRY_BACKOFF_S": "router.jobs.retry_backoff_s",
}


def _retries_to_attempts(value: str) -> str:
    # AI Gateway counts retries after the first try; max_attempts counts the first try too.
    return str(int(value) + 1) if value.strip().isdigit() else value


def _ms_to_s(value: str) -> str:
    try:
        return str(float(value) / 1000)
    except ValueError:
        return value


# AI Gateway's variables (seed 004), for its users' existing setups: (our variable or field, conversion).
# Ours win when both are set.
_SEED_ENV_ALIASES: dict[str, tuple[str, Callable[[str], str] | None]] = {
    "AI_GATEWAY_PROMPT_LOGGING": ("GATEWAY_PROMPT_LOGGING", None),
    "AI_GATEWAY_RATE_LIMIT_RPM": ("GATEWAY_RATE_LIMIT_RPM", None),
    "AI_GATEWAY_RETRY_ATTEMPTS": ("router.max_attempts", _retries_to_attempts),
    "AI_GATEWAY_RETRY_DELAY_MS": ("router.retry_backoff_s", _ms_to_s),
}
for _service in ("router", "auth", "ratelimit", "providers", "metering"):
    _ENV_OVERRIDES[f"GATEWAY_{_service.upper()}_LISTEN"] = f"services.{_service}.listen"
    _ENV_OVERRIDES[f"GATEWAY_{_service.upper()}_ADDR"] = f"services.{_service}.address"
    _ENV_OVERRIDES[f"GATEWAY_{_service.upper()}_METRICS_PORT"] = f"services.{_service}.metrics_port"


def _set_path(data: dict[str, Any], dotted: str, value: str) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {field}: {item['msg']}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load the configuration from ``path`` (default: ``$GATEWAY_CONFIG``, else built-in defaults)
    and apply the environment overrides. Raises ConfigError naming the file, field and reason."""
    env = os.environ if env is None else env
    path = path or env.get("GATEWAY_CONFIG") or None
    source = str(path) if path else "built-in defaults"
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML in {path}: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"invalid configuration in {path}: the top level must be a mapping")
        data = loaded
    aliased = [name for name, (target, _) in _SEED_ENV_ALIASES.items() if env.get(name) and not env.get(target)]
    for name in aliased:
        target, convert = _SEED_ENV_ALIASES[name]
        if target in _ENV_OVERRIDES:
            env = {**env, target: env[name]}
        else:
            _set_path(data, target, convert(env[name]) if convert else env[name])
    overridden = [name for name in _ENV_OVERRIDES if env.get(name)]
    for name in overridden:
        paths = _ENV_OVERRIDES[name]
        for dotted in (paths,) if isinstance(paths, str) else paths:
            _set_path(data, dotted, env[name])
    routes_variable = next((name for name in _MODEL_ROUTES_VARIABLES if env.get(name)), None)
    if routes_variable is not None:
        _add_model_routes(data, routes_variable, env[routes_variable], env)
        aliased.append(routes_variable)
    if overridden or aliased:
        source += f" (with {', '.join([*overridden, *aliased])} from the environment)"
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from exc


_MODEL_ROUTES_VARIABLES = ("GATEWAY_MODEL_ROUTES", "AI_GATEWAY_MODEL_ROUTES")
"""``model:base_url,model2:base_url2``: each model served by an OpenAI-compatible upstream; ours wins."""

_ROUTE_PROVIDER_PREFIX = "route-"


def _add_model_routes(data: dict[str, Any], variable: str, value: str, env: Mapping[str, str]) -> None:
    """Add an ``openai_compatible`` provider (``route-<model>``) and a model of that id per entry.

    The upstreams' key is AI Gateway's ``AI_GATEWAY_API_KEY`` when set, else ``OPENAI_API_KEY``.
    Raises ConfigError naming the variable and the entry for anything that is not ``id:http(s)://…``.
    """
    key_env = "AI_GATEWAY_API_KEY" if env.get("AI_GATEWAY_API_KEY") else "OPENAI_API_KEY"
    providers = data.setdefault("providers", {})
    models = data.setdefault("models", {})
    if not isinstance(providers, dict) or not isinstance(models, dict):
        raise ConfigError(f"{variable}: providers and models must be mappings to add routes to")
    seen: set[str] = set()
    for index, entry in enumerate(value.split(",")):
        entry = entry.strip()
        model, _, url = entry.partition(":")
        model, url = model.strip(), url.strip()
        where = f"{variable} entry {index} ({entry!r})"
        if not entry:
            raise ConfigError(f"{where}: empty; write model:base_url entries separated by commas")
        if not model or not url:
            raise ConfigError(f"{where}: must be model:base_url, e.g. llama:http://127.0.0.1:8080/v1")
        if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
            raise ConfigError(f"{where}: the base URL must start with http:// or https://")
        if model in seen:
            raise ConfigError(f"{where}: the model {model!r} is routed twice")
        seen.add(model)
        provider = _ROUTE_PROVIDER_PREFIX + model
        # AI Gateway forwards the client's own upstream key when it has none: so do its routes here.
        providers[provider] = {
            "type": "openai_compatible",
            "base_url": url.rstrip("/"),
            "api_key_env": key_env,
            "forward_client_key": True,
        }
        models[model] = {"deployments": [{"provider": provider, "model": model}]}


# Providers that exist without configuration; each needs only its key in the environment (a
# missing key is reported at call time as a 503 naming the variable).
_BUILT_IN_PROVIDERS: dict[str, ProviderConfig] = {
    "mock": MockProviderConfig(),
    "openai": HttpProviderConfig(type="openai"),
    "azure": HttpProviderConfig(type="azure"),
    "anthropic": HttpProviderConfig(type="anthropic"),
    "gemini": HttpProviderConfig(type="gemini"),
}


def effective_providers(config: GatewayConfig) -> dict[str, ProviderConfig]:
    """The configured providers plus the built-in ones (mock, openai, azure, anthropic, gemini)
    that the file does not define itself."""
    return {**_BUILT_IN_PROVIDERS, **config.providers}
