// The OpenAI-compatible server end to end: the real app on 127.0.0.1, a random tiny model with
// the real DeepSeek-V3 tokenizer, driven by the official `openai` client (and by fetch where a
// client would refuse to send what we test: malformed JSON, wrong types, no API key).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { renderChat, type ChatMessage } from '../../src/text/chat-template.ts';
import { toolsSystemPrompt } from '../../src/server/routes/chat.ts';
import type { ToolDef } from '../../src/server/request.ts';
import { MODEL_NAME, loadTextModel, parseSse, post, startServer, waitFor, type TestServer } from './helpers.ts';

const m = loadTextModel();
const tok = m.tokenizer;
let srv: TestServer;
let client: OpenAI;

const USER = [{ role: 'user' as const, content: 'Tell me about the jury.' }];
const rendered = (messages: ChatMessage[]) =>
  renderChat(tok.chatTemplate!, messages, { addGenerationPrompt: true, bosToken: tok.bosToken, eosToken: tok.eosToken });

before(async () => {
  srv = await startServer(m, { maxBatch: 8 });
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(() => srv.close());

describe('chat completions', () => {
  it('answers with content, finish_reason and usage that match the tokenizer', async () => {
    const r = await client.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 6, temperature: 0 });
    assert.equal(r.object, 'chat.completion');
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.model, MODEL_NAME);
    assert.equal(r.choices.length, 1);
    const c = r.choices[0];
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(c.message.content!.length > 0);
    assert.equal(r.usage!.prompt_tokens, tok.encode(rendered(USER)).length);
    assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 6);
    assert.equal(c.finish_reason, r.usage!.completion_tokens === 6 ? 'length' : 'stop');
    assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
  });

  it('streams chunks that add up to the same text as the whole answer, then usage and [DONE]', async () => {
    const params = { model: MODEL_NAME, messages: USER, max_tokens: 8, seed: 42, temperature: 1 };
    const whole = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    for (const ch of chunks) {
      assert.equal(ch.object, 'chat.completion.chunk');
      assert.equal(ch.id, chunks[0].id);
      text += ch.choices[0]?.delta.content ?? '';
    }
    const last = chunks.at(-1)!;
    const fin = chunks.at(-2)!;
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, whole.usage);
    assert.equal(fin.choices[0].finish_reason, whole.choices[0].finish_reason);
    assert.equal(text, whole.choices[0].message.content);
    // The raw stream ends with [DONE] (the client hides it).
    const raw = await fetch(`${srv.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...params, stream: true }),
    });
    assert.match(raw.headers.get('content-type')!, /^text\/event-stream/);
    const { events, done } = parseSse(await raw.text());
    assert.ok(done);
    assert.equal(events.map((e) => e.choices[0].delta.content ?? '').join(''), text);
  });

  it('reproduces a seeded answer and varies across seeds', async () => {
    const ask = (seed: number) =>
      client.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 8, seed, temperature: 1 });
    const [a, b, c] = await Promise.all([ask(7), ask(7), ask(8)]);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
  });

  it('cuts at a stop string', async () => {
    const free = await client.chat.completions.create({ messages: USER, model: MODEL_NAME, max_tokens: 12, temperature: 0 });
    const text = free.choices[0].message.content!;
    const stop = text.slice(4, 7);
    const cut = await client.chat.completions.create({ messages: USER, model: MODEL_NAME, max_tokens: 12, temperature: 0, stop: [stop, 'never there'] });
    assert.equal(cut.choices[0].message.content, text.slice(0, text.indexOf(stop)));
    assert.equal(cut.choices[0].finish_reason, 'stop');
    const one = await client.chat.completions.create({ messages: USER, model: MODEL_NAME, max_tokens: 12, temperature: 0, stop });
    assert.equal(one.choices[0].message.content, cut.choices[0].message.content);
  });

  it('returns n choices, each its own sequence, in one response and in one stream', async () => {
    const r = await client.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 5, n: 2, seed: 3 });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
    assert.notEqual(r.choices[0].message.content, r.choices[1].message.content);
    assert.equal(r.usage!.prompt_tokens, tok.encode(rendered(USER)).length);
    assert.equal(r.usage!.completion_tokens, 10);
    const stream = await client.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 5, n: 2, seed: 3, stream: true });
    const texts = ['', ''];
    const finished = [false, false];
    for await (const ch of stream) {
      for (const c of ch.choices) {
        texts[c.index] += c.delta.content ?? '';
        if (c.finish_reason) finished[c.index] = true;
      }
    }
    assert.deepEqual(texts, r.choices.map((c) => c.message.content));
    assert.deepEqual(finished, [true, true]);
  });

  it('reports logprobs with sorted alternatives, whole and streamed', async () => {
    const r = await client.chat.completions.create({
      model: MODEL_NAME, messages: USER, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3,
    });
    const lps = r.choices[0].logprobs!.content!;
    assert.equal(lps.length, r.usage!.completion_tokens);
    for (const lp of lps) {
      assert.ok(lp.logprob <= 0);
      assert.equal(lp.top_logprobs.length, 3);
      assert.equal(lp.top_logprobs[0].token, lp.token, 'greedy takes the most likely token');
      assert.ok(lp.top_logprobs[0].logprob >= lp.top_logprobs[1].logprob);
      assert.ok(Array.isArray(lp.bytes) && lp.bytes.length > 0);
    }
    assert.equal(Buffer.from(lps.flatMap((lp) => lp.bytes!)).toString('utf8'), r.choices[0].message.content);
    const stream = await client.chat.completions.create({
      model: MODEL_NAME, messages: USER, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3, stream: true,
    });
    const streamed = [];
    for await (const ch of stream) streamed.push(...(ch.choices[0]?.logprobs?.content ?? []));
    assert.deepEqual(streamed, lps);
  });

  it('shows tools to the model and takes tool results through the chat template', async () => {
    const tools: ToolDef[] = [{
      type: 'function',
      function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
    }];
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ type: 'function', id: 'call_1', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', content: '{"temp": 21}', tool_call_id: 'call_1' },
    ];
    const r = await client.chat.completions.create({
      model: MODEL_NAME, messages: messages as OpenAI.ChatCompletionMessageParam[], tools, max_tokens: 3, temperature: 0,
    });
    const withTools = rendered([...messages, { role: 'system', content: toolsSystemPrompt(tools) }]);
    assert.ok(withTools.includes('<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{"temp": 21}'));
    assert.equal(r.usage!.prompt_tokens, tok.encode(withTools).length);
    assert.ok(['stop', 'length', 'tool_calls'].includes(r.choices[0].finish_reason));
  });
});

describe('completions, models, health', () => {
  it('completes a text prompt (with BOS) and a prompt of token ids, whole and streamed', async () => {
    const prompt = 'The jury said';
    const r = await client.completions.create({ model: MODEL_NAME, prompt, max_tokens: 5, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.usage!.prompt_tokens, tok.encode(prompt, { addSpecialTokens: true }).length);
    const ids = tok.encode(prompt, { addSpecialTokens: true });
    const byIds = await client.completions.create({ model: MODEL_NAME, prompt: ids, max_tokens: 5, temperature: 0 });
    assert.equal(byIds.choices[0].text, r.choices[0].text);
    const stream = await client.completions.create({ model: MODEL_NAME, prompt, max_tokens: 5, temperature: 0, stream: true });
    let text = '';
    let finish = null;
    for await (const ch of stream) {
      text += ch.choices[0].text;
      finish = ch.choices[0].finish_reason ?? finish;
    }
    assert.equal(text, r.choices[0].text);
    assert.equal(finish, r.choices[0].finish_reason);
    const lp = await client.completions.create({ model: MODEL_NAME, prompt, max_tokens: 3, temperature: 0, logprobs: 2 });
    assert.equal(lp.choices[0].logprobs!.tokens!.length, lp.usage!.completion_tokens);
    assert.equal(Object.keys(lp.choices[0].logprobs!.top_logprobs![0]).length, 2);
  });

  it('lists the model and reports health', async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((x) => x.id), [MODEL_NAME]);
    const health = await (await fetch(`${srv.url}/health`)).json();
    assert.deepEqual(health, { status: 'ok', model: MODEL_NAME, active: 0, queued: 0, paused: 0 });
  });
});

describe('errors', () => {
  const chat = (body: unknown, headers?: Record<string, string>) => post(`${srv.url}/v1/chat/completions`, body, headers);
  const shape = (r: { json: any }, type: string, code: string | null, param: string | null = null) => {
    assert.deepEqual(Object.keys(r.json.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(r.json.error.type, type);
    assert.equal(r.json.error.code, code);
    assert.equal(r.json.error.param, param);
    assert.ok(r.json.error.message.length > 0);
  };

  it('answers invalid JSON and non-object bodies with 400', async () => {
    for (const body of ['{"messages": [', 'not json', '[1, 2]', '']) {
      const r = await chat(body);
      assert.equal(r.status, 400, body);
      shape(r, 'invalid_request_error', 'invalid_json');
    }
  });

  it('names the field of the wrong type or range', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ messages: USER, temperature: 'hot' }, 'temperature'],
      [{ messages: USER, temperature: 3 }, 'temperature'],
      [{ messages: USER, max_tokens: 1.5 }, 'max_tokens'],
      [{ messages: USER, n: 0 }, 'n'],
      [{ messages: USER, stream: 'yes' }, 'stream'],
      [{ messages: USER, stop: [1] }, 'stop'],
      [{ messages: USER, top_p: 0 }, 'top_p'],
      [{ messages: USER, seed: 'x' }, 'seed'],
      [{ messages: 'hi' }, 'messages'],
      [{}, 'messages'],
      [{ messages: [{ role: 'wizard', content: 'x' }] }, 'messages'],
      [{ messages: [{ role: 'user', content: 5 }] }, 'messages'],
      [{ messages: USER, tools: [{ type: 'function' }] }, 'tools'],
      [{ messages: USER, top_logprobs: 2 }, 'top_logprobs'],
    ];
    for (const [body, param] of cases) {
      const r = await chat(body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.json.error.param, param, JSON.stringify(body));
      assert.equal(r.json.error.type, 'invalid_request_error');
    }
    const c = await post(`${srv.url}/v1/completions`, { prompt: [1, 2, 999999] });
    assert.equal(c.status, 400);
    assert.equal(c.json.error.param, 'prompt');
  });

  it('refuses a prompt longer than the context with context_length_exceeded', async () => {
    const long = [{ role: 'user', content: 'word '.repeat(600) }];
    const r = await chat({ messages: long });
    assert.equal(r.status, 400);
    shape(r, 'invalid_request_error', 'context_length_exceeded', 'messages');
    const r2 = await chat({ messages: USER, max_tokens: 10_000 });
    assert.equal(r2.status, 400);
    assert.equal(r2.json.error.code, 'context_length_exceeded');
    await assert.rejects(
      client.completions.create({ model: MODEL_NAME, prompt: 'word '.repeat(600) }),
      (e: any) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded',
    );
  });

  it('answers an unknown model and an unknown route with 404', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'gpt-4o', messages: USER }),
      (e: any) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found',
    );
    const r = await post(`${srv.url}/v1/embeddings`, { input: 'x' });
    assert.equal(r.status, 404);
    shape(r, 'not_found_error', 'unknown_url');
    const g = await fetch(`${srv.url}/v1/chat/completions`);
    assert.equal(g.status, 405);
    const big = await chat(JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(5 * 1024 * 1024) }] }));
    assert.equal(big.status, 413);
    shape(big, 'invalid_request_error', 'body_too_large');
  });

  it('requires the API key when one is set', async () => {
    const locked = await startServer(m, { apiKey: 'sesame' });
    try {
      const body = { messages: USER, max_tokens: 2 };
      const none = await post(`${locked.url}/v1/chat/completions`, body);
      assert.equal(none.status, 401);
      shape(none, 'authentication_error', 'invalid_api_key');
      const wrong = await post(`${locked.url}/v1/chat/completions`, body, { authorization: 'Bearer open' });
      assert.equal(wrong.status, 401);
      await assert.rejects(new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: 'nope', maxRetries: 0 }).models.list(),
        (e: any) => e instanceof OpenAI.AuthenticationError);
      const ok = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: 'sesame', maxRetries: 0 });
      const r = await ok.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 2 });
      assert.ok(r.usage!.completion_tokens > 0);
      assert.equal((await fetch(`${locked.url}/health`)).status, 200, '/health stays open');
    } finally {
      await locked.close();
    }
  });

  it('answers 429 when the queue is full, refuses a request whole, and serves again once it drains', async () => {
    const busy = await startServer(m, { maxBatch: 1, maxQueue: 2 });
    try {
      const ctl = new AbortController();
      const first = await fetch(`${busy.url}/v1/chat/completions`, {
        method: 'POST', signal: ctl.signal, headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: USER, max_tokens: 400, stream: true }),
      });
      await first.body!.getReader().read();
      await waitFor(() => busy.scheduler.load.active === 1, 5000, 'the first request to run');
      const second = post(`${busy.url}/v1/chat/completions`, { messages: USER, max_tokens: 1 });
      await waitFor(() => busy.scheduler.load.queued === 1, 5000, 'the second request to queue');
      // Two choices, one free place: the first choice is queued, the second refused, and the
      // first taken back out.
      const pair = await post(`${busy.url}/v1/completions`, { prompt: 'x', n: 2, max_tokens: 1 });
      assert.equal(pair.status, 429);
      assert.equal(busy.scheduler.load.queued, 1, 'the refused request leaves nothing queued');
      const third = post(`${busy.url}/v1/chat/completions`, { messages: USER, max_tokens: 1 });
      await waitFor(() => busy.scheduler.load.queued === 2, 5000, 'the third request to queue');
      const fourth = await post(`${busy.url}/v1/chat/completions`, { messages: USER, max_tokens: 1 });
      assert.equal(fourth.status, 429);
      assert.equal(fourth.headers.get('retry-after'), '1');
      shape(fourth, 'rate_limit_error', 'queue_full');
      ctl.abort();
      assert.equal((await second).status, 200);
      assert.equal((await third).status, 200);
      await waitFor(() => busy.scheduler.load.active === 0, 5000, 'the server to drain');
    } finally {
      await busy.close();
    }
  });

  it('survives all of the above', async () => {
    const r = await client.chat.completions.create({ model: MODEL_NAME, messages: USER, max_tokens: 2 });
    assert.ok(r.choices[0].message.content !== undefined);
    assert.deepEqual(srv.scheduler.load, { active: 0, queued: 0 });
  });
});

describe('client disconnects', () => {
  it('cancels a stream the client aborts and frees its sequence at once', async () => {
    const stream = await client.chat.completions.create({
      model: MODEL_NAME, messages: USER, max_tokens: 400, stream: true,
    });
    let chunks = 0;
    for await (const _ of stream) {
      if (++chunks === 3) break; // breaking out of the loop aborts the request
    }
    assert.equal(srv.scheduler.load.active, 1, 'still running when the client leaves');
    const t0 = Date.now();
    await waitFor(() => srv.scheduler.load.active === 0, 2000, 'the sequence to be cancelled');
    assert.ok(Date.now() - t0 < 2000);
    assert.deepEqual(srv.scheduler.load, { active: 0, queued: 0 });
  });

  it('cancels a non-streaming request whose client goes away', async () => {
    const ctl = new AbortController();
    const req = fetch(`${srv.url}/v1/completions`, {
      method: 'POST', signal: ctl.signal, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'The jury', max_tokens: 400, n: 2 }),
    });
    await waitFor(() => srv.scheduler.load.active === 2, 5000, 'both choices to run');
    ctl.abort();
    await assert.rejects(req);
    await waitFor(() => srv.scheduler.load.active === 0, 2000, 'both choices to be cancelled');
  });
});
