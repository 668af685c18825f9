// GatewayClient: the native API, async jobs, usage, models and admin over the edge's REST routes.
// For the OpenAI-compatible routes (/v1/chat/completions, /v1/embeddings, …) use the official
// `openai` package with `baseURL` pointed at the gateway: this client does not duplicate it.

import { DEFAULT_RETRY_POLICY, type RetryPolicy } from "./retries.js";
import { ndjson, sse, Stream } from "./streams.js";
import { type CallSpec, type RequestOptions, sleep, Transport } from "./http.js";
import { APITimeoutError } from "./errors.js";
import type {
  ApiKey,
  ChatParams,
  ChatResponse,
  CreateCredentialRequest,
  CreateKeyRequest,
  CreateKeyResponse,
  Credential,
  EmbedResponse,
  EmbeddingRequest,
  Embeddings,
  GetUsageRequest,
  GetUsageResponse,
  Job,
  JobList,
  ListCredentialsRequest,
  ListKeysRequest,
  ListModelsRequest,
  Model,
  ResponseEvent,
  ResponseObject,
  ResponsesRequest,
  RewrapCredentialsResponse,
  Route,
  SetRouteRequest,
  SubmitJobParams,
  Tenant,
  UnifiedChatChunk,
  UnifiedChatResponse,
  UpdateCredentialRequest,
  UpdateKeyRequest,
  UpdateTenantRequest,
  UsageRow,
  CredentialSecret,
  JsonValue,
} from "./types.js";
import { TERMINAL_JOB_STATUSES } from "./types.js";

/** How a client reaches the gateway. */
export interface ClientOptions {
  /** The gateway key (default: the `GATEWAY_API_KEY` environment variable). */
  apiKey?: string;
  /** The edge's base URL, e.g. "http://127.0.0.1:8080" (default: `GATEWAY_BASE_URL`, else that). */
  baseURL?: string;
  /** Milliseconds until an answer (for a stream: until its headers); default 60000. */
  timeout?: number;
  /** Retries after the first attempt, for retryable failures (default 2). */
  maxRetries?: number;
  /** Backoff settings (see {@link RetryPolicy}). */
  retryPolicy?: Partial<Omit<RetryPolicy, "maxRetries">>;
  /** Retry non-idempotent calls (chat, job submission, creations) too; off by default. */
  retryNonIdempotent?: boolean;
  /** Headers sent with every call. */
  defaultHeaders?: Record<string, string>;
  /** A fetch implementation (default: the platform's). */
  fetch?: typeof fetch;
}

/** What `jobs.wait` takes. */
export interface WaitOptions extends RequestOptions {
  /** Milliseconds between polls (default 500). */
  pollInterval?: number;
  /** Milliseconds to wait in all before an {@link APITimeoutError} (default 300000). */
  waitTimeout?: number;
}

const VERSION = "0.1.0";

function env(name: string): string | undefined {
  const process = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return process?.env?.[name];
}

function segment(value: string): string {
  return encodeURIComponent(value);
}

function groupBy(value: GetUsageRequest["group_by"]): string | undefined {
  if (!value) return undefined;
  return value.startsWith("GROUP_BY_") ? value : `GROUP_BY_${value.toUpperCase()}`;
}

function time(value: string | Date | undefined): string | undefined {
  return value instanceof Date ? value.toISOString() : value;
}

/** The text of every `output_text` part of a Responses API answer, joined. */
export function outputText(output: unknown): string {
  if (!Array.isArray(output)) return "";
  const parts: string[] = [];
  for (const item of output as Array<{ type?: string; content?: unknown }>) {
    if (item?.type !== "message" || !Array.isArray(item.content)) continue;
    for (const part of item.content as Array<{ type?: string; text?: unknown }>) {
      if (part?.type === "output_text" && typeof part.text === "string") parts.push(part.text);
    }
  }
  return parts.join("");
}

function asResponse(data: Record<string, unknown>): ResponseObject {
  return { ...data, output_text: outputText(data.output) } as ResponseObject;
}

/** A client of one gateway. */
export class GatewayClient {
  /** Async jobs (`/v1/jobs`). */
  readonly jobs: Jobs;
  /** Admin helpers (an admin key is needed). */
  readonly admin: Admin;
  readonly #transport: Transport;

