// Slow and stalled streaming clients, end to end on real sockets: a client that stops reading
// gets its sequence paused (no decoding, no batch slot) once the socket's buffers are full, so
// the server holds a bounded amount for it while other streams run at their usual speed; when
// it reads again (slowly) its stream resumes and arrives whole; a client that reads nothing for
// the write timeout is disconnected, its sequence cancelled and freed, and that is logged.
//
// The stalled client is a raw TCP socket that sends its request and never reads. Node cannot
// shrink a socket's buffers, and on loopback the kernel takes a few MB (the server's send buffer
// grows to tcp_wmem's maximum, 4 MB by default, whatever the client's receive buffer) before
// the server's writes block. To fill that in a few tokens of a tiny model, the stalled requests
// name the model by a 256 KiB alias: every chunk carries the name the client used.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { Scheduler, type SeqRequest } from '../../src/engine/scheduler.ts';
import { createApp } from '../../src/server/app.ts';
import { SSE_BUFFER_BYTES } from '../../src/server/sse.ts';
import { MODEL_NAME, loadTextModel, parseSse, post, startServer, waitFor, type TestServer } from './helpers.ts';

const m = loadTextModel();
const USER = [{ role: 'user', content: 'Tell me about the jury.' }];
const ALIAS = `${MODEL_NAME}-${'x'.repeat(256 * 1024)}`;

/** Counts each submitted sequence's tokens, in order of submission. */
function countTokens(s: Scheduler): number[] {
  const counts: number[] = [];
  const submit = s.submit.bind(s);
  s.submit = (req: SeqRequest) => {
    const k = counts.push(0) - 1;
    const onToken = req.onToken;
    return submit({ ...req, onToken: (id, logits) => (counts[k]++, onToken?.(id, logits)) });
  };
  return counts;
}

interface RawClient {
  socket: Socket;
  /** Everything received so far. */
  data(): Buffer;
  closed: Promise<void>;
}

