// Typed errors, one class per error class of the gateway, with the same names and meaning as the
// Python SDK's (sdks/python/src/llm_gateway/errors.py): code written against either reads alike.
//
// The edge answers every failure with OpenAI's error body (`{"error": {"message", "type", "param",
// "code"}}`), an `x-request-id` and, for rate limits, `Retry-After` (edge/errors.py).

import type { ErrorBody } from "./types.js";

/** What an {@link APIError} carries besides its message. */
export interface APIErrorFields {
  /** The HTTP status (undefined when no answer came). */
  status?: number | undefined;
  /** The gateway's error code ("model_not_found", "rate_limit_exceeded", …). */
  code?: string | null | undefined;
  /** OpenAI's error type ("invalid_request_error", …). */
  type?: string | null | undefined;
  /** The request parameter the error is about ("model", "messages[0].role", …). */
  param?: string | null | undefined;
  /** The id the gateway logged the request under (`x-request-id`). */
  requestId?: string | null | undefined;
  /** Seconds to wait before trying again, when the gateway said (`Retry-After`). */
  retryAfter?: number | null | undefined;
  /** The raw error body, as decoded. */
  body?: unknown;
  /** The answer's headers. */
  headers?: Headers | undefined;
  /** The underlying failure (a network error, an abort). */
  cause?: unknown;
}

/** Any failure of a gateway call; thrown as is for server errors (HTTP 5xx). */
export class APIError extends Error {
  /** The HTTP status (undefined when no answer came). */
  readonly status: number | undefined;
  /** The gateway's error code. */
  readonly code: string | null;
  /** OpenAI's error type. */
  readonly type: string | null;
  /** The request parameter the error is about. */
  readonly param: string | null;
  /** The `x-request-id` of the call. */
  readonly requestId: string | null;
  /** Seconds to wait before retrying, when the gateway said. */
  readonly retryAfter: number | null;
  /** The raw error body. */
  readonly body: unknown;
  /** The answer's headers. */
  readonly headers: Headers | undefined;

  constructor(message: string, fields: APIErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = new.target.name;
    this.status = fields.status;
    this.code = fields.code ?? null;
    this.type = fields.type ?? null;
    this.param = fields.param ?? null;
    this.requestId = fields.requestId ?? null;
    this.retryAfter = fields.retryAfter ?? null;
    this.body = fields.body;
    this.headers = fields.headers;
  }
}

/** The gateway could not be reached, or the connection broke before an answer. */
export class APIConnectionError extends APIError {}

/** No answer in time: the client's timeout, or the gateway's deadline (HTTP 504). */
export class APITimeoutError extends APIConnectionError {}

/** The caller aborted the call through its `AbortSignal`; never retried. */
export class APIUserAbortError extends APIError {}

/** The request is malformed or names something invalid (HTTP 400, 413, 422). */
export class BadRequestError extends APIError {}

/** The key is missing or not valid (HTTP 401). */
export class AuthenticationError extends APIError {}

/** The key may not do this: a scope or a model it lacks (HTTP 403). */
export class PermissionDeniedError extends APIError {}

/** No such model, job, response, tenant, key or credential (HTTP 404). */
export class NotFoundError extends APIError {}

/** It exists already, or changed meanwhile (HTTP 409). */
export class ConflictError extends APIError {}

/** Over a rate limit (HTTP 429); `retryAfter` says when to try again. */
export class RateLimitError extends APIError {}

/**
 * A spend budget is used up (code "insufficient_quota"): it resets only at the start of its window,
 * so it is never retried automatically.
 */
export class BudgetExceededError extends RateLimitError {}

const BY_STATUS: Record<number, typeof APIError> = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: BadRequestError,
  422: BadRequestError,
  429: RateLimitError,
  504: APITimeoutError,
};

const BUDGET_CODE = "insufficient_quota";

function text(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}

/** Seconds from a `Retry-After` header; the gateway sends seconds, never an HTTP date. */
export function parseRetryAfter(value: string | null): number | null {
  if (value === null || value.trim() === "") return null;
  const seconds = Number(value);
  return Number.isFinite(seconds) ? Math.max(0, seconds) : null;
}

/** The error for an HTTP error answer (`body` is the decoded JSON, or the text). */
export function errorFromResponse(status: number, body: unknown, headers: Headers, requestId: string | null): APIError {
  const wrapped = typeof body === "object" && body !== null ? (body as { error?: unknown }).error : undefined;
  const error: Partial<ErrorBody> =
    typeof wrapped === "object" && wrapped !== null
      ? (wrapped as Partial<ErrorBody>)
      : { message: typeof body === "string" && body ? body : `HTTP ${status}` };
  const code = text(error.code);
  let cls = BY_STATUS[status] ?? APIError;
  if (cls === RateLimitError && code === BUDGET_CODE) cls = BudgetExceededError;
  return new cls(text(error.message) || `HTTP ${status}`, {
    status,
    code,
    type: text(error.type),
    param: text(error.param),
    requestId: headers.get("x-request-id") ?? requestId,
    retryAfter: parseRetryAfter(headers.get("retry-after")),
    body,
    headers,
  });
}

/** The error for an in-band `{"error": …}` that ends a stream after its first chunk. */
export function errorFromStream(error: Partial<ErrorBody>, requestId: string | null): APIError {
  const code = text(error.code);
  const cls = code === BUDGET_CODE ? BudgetExceededError : code === "rate_limit_exceeded" ? RateLimitError : APIError;
  return new cls(text(error.message) || "The stream failed.", {
    code,
    type: text(error.type),
    param: text(error.param),
    requestId,
    body: { error },
  });
}
