// One HTTP call to the edge: headers, timeout, the caller's AbortSignal, typed errors and retries.
// It knows nothing of the individual routes (client.ts says what each method sends).

import {
  APIConnectionError,
  APIError,
  APITimeoutError,
  APIUserAbortError,
  errorFromResponse,
} from "./errors.js";
import { type RetryPolicy, retryDelayMs } from "./retries.js";
import type { OpenedStream } from "./streams.js";

/** Settings every call may override. */
export interface RequestOptions {
  /** Aborts the call (and a stream's connection) when it fires. */
  signal?: AbortSignal;
  /** Milliseconds until the answer (for a stream: until its headers); overrides the client's. */
  timeout?: number;
  /** Retries after the first attempt; overrides the client's. */
  maxRetries?: number;
  /** Retry this call even when it is not idempotent (chat, job submission, creations). */
  retry?: boolean;
  /** The `x-request-id` to send (the edge keeps a well-formed one; otherwise it makes one). */
  requestId?: string;
  /** More headers. */
  headers?: Record<string, string>;
}

/** What one method sends. */
export interface CallSpec {
  /** The HTTP method. */
  method: "GET" | "POST" | "PATCH" | "PUT" | "DELETE";
  /** The path under the base URL. */
  path: string;
  /** Query parameters (undefined ones are left out). */
  query?: Record<string, string | number | boolean | undefined>;
  /** The JSON body. */
  body?: unknown;
  /** Whether repeating it is harmless: only then is it retried by default. */
  idempotent: boolean;
}

/** The client's side of every call. */
export interface TransportSettings {
  /** The edge's base URL, without a trailing slash. */
  baseURL: string;
  /** The gateway key, sent as a bearer token. */
  apiKey: string | undefined;
  /** Default milliseconds until an answer. */
  timeout: number;
  /** Retry settings. */
  retry: RetryPolicy;
  /** Whether non-idempotent calls are retried by default. */
  retryNonIdempotent: boolean;
  /** Headers sent with every call. */
  defaultHeaders: Record<string, string>;
  /** The fetch implementation (the platform's by default). */
  fetch: typeof fetch;
}

/** A decoded answer. */
export interface Answer<T> {
  /** The JSON body. */
  data: T;
  /** The request id. */
  requestId: string;
  /** The answer. */
  response: Response;
}

const TIMEOUT = Symbol("timeout");

/** One attempt's abort wiring: the caller's signal, the timeout, and our own abort. */
class Attempt {
  readonly controller = new AbortController();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #signal: AbortSignal | undefined;
  #onAbort = (): void => this.controller.abort(this.#signal?.reason);

  constructor(signal: AbortSignal | undefined, timeoutMs: number) {
    this.#signal = signal;
    if (signal?.aborted) this.controller.abort(signal.reason);
    else signal?.addEventListener("abort", this.#onAbort, { once: true });
    if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
      this.#timer = setTimeout(() => this.controller.abort(TIMEOUT), timeoutMs);
    }
  }

  get timedOut(): boolean {
    return this.controller.signal.aborted && this.controller.signal.reason === TIMEOUT;
  }

  get userAborted(): boolean {
    return this.#signal?.aborted === true;
  }

  /** Stops the timeout (a stream's headers came: reading it may take as long as it takes). */
  clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  release(): void {
    this.clearTimer();
    this.#signal?.removeEventListener("abort", this.#onAbort);
  }

  /** The typed error for a failure of fetch or of reading the body. */
  failure(error: unknown, requestId: string | null): APIError {
    if (error instanceof APIError) return error;
    if (this.userAborted) return new APIUserAbortError("The request was aborted.", { requestId, cause: error });
    if (this.timedOut) return new APITimeoutError("The request timed out.", { requestId, cause: error });
    return new APIConnectionError(`Connection error: ${describe(error)}`, { requestId, cause: error });
  }
}

function describe(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } })?.cause;
  return cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
}

/** Waits `ms`; an {@link APIUserAbortError} when `signal` fires first. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new APIUserAbortError("The request was aborted.", { cause: signal.reason }));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new APIUserAbortError("The request was aborted.", { cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function decode(response: Response): Promise<unknown> {
  const text = await response.text();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Sends calls for a client. */
export class Transport {
  constructor(readonly settings: TransportSettings) {}

  /** A JSON call: the decoded answer, or the typed error (after the retries it is allowed). */
  async json<T>(spec: CallSpec, options: RequestOptions = {}): Promise<Answer<T>> {
    return this.#retrying(spec, options, async (attempt, requestId) => {
      const response = await this.#fetch(spec, options, attempt);
      const answerId = response.headers.get("x-request-id") ?? requestId ?? "";
      let body: unknown;
      try {
        body = await decode(response);
      } catch (error) {
        throw attempt.failure(error, answerId);
      }
      if (!response.ok) throw errorFromResponse(response.status, body, response.headers, answerId);
      return { data: body as T, requestId: answerId, response };
    });
  }

  /** A streaming call: opened (2xx, body unread) or the typed error, after the allowed retries. */
  async stream(spec: CallSpec, options: RequestOptions = {}): Promise<OpenedStream> {
    return this.#retrying(spec, options, async (attempt, requestId) => {
      const response = await this.#fetch(spec, options, attempt);
      const answerId = response.headers.get("x-request-id") ?? requestId ?? "";
      if (!response.ok) {
        let body: unknown;
        try {
          body = await decode(response);
        } catch (error) {
          throw attempt.failure(error, answerId);
        }
        throw errorFromResponse(response.status, body, response.headers, answerId);
      }
      attempt.clearTimer();
      return {
        response,
        requestId: answerId,
        abort: () => attempt.controller.abort(),
        userAborted: () => attempt.userAborted,
        release: () => attempt.release(),
      };
    }, /* releaseOnSuccess */ false);
  }

  async #retrying<R>(
    spec: CallSpec,
    options: RequestOptions,
    run: (attempt: Attempt, requestId: string | null) => Promise<R>,
    releaseOnSuccess = true,
  ): Promise<R> {
    const policy = { ...this.settings.retry, maxRetries: options.maxRetries ?? this.settings.retry.maxRetries };
    const mayRetry = spec.idempotent || (options.retry ?? this.settings.retryNonIdempotent);
    const requestId = options.requestId ?? null;
    for (let retries = 0; ; retries++) {
      const attempt = new Attempt(options.signal, options.timeout ?? this.settings.timeout);
      let result: R;
      try {
        result = await run(attempt, requestId);
      } catch (error) {
        attempt.release();
        const failure = attempt.failure(error, requestId);
        const wait = mayRetry ? retryDelayMs(policy, retries, failure) : null;
        if (wait === null) throw failure;
        await sleep(wait, options.signal);
        continue;
      }
      if (releaseOnSuccess) attempt.release();
      return result;
    }
  }

  #fetch(spec: CallSpec, options: RequestOptions, attempt: Attempt): Promise<Response> {
    const url = new URL(this.settings.baseURL + spec.path);
    for (const [name, value] of Object.entries(spec.query ?? {})) {
      if (value !== undefined && value !== "") url.searchParams.set(name, String(value));
    }
    const headers: Record<string, string> = {
      accept: "application/json",
      ...this.settings.defaultHeaders,
      ...options.headers,
    };
    if (this.settings.apiKey) headers.authorization = `Bearer ${this.settings.apiKey}`;
    if (options.requestId) headers["x-request-id"] = options.requestId;
    const init: RequestInit = { method: spec.method, headers, signal: attempt.controller.signal };
    if (spec.body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(spec.body);
    }
    return this.settings.fetch(url, init);
  }
}
