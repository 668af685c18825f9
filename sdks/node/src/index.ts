// LLM Gateway's Node/TypeScript client for the native API; see README.md.

export { GatewayClient, Jobs, Admin, Tenants, Keys, Routes, Credentials, outputText } from "./client.js";
export type { ClientOptions, WaitOptions } from "./client.js";
export type { RequestOptions } from "./http.js";
export { Stream } from "./streams.js";
export {
  APIError,
  APIConnectionError,
  APITimeoutError,
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  BudgetExceededError,
  ConflictError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
} from "./errors.js";
export type { APIErrorFields } from "./errors.js";
export { DEFAULT_RETRY_POLICY, retryable } from "./retries.js";
export type { RetryPolicy } from "./retries.js";
export * from "./types.js";
