// The request and response types of the native API, as the edge renders them in JSON: proto field
// names (snake_case), numbers as numbers, timestamps as RFC 3339 strings, enums by value name.
//
// Every interface that mirrors a proto message says which one with `@proto <full name>`, and every
// enum type with `@proto-enum <full name>`: tests/sdk/node/test_types_follow_protos.py walks the
// descriptors of the messages the native routes take and answer and fails when one of them, or one
// of its fields or enum values, is missing here. Fields the gateway always renders are required;
// the others (proto3 `optional`, or what a request may leave out) are optional.

/** Any JSON value (a `google.protobuf.Value`). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A JSON object (a `google.protobuf.Struct`). */
export type JsonObject = { [key: string]: JsonValue };

/** An RFC 3339 timestamp (a `google.protobuf.Timestamp`), e.g. "2026-01-31T12:00:00Z". */
export type Timestamp = string;

// -- chat --------------------------------------------------------------------------------------

/**
 * One message of a conversation.
 * @proto gateway.router.v1.UnifiedMessage
 */
export interface UnifiedMessage {
  /** "system", "user", "assistant" or "tool". */
  role: string;
  /** The text, or an array of OpenAI-style content parts. */
  content?: JsonValue;
  /** The participant's name. */
  name?: string;
  /** The tool call a "tool" message answers. */
  tool_call_id?: string;
}

/**
 * A native chat request (`POST /v1/chat`, `POST /v1/chat:stream`).
 * @proto gateway.router.v1.UnifiedChatRequest
 */
export interface UnifiedChatRequest {
  /** A model id, an alias, or "provider:model". */
  model: string;
  /** The conversation so far. */
  messages: UnifiedMessage[];
  /** The caller's own client id, recorded with the usage. */
  client_id?: string;
  /** Sampling temperature. */
  temperature?: number;
  /** Nucleus sampling mass. */
  top_p?: number;
  /** The most tokens to generate. */
  max_tokens?: number;
  /** Sequences that stop generation. */
  stop?: string[];
  /** The end user's id. */
  user?: string;
  /** Presence penalty. */
  presence_penalty?: number;
  /** Frequency penalty. */
  frequency_penalty?: number;
  /** Seed for sampling. */
  seed?: number;
  /** Free-form metadata passed through to the ledger. */
  metadata?: JsonObject;
  /** The most this request may cost, in US dollars; a dearer route is refused. */
  max_cost_usd?: number;
  /** Set by the client: true for `chatStream`, false for `chat`. */
  stream?: boolean;
}

/** What `chat` and `chatStream` take: the request without `stream`, which the method sets. */
export type ChatParams = Omit<UnifiedChatRequest, "stream">;

/**
 * Token counts of a native chat answer.
 * @proto gateway.router.v1.UnifiedUsage
 */
export interface UnifiedUsage {
  /** Tokens of the prompt. */
  prompt_tokens: number;
  /** Tokens generated. */
  completion_tokens: number;
  /** Their sum. */
  total_tokens: number;
}

/**
 * A native chat answer.
 * @proto gateway.router.v1.UnifiedChatResponse
 */
export interface UnifiedChatResponse {
  /** The completion's id. */
  id: string;
  /** The model that answered. */
  model: string;
  /** The provider that answered. */
  provider: string;
  /** Token counts. */
  usage: UnifiedUsage;
  /** The assistant's message. */
  message: UnifiedMessage;
  /** Why generation stopped: "stop", "length", "tool_calls", "content_filter". */
  finish_reason: string;
  /** Unix seconds when it was created. */
  created: number;
}

/** `chat`'s result: the answer plus the id the gateway logged the request under. */
export interface ChatResponse extends UnifiedChatResponse {
  /** The `x-request-id` of the call. */
  requestId: string;
}

/**
 * What a stream chunk adds to the message.
 * @proto gateway.router.v1.UnifiedDelta
 */
export interface UnifiedDelta {
  /** "assistant", on the first chunk. */
  role?: string;
  /** More text. */
  content?: string;
}

/**
 * One chunk of a native chat stream (one NDJSON line of `POST /v1/chat:stream`).
 * @proto gateway.router.v1.UnifiedChatChunk
 */
