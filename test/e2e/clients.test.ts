// The server through the clients people use: the official `openai` SDK (chat.completions.parse
// with zodResponseFormat / zodFunction), the Vercel AI SDK (generateText, streamText,
// generateObject with @ai-sdk/openai-compatible) and LangChain (ChatOpenAI: invoke, stream,
// withStructuredOutput by JSON schema and by function calling). The model is a random tiny one
// with DeepSeek-V3's vocabulary, so each structured answer is the grammar's doing; every one is
// validated with ajv against the JSON Schema of its zod schema. The schemas bound their strings
// and integers so that a near-random model finishes within max_tokens.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { zodFunction, zodResponseFormat } from 'openai/helpers/zod';
import type { ParsedFunctionToolCall } from 'openai/resources/chat/completions';
import { z } from 'zod';
import { generateObject, generateText, streamText } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ChatOpenAI } from '@langchain/openai';
import { schemaErrors } from '../helpers/ajv.ts';
import { MODEL_NAME, loadTextModel, startServer, type TestServer } from './helpers.ts';

const m = loadTextModel();
let srv: TestServer;
before(async () => {
  srv = await startServer(m, { maxBatch: 8 });
});
after(() => srv.close());

const Person = z.object({
  name: z.string().max(8),
  age: z.number().int().min(0).max(120),
  role: z.enum(['admin', 'user', 'guest']),
  nickname: z.string().max(4).nullable(),
  tags: z.array(z.string().max(3)).max(2),
});
const Weather = z.object({ city: z.string().max(8), unit: z.enum(['celsius', 'fahrenheit']) });

/** Validates `value` against the JSON Schema of a zod schema (what each client sends). */
function assertValid(schema: z.ZodType, value: unknown): void {
  assert.equal(schemaErrors(z.toJSONSchema(schema), value), null, JSON.stringify(value));
}

const PROMPT = 'Describe a person.';

describe('openai SDK', () => {
  const client = () => new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });

  it('chat.completions.parse with zodResponseFormat gives a parsed, valid object', async () => {
    for (const seed of [1, 2]) {
      const r = await client().chat.completions.parse({
        model: MODEL_NAME, messages: [{ role: 'user', content: PROMPT }], max_tokens: 150, seed,
        response_format: zodResponseFormat(Person, 'person'),
      });
      const msg = r.choices[0].message;
      assert.equal(r.choices[0].finish_reason, 'stop');
      assert.ok(msg.parsed, msg.content ?? '');
      assertValid(Person, msg.parsed);
      assert.deepEqual(msg.parsed, JSON.parse(msg.content!));
    }
  });

  it('chat.completions.parse with a zodFunction tool and tool_choice gives parsed arguments', async () => {
    const r = await client().chat.completions.parse({
      // A near-random model may spell DeepSeek's tool-call markers out byte by byte (the grammar
      // admits the text however it is tokenized), so calls take more tokens than a real model's.
      model: MODEL_NAME, messages: [{ role: 'user', content: 'Weather in Paris?' }], max_tokens: 250, seed: 3,
      tools: [zodFunction({ name: 'get_weather', parameters: Weather })],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
    });
    const call = r.choices[0].message.tool_calls?.[0] as ParsedFunctionToolCall;
    assert.ok(call, JSON.stringify(r.choices[0]));
    assert.equal(call.function.name, 'get_weather');
    assertValid(Weather, call.function.parsed_arguments);
  });
});

describe('Vercel AI SDK (@ai-sdk/openai-compatible)', () => {
  const model = () => createOpenAICompatible({
    name: 'dsv3', baseURL: `${srv.url}/v1`, apiKey: 'unused', supportsStructuredOutputs: true, includeUsage: true,
  }).chatModel(MODEL_NAME);

  it('generateText and streamText: text, finish reason and usage', async () => {
    const g = await generateText({ model: model(), prompt: 'Tell me about the jury.', maxOutputTokens: 8, seed: 4, maxRetries: 0 });
    assert.ok(g.text.length > 0);
    assert.ok(['stop', 'length'].includes(g.finishReason));
    assert.ok(g.usage.outputTokens! >= 1 && g.usage.outputTokens! <= 8);
    const s = streamText({ model: model(), prompt: 'Tell me about the jury.', maxOutputTokens: 8, seed: 4, maxRetries: 0 });
    let text = '';
    for await (const t of s.textStream) text += t;
    assert.equal(text, g.text);
    assert.equal((await s.usage).outputTokens, g.usage.outputTokens);
  });

  it('generateObject gives a valid object', async () => {
    for (const seed of [5, 6]) {
      const r = await generateObject({ model: model(), schema: Person, prompt: PROMPT, maxOutputTokens: 150, seed, maxRetries: 0 });
      assert.equal(r.finishReason, 'stop');
      assertValid(Person, r.object);
    }
  });
});

describe('LangChain (ChatOpenAI)', () => {
  const chat = (seed: number) => new ChatOpenAI({
    model: MODEL_NAME, apiKey: 'unused', maxTokens: 150, maxRetries: 0,
    configuration: { baseURL: `${srv.url}/v1` }, modelKwargs: { seed },
  });

  it('invoke and stream', async () => {
    const short = new ChatOpenAI({
      model: MODEL_NAME, apiKey: 'unused', maxTokens: 8, maxRetries: 0, temperature: 0, configuration: { baseURL: `${srv.url}/v1` },
    });
    const r = await short.invoke('Tell me about the jury.');
    assert.equal(typeof r.content, 'string');
    assert.ok((r.content as string).length > 0);
    let text = '';
    for await (const ch of await short.stream('Tell me about the jury.')) text += ch.content as string;
    assert.equal(text, r.content);
  });

  for (const method of ['jsonSchema', 'functionCalling'] as const) {
    it(`withStructuredOutput (${method}) gives a valid object`, async () => {
      for (const seed of [7, 8]) {
        const structured = chat(seed).withStructuredOutput(Person, { name: 'person', method });
        const v = await structured.invoke(PROMPT);
        assertValid(Person, v);
      }
    });
  }
});
