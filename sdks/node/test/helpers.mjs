// What the SDK's tests share: the suite's URLs and keys (set by tests/sdk/node/test_node_sdk.py, which
// starts the real processes), fresh keys made with the SDK's own admin helpers, and the fake upstream's
// counters (served as JSON by the wrapper, to see when an upstream stream finished or was left).
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";

import { GatewayClient } from "@llm-gateway/sdk";

export const baseURL = required("GATEWAY_EDGE_URL");
export const apiKey = required("GATEWAY_TEST_KEY");
export const adminKey = required("GATEWAY_ADMIN_KEY");
const statsURL = required("GATEWAY_UPSTREAM_STATS_URL");
/** The routes the checkout has (the wrapper looks for their edge modules): never skipped when absent. */
const expected = new Set((process.env.GATEWAY_EXPECT_ROUTES ?? "").split(",").filter(Boolean));
export const HELLO = [{ role: "user", content: "Hello from the Node SDK" }];

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests from tests/sdk/node/test_node_sdk.py`);
  return value;
}

/** A client of the suite (no retries unless asked). */
export function client(options = {}) {
  return new GatewayClient({ baseURL, apiKey, maxRetries: 0, ...options });
}

/** A fresh key of tenant acme (its own counters), made with the SDK's admin helpers. */
export async function newKey(fields = {}) {
  const admin = new GatewayClient({ baseURL, apiKey: adminKey, maxRetries: 0 });
  return admin.admin.keys.create({ tenant_id: "acme", name: `node-${randomBytes(4).toString("hex")}`, ...fields });
}

/** The fake upstream's counters (requests, streams_started, streams_finished, streams_disconnected). */
export async function upstreamStats() {
  const response = await fetch(statsURL);
  return response.json();
}

/** Polls `condition` until it holds, for at most `timeoutMs`. */
export async function waitFor(condition, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A loopback port nothing listens on. */
export async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Why to skip the tests of a route merged from another branch (`name`), or false to run them: they
 * run whenever the edge serves the route, or the checkout has it (then its absence is a failure).
 */
export async function skipUnless(name, method, path) {
  if (expected.has(name) || (await routeExists(method, path))) return false;
  return `the edge has no ${path} (merge the ${name} branch)`;
}

async function routeExists(method, path) {
  const response = await fetch(`${baseURL}${path}`, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: method === "GET" ? undefined : "{}",
  });
  if (response.status !== 404 && response.status !== 405) return true;
  // The edge's answer for a path it has no route for (edge/app.py), not a gateway's NOT_FOUND.
  const body = await response.json().catch(() => ({}));
  return !/^(Invalid URL|Method .* is not allowed)/.test(body.error?.message ?? "");
}