export interface UnifiedChatChunk {
  /** The completion's id, the same on every chunk. */
  id: string;
  /** The model that answers. */
  model: string;
  /** The provider that answers. */
  provider: string;
  /** What this chunk adds. */
  delta: UnifiedDelta;
  /** Set on the chunk that ends the choice. */
  finish_reason?: string;
  /** Token counts, on the last chunk. */
  usage?: UnifiedUsage;
}

// -- embeddings --------------------------------------------------------------------------------

/**
 * Pre-tokenized input: one array of token ids.
 * @proto gateway.chat.v1.TokenArray
 */
export interface TokenArray {
  /** The token ids. */
  tokens: number[];
}

/**
 * An embeddings request (`POST /v1/embed`, inside `{"embedding": …}`).
 * @proto gateway.chat.v1.EmbeddingRequest
 */
export interface EmbeddingRequest {
  /** The embedding model. */
  model: string;
  /** Texts to embed. */
  input?: string[];
  /** The vectors' dimensions, where the model can shorten them. */
  dimensions?: number;
  /** The end user's id. */
  user?: string;
  /** Provider-specific pass-through fields. */
  extra?: JsonObject;
  /** Token arrays to embed instead of texts. */
  token_inputs?: TokenArray[];
}

/**
 * The body of `POST /v1/embed`.
 * @proto gateway.router.v1.EmbedRequest
 */
export interface EmbedRequest {
  /** The request. */
  embedding: EmbeddingRequest;
}

/**
 * Prompt token details.
 * @proto gateway.chat.v1.PromptTokensDetails
 */
export interface PromptTokensDetails {
  /** Tokens served from the provider's cache. */
  cached_tokens?: number;
  /** Audio tokens. */
  audio_tokens?: number;
}

/**
 * Completion token details.
 * @proto gateway.chat.v1.CompletionTokensDetails
 */
export interface CompletionTokensDetails {
  /** Reasoning tokens. */
  reasoning_tokens?: number;
  /** Audio tokens. */
  audio_tokens?: number;
  /** Predicted tokens that were used. */
  accepted_prediction_tokens?: number;
  /** Predicted tokens that were not. */
  rejected_prediction_tokens?: number;
}

/**
 * Token counts of a canonical answer.
 * @proto gateway.chat.v1.Usage
 */
export interface Usage {
  /** Tokens of the prompt. */
  prompt_tokens: number;
  /** Tokens generated. */
  completion_tokens: number;
  /** Their sum. */
  total_tokens: number;
  /** Prompt token details. */
  prompt_tokens_details?: PromptTokensDetails;
  /** Completion token details. */
  completion_tokens_details?: CompletionTokensDetails;
  /** True when the gateway estimated the counts (the provider sent none). */
  estimated: boolean;
}

/**
 * One vector.
 * @proto gateway.chat.v1.Embedding
 */
export interface Embedding {
  /** The input's position. */
  index: number;
  /** The vector. */
  vector: number[];
}

/**
 * Embeddings.
 * @proto gateway.chat.v1.EmbeddingResponse
 */
export interface EmbeddingResponse {
  /** The model that answered. */
  model: string;
  /** One vector per input. */
  data: Embedding[];
  /** Token counts. */
  usage: Usage;
  /** The provider that answered. */
  provider: string;
}

/**
 * The answer of `POST /v1/embed`.
 * @proto gateway.router.v1.EmbedResponse
 */
export interface EmbedResponse {
  /** The embeddings. */
  embedding: EmbeddingResponse;
}

/** `embed`'s result: the embeddings plus the request id. */
export interface Embeddings extends EmbeddingResponse {
  /** The `x-request-id` of the call. */
  requestId: string;
}

// -- models and usage --------------------------------------------------------------------------

/**
 * The query of `GET /v1/catalog/models`.
 * @proto gateway.router.v1.ListModelsRequest
 */
export interface ListModelsRequest {
  /** One model id to describe (e.g. "mock:anything"); empty lists the catalog. */
  model_id?: string;
}

/**
 * A model of the catalog.
 * @proto gateway.chat.v1.Model
 */
