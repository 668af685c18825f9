"""A small typed client of LLM Gateway's native API (chat, streams, responses, jobs, usage,
models, admin), over HTTP or the router's gRPC API. For the OpenAI-compatible routes, use the
official ``openai`` SDK with ``base_url=<edge>/v1``."""

from llm_gateway._retries import RetryPolicy
from llm_gateway._streams import AsyncStream, Stream
from llm_gateway.client import AsyncClient, Client
from llm_gateway.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from llm_gateway.types import (
    ApiKey,
    ChatChunk,
    ChatResponse,
    CreatedKey,
    Credential,
    Delta,
    Job,
    JobError,
    JobList,
    Limits,
    Message,
    Model,
    Policy,
    Quota,
    Response,
    ResponseEvent,
    Tenant,
    Usage,
    UsageRow,
)

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "ApiKey",
    "AsyncClient",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ChatChunk",
    "ChatResponse",
    "Client",
    "ConflictError",
    "CreatedKey",
    "Credential",
    "Delta",
    "Job",
    "JobError",
    "JobList",
    "Limits",
    "Message",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "Policy",
    "Quota",
    "RateLimitError",
    "Response",
    "ResponseEvent",
    "RetryPolicy",
    "Stream",
    "Tenant",
    "Usage",
    "UsageRow",
]
