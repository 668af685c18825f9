// The Vercel AI SDK's default OpenAI provider, `openai(model)`, which speaks the Responses API,
// against the edge of a running suite (node --test). Run from tests/e2e/test_responses_node_sdk.py,
// which starts the suite and sets GATEWAY_EDGE_URL, GATEWAY_TEST_KEY and GATEWAY_STORE_SERVED. Its
// second step sends the first step's tool call back as an item_reference (the SDK stores by
// default), which the router resolves from the response store.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

const stored = process.env.GATEWAY_STORE_SERVED === "1";
const openai = createOpenAI({ baseURL: `${process.env.GATEWAY_EDGE_URL}/v1`, apiKey: process.env.GATEWAY_TEST_KEY });

test("generateText", async () => {
  const result = await generateText({ model: openai("mock:vercel"), prompt: "Hello from vercel", maxRetries: 0 });
  assert.match(result.text, /Hello from vercel/);
  assert.equal(result.finishReason, "stop");
  assert.ok(result.usage.inputTokens > 0 && result.usage.outputTokens > 0);
  assert.match(result.response.id, /^resp_/);
});

test("streamText", async () => {
  const result = streamText({ model: openai("mock:vercel"), prompt: "Hello from vercel", maxRetries: 0 });
  let text = "";
  for await (const piece of result.textStream) text += piece;
  assert.match(text, /Hello from vercel/);
  assert.equal(await result.finishReason, "stop");
});

test("a tool call, executed, then the answer (two steps)", { skip: !stored && "no response store" }, async () => {
  let called = 0;
  const result = await generateText({
    model: openai("mock:tools"),
    prompt: "Weather in Paris?",
    maxRetries: 0,
    stopWhen: stepCountIs(2),
    tools: {
      get_weather: tool({
        description: "The weather in a city.",
        inputSchema: jsonSchema({ type: "object", properties: { city: { type: "string" } } }),
        execute: async () => {
          called += 1;
          return { temp: 21 };
        },
      }),
    },
  });
  assert.equal(called, 2);
  assert.equal(result.steps.length, 2);
  assert.equal(result.steps[0].toolCalls[0].toolName, "get_weather");
});