/** A raw HTTP/1.1 streaming request whose client reads nothing until told to. */
function stalledClient(url: string, body: unknown): RawClient {
  const { hostname, port } = new URL(url);
  const json = JSON.stringify(body);
  const chunks: Buffer[] = [];
  const socket = connect(Number(port), hostname, () => {
    socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: ${hostname}\r\nContent-Type: application/json\r\nConnection: close\r\n` +
      `Content-Length: ${Buffer.byteLength(json)}\r\n\r\n${json}`);
  });
  socket.pause(); // never read: the kernel's buffers fill, then the server's writes block
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('error', () => {}); // a reset connection: `closed` resolves all the same
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  return { socket, data: () => Buffer.concat(chunks), closed };
}

/** Reads the rest of the response slowly, at about `bytesPerMs` (1 ≈ 1 MB/s). */
async function readSlowly(c: RawClient, bytesPerMs: number): Promise<void> {
  c.socket.on('data', (d: Buffer) => {
    c.socket.pause();
    setTimeout(() => c.socket.resume(), d.length / bytesPerMs);
  });
  c.socket.resume();
  await c.closed;
}

/** Status and body of a raw response (chunked transfer coding); `complete`: the last chunk came. */
function parseResponse(raw: Buffer): { status: number; body: string; complete: boolean } {
  const head = raw.indexOf('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d+)/.exec(raw.toString('latin1', 0, head))?.[1]);
  assert.match(raw.toString('latin1', 0, head), /\r\ntransfer-encoding: chunked(\r\n|$)/i);
  const parts: Buffer[] = [];
  for (let i = head + 4; ;) {
    const eol = raw.indexOf('\r\n', i);
    if (eol < 0) break;
    const n = parseInt(raw.toString('latin1', i, eol), 16);
    if (n === 0) return { status, body: Buffer.concat(parts).toString('utf8'), complete: true };
    if (eol + 2 + n + 2 > raw.length) break;
    parts.push(raw.subarray(eol + 2, eol + 2 + n));
    i = eol + 2 + n + 2;
  }
  return { status, body: Buffer.concat(parts).toString('utf8'), complete: false };
}

/** A normal streamed request read at full speed: its time and token count. */
async function timedStream(url: string, maxTokens: number): Promise<{ ms: number; tokens: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'The jury said', max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  const { events, done } = parseSse(await res.text());
  assert.ok(done);
  return { ms: performance.now() - t0, tokens: events.at(-1).usage.completion_tokens };
}

const health = async (url: string) => (await fetch(`${url}/health`)).json() as Promise<Record<string, unknown>>;

describe('a client that stops reading', () => {
  let srv: TestServer;
  let counts: number[];
  before(async () => {
    // One batch slot: a paused sequence must give it up for the other client to run at all.
    srv = await startServer(m, { maxBatch: 1, writeTimeoutMs: 120_000, modelNames: [ALIAS] });
    counts = countTokens(srv.scheduler);
  });
  after(() => srv.close());

  it('is paused with its buffers full while others run at full speed, and gets its whole stream when it reads again', async () => {
    const alone = await timedStream(srv.url, 30);
    const MAX = 48;
    const body = {
      model: ALIAS, messages: USER, max_tokens: MAX, temperature: 1, seed: 5, stream: true,
      stream_options: { include_usage: true },
    };
    const client = stalledClient(srv.url, body);
    await waitFor(() => srv.scheduler.paused === 1, 60_000, 'the stalled stream to be paused');
    const k = counts.length - 1;
    const held = counts[k];
    assert.ok(held > 0 && held < MAX / 2, `paused after ${held} of ${MAX} tokens`);
    assert.deepEqual(await health(srv.url), { status: 'ok', model: MODEL_NAME, active: 1, queued: 0, paused: 1 });

    // Another client meanwhile: it takes the only batch slot (were the paused sequence holding
    // it, this request would wait for it) and runs at its usual speed; the stalled sequence
    // decodes nothing.
    const during = await timedStream(srv.url, 30);
    assert.equal(during.tokens, alone.tokens);
    assert.equal(counts[k], held, 'no token for the stalled stream while it does not read');
    console.log(`# stalled stream paused after ${held} tokens (${(held * ALIAS.length / 2 ** 20).toFixed(1)} MB of events); ` +
      `another 30-token stream: ${alone.ms.toFixed(0)} ms alone, ${during.ms.toFixed(0)} ms meanwhile`);
    assert.ok(during.ms < 3 * alone.ms + 1000, `${during.ms} ms meanwhile against ${alone.ms} ms alone`);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(counts[k], held);

    // It reads again, slowly: the stream resumes and arrives complete, as a non-streamed
    // request with the same seed answers.
    let pauses = 0;
    let was = 1;
    const watch = setInterval(() => {
      const now = srv.scheduler.paused;
      if (now > was) pauses++;
      was = now;
    }, 2);
    await readSlowly(client, 3000); // ~3 MB/s: slower than this stream is made, so it pauses again
    clearInterval(watch);
    console.log(`# read slowly: paused again ${pauses} times`);
    const res = parseResponse(client.data());
    assert.equal(res.status, 200);
    assert.ok(res.complete, 'the response ended properly');
    const { events, done } = parseSse(res.body);
    assert.ok(done);
    assert.ok(events.every((e) => e.model === ALIAS && !e.error));
    const usage = events.at(-1).usage;
    assert.equal(usage.completion_tokens, MAX);
    assert.equal(events.at(-2).choices[0].finish_reason, 'length');
    const whole = await post(`${srv.url}/v1/chat/completions`, { ...body, model: MODEL_NAME, stream: false });
    const text = events.slice(0, -1).map((e) => e.choices[0].delta.content ?? '').join('');
    assert.equal(text, whole.json.choices[0].message.content);
    assert.equal(counts[k], MAX);
    assert.deepEqual(await health(srv.url), { status: 'ok', model: MODEL_NAME, active: 0, queued: 0, paused: 0 });
  });
});

