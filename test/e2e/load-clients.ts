// The client side of load.test.ts, run as its own process so that the clients do not share the
// server's event loop (where each decode step blocks for its whole duration): CLIENTS clients
// streaming chat completions back to back, one client that keeps disconnecting mid-stream, four
// loops of malformed requests, and SLOW_READERS clients that stop reading until the server has
// paused a stream for want of a reader, then read slowly, for a fixed time. One seed in CONSTRAINED_EVERY
// seed asks for structured output (response_format json_schema): its answer must parse and
// validate. Prompts repeat across seeds, so most start after a cached prefix. Checks every
// stream's shape and prints one JSON report on stdout.
//
//   node --import tsx test/e2e/load-clients.ts URL CLIENTS DURATION_MS MAX_TOKENS

import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseSse, post } from './http.ts';
import { assertValidJson } from '../helpers/ajv.ts';

export interface StreamRecord {
  seed: number;
  text: string;
  finish: string;
  completionTokens: number;
  /** usage.prompt_tokens_details.cached_tokens */
  cachedTokens: number;
  constrained: boolean;
}

export interface LoadReport {
  records: StreamRecord[];
  /** The slow readers' streams. */
  slow: StreamRecord[];
  malformed: number;
  disconnects: number;
  elapsedS: number;
  failures: string[];
}

export const SLOW_READERS = 2;

/** Seeds whose prompt number (seed % 97) leaves 3 divided by this ask for structured output. */
export const CONSTRAINED_EVERY = 5;
const isConstrained = (seed: number) => (seed % 97) % CONSTRAINED_EVERY === 3;
/** Their schema: bounded, so even the near-random test model closes it within CONSTRAINED_TOKENS. */
export const LOAD_SCHEMA = {
  type: 'object',
  properties: { ok: { type: 'boolean' }, n: { type: 'integer', minimum: 0, maximum: 9 } },
  required: ['ok', 'n'],
  additionalProperties: false,
};
const CONSTRAINED_TOKENS = 32;

/**
 * A name the load test's server also answers to, 2 MiB long. Every chunk carries the name the
 * client used, so a slow reader's stream fills the socket's buffers (MBs on loopback) in a few
 * tokens of the tiny test model.
 */
export const SLOW_ALIAS = `dsv3-test-slow-${'s'.repeat(2 * 2 ** 20)}`;

/** The request body for a seed (streamed or not); the rerun uses the same one. */
export function loadBody(seed: number, stream: boolean, maxTokens: number) {
  const constrained = isConstrained(seed);
  return {
    messages: [{ role: 'user', content: `Client ${seed % 97} says hello.` }],
    max_tokens: constrained ? CONSTRAINED_TOKENS : maxTokens,
    ...(constrained ? { response_format: { type: 'json_schema', json_schema: { name: 'load', schema: LOAD_SCHEMA, strict: true } } } : {}),
    temperature: 1,
    seed,
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  };
}

// Reads one stream and checks everything about its shape; returns what it said.
async function streamOnce(url: string, seed: number, maxTokens: number): Promise<StreamRecord> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(loadBody(seed, true, maxTokens)),
  });
  return checkStream(res.status, await res.text(), seed, maxTokens);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// A client that reads nothing until /health reports a paused stream (the server stopped
// decoding one for want of a reader; at most 20 s), then reads at about 4 MB/s.
async function slowStream(url: string, seed: number, maxTokens: number): Promise<StreamRecord> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...loadBody(seed, true, maxTokens), model: SLOW_ALIAS }),
  });
  for (const t0 = Date.now(); Date.now() - t0 < 20_000; await sleep(50)) {
    const h = (await (await fetch(`${url}/health`)).json()) as { paused: number };
    if (h.paused > 0) break;
  }
  const reader = res.body!.getReader();
  const chunks: Uint8Array[] = [];
  for (let c = await reader.read(); !c.done; c = await reader.read()) {
    chunks.push(c.value);
    await sleep(c.value.byteLength / 4000);
  }
  return checkStream(res.status, Buffer.concat(chunks).toString('utf8'), seed, maxTokens, SLOW_ALIAS);
}

