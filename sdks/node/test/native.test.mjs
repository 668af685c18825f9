// The SDK's native API against the real suite: chat, streams, cancellation, usage, models, embed and
// every error class. Run from tests/sdk/node/test_node_sdk.py (node --test).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  APIConnectionError,
  APIError,
  APITimeoutError,
  APIUserAbortError,
  AuthenticationError,
  BadRequestError,
  BudgetExceededError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
} from "@llm-gateway/sdk";

import { HELLO, baseURL, client, freePort, newKey, upstreamStats, waitFor } from "./helpers.mjs";

test("chat", async () => {
  const reply = await client().chat(
    { model: "mock:demo", messages: HELLO, temperature: 0.2, max_tokens: 50 },
    { requestId: "req_node-sdk-chat" },
  );
  assert.equal(reply.message.content, "Mock reply to: Hello from the Node SDK");
  assert.equal(reply.message.role, "assistant");
  assert.equal(reply.provider, "mock");
  assert.equal(reply.model, "mock:demo");
  assert.equal(reply.finish_reason, "stop");
  assert.ok(reply.created > 0);
  assert.ok(reply.usage.prompt_tokens > 0 && reply.usage.completion_tokens > 0);
  assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);
  assert.equal(reply.requestId, "req_node-sdk-chat");
});

test("models and one model", async () => {
  const models = await client().models();
  const fast = models.find((m) => m.id === "fast");
  assert.ok(fast, JSON.stringify(models));
  assert.equal(fast.input_usd_per_million, 1);
  assert.equal(fast.output_usd_per_million, 2);
  assert.equal(fast.unpriced, false);
  const one = await client().models({ model_id: "mock:anything" });
  assert.deepEqual(one.map((m) => m.id), ["mock:anything"]);
});

test("embed", async () => {
  const result = await client().embed({ model: "mock:embed", input: ["one", "two"] }, { requestId: "req_node-embed" });
  assert.deepEqual(result.data.map((e) => e.index), [0, 1]);
  assert.ok(result.data.every((e) => e.vector.length > 0 && e.vector.every((x) => typeof x === "number")));
  assert.equal(result.provider, "mock");
  assert.ok(result.usage.prompt_tokens > 0);
  assert.equal(result.requestId, "req_node-embed");
});

test("stream: chunks arrive before the upstream finishes", async () => {
  const before = (await upstreamStats()).streams_finished;
  const chunks = [];
  for await (const chunk of client().chatStream({ model: "fake:slow-20", messages: HELLO })) {
    if (chunks.length === 0) {
      // The upstream sends 20 chunks 50 ms apart: it is still sending when the first one is here.
      assert.equal(chunk.delta.role, "assistant");
      assert.equal((await upstreamStats()).streams_finished, before);
    }
    chunks.push(chunk);
  }
  const text = chunks.map((c) => c.delta.content ?? "").join("");
  assert.ok(text.startsWith("tok0 tok1"), text);
  assert.ok(chunks.some((c) => c.finish_reason === "stop"));
  assert.ok(chunks.at(-1).usage.total_tokens > 0);
  await waitFor(async () => (await upstreamStats()).streams_finished === before + 1, "the upstream stream to finish");
});

test("stream of the mock provider equals its answer", async () => {
  const stream = client().chatStream({ model: "mock:demo", messages: HELLO });
  await stream.start();
  assert.ok((await stream.requestId()).length > 0);
  let text = "";
  for await (const chunk of stream) text += chunk.delta.content ?? "";
  assert.equal(text, "Mock reply to: Hello from the Node SDK");
});

test("an error after the first chunk is thrown by the loop, never a stream that looks complete", async () => {
  const seen = [];
  const error = await (async () => {
    for await (const chunk of client().chatStream({ model: "mock:stream-break", messages: HELLO })) seen.push(chunk);
  })().then(
    () => null,
    (e) => e,
  );
  assert.ok(error instanceof APIError, String(error));
  assert.equal(error.code, "upstream_stream_broken");
  assert.ok(error.requestId);
  assert.ok(seen.length > 0, "the chunks before the break arrived");
  assert.ok(!seen.some((chunk) => chunk.finish_reason));
});

for (const how of ["break", "abort()", "AbortSignal"]) {
  test(`abandoning a stream (${how}) closes the upstream request`, async () => {
    const before = (await upstreamStats()).streams_disconnected;
    const controller = new AbortController();
    const stream = client().chatStream({ model: "fake:slow-200", messages: HELLO }, { signal: controller.signal });
    let count = 0;
    try {
      for await (const _chunk of stream) {
        count += 1;
        if (count < 2) continue;
        if (how === "break") break;
        if (how === "abort()") stream.abort();
        else controller.abort();
      }
      assert.equal(how, "break", "an aborted stream must throw, not end as if complete");
    } catch (error) {
      assert.notEqual(how, "break");
      assert.ok(error instanceof APIUserAbortError, String(error));
    }
    // 200 chunks 50 ms apart would take 10 s: the upstream saw the client leave long before.
    await waitFor(
      async () => (await upstreamStats()).streams_disconnected === before + 1,
      "the upstream to see the disconnect",
    );
  });
}

test("an AbortSignal aborts a unary call", async () => {
  const started = Date.now();
  await assert.rejects(
    client({ timeout: 30_000 }).chat({ model: "mock:timeout", messages: HELLO }, { signal: AbortSignal.timeout(200) }),
    (error) => error instanceof APIUserAbortError,
  );
  assert.ok(Date.now() - started < 3000);
});