describe('the write timeout', () => {
  it('disconnects a client that reads nothing for --write-timeout-ms, cancels and frees its sequence, and logs it', async () => {
    const logs: string[] = [];
    const TIMEOUT = 1500;
    const srv = await startServer(m, { maxBatch: 2, writeTimeoutMs: TIMEOUT, modelNames: [ALIAS], log: (l) => logs.push(l) });
    const counts = countTokens(srv.scheduler);
    try {
      const t0 = performance.now();
      const client = stalledClient(srv.url, { model: ALIAS, messages: USER, max_tokens: 400, stream: true });
      await waitFor(() => srv.scheduler.paused === 1, 60_000, 'the stalled stream to be paused');
      const held = counts[0];
      const tPaused = performance.now();
      await waitFor(() => srv.scheduler.load.active === 0, TIMEOUT + 5000, 'the sequence to be cancelled');
      const tCut = performance.now();
      assert.ok(tCut - t0 >= TIMEOUT, `cut after ${tCut - t0} ms`);
      assert.ok(tCut - tPaused < TIMEOUT + 3000, `cut ${tCut - tPaused} ms after the pause was seen`);
      assert.equal(counts[0], held, 'nothing decoded after the pause');
      assert.deepEqual(await health(srv.url), { status: 'ok', model: MODEL_NAME, active: 0, queued: 0, paused: 0 });

      await waitFor(() => logs.some((l) => / POST \/v1\/chat\/completions 200 stream /.test(l)), 2000, 'the request line');
      const cut = logs.filter((l) => /write timeout/.test(l));
      assert.equal(cut.length, 1, logs.join('\n'));
      assert.match(cut[0], new RegExp(`^dsv3 serve: [0-9a-f]{12} write timeout: the client read nothing for ${TIMEOUT} ms; `));
      const line = logs.find((l) => / POST \/v1\/chat\/completions 200 stream /.test(l))!;
      assert.match(line, new RegExp(`out=${held} .* cancelled .* write_timeout$`));

      // The connection was reset: the client gets at most what its own kernel buffer held
      // (not the MBs queued on the server's side), an unfinished response, and the end.
      client.socket.resume();
      await client.closed;
      const got = client.data();
      assert.ok(got.length < (held * ALIAS.length) / 2, `the client got ${got.length} bytes`);
      const res = parseResponse(got);
      assert.equal(res.status, 200);
      assert.ok(!res.complete);

      // Nothing else suffered.
      const r = await post(`${srv.url}/v1/chat/completions`, { messages: USER, max_tokens: 3 });
      assert.equal(r.status, 200);
    } finally {
      await srv.close();
    }
  });
});

describe('without a socket (app.fetch)', () => {
  it('queues at most SSE_BUFFER_BYTES and one step for a body nobody reads, and ends it after the timeout', async () => {
    const scheduler = new Scheduler(m.model, { maxBatch: 2 });
    const counts = countTokens(scheduler);
    const alias = `${MODEL_NAME}-${'y'.repeat(2048)}`; // ~2.3 KB events: the bound is reached in a few tokens
    const app = createApp({ ...m, scheduler, modelName: MODEL_NAME, modelNames: [alias], log: null, writeTimeoutMs: 1500 });
    const ask = (max: number) => app.fetch(new Request('http://dsv3.test/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: alias, messages: USER, max_tokens: max, stream: true, stream_options: { include_usage: true } }),
    }));

    // Nobody reads: decoding pauses with at most the bound and one step's events queued.
    const res = await ask(30);
    await waitFor(() => scheduler.paused === 1, 30_000, 'the unread stream to be paused');
    const held = counts[0];
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(counts[0], held);
    // What was queued: every chunk that can be read without waiting for another step.
    const reader = res.body!.getReader();
    const chunks: Uint8Array[] = [];
    const now = () => Promise.race([reader.read(), Promise.resolve().then(() => null)]);
    for (let c = await now(); c && !c.done; c = await now()) chunks.push(c.value);
    const queued = chunks.reduce((n, x) => n + x.byteLength, 0);
    const event = alias.length + 300;
    assert.ok(queued <= SSE_BUFFER_BYTES + 2 * event, `${queued} bytes were queued (bound ${SSE_BUFFER_BYTES} + a step's events)`);
    assert.ok(queued >= SSE_BUFFER_BYTES, `${queued} bytes: it paused only once the bound was reached`);
    // Reading resumed it: the rest comes, complete.
    for (let c = await reader.read(); !c.done; c = await reader.read()) chunks.push(c.value);
    const { events, done } = parseSse(Buffer.concat(chunks).toString('utf8'));
    assert.ok(done);
    assert.equal(events.at(-1).usage.completion_tokens, 30);
    assert.equal(events.at(-2).choices[0].finish_reason, 'length');
    assert.equal(counts[0], 30);

    // Nobody reads, for the write timeout: the stream errors and the sequence is cancelled.
    const res2 = await ask(400);
    await waitFor(() => scheduler.paused === 1, 30_000, 'the second stream to be paused');
    await waitFor(() => scheduler.load.active === 0, 5000, 'the sequence to be cancelled');
    assert.equal(scheduler.paused, 0);
    await assert.rejects(res2.body!.getReader().read(), /write timeout: the client read nothing for 1500 ms/);
  });
});
