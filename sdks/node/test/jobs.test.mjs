// Async jobs and the Responses API against the real suite. Their routes come from the `jobs` and
// `responses` branches: on a checkout without them these tests are skipped, saying so.
import assert from "node:assert/strict";
import { test } from "node:test";

import { NotFoundError } from "@llm-gateway/sdk";

import { HELLO, client, skipUnless } from "./helpers.mjs";

const skipJobs = await skipUnless("jobs", "GET", "/v1/jobs");
const skipResponses = await skipUnless("responses", "POST", "/v1/responses");

test("jobs: submitted and awaited", { skip: skipJobs }, async () => {
  const jobs = client().jobs;
  const queued = await jobs.submit({ request: { model: "mock:demo", messages: HELLO } });
  assert.equal(queued.object, "job");
  assert.ok(["queued", "running", "succeeded"].includes(queued.status), queued.status);
  const done = await jobs.wait(queued.id, { pollInterval: 100, waitTimeout: 30_000 });
  assert.equal(done.status, "succeeded", JSON.stringify(done));
  assert.equal(done.result.choices[0].message.content, "Mock reply to: Hello from the Node SDK");
  assert.ok(done.finished_at >= done.created_at);
  assert.equal((await jobs.get(queued.id)).status, "succeeded");
  const page = await jobs.list({ limit: 100 });
  assert.ok(page.data.some((job) => job.id === queued.id));
  // Cancelling a finished job gives it back as it ended.
  assert.equal((await jobs.cancel(queued.id)).status, "succeeded");
  await assert.rejects(jobs.get("job_does-not-exist"), NotFoundError);
});

test("responses: create, stream, retrieve, delete", { skip: skipResponses }, async () => {
  const gateway = client();
  const response = await gateway.responses({ model: "mock:demo", input: "Hello from the Node SDK" });
  assert.equal(response.object, "response");
  assert.equal(response.status, "completed");
  assert.match(response.output_text, /Hello from the Node SDK/);

  const types = [];
  let text = "";
  for await (const event of gateway.responsesStream({ model: "mock:demo", input: "Hello from the Node SDK" })) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") text += event.delta;
  }
  assert.equal(types[0], "response.created");
  assert.equal(types.at(-1), "response.completed");
  assert.equal(text, response.output_text);

  const stored = await gateway.getResponse(response.id);
  assert.equal(stored.id, response.id);
  assert.equal(stored.output_text, response.output_text);
  assert.equal(await gateway.deleteResponse(response.id), true);
  await assert.rejects(gateway.getResponse(response.id), NotFoundError);
});
