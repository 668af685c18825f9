// When a failed call is tried again, and after how long (the same rules as the Python SDK's).
//
// Only failures another attempt can fix are retried: rate limits (after their `Retry-After`),
// connection failures and timeouts, and the gateway's own 502/503. A spent budget is not (it resets
// only at its window's start). Calls that are not idempotent (a chat, a job submission) are retried
// only when the caller opts in, per call or per client: a retry after a lost answer may run — and
// bill — the request twice.

import { APIConnectionError, APIError, APIUserAbortError, BudgetExceededError, RateLimitError } from "./errors.js";

/** How often and how long to retry. */
export interface RetryPolicy {
  /** Retries after the first attempt (default 2). */
  maxRetries: number;
  /** The first backoff without a Retry-After, in ms; it doubles with each retry, with jitter (default 500). */
  backoffMs: number;
  /** The longest backoff without a Retry-After, in ms (default 8000). */
  maxBackoffMs: number;
  /** A Retry-After longer than this (ms) is not waited for: the error is thrown instead (default 60000). */
  maxRetryAfterMs: number;
}

/** The defaults. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxRetries: 2,
  backoffMs: 500,
  maxBackoffMs: 8000,
  maxRetryAfterMs: 60_000,
};

/** Whether another attempt may succeed. */
export function retryable(error: unknown): boolean {
  if (!(error instanceof APIError) || error instanceof APIUserAbortError) return false;
  if (error instanceof BudgetExceededError) return false;
  if (error instanceof RateLimitError || error instanceof APIConnectionError) return true;
  return error.constructor === APIError && (error.status === 502 || error.status === 503);
}

/** Milliseconds to wait before the next attempt after `error`; null when it is not retried. */
export function retryDelayMs(policy: RetryPolicy, retriesDone: number, error: unknown): number | null {
  if (retriesDone >= policy.maxRetries || !retryable(error)) return null;
  const retryAfter = (error as APIError).retryAfter;
  if (retryAfter !== null) {
    const wait = retryAfter * 1000;
    return wait > policy.maxRetryAfterMs ? null : wait;
  }
  const ceiling = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** retriesDone);
  return ceiling * (0.5 + Math.random() / 2);
}
