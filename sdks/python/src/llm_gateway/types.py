"""Typed results of the native API, hand-written after the protos.

Each class that mirrors a proto message is listed in :data:`PROTO_MESSAGES`; the SDK's tests walk
those descriptors and fail when a proto field has no attribute here, so the types cannot drift
from the contracts. Both transports decode into the same classes: the HTTP edge answers the
messages as JSON with their proto field names, and the gRPC transport renders the protobuf
messages into that same JSON before decoding (:func:`from_json`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Usage:
    """The token count of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class Message:
    """One message: ``{"role": "user", "content": "Hello"}``; content may also be a list of parts or None."""

    role: str
    content: Any = None
    name: str | None = None
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The message's text: the content string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict))
        return ""

    def to_json(self) -> dict[str, Any]:
        """The message as the request body carries it (unset fields left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "content"}


@dataclass(frozen=True)
class ChatResponse:
    """A completion of the unified chat API."""

    id: str = ""
    model: str = ""
    provider: str = ""
    usage: Usage = field(default_factory=Usage)
    message: Message = field(default_factory=lambda: Message("assistant"))
    finish_reason: str = ""
    created: int = 0
    request_id: str = ""
    """The request id the gateway logged this call under (not a proto field: from the transport)."""

    @property
    def text(self) -> str:
        """The generated text."""
        return self.message.text


@dataclass(frozen=True)
class Delta:
    """What a stream chunk adds to the message."""

    role: str | None = None
    content: str | None = None


@dataclass(frozen=True)
class ChatChunk:
    """One chunk of a unified chat stream."""

    id: str = ""
    model: str = ""
    provider: str = ""
    delta: Delta = field(default_factory=Delta)
    finish_reason: str | None = None
    usage: Usage | None = None
    """The usage of the whole request, in the final chunk only."""


@dataclass(frozen=True)
class TokenUsage:
    """The token count of a canonical answer (embeddings), with the provider's breakdowns."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None
    estimated: bool = False
    """Whether the gateway counted the tokens itself because the provider reported none."""


@dataclass(frozen=True)
class Embedding:
    """The vector of one input."""

    index: int = 0
    vector: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Embeddings:
    """An embeddings answer: one vector per input."""

    model: str = ""
    data: list[Embedding] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    provider: str = ""
    request_id: str = ""
    """The request id the gateway logged this call under (not a proto field: from the transport)."""


@dataclass(frozen=True)
class Model:
    """A model the caller may use."""

    id: str = ""
    created: int = 0
    owned_by: str = ""
    provider: str = ""
    unpriced: bool = False
    input_usd_per_million: float | None = None
    output_usd_per_million: float | None = None


@dataclass(frozen=True)
class UsageRow:
    """Usage sums of one group (tenant, key, model or provider; one total without grouping)."""

    group: str = ""
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micro_usd: int = 0
    errors: int = 0

    @property
    def cost_usd(self) -> float:
        """The cost in USD."""
        return self.cost_micro_usd / 1_000_000


@dataclass(frozen=True)
class Quota:
    """A quota: ``limit`` units ("UNIT_REQUESTS", "UNIT_TOKENS", "UNIT_COST_MICRO_USD") per window
    ("WINDOW_MINUTE", "WINDOW_DAY", "WINDOW_MONTH")."""

    unit: str = "UNIT_UNSPECIFIED"
    window: str = "WINDOW_UNSPECIFIED"
    limit: int = 0


@dataclass(frozen=True)
class Limits:
    """Quotas and a concurrency cap."""

    quotas: list[Quota] = field(default_factory=list)
    max_concurrent_requests: int | None = None


@dataclass(frozen=True)
class Policy:
    """A tenant's request policy."""

    deny_models: list[str] = field(default_factory=list)
    deny_providers: list[str] = field(default_factory=list)
    max_prompt_tokens: int | None = None
    log_prompts: bool = False
    refuse_unpriced: bool = False
    continue_broken_streams: bool | None = None


@dataclass(frozen=True)
class Tenant:
    """An organisation that owns keys."""

    tenant_id: str = ""
    display_name: str = ""
    limits: Limits | None = None
    key_defaults: Limits | None = None
    policy: Policy | None = None
    create_time: datetime | None = None


@dataclass(frozen=True)
class ApiKey:
    """An API key, without its secret."""

    key_id: str = ""
    tenant_id: str = ""
    name: str = ""
    prefix: str = ""
    scopes: list[str] = field(default_factory=list)
    allowed_models: list[str] = field(default_factory=list)
    limits: Limits | None = None
    create_time: datetime | None = None
    expire_time: datetime | None = None
    revoke_time: datetime | None = None


@dataclass(frozen=True)
class CreatedKey:
    """A new key and its secret, shown this once."""

    key: ApiKey = field(default_factory=ApiKey)
    secret: str = ""