export interface Model {
  /** Its id. */
  id: string;
  /** Unix seconds. */
  created: number;
  /** Its owner. */
  owned_by: string;
  /** The provider that serves it. */
  provider: string;
  /** True when it has no price. */
  unpriced: boolean;
  /** US dollars per million input tokens. */
  input_usd_per_million?: number;
  /** US dollars per million output tokens. */
  output_usd_per_million?: number;
}

/**
 * The answer of `GET /v1/catalog/models`.
 * @proto gateway.router.v1.ListModelsResponse
 */
export interface ListModelsResponse {
  /** The models. */
  models: Model[];
}

/**
 * How usage rows are grouped.
 * @proto-enum gateway.metering.v1.GroupBy
 */
export type GroupBy =
  | "GROUP_BY_UNSPECIFIED"
  | "GROUP_BY_TENANT"
  | "GROUP_BY_KEY"
  | "GROUP_BY_MODEL"
  | "GROUP_BY_PROVIDER"
  | "GROUP_BY_CREDENTIAL";

/**
 * The query of `GET /v1/usage` (`from` and `to` are the proto's `start_time` and `end_time`).
 * @proto gateway.router.v1.GetUsageRequest
 */
export interface GetUsageRequest {
  /** Only this tenant (an admin key may name any; others see their own). */
  tenant_id?: string;
  /** Only this key. */
  key_id?: string;
  /** The start of the period (a Date or an RFC 3339 string); its JSON name is `from`. */
  start_time?: Timestamp | Date;
  /** The end of the period; its JSON name is `to`. */
  end_time?: Timestamp | Date;
  /** "tenant", "key", "model", "provider", or a `GROUP_BY_…` name. */
  group_by?: GroupBy | "tenant" | "key" | "model" | "provider";
}

/**
 * One row of usage.
 * @proto gateway.metering.v1.UsageRow
 */
export interface UsageRow {
  /** The group's value ("" without grouping). */
  group: string;
  /** Requests. */
  requests: number;
  /** Prompt tokens. */
  prompt_tokens: number;
  /** Completion tokens. */
  completion_tokens: number;
  /** Cost in micro US dollars. */
  cost_micro_usd: number;
  /** Requests that failed. */
  errors: number;
}

/**
 * The answer of `GET /v1/usage`.
 * @proto gateway.router.v1.GetUsageResponse
 */
export interface GetUsageResponse {
  /** The rows. */
  rows: UsageRow[];
}

// -- admin: tenants and keys -------------------------------------------------------------------

/**
 * What a quota counts.
 * @proto-enum gateway.quota.v1.Unit
 */
export type Unit = "UNIT_UNSPECIFIED" | "UNIT_REQUESTS" | "UNIT_TOKENS" | "UNIT_COST_MICRO_USD";

/**
 * A quota's window.
 * @proto-enum gateway.quota.v1.Window
 */
export type Window = "WINDOW_UNSPECIFIED" | "WINDOW_MINUTE" | "WINDOW_DAY" | "WINDOW_MONTH";

/**
 * One quota: at most `limit` of `unit` per `window`.
 * @proto gateway.quota.v1.Quota
 */
export interface Quota {
  /** What it counts. */
  unit: Unit;
  /** Its window. */
  window: Window;
  /** The ceiling. */
  limit: number;
}

/**
 * Limits of a tenant or a key.
 * @proto gateway.auth.v1.Limits
 */
export interface Limits {
  /** The quotas. */
  quotas?: Quota[];
  /** The most requests in flight at once. */
  max_concurrent_requests?: number;
}

/**
 * A tenant's policy.
 * @proto gateway.auth.v1.Policy
 */
export interface Policy {
  /** Model patterns never served. */
  deny_models?: string[];
  /** Providers never used. */
  deny_providers?: string[];
  /** The longest prompt accepted, in tokens. */
  max_prompt_tokens?: number;
  /** Whether prompts are logged. */
  log_prompts?: boolean;
  /** Whether models without a price are refused. */
  refuse_unpriced?: boolean;
  /** Whether broken streams are continued on another route. */
  continue_broken_streams?: boolean;
}

/**
 * A tenant.
 * @proto gateway.auth.v1.Tenant
 */
