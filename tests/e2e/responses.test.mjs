// The official openai Node SDK's Responses API against the edge of a running suite (node --test).
// Run from tests/e2e/test_responses_node_sdk.py, which starts the suite and sets GATEWAY_EDGE_URL,
// GATEWAY_TEST_KEY, GATEWAY_OTHER_KEY and GATEWAY_STORE_SERVED ("1" when metering stores responses).
import assert from "node:assert/strict";
import { test } from "node:test";

import OpenAI from "openai";

const baseURL = `${process.env.GATEWAY_EDGE_URL}/v1`;
const client = new OpenAI({ baseURL, apiKey: process.env.GATEWAY_TEST_KEY, maxRetries: 0 });
const other = new OpenAI({ baseURL, apiKey: process.env.GATEWAY_OTHER_KEY, maxRetries: 0 });
const stored = process.env.GATEWAY_STORE_SERVED === "1";
const weather = {
  type: "function",
  name: "get_weather",
  description: "The weather in a city.",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  strict: false,
};

test("responses.create", async () => {
  const { data, response } = await client.responses
    .create({ model: "mock:node", input: "Hello from node", instructions: "Be brief.", store: false })
    .withResponse();
  assert.equal(data.object, "response");
  assert.equal(data.status, "completed");
  assert.match(data.id, /^resp_/);
  assert.match(data.output_text, /Hello from node/);
  assert.equal(data.instructions, "Be brief.");
  assert.equal(data.usage.total_tokens, data.usage.input_tokens + data.usage.output_tokens);
  assert.ok(response.headers.get("x-request-id"));
});

test("responses.stream", async () => {
  const stream = client.responses.stream({ model: "mock:node", input: "Hello from node", store: false });
  const types = [];
  let text = "";
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") text += event.delta;
  }
  const final = await stream.finalResponse();
  assert.equal(types[0], "response.created");
  assert.equal(types.at(-1), "response.completed");
  assert.equal(final.output_text, text);
  assert.match(text, /Hello from node/);
});

test("a function tool over two turns with previous_response_id", { skip: !stored && "no response store" }, async () => {
  const first = await client.responses.create({
    model: "mock:tools",
    input: "Weather in Paris?",
    tools: [weather],
    store: true,
  });
  const call = first.output.find((item) => item.type === "function_call");
  assert.equal(call.name, "get_weather");
  const stream = client.responses.stream({
    model: "mock:node",
    previous_response_id: first.id,
    input: [{ type: "function_call_output", call_id: call.call_id, output: '{"temp": 21}' }],
    store: true,
  });
  const second = await stream.finalResponse();
  assert.equal(second.status, "completed");
  assert.equal(second.previous_response_id, first.id);

  const again = await client.responses.retrieve(first.id);
  assert.deepEqual(
    again.output.map((item) => item.id),
    first.output.map((item) => item.id),
  );
  const items = await client.responses.inputItems.list(second.id);
  assert.deepEqual(
    items.data.map((item) => item.type),
    ["function_call_output"],
  );
  await assert.rejects(other.responses.retrieve(first.id), OpenAI.NotFoundError);
  await client.responses.delete(second.id);
  await assert.rejects(client.responses.retrieve(second.id), OpenAI.NotFoundError);
});