@dataclass(frozen=True)
class CredentialWindowUsage:
    """What a credential used in the current window of one of its quotas (from the rate limit service)."""

    quota: Quota | None = None
    used: int = 0
    remaining: int = 0
    reset_after: str | None = None
    """Time until the window ends, as the proto JSON mapping writes a duration ("42.5s")."""


@dataclass(frozen=True)
class CredentialLedgerUsage:
    """What a credential served since ``since`` (the start of the month), from the usage ledger."""

    since: datetime | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micro_usd: int = 0


@dataclass(frozen=True)
class Credential:
    """A tenant's upstream credential, without its secret."""

    credential_id: str = ""
    tenant_id: str = ""
    provider: str = ""
    kind: str = "CREDENTIAL_KIND_UNSPECIFIED"
    name: str = ""
    priority: int = 0
    state: str = "CREDENTIAL_STATE_UNSPECIFIED"
    limits: list[Quota] = field(default_factory=list)
    secret_last_four: str = ""
    expires_at: datetime | None = None
    cooldown_until: datetime | None = None
    created_at: datetime | None = None
    rotated_at: datetime | None = None
    window_usage: list[CredentialWindowUsage] = field(default_factory=list)
    """Its use of each quota's current window; empty when the rate limit service did not answer."""
    month_usage: CredentialLedgerUsage | None = None
    """What it served this month; None when the metering service did not answer."""


@dataclass(frozen=True)
class JobError:
    """Why a job failed, as the OpenAI error object."""

    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class Job:
    """An asynchronous request and what became of it (``/v1/jobs``'s job object)."""

    id: str = ""
    object: str = "job"
    status: str = "queued"
    """"queued", "running", "succeeded", "failed" or "cancelled"."""
    format: str = "chat.completions"
    model: str = ""
    created_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    attempts: int = 0
    max_attempts: int = 0
    error: JobError | None = None
    result: dict[str, Any] | None = None
    """The answer, in the shape the synchronous call of the job's format returns."""
    webhook: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.status in ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobList:
    """A page of jobs, newest first."""

    data: list[Job] = field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


@dataclass(frozen=True)
class Response:
    """An OpenAI Responses API response object; ``raw`` holds every field as the gateway sent it."""

    id: str = ""
    object: str = "response"
    status: str = ""
    model: str = ""
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    previous_response_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def output_text(self) -> str:
        """The text of every output message, joined."""
        parts = []
        for item in self.output:
            if item.get("type") == "message":
                for content in item.get("content") or ():
                    if isinstance(content, dict) and content.get("type") == "output_text":
                        parts.append(str(content.get("text", "")))
        return "".join(parts)


@dataclass(frozen=True)
class ResponseEvent:
    """One typed event of a streamed response (``response.output_text.delta``, ``response.completed``…)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


PROTO_MESSAGES: dict[type, str] = {
    Usage: "gateway.router.v1.UnifiedUsage",
    Message: "gateway.router.v1.UnifiedMessage",
    ChatResponse: "gateway.router.v1.UnifiedChatResponse",
    Delta: "gateway.router.v1.UnifiedDelta",
    ChatChunk: "gateway.router.v1.UnifiedChatChunk",
    TokenUsage: "gateway.chat.v1.Usage",
    Embedding: "gateway.chat.v1.Embedding",
    Embeddings: "gateway.chat.v1.EmbeddingResponse",
    Model: "gateway.chat.v1.Model",
    UsageRow: "gateway.metering.v1.UsageRow",
    Quota: "gateway.quota.v1.Quota",
    Limits: "gateway.auth.v1.Limits",
    Policy: "gateway.auth.v1.Policy",
    Tenant: "gateway.auth.v1.Tenant",
    ApiKey: "gateway.auth.v1.ApiKey",
    CreatedKey: "gateway.auth.v1.CreateKeyResponse",
    Credential: "gateway.auth.v1.Credential",
    CredentialWindowUsage: "gateway.auth.v1.CredentialWindowUsage",
    CredentialLedgerUsage: "gateway.auth.v1.CredentialLedgerUsage",
}
"""SDK type → the proto message it mirrors (every field of the message must be an attribute)."""


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(options[0], value) if len(options) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_convert(item, v) for v in value]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_json(hint, value)
    if hint is datetime and isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    # The proto3 JSON mapping writes 64-bit integers as strings; the edge writes numbers.
    if hint is int and isinstance(value, str):
        return int(value)
    if hint is float and isinstance(value, int | str):
        return float(value)
    return value


def from_json(cls: type[T], data: Any) -> T:
    """An instance of the dataclass ``cls`` from its JSON object; unknown keys are ignored (a newer
    gateway may send more), missing ones take their defaults."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.name: _convert(hints[f.name], data[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.name in data
    }
    return cls(**kwargs)