export interface Tenant {
  /** Its id. */
  tenant_id: string;
  /** Its display name. */
  display_name?: string;
  /** Its limits. */
  limits?: Limits;
  /** Limits of its new keys. */
  key_defaults?: Limits;
  /** Its policy. */
  policy?: Policy;
  /** When it was created (set by the gateway). */
  create_time?: Timestamp;
}

/**
 * The body of `POST /admin/v1/tenants`.
 * @proto gateway.auth.v1.CreateTenantRequest
 */
export interface CreateTenantRequest {
  /** The tenant. */
  tenant: Tenant;
}

/**
 * The answer of `POST /admin/v1/tenants`.
 * @proto gateway.auth.v1.CreateTenantResponse
 */
export interface CreateTenantResponse {
  /** The tenant created. */
  tenant: Tenant;
}

/**
 * The query of `GET /admin/v1/tenants` (none).
 * @proto gateway.auth.v1.ListTenantsRequest
 */
export type ListTenantsRequest = Record<string, never>;

/**
 * The answer of `GET /admin/v1/tenants`.
 * @proto gateway.auth.v1.ListTenantsResponse
 */
export interface ListTenantsResponse {
  /** The tenants. */
  tenants: Tenant[];
}

/**
 * The body of `PATCH /admin/v1/tenants/{tenant_id}`.
 * @proto gateway.auth.v1.UpdateTenantRequest
 */
export interface UpdateTenantRequest {
  /** The tenant (in the path). */
  tenant_id: string;
  /** New limits. */
  limits?: Limits;
  /** New key defaults. */
  key_defaults?: Limits;
  /** New policy. */
  policy?: Policy;
}

/**
 * The answer of `PATCH /admin/v1/tenants/{tenant_id}`.
 * @proto gateway.auth.v1.UpdateTenantResponse
 */
export interface UpdateTenantResponse {
  /** The tenant as it now is. */
  tenant: Tenant;
}

/**
 * An API key (never its secret).
 * @proto gateway.auth.v1.ApiKey
 */
export interface ApiKey {
  /** Its id. */
  key_id: string;
  /** Its tenant. */
  tenant_id: string;
  /** Its name. */
  name: string;
  /** The first characters of the secret. */
  prefix: string;
  /** Its scopes ("chat", "usage:read", …). */
  scopes: string[];
  /** Model patterns it may use (all when empty). */
  allowed_models: string[];
  /** Its limits. */
  limits?: Limits;
  /** When it was created. */
  create_time?: Timestamp;
  /** When it expires. */
  expire_time?: Timestamp;
  /** When it was revoked. */
  revoke_time?: Timestamp;
}

/**
 * The body of `POST /admin/v1/keys`.
 * @proto gateway.auth.v1.CreateKeyRequest
 */
export interface CreateKeyRequest {
  /** The tenant. */
  tenant_id: string;
  /** A name. */
  name?: string;
  /** Scopes. */
  scopes?: string[];
  /** Model patterns it may use. */
  allowed_models?: string[];
  /** Limits. */
  limits?: Limits;
  /** When it expires. */
  expire_time?: Timestamp | Date;
}

/**
 * The answer of `POST /admin/v1/keys`: the only time the secret is shown.
 * @proto gateway.auth.v1.CreateKeyResponse
 */
export interface CreateKeyResponse {
  /** The key. */
  key: ApiKey;
  /** The secret to authenticate with. */
  secret: string;
}

/**
 * The query of `GET /admin/v1/keys`.
 * @proto gateway.auth.v1.ListKeysRequest
 */
export interface ListKeysRequest {
  /** Only this tenant's keys. */
  tenant_id?: string;
  /** Include revoked keys. */
  include_revoked?: boolean;
}

/**
 * The answer of `GET /admin/v1/keys`.
 * @proto gateway.auth.v1.ListKeysResponse
 */
export interface ListKeysResponse {
  /** The keys. */
  keys: ApiKey[];
}

/**
 * The body of `PATCH /admin/v1/keys/{key_id}`.
 * @proto gateway.auth.v1.UpdateKeyRequest
 */
export interface UpdateKeyRequest {
  /** The key (in the path). */
  key_id: string;
  /** New limits. */
  limits?: Limits;
  /** New scopes. */
  scopes?: string[];
  /** New allowed models. */
  allowed_models?: string[];
}

