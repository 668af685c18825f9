// The official openai Node SDK against the edge of a running suite, with node's own test runner.
// Run from tests/e2e/test_sdk_conformance.py, which starts the suite and sets GATEWAY_EDGE_URL and
// GATEWAY_TEST_KEY; run alone, point those at any running gateway.
import assert from "node:assert/strict";
import { test } from "node:test";

import OpenAI from "openai";

const baseURL = `${process.env.GATEWAY_EDGE_URL}/v1`;
const client = new OpenAI({ baseURL, apiKey: process.env.GATEWAY_TEST_KEY, maxRetries: 0 });
const hello = [{ role: "user", content: "Hello from node" }];

test("chat completion", async () => {
  const { data, response } = await client.chat.completions
    .create({ model: "mock:node", messages: hello })
    .withResponse();
  assert.equal(data.object, "chat.completion");
  assert.equal(data.choices[0].message.role, "assistant");
  assert.match(data.choices[0].message.content, /Hello from node/);
  assert.equal(data.choices[0].finish_reason, "stop");
  assert.equal(data.usage.total_tokens, data.usage.prompt_tokens + data.usage.completion_tokens);
  assert.ok(response.headers.get("x-request-id"));
});

test("stream with usage", async () => {
  const stream = await client.chat.completions.create({
    model: "mock:node",
    messages: hello,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  const finishes = [];
  let usage = null;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? "";
      if (choice.finish_reason) finishes.push(choice.finish_reason);
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.match(text, /Hello from node/);
  assert.deepEqual(finishes, ["stop"]);
  assert.ok(usage && usage.completion_tokens > 0);
});

test("tools", async () => {
  const completion = await client.chat.completions.create({
    model: "mock:tools",
    messages: hello,
    tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: {} } } }],
  });
  assert.equal(completion.choices[0].finish_reason, "tool_calls");
  assert.equal(completion.choices[0].message.tool_calls[0].function.name, "get_weather");
});

test("embeddings from token arrays", async () => {
  const result = await client.embeddings.create({ model: "mock:embed", input: [[1234, 5678], [9]] });
  assert.equal(result.data.length, 2);
  assert.ok(result.data[0].embedding.length > 0);
  assert.equal(result.usage.prompt_tokens, 3);
});

test("errors are the SDK's error classes", async () => {
  const stranger = new OpenAI({ baseURL, apiKey: "gw-not-a-key", maxRetries: 0 });
  await assert.rejects(stranger.chat.completions.create({ model: "mock:node", messages: hello }), (error) => {
    assert.ok(error instanceof OpenAI.AuthenticationError, String(error));
    assert.equal(error.status, 401);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: "mock:error-429", messages: hello }), (error) => {
    assert.ok(error instanceof OpenAI.RateLimitError, String(error));
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: "mock:node", messages: [] }), (error) => {
    assert.ok(error instanceof OpenAI.BadRequestError, String(error));
    assert.equal(error.param, "messages");
    return true;
  });
});
