// The admin helpers against the real suite: tenants, keys, routes and upstream credentials.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";

import { AuthenticationError, GatewayClient, NotFoundError, PermissionDeniedError } from "@llm-gateway/sdk";

import { HELLO, adminKey, apiKey, baseURL } from "./helpers.mjs";

const admin = new GatewayClient({ baseURL, apiKey: adminKey, maxRetries: 0 }).admin;
const suffix = randomBytes(4).toString("hex");

test("tenants and keys", async () => {
  const tenant = await admin.tenants.create({ tenant_id: `node-${suffix}`, display_name: "Node SDK" });
  assert.equal(tenant.tenant_id, `node-${suffix}`);
  assert.ok((await admin.tenants.list()).some((t) => t.tenant_id === tenant.tenant_id));
  const limits = { quotas: [{ unit: "UNIT_REQUESTS", window: "WINDOW_MINUTE", limit: 1000 }] };
  const updated = await admin.tenants.update({ tenant_id: tenant.tenant_id, limits });
  assert.deepEqual(updated.limits.quotas, limits.quotas);

  const created = await admin.keys.create({ tenant_id: tenant.tenant_id, name: "ci", scopes: ["chat"] });
  assert.ok(created.secret.startsWith("gw-") || created.secret.length > 20);
  assert.ok(!JSON.stringify(created.key).includes(created.secret));
  const client = new GatewayClient({ baseURL, apiKey: created.secret, maxRetries: 0 });
  assert.match((await client.chat({ model: "mock:demo", messages: HELLO })).message.content, /^Mock reply/);

  const keys = await admin.keys.list({ tenant_id: tenant.tenant_id });
  assert.deepEqual(keys.map((k) => k.key_id), [created.key.key_id]);
  const narrowed = await admin.keys.update({ key_id: created.key.key_id, allowed_models: ["fast"] });
  assert.deepEqual(narrowed.allowed_models, ["fast"]);
  const revoked = await admin.keys.revoke(created.key.key_id);
  assert.ok(revoked.revoke_time);
  assert.deepEqual(await admin.keys.list({ tenant_id: tenant.tenant_id }), []);
  assert.equal((await admin.keys.list({ tenant_id: tenant.tenant_id, include_revoked: true })).length, 1);
  // Revocation is seen within seconds (the router caches authentications briefly).
  const deadline = Date.now() + 15_000;
  let error;
  while (Date.now() < deadline) {
    error = await client.chat({ model: "mock:demo", messages: HELLO }).then(() => null, (e) => e);
    if (error) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.ok(error instanceof AuthenticationError, String(error));
});

test("routes", async () => {
  const route = await admin.routes.set({ model: `node-route-${suffix}`, provider: "mock", upstream_model: "routed" });
  assert.equal(route.provider, "mock");
  assert.ok((await admin.routes.list()).some((r) => r.model === route.model));
  assert.equal((await admin.routes.delete(route.model)).model, route.model);
  assert.ok(!(await admin.routes.list()).some((r) => r.model === route.model));
});

test("credentials", async () => {
  const credential = await admin.credentials.create({
    tenant_id: "acme",
    provider: "openai",
    name: `node-${suffix}`,
    secret: { api_key: "sk-node-sdk-secret-1234" },
  });
  assert.equal(credential.kind, "CREDENTIAL_KIND_API_KEY");
  assert.equal(credential.secret_last_four, "1234");
  assert.ok(!JSON.stringify(credential).includes("sk-node-sdk-secret"));
  const listed = await admin.credentials.list({ tenant_id: "acme", provider: "openai" });
  assert.ok(listed.some((c) => c.credential_id === credential.credential_id));
  const disabled = await admin.credentials.update({
    credential_id: credential.credential_id,
    state: "CREDENTIAL_STATE_DISABLED",
    priority: 3,
  });
  assert.equal(disabled.state, "CREDENTIAL_STATE_DISABLED");
  assert.equal(disabled.priority, 3);
  const rotated = await admin.credentials.rotate(credential.credential_id, { api_key: "sk-node-sdk-secret-5678" });
  assert.equal(rotated.secret_last_four, "5678");
  assert.ok(rotated.rotated_at);
  await admin.credentials.delete(credential.credential_id);
  await assert.rejects(admin.credentials.delete(credential.credential_id), NotFoundError);
});

test("admin routes need an admin key", async () => {
  const notAdmin = new GatewayClient({ baseURL, apiKey, maxRetries: 0 }).admin;
  await assert.rejects(notAdmin.tenants.list(), PermissionDeniedError);
});
