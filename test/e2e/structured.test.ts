// Structured output end to end: response_format (json_schema, json_object) and forced tool calls
// (tool_choice "required" or a named function) on the real server, with a random tiny model that
// speaks DeepSeek-V3's 129k-token vocabulary (and once with the shipped default model). The
// model's choices are near-random, so every answer here is the grammar's doing; each is checked
// with ajv. Schemas bound their strings and integers so that a near-random model finishes within
// max_tokens (an unbounded string may run on until max_tokens, then finish_reason is "length").
// Also: the names the model answers to (--served-model-name).

import { basename } from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import { refKernels } from '../../src/kernels/ref/index.ts';
import { loadKernels } from '../../src/kernels/index.ts';
import { Tokenizer } from '../../src/text/tokenizer.ts';
import { DEFAULT_MODEL_DIR, textCheckpoint } from '../helpers/fixtures.ts';
import { assertValidJson, schemaErrors } from '../helpers/ajv.ts';
import { MODEL_NAME, loadTextModel, parseSse, post, serveProcess, startServer, type TestServer } from './helpers.ts';

const m = loadTextModel();
let srv: TestServer;
let client: OpenAI;
before(async () => {
  srv = await startServer(m, { maxBatch: 8, modelNames: ['alias-1', 'alias-2'] });
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(() => srv.close());

const USER = [{ role: 'user' as const, content: 'Describe a person as JSON.' }];
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 8 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    role: { enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 4 }, maxItems: 2 },
    active: { type: 'boolean' },
    manager: { anyOf: [{ type: 'null' }, { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: 99 } }, required: ['id'], additionalProperties: false }] },
  },
  required: ['name', 'age', 'role', 'tags', 'active', 'manager'],
  additionalProperties: false,
};
const asSchema = (schema: object, name = 'person') => ({ type: 'json_schema' as const, json_schema: { name, schema: schema as Record<string, unknown>, strict: true } });
const WEATHER = { type: 'object', properties: { city: { type: 'string', maxLength: 10 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false };
const SEARCH = { type: 'object', properties: { query: { type: 'string', maxLength: 8 }, limit: { type: 'integer', minimum: 1, maximum: 5 } }, required: ['query'], additionalProperties: false };
const TOOLS: OpenAI.ChatCompletionTool[] = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: WEATHER } },
  { type: 'function', function: { name: 'search', description: 'Search the web', parameters: SEARCH } },
];
const TOOL_SCHEMAS: Record<string, object> = { get_weather: WEATHER, search: SEARCH };