test("usage read back", async () => {
  const key = await newKey({ scopes: ["chat", "usage:read"] });
  const mine = client({ apiKey: key.secret });
  await mine.chat({ model: "fast", messages: HELLO });
  await mine.chat({ model: "fast", messages: HELLO });
  await waitFor(async () => {
    const rows = await mine.usage({ key_id: key.key.key_id, group_by: "model" });
    return rows.length === 1 && rows[0].requests === 2;
  }, "the two requests in the ledger");
  const [row] = await mine.usage({ key_id: key.key.key_id, group_by: "model", start_time: new Date(Date.now() - 3600_000) });
  assert.equal(row.group, "fast");
  assert.ok(row.prompt_tokens > 0 && row.completion_tokens > 0 && row.cost_micro_usd > 0);
  assert.equal(row.errors, 0);
  const total = await mine.usage({ key_id: key.key.key_id });
  assert.equal(total.length, 1);
  assert.equal(total[0].requests, 2);
  assert.equal(total[0].group, "");
  assert.deepEqual(await mine.usage({ key_id: key.key.key_id, end_time: new Date(Date.now() - 3600_000) }), []);
});

test("AuthenticationError", async () => {
  const error = await client({ apiKey: "gw-not-a-real-key" })
    .chat({ model: "mock:demo", messages: HELLO }, { requestId: "req_node-sdk-auth" })
    .catch((e) => e);
  assert.ok(error instanceof AuthenticationError, String(error));
  assert.equal(error.status, 401);
  assert.equal(error.code, "invalid_api_key");
  assert.equal(error.requestId, "req_node-sdk-auth");
  assert.ok(!error.message.includes("gw-not-a-real-key"));
  // A stream refused before its first chunk throws at once, the same class.
  await assert.rejects(client({ apiKey: "gw-not-a-real-key" }).chatStream({ model: "mock:demo", messages: HELLO }).start(), AuthenticationError);
});

test("PermissionDeniedError", async () => {
  const key = await newKey({ scopes: ["chat"], allowed_models: ["fake:*"] });
  const mine = client({ apiKey: key.secret });
  const error = await mine.chat({ model: "mock:demo", messages: HELLO }).catch((e) => e);
  assert.ok(error instanceof PermissionDeniedError, String(error));
  assert.equal(error.status, 403);
  assert.equal(error.code, "model_not_allowed");
  assert.ok(error.requestId);
  const denied = await mine.usage().catch((e) => e);
  assert.ok(denied instanceof PermissionDeniedError, String(denied));
  assert.equal(denied.code, "insufficient_permissions");
});

test("NotFoundError", async () => {
  const error = await client().chat({ model: "no-such-model", messages: HELLO }).catch((e) => e);
  assert.ok(error instanceof NotFoundError, String(error));
  assert.equal(error.status, 404);
  assert.equal(error.code, "model_not_found");
  assert.equal(error.param, "model");
  assert.match(error.message, /no-such-model/);
});

test("BadRequestError", async () => {
  const error = await client().chat({ model: "mock:demo", messages: [{ role: "wizard", content: "Hi" }] }).catch((e) => e);
  assert.ok(error instanceof BadRequestError, String(error));
  assert.equal(error.status, 400);
  assert.equal(error.param, "messages[0].role");
});

test("BudgetExceededError is a RateLimitError that is never retried", async () => {
  // $0.004 a month: one long request (its reservation ~$0.0035) fits, its cost then leaves too little.
  const limits = { quotas: [{ unit: "UNIT_COST_MICRO_USD", window: "WINDOW_MONTH", limit: 4000 }] };
  const mine = client({ apiKey: (await newKey({ limits })).secret, maxRetries: 3 });
  const long = [{ role: "user", content: "word ".repeat(300) }];
  await mine.chat({ model: "fast", messages: long, max_tokens: 1000 });
  const started = Date.now();
  const error = await mine.chat({ model: "fast", messages: long, max_tokens: 1000 }, { retry: true }).catch((e) => e);
  assert.ok(error instanceof BudgetExceededError, String(error));
  assert.ok(error instanceof RateLimitError);
  assert.equal(error.status, 429);
  assert.equal(error.code, "insufficient_quota");
  assert.ok(Date.now() - started < 5000);
});

test("APIError for a server error", async () => {
  const error = await client().chat({ model: "mock:error-500", messages: HELLO }).catch((e) => e);
  assert.equal(error.constructor, APIError, String(error));
  assert.equal(error.status, 502);
  assert.ok(error.requestId);
});

test("APITimeoutError", async () => {
  const started = Date.now();
  const error = await client({ timeout: 500 }).chat({ model: "mock:timeout", messages: HELLO }).catch((e) => e);
  assert.ok(error instanceof APITimeoutError, String(error));
  assert.ok(Date.now() - started < 3000);
});

test("APIConnectionError", async () => {
  const port = await freePort();
  const error = await client({ baseURL: `http://127.0.0.1:${port}`, timeout: 5000 }).models().catch((e) => e);
  assert.ok(error instanceof APIConnectionError, String(error));
  assert.ok(!(error instanceof APITimeoutError));
  assert.equal(error.status, undefined);
  assert.ok(baseURL.startsWith("http"));
});

test("a connection error of an idempotent call is retried, with backoff", async () => {
  const port = await freePort();
  let attempts = 0;
  const counting = (url, init) => ((attempts += 1), fetch(url, init));
  const retrying = client({ baseURL: `http://127.0.0.1:${port}`, maxRetries: 2, retryPolicy: { backoffMs: 10 }, fetch: counting });
  await assert.rejects(retrying.models(), APIConnectionError);
  assert.equal(attempts, 3);
  attempts = 0;
  // A chat is not idempotent: one attempt unless asked.
  await assert.rejects(retrying.chat({ model: "mock:demo", messages: HELLO }), APIConnectionError);
  assert.equal(attempts, 1);
});