/**
 * The answer of `PATCH /admin/v1/keys/{key_id}`.
 * @proto gateway.auth.v1.UpdateKeyResponse
 */
export interface UpdateKeyResponse {
  /** The key as it now is. */
  key: ApiKey;
}

/**
 * `POST /admin/v1/keys/{key_id}:revoke`.
 * @proto gateway.auth.v1.RevokeKeyRequest
 */
export interface RevokeKeyRequest {
  /** The key (in the path). */
  key_id: string;
}

/**
 * The answer of a revocation.
 * @proto gateway.auth.v1.RevokeKeyResponse
 */
export interface RevokeKeyResponse {
  /** The key, now revoked. */
  key: ApiKey;
}

// -- admin: routes -----------------------------------------------------------------------------

/**
 * A runtime route: a model name served by a provider's model.
 * @proto gateway.auth.v1.Route
 */
export interface Route {
  /** The model name clients use. */
  model: string;
  /** The provider. */
  provider: string;
  /** The provider's model. */
  upstream_model: string;
  /** When it was last set. */
  update_time?: Timestamp;
}

/**
 * The body of `PUT /admin/v1/routes/{model}`.
 * @proto gateway.auth.v1.SetRouteRequest
 */
export interface SetRouteRequest {
  /** The model name clients use. */
  model: string;
  /** The provider. */
  provider: string;
  /** The provider's model. */
  upstream_model: string;
}

/**
 * The answer of `PUT /admin/v1/routes/{model}`.
 * @proto gateway.auth.v1.SetRouteResponse
 */
export interface SetRouteResponse {
  /** The route. */
  route: Route;
}

/**
 * The query of `GET /admin/v1/routes` (none).
 * @proto gateway.auth.v1.ListRoutesRequest
 */
export type ListRoutesRequest = Record<string, never>;

/**
 * The answer of `GET /admin/v1/routes`.
 * @proto gateway.auth.v1.ListRoutesResponse
 */
export interface ListRoutesResponse {
  /** The routes. */
  routes: Route[];
}

/**
 * `DELETE /admin/v1/routes/{model}`.
 * @proto gateway.auth.v1.DeleteRouteRequest
 */
export interface DeleteRouteRequest {
  /** The model name (in the path). */
  model: string;
}

/**
 * The answer of a route deletion.
 * @proto gateway.auth.v1.DeleteRouteResponse
 */
export interface DeleteRouteResponse {
  /** The route removed. */
  route: Route;
}

// -- admin: upstream credentials ---------------------------------------------------------------

/**
 * What a credential holds.
 * @proto-enum gateway.auth.v1.CredentialKind
 */
export type CredentialKind = "CREDENTIAL_KIND_UNSPECIFIED" | "CREDENTIAL_KIND_API_KEY" | "CREDENTIAL_KIND_OAUTH";

/**
 * Whether a credential is used.
 * @proto-enum gateway.auth.v1.CredentialState
 */
export type CredentialState = "CREDENTIAL_STATE_UNSPECIFIED" | "CREDENTIAL_STATE_ACTIVE" | "CREDENTIAL_STATE_DISABLED";

/**
 * An OAuth token set.
 * @proto gateway.auth.v1.OAuthTokens
 */
export interface OAuthTokens {
  /** The access token. */
  access_token: string;
  /** The refresh token. */
  refresh_token?: string;
  /** When the access token expires. */
  expires_at?: Timestamp | Date;
  /** Its scopes. */
  scopes?: string[];
  /** Its type ("Bearer"). */
  token_type?: string;
  /** The OpenID id token. */
  id_token?: string;
}

/**
 * A credential's secret: an API key or an OAuth token set (one of them).
 * @proto gateway.auth.v1.CredentialSecret
 */
export interface CredentialSecret {
  /** An upstream API key. */
  api_key?: string;
  /** An OAuth token set. */
  oauth?: OAuthTokens;
}

/**
 * A tenant's upstream credential (its secret is never shown, only its last four characters).
 * @proto gateway.auth.v1.Credential
 */
