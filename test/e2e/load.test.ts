// Load on loopback, bounded in time: 32 clients streaming chat completions back to back, a
// client that keeps disconnecting mid-stream, a steady stream of malformed requests (bad
// JSON, wrong types, unknown routes and models, over-long prompts, bodies cut off mid-send),
// slow readers (paused by the server until they read, then reading slowly), structured-output
// requests (grammar-constrained) and prompts that start after a cached prefix, all at once
// for a fixed time. The clients run in their own process (load-clients.ts); the
// server runs here, so its scheduler and memory can be inspected. Every stream must be
// well-formed and complete, and equal to a non-streamed rerun with the same seed; the server
// must stay healthy, end with nothing active, and give its memory back.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { fullGc, loadTextModel, post, startServer, waitFor, type TestServer } from './helpers.ts';
import { CONSTRAINED_EVERY, loadBody, SLOW_ALIAS, SLOW_READERS, type LoadReport } from './load-clients.ts';

const CLIENTS = 32;
const DURATION_MS = 6000;
const MAX_TOKENS = 6;
/** RSS may grow this much over the warmed-up baseline (allocator slack, JIT code, lazy init). */
const RSS_BOUND_MB = 64;

const m = loadTextModel();
let srv: TestServer;

before(async () => {
  // A small prefix cache: it fills during the warm-up, so its memory is in the baseline.
  srv = await startServer(m, { maxBatch: CLIENTS, maxQueue: 64, modelNames: [SLOW_ALIAS], prefixCacheBytes: 4 * 2 ** 20 });
});
after(() => srv.close());

const rssMb = () => process.memoryUsage().rss / 2 ** 20;

describe('server under load', () => {
  it(`serves ${CLIENTS} streaming clients amid malformed requests and disconnects`, async () => {
    // Warm-up, so first-request costs (the grammar worker too) stay out of the baseline, and
    // the prefix cache full.
    const warm = Array.from({ length: 200 }, (_, s) => s + 1);
    for (let i = 0; i < warm.length; i += CLIENTS) {
      await Promise.all(warm.slice(i, i + CLIENTS).map((s) => post(`${srv.url}/v1/chat/completions`, loadBody(s, true, MAX_TOKENS))));
    }
    fullGc();
    const rss0 = rssMb();
    const mem0 = process.memoryUsage();

    const script = fileURLToPath(new URL('./load-clients.ts', import.meta.url));
    let maxPaused = 0;
    const watch = setInterval(() => (maxPaused = Math.max(maxPaused, srv.scheduler.paused)), 5);
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', script, srv.url, String(CLIENTS), String(DURATION_MS), String(MAX_TOKENS)],
      { maxBuffer: 64 * 2 ** 20 },
    ).finally(() => clearInterval(watch));
    const report = JSON.parse(stdout) as LoadReport;
    assert.deepEqual(report.failures, [], 'no dropped, corrupted or wrongly answered request');
    assert.ok(report.records.length >= CLIENTS, `every client finished a stream (${report.records.length})`);
    assert.ok(report.malformed > 0 && report.disconnects > 0);
    assert.ok(report.slow.length >= SLOW_READERS, `every slow reader finished a stream (${report.slow.length})`);
    assert.ok(maxPaused >= 1, 'the slow readers\' streams were paused');
    const constrained = report.records.filter((r) => r.constrained).length;
    assert.ok(constrained >= 4, `structured-output streams: ${constrained}`);
    const cached = report.records.filter((r) => r.cachedTokens > 0).length;
    assert.ok(cached >= report.records.length / 2, `streams after a cached prefix: ${cached} of ${report.records.length}`);

    await waitFor(() => srv.scheduler.load.active === 0 && srv.scheduler.load.queued === 0, 5000, 'the server to go idle');
    const health = (await (await fetch(`${srv.url}/health`)).json()) as { status: string };
    assert.equal(health.status, 'ok');

    // Every stream equals a non-streamed rerun with the same seed (batching changes nothing).
    const all = [...report.records, ...report.slow];
    const reruns = await Promise.all(
      all.map((r) => post(`${srv.url}/v1/chat/completions`, loadBody(r.seed, false, MAX_TOKENS))),
    );
    all.forEach((r, i) => {
      const whole = reruns[i].json;
      assert.equal(r.text, whole.choices[0].message.content, `seed ${r.seed}: stream and rerun agree`);
      assert.equal(r.finish, whole.choices[0].finish_reason);
      assert.equal(r.completionTokens, whole.usage.completion_tokens);
    });

    assert.deepEqual(srv.scheduler.load, { active: 0, queued: 0 });
    fullGc();
    await new Promise((r) => setTimeout(r, 100));
    fullGc();
    const grown = rssMb() - rss0;
    const mb = (n: number) => (n / 2 ** 20).toFixed(0);
    const mem = process.memoryUsage();
    const tokens = report.records.reduce((a, r) => a + r.completionTokens, 0);
    process.stderr.write(
      `load: ${report.records.length} streams, ${tokens} tokens (${(tokens / report.elapsedS).toFixed(0)} tok/s), ` +
        `(${constrained} constrained, ${cached} after a cached prefix), ` +
        `${report.malformed} malformed requests, ${report.disconnects} disconnects, ${report.slow.length} slow readers' streams ` +
        `(up to ${maxPaused} paused at once) in ${report.elapsedS.toFixed(1)} s; ` +
        `RSS ${rss0.toFixed(0)} MB -> ${(rss0 + grown).toFixed(0)} MB (JS heap ${mb(mem0.heapUsed)} -> ${mb(mem.heapUsed)} MB, ` +
        `buffers ${mb(mem0.arrayBuffers)} -> ${mb(mem.arrayBuffers)} MB)\n`,
    );
    assert.ok(grown < RSS_BOUND_MB, `RSS grew ${grown.toFixed(1)} MB (bound ${RSS_BOUND_MB} MB)`);
  });
});
