// A 429 and its Retry-After against the real suite: refused, not retried unless asked (chat is not
// idempotent), then retried after the window the 429 names. In a file of its own so that node --test
// runs it beside the others: it waits for up to a minute.
import assert from "node:assert/strict";
import { test } from "node:test";

import { RateLimitError } from "@llm-gateway/sdk";

import { HELLO, client, newKey } from "./helpers.mjs";

test("a 429 is retried after its Retry-After", async () => {
  const limits = { quotas: [{ unit: "UNIT_REQUESTS", window: "WINDOW_MINUTE", limit: 1 }] };
  const key = await newKey({ limits });
  const once = client({ apiKey: key.secret, maxRetries: 3 });
  await once.chat({ model: "mock:demo", messages: HELLO });

  let started = Date.now();
  const refused = await once.chat({ model: "mock:demo", messages: HELLO }).catch((e) => e);
  assert.ok(refused instanceof RateLimitError, String(refused));
  assert.ok(Date.now() - started < 2000, "chat is retried only when asked");
  assert.equal(refused.status, 429);
  assert.equal(refused.code, "rate_limit_exceeded");
  assert.ok(refused.requestId);
  assert.ok(refused.retryAfter > 0 && refused.retryAfter <= 60, String(refused.retryAfter));

  started = Date.now();
  const reply = await client({ apiKey: key.secret, maxRetries: 2 }).chat({ model: "mock:demo", messages: HELLO }, { retry: true });
  const waited = (Date.now() - started) / 1000;
  assert.match(reply.message.content, /^Mock reply/);
  assert.ok(waited >= refused.retryAfter - 1.5 && waited <= refused.retryAfter + 10, `${waited} s for ${refused.retryAfter}`);
});