describe('response_format json_schema', () => {
  it('answers n choices that each validate, whole and streamed alike', async () => {
    const params = { model: MODEL_NAME, messages: USER, max_tokens: 150, seed: 5, temperature: 1, n: 2, response_format: asSchema(PERSON) };
    const whole = await client.chat.completions.create(params);
    assert.equal(whole.choices.length, 2);
    for (const c of whole.choices) {
      assert.equal(c.finish_reason, 'stop', c.message.content ?? '');
      assertValidJson(PERSON, c.message.content!);
    }
    assert.notEqual(whole.choices[0].message.content, whole.choices[1].message.content);
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    const texts = ['', ''];
    const finish: (string | null)[] = [null, null];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const ch of stream) {
      for (const c of ch.choices) {
        texts[c.index] += c.delta.content ?? '';
        finish[c.index] = c.finish_reason ?? finish[c.index];
      }
      usage = ch.usage ?? usage;
    }
    assert.deepEqual(texts, whole.choices.map((c) => c.message.content));
    assert.deepEqual(finish, ['stop', 'stop']);
    assert.deepEqual(usage?.completion_tokens, whole.usage?.completion_tokens);
  });

  it('decodes constrained and free requests in the same batch, the free ones as if alone', async () => {
    const free = (seed: number) => ({ model: MODEL_NAME, messages: USER, max_tokens: 12, seed, temperature: 1 });
    const alone = await Promise.all([1, 2].map((seed) => client.chat.completions.create(free(seed))));
    const steps0 = srv.scheduler.steps;
    const rows0 = srv.scheduler.stepRows;
    const schemas = [PERSON, { type: 'array', items: { type: 'integer', minimum: -9, maximum: 9 }, minItems: 1, maxItems: 4 }, { enum: ['yes', 'no', 42] }];
    const [constrained, mixed] = await Promise.all([
      Promise.all(schemas.map((schema, i) =>
        client.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 150, seed: 10 + i, response_format: asSchema(schema, `s${i}`) }))),
      Promise.all([1, 2].map((seed) => client.chat.completions.create(free(seed)))),
    ]);
    constrained.forEach((r, i) => {
      assert.equal(r.choices[0].finish_reason, 'stop');
      assertValidJson(schemas[i], r.choices[0].message.content!);
    });
    assert.deepEqual(mixed.map((r) => r.choices[0].message.content), alone.map((r) => r.choices[0].message.content));
    // They shared forward passes.
    assert.ok(srv.scheduler.stepRows - rows0 > srv.scheduler.steps - steps0);
  });

  it('stops at max_tokens with finish_reason "length" when the JSON is not done', async () => {
    const r = await client.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 3, seed: 1, response_format: asSchema(PERSON) });
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage!.completion_tokens, 3);
    assert.ok(r.choices[0].message.content!.startsWith('{"'));
  });

  it('writes a JSON object for json_object (and only JSON, when it finishes)', async () => {
    const r = await client.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 40, seed: 3, n: 3, response_format: { type: 'json_object' } });
    for (const c of r.choices) {
      assert.ok(c.message.content!.startsWith('{'), c.message.content!);
      if (c.finish_reason === 'stop') assertValidJson({ type: 'object' }, c.message.content!);
      else assert.equal(c.finish_reason, 'length');
    }
  });

  it('constrains /v1/completions too, whole and streamed', async () => {
    const schema = { type: 'object', properties: { ok: { type: 'boolean' }, n: { type: 'integer', minimum: 0, maximum: 999 } }, required: ['ok', 'n'] };
    const body = { model: MODEL_NAME, prompt: 'JSON:', max_tokens: 30, seed: 4, response_format: asSchema(schema, 'x') };
    const whole = await post(`${srv.url}/v1/completions`, body);
    assert.equal(whole.status, 200, whole.text);
    assert.equal(whole.json.choices[0].finish_reason, 'stop');
    assertValidJson(schema, whole.json.choices[0].text);
    const raw = await fetch(`${srv.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }) });
    const { events, done } = parseSse(await raw.text());
    assert.ok(done);
    assert.equal(events.map((e) => e.choices[0].text).join(''), whole.json.choices[0].text);
  });

  it('gives the same greedy JSON with MTP speculation (constrained sequences are not drafted)', async () => {
    const dir = textCheckpoint({ num_nextn_predict_layers: 1 }, { seed: 4 });
    const mtp = { model: DeepseekV3.load(dir, { kernels: refKernels }), tokenizer: Tokenizer.fromDir(dir) };
    const [plain, spec] = await Promise.all([startServer(mtp), startServer(mtp, { speculative: { draftTokens: 2 } })]);
    try {
      const body = { model: MODEL_NAME, messages: USER, max_tokens: 150, temperature: 0, response_format: asSchema(PERSON) };
      const a = await post(`${plain.url}/v1/chat/completions`, body);
      const b = await post(`${spec.url}/v1/chat/completions`, body);
      assert.equal(a.json.choices[0].finish_reason, 'stop');
      assertValidJson(PERSON, a.json.choices[0].message.content);
      assert.equal(b.json.choices[0].message.content, a.json.choices[0].message.content);
    } finally {
      await Promise.all([plain.close(), spec.close()]);
    }
  });

  it('keeps the shipped default model to a schema', async () => {
    const d = { model: DeepseekV3.load(DEFAULT_MODEL_DIR, { kernels: loadKernels() }), tokenizer: Tokenizer.fromDir(DEFAULT_MODEL_DIR) };
    const s = await startServer(d);
    try {
      for (const seed of [1, 2]) {
        const r = await post(`${s.url}/v1/chat/completions`, { model: MODEL_NAME, messages: USER, max_tokens: 150, seed, response_format: asSchema(PERSON) });
        assert.equal(r.json.choices[0].finish_reason, 'stop', r.text);
        assertValidJson(PERSON, r.json.choices[0].message.content);
      }
    } finally {
      await s.close();
    }
  });
});

describe('tool_choice', () => {
  const calls = (msg: OpenAI.ChatCompletionMessage) => {
    assert.ok(msg.tool_calls?.length, JSON.stringify(msg));
    return msg.tool_calls!.map((c) => {
      assert.equal(c.type, 'function');
      const fn = (c as OpenAI.ChatCompletionMessageFunctionToolCall).function;
      assert.match(c.id, /^call_/);
      assert.equal(schemaErrors(TOOL_SCHEMAS[fn.name], JSON.parse(fn.arguments)), null, fn.arguments);
      return fn.name;
    });
  };

  it('"required" returns valid calls as tool_calls, whole and streamed alike', async () => {
    const params = { model: MODEL_NAME, messages: [{ role: 'user' as const, content: 'Weather in Paris?' }], tools: TOOLS, tool_choice: 'required' as const, max_tokens: 150, seed: 2 };
    const whole = await client.chat.completions.create(params);
    const c = whole.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.content, null);
    for (const name of calls(c.message)) assert.ok(name in TOOL_SCHEMAS);
    // The stream's deltas fold into the same calls.
    const stream = await client.chat.completions.create({ ...params, stream: true });
    const folded: { id?: string; name: string; arguments: string }[] = [];
    let finish = null;
    for await (const ch of stream) {
      for (const tc of ch.choices[0]?.delta.tool_calls ?? []) {
        const f = (folded[tc.index] ??= { name: '', arguments: '' });
        if (tc.id) f.id = tc.id;
        f.name += tc.function?.name ?? '';
        f.arguments += tc.function?.arguments ?? '';
      }
      finish = ch.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(finish, 'tool_calls');
    const want = c.message.tool_calls!.map((t) => (t as OpenAI.ChatCompletionMessageFunctionToolCall).function);
    assert.deepEqual(folded.map((f) => ({ name: f.name, arguments: f.arguments })), want.map((f) => ({ name: f.name, arguments: f.arguments })));
  });

  it('a named function, or parallel_tool_calls false, gives exactly one call', async () => {
    for (const seed of [1, 2]) {
      const named = await client.chat.completions.create({
        model: MODEL_NAME, messages: USER, tools: TOOLS, max_tokens: 100, seed,
        tool_choice: { type: 'function', function: { name: 'search' } },
      });
      assert.deepEqual(calls(named.choices[0].message), ['search']);
      const single = await client.chat.completions.create({
        model: MODEL_NAME, messages: USER, tools: TOOLS, max_tokens: 100, seed, tool_choice: 'required', parallel_tool_calls: false,
      });
      assert.equal(calls(single.choices[0].message).length, 1);
    }
  });
});

describe('structured output errors', () => {
  const chat = (body: Record<string, unknown>) => post(`${srv.url}/v1/chat/completions`, { messages: USER, ...body });
  it('names the schema features it cannot enforce, and other mistakes, in a 400', async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ response_format: asSchema({ type: 'object', properties: { a: { type: 'string', not: { const: 'x' } } } }) }, 'response_format', /#\/properties\/a: keyword "not" is not supported/],
      [{ response_format: asSchema({ type: 'number', minimum: 0, multipleOf: 2 }) }, 'response_format', /"minimum" on a number.*; #: keyword "multipleOf"|keyword "multipleOf".*"minimum" on a number/],
      [{ response_format: asSchema({ type: 'string', format: 'uri' }) }, 'response_format', /format "uri" is not supported/],
      [{ response_format: { type: 'json_schema', json_schema: { schema: {} } } }, 'response_format', /json_schema.name/],
      [{ response_format: { type: 'yaml' } }, 'response_format', /"text", "json_object" or "json_schema"/],
      [{ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice', /"nope" is not among the tools/],
      [{ tool_choice: 'required' }, 'tool_choice', /needs tools/],
      [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { x: { type: 'array', uniqueItems: true } } } } }], tool_choice: 'required' }, 'tools', /function "f"'s parameters .*"uniqueItems"/],
      [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'string' } } }], tool_choice: 'required' }, 'tools', /"type": "object"/],
    ];
    for (const [body, param, re] of cases) {
      const r = await chat(body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.json.error.param, param);
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.match(r.json.error.message, re);
    }
    const c = await post(`${srv.url}/v1/completions`, { prompt: 'x', response_format: asSchema({ type: 'string', pattern: '.+' }) });
    assert.equal(c.status, 400);
    assert.match(c.json.error.message, /pattern ".\+"/);
    // tool_choice "auto" and "none" stay free, and the server still serves.
    const auto = await chat({ tools: TOOLS, tool_choice: 'auto', max_tokens: 2 });
    assert.equal(auto.status, 200);
  });
});

describe('served model names', () => {
  it('lists every name, answers to each under that name, and 404s an unknown one as OpenAI does', async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((x) => x.id), [MODEL_NAME, 'alias-1', 'alias-2']);
    const r = await client.chat.completions.create({ model: 'alias-2', messages: USER, max_tokens: 2 });
    assert.equal(r.model, 'alias-2');
    assert.equal((await client.models.retrieve('alias-1')).id, 'alias-1');
    const bad = await post(`${srv.url}/v1/chat/completions`, { model: 'gpt-4o', messages: USER });
    assert.equal(bad.status, 404);
    assert.deepEqual(bad.json.error, {
      message: bad.json.error.message, type: 'invalid_request_error', param: null, code: 'model_not_found',
    });
    assert.match(bad.json.error.message, /^The model `gpt-4o` does not exist or you do not have access to it\..*`alias-1`/);
    assert.equal((await fetch(`${srv.url}/v1/models/gpt-4o`)).status, 404);
  });

  it('dsv3 serve takes --served-model-name (repeatable), else the folder name and "default"', async () => {
    const dir = textCheckpoint();
    const names = async (flags: string[]) => {
      const { child, url } = await serveProcess(dir, flags);
      try {
        const list = await (await fetch(`${url}/v1/models`)).json() as { data: { id: string }[] };
        return list.data.map((x) => x.id);
      } finally {
        child.kill('SIGKILL');
      }
    };
    const [given, byDefault] = await Promise.all([
      names(['--served-model-name', 'deepseek-v3', '--served-model-name', 'my-model']),
      names([]),
    ]);
    assert.deepEqual(given, ['deepseek-v3', 'my-model']);
    assert.deepEqual(byDefault, [basename(dir), 'default']);
  });
});