export interface Credential {
  /** Its id. */
  credential_id: string;
  /** Its tenant. */
  tenant_id: string;
  /** The provider it authenticates to. */
  provider: string;
  /** What it holds. */
  kind: CredentialKind;
  /** Its name. */
  name: string;
  /** Lower is tried first. */
  priority: number;
  /** Whether it is used. */
  state: CredentialState;
  /** Its own quotas. */
  limits: Quota[];
  /** The secret's last four characters. */
  secret_last_four: string;
  /** When an OAuth access token expires. */
  expires_at?: Timestamp;
  /** Until when it rests after an upstream refusal. */
  cooldown_until?: Timestamp;
  /** When it was created. */
  created_at?: Timestamp;
  /** When its secret was last rotated. */
  rotated_at?: Timestamp;
  /** Its windows as the rate limit service counts them now (absent while that service is away). */
  window_usage: CredentialWindowUsage[];
  /** What it served this month, from the ledger (absent while metering is away). */
  month_usage?: CredentialLedgerUsage;
}

/**
 * One of a credential's windows, as counted now.
 * @proto gateway.auth.v1.CredentialWindowUsage
 */
export interface CredentialWindowUsage {
  /** The quota. */
  quota?: Quota;
  /** Units used in the current window. */
  used: number;
  /** Units left in it. */
  remaining: number;
  /** When the window resets, as a protobuf JSON duration ("12.5s"). */
  reset_after?: string;
}

/**
 * What a credential served since a time, from the ledger.
 * @proto gateway.auth.v1.CredentialLedgerUsage
 */
export interface CredentialLedgerUsage {
  /** The start of the period. */
  since?: Timestamp;
  /** Requests. */
  requests: number;
  /** Prompt tokens. */
  prompt_tokens: number;
  /** Completion tokens. */
  completion_tokens: number;
  /** Cost, in micro-USD. */
  cost_micro_usd: number;
}

/**
 * The body of `POST /admin/v1/credentials`.
 * @proto gateway.auth.v1.CreateCredentialRequest
 */
export interface CreateCredentialRequest {
  /** The tenant. */
  tenant_id: string;
  /** The provider. */
  provider: string;
  /** A name. */
  name?: string;
  /** Lower is tried first. */
  priority?: number;
  /** Its own quotas. */
  limits?: Quota[];
  /** The secret. */
  secret: CredentialSecret;
}

/**
 * The answer of a credential creation, update or rotation.
 * @proto gateway.auth.v1.CreateCredentialResponse
 */
export interface CreateCredentialResponse {
  /** The credential. */
  credential: Credential;
}

/**
 * The query of `GET /admin/v1/credentials`.
 * @proto gateway.auth.v1.ListCredentialsRequest
 */
export interface ListCredentialsRequest {
  /** Only this tenant's. */
  tenant_id?: string;
  /** Only this provider's. */
  provider?: string;
}

/**
 * The answer of `GET /admin/v1/credentials`.
 * @proto gateway.auth.v1.ListCredentialsResponse
 */
export interface ListCredentialsResponse {
  /** The credentials. */
  credentials: Credential[];
}

/**
 * The body of `PATCH /admin/v1/credentials/{credential_id}`.
 * @proto gateway.auth.v1.UpdateCredentialRequest
 */
export interface UpdateCredentialRequest {
  /** The credential (in the path). */
  credential_id: string;
  /** A new name. */
  name?: string;
  /** A new priority. */
  priority?: number;
  /** A new state. */
  state?: CredentialState;
  /** Whether `limits` replaces its quotas (an empty list then removes them). */
  replace_limits?: boolean;
  /** New quotas. */
  limits?: Quota[];
}

/**
 * The answer of a credential update.
 * @proto gateway.auth.v1.UpdateCredentialResponse
 */
export interface UpdateCredentialResponse {
  /** The credential as it now is. */
  credential: Credential;
}

/**
 * The body of `POST /admin/v1/credentials/{credential_id}:rotate`.
 * @proto gateway.auth.v1.RotateCredentialRequest
 */
export interface RotateCredentialRequest {
  /** The credential (in the path). */
  credential_id: string;
  /** The new secret. */
  secret: CredentialSecret;
}

/**
 * The answer of a rotation.
 * @proto gateway.auth.v1.RotateCredentialResponse
 */
export interface RotateCredentialResponse {
  /** The credential with its new secret. */
  credential: Credential;
}

