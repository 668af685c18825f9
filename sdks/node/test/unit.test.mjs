// The client's own logic against a scripted fetch, no gateway needed: which failures are retried and
// after how long, how error bodies and headers become typed errors, NDJSON framing, timeouts.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  APIError,
  APITimeoutError,
  APIUserAbortError,
  BadRequestError,
  BudgetExceededError,
  GatewayClient,
  RateLimitError,
} from "@llm-gateway/sdk";

const HELLO = [{ role: "user", content: "Hi" }];

/** A client whose fetch answers from `script` (one function per call) and records the calls. */
function scripted(script, options = {}) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url: String(url), init, at: Date.now() });
    const next = script[Math.min(calls.length - 1, script.length - 1)];
    return next(init);
  };
  const client = new GatewayClient({ baseURL: "http://gateway.test", apiKey: "k", fetch, ...options });
  return { client, calls };
}

function json(status, body, headers = {}) {
  return () => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

const limited = json(
  429,
  { error: { message: "Rate limit reached.", type: "rate_limit_error", param: null, code: "rate_limit_exceeded" } },
  { "retry-after": "1", "x-request-id": "req_limited" },
);
const models = json(200, { models: [{ id: "m" }] }, { "x-request-id": "req_ok" });

test("a 429 on an idempotent call is retried after its Retry-After", async () => {
  const { client, calls } = scripted([limited, models]);
  assert.deepEqual((await client.models()).map((m) => m.id), ["m"]);
  assert.equal(calls.length, 2);
  assert.ok(calls[1].at - calls[0].at >= 950, `${calls[1].at - calls[0].at} ms`);
});

test("a 429 on a chat is thrown at once unless retries are asked for", async () => {
  const chat = json(200, { id: "c", message: { role: "assistant", content: "ok" } });
  const first = scripted([limited, chat]);
  const error = await first.client.chat({ model: "m", messages: HELLO }).catch((e) => e);
  assert.ok(error instanceof RateLimitError);
  assert.equal(error.retryAfter, 1);
  assert.equal(error.requestId, "req_limited");
  assert.equal(error.code, "rate_limit_exceeded");
  assert.equal(error.type, "rate_limit_error");
  assert.equal(error.status, 429);
  assert.equal(first.calls.length, 1);
  const asked = scripted([limited, chat]);
  assert.equal((await asked.client.chat({ model: "m", messages: HELLO }, { retry: true })).message.content, "ok");
  assert.equal(asked.calls.length, 2);
  const perClient = scripted([limited, chat], { retryNonIdempotent: true });
  await perClient.client.chat({ model: "m", messages: HELLO });
  assert.equal(perClient.calls.length, 2);
});

test("a spent budget, a 400, a 500 and a too long Retry-After are not retried", async () => {
  const budget = json(429, { error: { message: "Budget.", code: "insufficient_quota" } }, { "retry-after": "1" });
  const bad = json(400, { error: { message: "Bad.", param: "messages[0].role", code: null } });
  const internal = json(500, { error: { message: "Bug.", code: "internal_error" } });
  const hour = json(429, { error: { message: "Later.", code: "rate_limit_exceeded" } }, { "retry-after": "3600" });
  for (const [answer, cls] of [
    [budget, BudgetExceededError],
    [bad, BadRequestError],
    [internal, APIError],
    [hour, RateLimitError],
  ]) {
    const { client, calls } = scripted([answer, models]);
    const error = await client.models().catch((e) => e);
    assert.equal(error.constructor, cls);
    assert.equal(calls.length, 1, cls.name);
  }
});

test("a 503 is retried with backoff, up to maxRetries", async () => {
  const unavailable = json(503, { error: { message: "Down.", code: "service_unavailable" } });
  const { client, calls } = scripted([unavailable], { maxRetries: 3, retryPolicy: { backoffMs: 20 } });
  const error = await client.models().catch((e) => e);
  assert.equal(error.constructor, APIError);
  assert.equal(error.status, 503);
  assert.equal(calls.length, 4);
  const once = scripted([unavailable], { maxRetries: 3 });
  await assert.rejects(once.client.models({}, { maxRetries: 0 }), APIError);
  assert.equal(once.calls.length, 1, "maxRetries per call overrides the client's");
});

test("the key, the request id and the JSON body are sent", async () => {
  const { client, calls } = scripted([json(200, { id: "c", message: { role: "assistant", content: "ok" } })]);
  await client.chat({ model: "m", messages: HELLO, max_tokens: 5 }, { requestId: "req_mine", headers: { "x-extra": "1" } });
  const { url, init } = calls[0];
  assert.equal(url, "http://gateway.test/v1/chat");
  assert.equal(init.method, "POST");
  assert.equal(init.headers.authorization, "Bearer k");
  assert.equal(init.headers["x-request-id"], "req_mine");
  assert.equal(init.headers["x-extra"], "1");
  assert.deepEqual(JSON.parse(init.body), { model: "m", messages: HELLO, max_tokens: 5, stream: false });
});

test("usage sends its timestamps as from and to, and group_by by its enum name", async () => {
  const { client, calls } = scripted([json(200, { rows: [] })]);
  await client.usage({ key_id: "k1", start_time: new Date("2026-01-01T00:00:00Z"), end_time: "2026-02-01T00:00:00Z", group_by: "model" });
  const query = new URL(calls[0].url).searchParams;
  assert.equal(query.get("from"), "2026-01-01T00:00:00.000Z");
  assert.equal(query.get("to"), "2026-02-01T00:00:00Z");
  assert.equal(query.get("group_by"), "GROUP_BY_MODEL");
  assert.equal(query.get("key_id"), "k1");
  assert.equal(query.get("tenant_id"), null);
});

test("NDJSON split across reads, then an in-band error, is thrown after the chunks before it", async () => {
  const parts = ['{"id":"c","delta":{"role":"assistant"}}\n{"id":"c","del', 'ta":{"content":"Hel"}}\n', '{"error":{"message":"Broke.","code":"upstream_stream_broken"}}\n'];
  const body = new ReadableStream({
    start(controller) {
      for (const part of parts) controller.enqueue(new TextEncoder().encode(part));
      controller.close();
    },
  });
  const { client } = scripted([() => new Response(body, { status: 200, headers: { "x-request-id": "req_s" } })]);
  const seen = [];
  const error = await (async () => {
    for await (const chunk of client.chatStream({ model: "m", messages: HELLO })) seen.push(chunk);
  })().then(() => null, (e) => e);
  assert.deepEqual(seen.map((c) => c.delta), [{ role: "assistant" }, { content: "Hel" }]);
  assert.equal(error.constructor, APIError);
  assert.equal(error.code, "upstream_stream_broken");
  assert.equal(error.requestId, "req_s");
});

/** A fetch that never answers, but rejects when its signal aborts (as the platform's does). */
function hanging(init) {
  return new Promise((_resolve, reject) => {
    init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
  });
}

test("the timeout gives an APITimeoutError, the caller's signal an APIUserAbortError", async () => {
  const { client, calls } = scripted([hanging], { timeout: 100, maxRetries: 1, retryPolicy: { backoffMs: 10 } });
  const timedOut = await client.models().catch((e) => e);
  assert.ok(timedOut instanceof APITimeoutError, String(timedOut));
  assert.equal(calls.length, 2, "a timeout is retried");
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 50);
  const aborted = await client.models({}, { signal: controller.signal, timeout: 10_000 }).catch((e) => e);
  assert.ok(aborted instanceof APIUserAbortError, String(aborted));
  assert.equal(calls.length, 3, "an abort is never retried");
});