function checkStream(status: number, raw: string, seed: number, maxTokens: number, model?: string): StreamRecord {
  const constrained = isConstrained(seed);
  if (constrained) maxTokens = CONSTRAINED_TOKENS;
  const fail = (what: string) => new Error(`seed ${seed}: ${what}: ${raw.slice(0, 300)}`);
  if (status !== 200) throw fail(`status ${status}`);
  const { events, done } = parseSse(raw);
  if (!done) throw fail('no [DONE]');
  if (!events.every((e) => e.id === events[0].id && e.object === 'chat.completion.chunk')) throw fail('mixed chunks');
  if (model !== undefined && !events.every((e) => e.model === model)) throw fail('a chunk with the wrong model name');
  if (events[0].choices[0].delta.role !== 'assistant') throw fail('no role chunk first');
  const last = events.at(-1);
  const fin = events.at(-2)?.choices[0]?.finish_reason;
  if (last.choices.length !== 0 || !last.usage) throw fail('no usage chunk last');
  if (fin !== 'length' && fin !== 'stop') throw fail(`finish_reason ${fin}`);
  if ((fin === 'length') !== (last.usage.completion_tokens === maxTokens)) throw fail('finish and usage disagree');
  const text = events.slice(0, -1).map((e) => e.choices[0].delta.content ?? '').join('');
  if (constrained) {
    if (fin !== 'stop') throw fail('structured output not closed within max_tokens');
    try {
      assertValidJson(LOAD_SCHEMA, text);
    } catch (e) {
      throw fail(`structured output: ${(e as Error).message}`);
    }
  }
  const cachedTokens = last.usage.prompt_tokens_details?.cached_tokens;
  if (!Number.isInteger(cachedTokens)) throw fail('no usage.prompt_tokens_details.cached_tokens');
  return { seed, text, finish: fin, completionTokens: last.usage.completion_tokens, cachedTokens, constrained };
}

// A request whose body never arrives in full: the client hangs up mid-send.
function cutOff(url: string): Promise<number> {
  const { hostname, port } = new URL(url);
  return new Promise((done) => {
    const s = connect(Number(port), hostname, () => {
      s.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        'Content-Length: 500\r\n\r\n{"messages": [{"role": "us');
      setTimeout(() => s.destroy(), 5);
    });
    s.on('close', () => done(0));
    s.on('error', () => done(0));
  });
}

const status = (p: Promise<{ status: number; json: any }>) =>
  p.then((r) => (r.json?.error?.message ? r.status : -r.status)); // negative: not OpenAI's error shape

// Bad requests of every kind, each with the status it must get (0: the client hangs up).
const MALFORMED: [string, (url: string) => Promise<number>, number][] = [
  ['bad JSON', (u) => status(post(`${u}/v1/chat/completions`, '{"messages": [')), 400],
  ['messages not a list', (u) => status(post(`${u}/v1/chat/completions`, { messages: 'x' })), 400],
  ['n too big', (u) => status(post(`${u}/v1/chat/completions`, { messages: [{ role: 'user', content: 'x' }], n: 99 })), 400],
  ['negative token id', (u) => status(post(`${u}/v1/completions`, { prompt: [1, -5] })), 400],
  ['prompt over the context', (u) => status(post(`${u}/v1/completions`, { prompt: 'word '.repeat(700) })), 400],
  ['empty messages', (u) => status(post(`${u}/v1/chat/completions`, { messages: [] })), 400],
  ['unknown model', (u) => status(post(`${u}/v1/chat/completions`, { model: 'nope', messages: [{ role: 'user', content: 'x' }] })), 404],
  ['unknown route', (u) => status(post(`${u}/v2/whatever`, {})), 404],
  ['body cut off', cutOff, 0],
];

export async function runLoad(url: string, clients: number, durationMs: number, maxTokens: number): Promise<LoadReport> {
  const t0 = Date.now();
  const end = t0 + durationMs;
  const records: StreamRecord[] = [];
  const failures: string[] = [];
  const guard = (p: Promise<void>) => p.catch((e) => void failures.push(String((e as Error).message ?? e)));
  const streams = Array.from({ length: clients }, (_, i) => guard((async () => {
    for (let j = 0; Date.now() < end; j++) records.push(await streamOnce(url, 1000 * (i + 1) + j, maxTokens));
  })()));
  let malformed = 0;
  const bad = Array.from({ length: 4 }, (_, loop) => guard((async () => {
    for (let k = loop; Date.now() < end; k++) {
      const [name, send, want] = MALFORMED[k % MALFORMED.length];
      const got = await send(url);
      if (got !== want) failures.push(`${name}: status ${got}, expected ${want}`);
      malformed++;
    }
  })()));
  let disconnects = 0;
  const leaver = guard((async () => {
    while (Date.now() < end) {
      const ctl = new AbortController();
      const res = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        signal: ctl.signal,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...loadBody(7, true, maxTokens), max_tokens: 200 }),
      });
      const reader = res.body!.getReader();
      await reader.read();
      await reader.read();
      ctl.abort();
      disconnects++;
    }
  })());
  const slow: StreamRecord[] = [];
  // One stream each (a slow stream takes several seconds: more would outlast the others).
  const slowReaders = Array.from({ length: SLOW_READERS }, (_, i) => guard((async () => {
    slow.push(await slowStream(url, 500 + i, maxTokens));
  })()));
  await Promise.all([...streams, ...bad, leaver, ...slowReaders]);
  return { records, slow, malformed, disconnects, elapsedS: (Date.now() - t0) / 1e3, failures };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [url, clients, duration, maxTokens] = process.argv.slice(2);
  const report = await runLoad(url, Number(clients), Number(duration), Number(maxTokens));
  process.stdout.write(JSON.stringify(report) + '\n');
}