/**
 * `DELETE /admin/v1/credentials/{credential_id}`.
 * @proto gateway.auth.v1.DeleteCredentialRequest
 */
export interface DeleteCredentialRequest {
  /** The credential (in the path). */
  credential_id: string;
}

/**
 * The answer of a deletion (empty).
 * @proto gateway.auth.v1.DeleteCredentialResponse
 */
export type DeleteCredentialResponse = Record<string, never>;

/**
 * The body of `POST /admin/v1/credentials:rewrap` (none).
 * @proto gateway.auth.v1.RewrapCredentialsRequest
 */
export type RewrapCredentialsRequest = Record<string, never>;

/**
 * How far re-encrypting the stored secrets under the current key-encryption key went.
 * @proto gateway.auth.v1.RewrapCredentialsResponse
 */
export interface RewrapCredentialsResponse {
  /** The current key-encryption key's id. */
  kek_id: string;
  /** Secrets re-wrapped by this call. */
  rewrapped: number;
  /** Secrets still under an older key. */
  remaining: number;
}

// -- responses and jobs (edge routes written for their format, not transcoded) -----------------

/** A Responses API request body (`POST /v1/responses`); see OpenAI's Responses API. */
export interface ResponsesRequest {
  /** The model. */
  model: string;
  /** A string, or an array of input items. */
  input: JsonValue;
  /** System instructions. */
  instructions?: string;
  /** The previous response to continue from. */
  previous_response_id?: string;
  /** Whether the response is stored (retrievable by id). */
  store?: boolean;
  /** Any other Responses API field. */
  [field: string]: unknown;
}

/** A Responses API response object (`object: "response"`). */
export interface ResponseObject {
  /** Its id ("resp_…"). */
  id: string;
  /** "response". */
  object: string;
  /** "completed", "incomplete", "failed", … */
  status: string;
  /** The model. */
  model: string;
  /** The output items. */
  output: JsonValue[];
  /** The text of every output_text part, joined (computed by the SDK, like OpenAI's `output_text`). */
  output_text: string;
  /** Token counts. */
  usage?: { input_tokens: number; output_tokens: number; total_tokens: number } & JsonObject;
  /** Everything else the gateway sent. */
  [field: string]: unknown;
}

/** One event of a Responses stream (`response.output_text.delta`, `response.completed`, …). */
export interface ResponseEvent {
  /** The event type. */
  type: string;
  /** Its other fields, as the gateway sent them. */
  [field: string]: unknown;
}

/** A job's status. */
export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

/** The statuses a job never leaves. */
export const TERMINAL_JOB_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "cancelled"];

/** An error body (OpenAI's shape). */
export interface ErrorBody {
  /** What went wrong. */
  message: string;
  /** OpenAI's error type. */
  type?: string | null;
  /** The parameter it is about. */
  param?: string | null;
  /** The gateway's error code. */
  code?: string | null;
}

/** An async job (`/v1/jobs`). */
export interface Job {
  /** Its id. */
  id: string;
  /** "job". */
  object: string;
  /** Its status. */
  status: JobStatus;
  /** "chat.completions" or "responses". */
  format: string;
  /** The model requested. */
  model: string;
  /** Unix seconds. */
  created_at: number;
  /** Unix seconds, once started. */
  started_at: number | null;
  /** Unix seconds, once finished. */
  finished_at: number | null;
  /** Attempts made. */
  attempts: number;
  /** Attempts allowed. */
  max_attempts: number;
  /** Why it failed. */
  error: ErrorBody | null;
  /** The answer, in the request's format (a chat completion), once it succeeded. */
  result: JsonObject | null;
  /** Where its end is posted. */
  webhook?: { url: string };
}

/** What `jobs.submit` takes. */
export interface SubmitJobParams {
  /** A chat completions request (`messages`) or a Responses request (`input`). */
  request: JsonObject | Record<string, unknown>;
  /** A URL the gateway posts the finished job to. */
  webhook?: { url: string };
}

/** A page of jobs, newest first. */
export interface JobList {
  /** "list". */
  object: string;
  /** The jobs. */
  data: Job[];
  /** The first job's id. */
  first_id: string | null;
  /** The last job's id: pass it as `after` for the next page. */
  last_id: string | null;
  /** Whether there are more. */
  has_more: boolean;
}