  constructor(options: ClientOptions = {}) {
    const baseURL = (options.baseURL ?? env("GATEWAY_BASE_URL") ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
    const platformFetch = options.fetch ?? globalThis.fetch;
    if (typeof platformFetch !== "function") throw new Error("No fetch: Node 18 or later is needed.");
    this.#transport = new Transport({
      baseURL,
      apiKey: options.apiKey ?? env("GATEWAY_API_KEY"),
      timeout: options.timeout ?? 60_000,
      retry: { ...DEFAULT_RETRY_POLICY, ...options.retryPolicy, maxRetries: options.maxRetries ?? 2 },
      retryNonIdempotent: options.retryNonIdempotent ?? false,
      defaultHeaders: { "user-agent": `llm-gateway-node/${VERSION}`, ...options.defaultHeaders },
      fetch: platformFetch.bind(globalThis),
    });
    this.jobs = new Jobs(this.#transport);
    this.admin = new Admin(this.#transport);
  }

  /** The edge's base URL. */
  get baseURL(): string {
    return this.#transport.settings.baseURL;
  }

  /** A chat answer (`POST /v1/chat`); not retried unless `retry` (or `retryNonIdempotent`). */
  async chat(request: ChatParams, options?: RequestOptions): Promise<ChatResponse> {
    const spec: CallSpec = { method: "POST", path: "/v1/chat", body: { ...request, stream: false }, idempotent: false };
    const answer = await this.#transport.json<UnifiedChatResponse>(spec, options);
    return { ...answer.data, requestId: answer.requestId };
  }

  /**
   * A chat answer as it is generated (`POST /v1/chat:stream`): `for await (const chunk of …)`.
   * Breaking out of the loop, `abort()`, or the signal closes the connection and the upstream request.
   */
  chatStream(request: ChatParams, options?: RequestOptions): Stream<UnifiedChatChunk> {
    const spec: CallSpec = { method: "POST", path: "/v1/chat:stream", body: { ...request, stream: true }, idempotent: false };
    return new Stream(() => this.#transport.stream(spec, options), ndjson<UnifiedChatChunk>);
  }

  /** Embeddings (`POST /v1/embed`). */
  async embed(request: EmbeddingRequest, options?: RequestOptions): Promise<Embeddings> {
    const spec: CallSpec = { method: "POST", path: "/v1/embed", body: { embedding: request }, idempotent: false };
    const answer = await this.#transport.json<EmbedResponse>(spec, options);
    return { ...answer.data.embedding, requestId: answer.requestId };
  }

  /** The model catalog (`GET /v1/catalog/models`), or one model with `model_id`. */
  async models(request: ListModelsRequest = {}, options?: RequestOptions): Promise<Model[]> {
    const spec: CallSpec = { method: "GET", path: "/v1/catalog/models", query: { ...request }, idempotent: true };
    return (await this.#transport.json<{ models?: Model[] }>(spec, options)).data.models ?? [];
  }

  /** Usage rows from the ledger (`GET /v1/usage`); needs the `usage:read` scope. */
  async usage(request: GetUsageRequest = {}, options?: RequestOptions): Promise<UsageRow[]> {
    // Every field is a query parameter; the timestamps under their JSON names (`from`, `to`).
    const { start_time, end_time, ...rest } = request;
    const query = { ...rest, from: time(start_time), to: time(end_time), group_by: groupBy(request.group_by) };
    const spec: CallSpec = { method: "GET", path: "/v1/usage", query, idempotent: true };
    return (await this.#transport.json<GetUsageResponse>(spec, options)).data.rows ?? [];
  }

  /** A Responses API answer (`POST /v1/responses`). */
  async responses(request: ResponsesRequest, options?: RequestOptions): Promise<ResponseObject> {
    const spec: CallSpec = { method: "POST", path: "/v1/responses", body: { ...request, stream: false }, idempotent: false };
    return asResponse((await this.#transport.json<Record<string, unknown>>(spec, options)).data);
  }

  /** A Responses API answer as its typed events (`POST /v1/responses/stream`, server-sent events). */
  responsesStream(request: ResponsesRequest, options?: RequestOptions): Stream<ResponseEvent> {
    const spec: CallSpec = { method: "POST", path: "/v1/responses/stream", body: request, idempotent: false };
    return new Stream(() => this.#transport.stream(spec, options), sse<ResponseEvent>);
  }

  /** A stored response (`GET /v1/responses/{id}`). */
  async getResponse(responseId: string, options?: RequestOptions): Promise<ResponseObject> {
    const spec: CallSpec = { method: "GET", path: `/v1/responses/${segment(responseId)}`, idempotent: true };
    return asResponse((await this.#transport.json<Record<string, unknown>>(spec, options)).data);
  }

  /** Deletes a stored response (`DELETE /v1/responses/{id}`); true when it was deleted. */
  async deleteResponse(responseId: string, options?: RequestOptions): Promise<boolean> {
    const spec: CallSpec = { method: "DELETE", path: `/v1/responses/${segment(responseId)}`, idempotent: true };
    return Boolean((await this.#transport.json<{ deleted?: boolean }>(spec, options)).data.deleted);
  }
}

/** `client.jobs`: async jobs. */
export class Jobs {
  constructor(readonly transport: Transport) {}

  /** Queues a request (chat completions with `messages`, or Responses with `input`); answers at once. */
  async submit(params: SubmitJobParams, options?: RequestOptions): Promise<Job> {
    const spec: CallSpec = { method: "POST", path: "/v1/jobs", body: params, idempotent: false };
    return (await this.transport.json<Job>(spec, options)).data;
  }

  /** The job as it is now. */
  async get(jobId: string, options?: RequestOptions): Promise<Job> {
    return (await this.transport.json<Job>({ method: "GET", path: `/v1/jobs/${segment(jobId)}`, idempotent: true }, options)).data;
  }

  /** The caller's jobs, newest first (`limit` 1–100; `after` a job id, for the next page). */
  async list(params: { limit?: number; after?: string } = {}, options?: RequestOptions): Promise<JobList> {
    const spec: CallSpec = { method: "GET", path: "/v1/jobs", query: { limit: params.limit, after: params.after }, idempotent: true };
    return (await this.transport.json<JobList>(spec, options)).data;
  }

  /** Cancels a job (a finished one comes back as it ended); cancelling twice is harmless. */
  async cancel(jobId: string, options?: RequestOptions): Promise<Job> {
    const spec: CallSpec = { method: "POST", path: `/v1/jobs/${segment(jobId)}/cancel`, body: {}, idempotent: true };
    return (await this.transport.json<Job>(spec, options)).data;
  }

  /** Polls the job until it ends; an {@link APITimeoutError} when it has not after `waitTimeout` ms. */
  async wait(jobId: string, options: WaitOptions = {}): Promise<Job> {
    const { pollInterval = 500, waitTimeout = 300_000, ...rest } = options;
    const deadline = Date.now() + waitTimeout;
    for (;;) {
      const job = await this.get(jobId, rest);
      if (TERMINAL_JOB_STATUSES.includes(job.status)) return job;
      if (Date.now() + pollInterval > deadline) {
        throw new APITimeoutError(`Job ${jobId} is still ${job.status} after ${waitTimeout} ms.`);
      }
      await sleep(pollInterval, rest.signal);
    }
  }
}

/** `client.admin`: tenants, keys, routes and upstream credentials (an admin key is needed). */
export class Admin {
  /** Tenants. */
  readonly tenants: Tenants;
  /** API keys. */
  readonly keys: Keys;
  /** Runtime routes. */
  readonly routes: Routes;
  /** Tenants' upstream credentials. */
  readonly credentials: Credentials;

  constructor(transport: Transport) {
    this.tenants = new Tenants(transport);
    this.keys = new Keys(transport);
    this.routes = new Routes(transport);
    this.credentials = new Credentials(transport);
  }
}

/** `client.admin.tenants`. */
export class Tenants {
  constructor(readonly transport: Transport) {}

  /** Creates a tenant (`POST /admin/v1/tenants`). */
  async create(tenant: Omit<Tenant, "create_time">, options?: RequestOptions): Promise<Tenant> {
    const spec: CallSpec = { method: "POST", path: "/admin/v1/tenants", body: { tenant }, idempotent: false };
    return (await this.transport.json<{ tenant: Tenant }>(spec, options)).data.tenant;
  }

  /** Every tenant. */
  async list(options?: RequestOptions): Promise<Tenant[]> {
    const spec: CallSpec = { method: "GET", path: "/admin/v1/tenants", idempotent: true };
    return (await this.transport.json<{ tenants?: Tenant[] }>(spec, options)).data.tenants ?? [];
  }

  /** Changes a tenant's limits, key defaults or policy. */
  async update(request: UpdateTenantRequest, options?: RequestOptions): Promise<Tenant> {
    const { tenant_id, ...body } = request;
    const spec: CallSpec = { method: "PATCH", path: `/admin/v1/tenants/${segment(tenant_id)}`, body, idempotent: false };
    return (await this.transport.json<{ tenant: Tenant }>(spec, options)).data.tenant;
  }
}

/** `client.admin.keys`. */
export class Keys {
  constructor(readonly transport: Transport) {}

  /** Creates a key; the answer is the only time its secret is shown. */
  async create(request: CreateKeyRequest, options?: RequestOptions): Promise<CreateKeyResponse> {
    const body = { ...request, expire_time: time(request.expire_time) };
    const spec: CallSpec = { method: "POST", path: "/admin/v1/keys", body, idempotent: false };
    return (await this.transport.json<CreateKeyResponse>(spec, options)).data;
  }

  /** The keys (of one tenant). */
  async list(request: ListKeysRequest = {}, options?: RequestOptions): Promise<ApiKey[]> {
    const spec: CallSpec = { method: "GET", path: "/admin/v1/keys", query: { ...request }, idempotent: true };
    return (await this.transport.json<{ keys?: ApiKey[] }>(spec, options)).data.keys ?? [];
  }

  /** Changes a key's limits, scopes or allowed models. */
  async update(request: UpdateKeyRequest, options?: RequestOptions): Promise<ApiKey> {
    const { key_id, ...body } = request;
    const spec: CallSpec = { method: "PATCH", path: `/admin/v1/keys/${segment(key_id)}`, body, idempotent: false };
    return (await this.transport.json<{ key: ApiKey }>(spec, options)).data.key;
  }

  /** Revokes a key (at once; revoking twice is harmless). */
  async revoke(keyId: string, options?: RequestOptions): Promise<ApiKey> {
    const spec: CallSpec = { method: "POST", path: `/admin/v1/keys/${segment(keyId)}:revoke`, body: {}, idempotent: true };
    return (await this.transport.json<{ key: ApiKey }>(spec, options)).data.key;
  }
}

/** `client.admin.routes`. */
export class Routes {
  constructor(readonly transport: Transport) {}

  /** Sets the route of a model name (`PUT /admin/v1/routes/{model}`). */
  async set(request: SetRouteRequest, options?: RequestOptions): Promise<Route> {
    const { model, ...body } = request;
    const spec: CallSpec = { method: "PUT", path: `/admin/v1/routes/${segment(model)}`, body, idempotent: true };
    return (await this.transport.json<{ route: Route }>(spec, options)).data.route;
  }

  /** Every runtime route. */
  async list(options?: RequestOptions): Promise<Route[]> {
    const spec: CallSpec = { method: "GET", path: "/admin/v1/routes", idempotent: true };
    return (await this.transport.json<{ routes?: Route[] }>(spec, options)).data.routes ?? [];
  }

  /** Removes a model name's route. */
  async delete(model: string, options?: RequestOptions): Promise<Route> {
    const spec: CallSpec = { method: "DELETE", path: `/admin/v1/routes/${segment(model)}`, idempotent: true };
    return (await this.transport.json<{ route: Route }>(spec, options)).data.route;
  }
}

function secretJson(secret: CredentialSecret): JsonValue {
  const oauth = secret.oauth;
  if (!oauth) return { api_key: secret.api_key ?? "" };
  return { oauth: { ...oauth, expires_at: time(oauth.expires_at) } as JsonValue };
}

/** `client.admin.credentials`: tenants' upstream secrets (encrypted at rest, never shown again). */
export class Credentials {
  constructor(readonly transport: Transport) {}

  /** Stores a credential; `secret` is `{api_key}` or `{oauth: {...}}`. */
  async create(request: CreateCredentialRequest, options?: RequestOptions): Promise<Credential> {
    const body = { ...request, secret: secretJson(request.secret) };
    const spec: CallSpec = { method: "POST", path: "/admin/v1/credentials", body, idempotent: false };
    return (await this.transport.json<{ credential: Credential }>(spec, options)).data.credential;
  }

  /** The credentials (of one tenant, of one provider). */
  async list(request: ListCredentialsRequest = {}, options?: RequestOptions): Promise<Credential[]> {
    const spec: CallSpec = { method: "GET", path: "/admin/v1/credentials", query: { ...request }, idempotent: true };
    return (await this.transport.json<{ credentials?: Credential[] }>(spec, options)).data.credentials ?? [];
  }

  /** Changes a credential's name, priority, state or limits. */
  async update(request: UpdateCredentialRequest, options?: RequestOptions): Promise<Credential> {
    const { credential_id, ...body } = request;
    const path = `/admin/v1/credentials/${segment(credential_id)}`;
    return (await this.transport.json<{ credential: Credential }>({ method: "PATCH", path, body, idempotent: false }, options)).data.credential;
  }

  /** Replaces a credential's secret. */
  async rotate(credentialId: string, secret: CredentialSecret, options?: RequestOptions): Promise<Credential> {
    const path = `/admin/v1/credentials/${segment(credentialId)}:rotate`;
    const spec: CallSpec = { method: "POST", path, body: { secret: secretJson(secret) }, idempotent: false };
    return (await this.transport.json<{ credential: Credential }>(spec, options)).data.credential;
  }

  /** Deletes a credential (deleting twice is a 404). */
  async delete(credentialId: string, options?: RequestOptions): Promise<void> {
    const spec: CallSpec = { method: "DELETE", path: `/admin/v1/credentials/${segment(credentialId)}`, idempotent: true };
    await this.transport.json(spec, options);
  }

  /** Re-encrypts stored secrets under the current key-encryption key (after a KEK rotation). */
  async rewrap(options?: RequestOptions): Promise<RewrapCredentialsResponse> {
    const spec: CallSpec = { method: "POST", path: "/admin/v1/credentials:rewrap", body: {}, idempotent: true };
    return (await this.transport.json<RewrapCredentialsResponse>(spec, options)).data;
  }
}
