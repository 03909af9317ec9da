// `dsv3 serve` against llama-server (built from the same llama.cpp source as llama-bench) on the
// same bench-s GGUF file (bench/serve-common.ts: run.ts's export plus a chat tokenizer), with the
// same load generator, threads, prompts, max_tokens and sampling: aggregate decode throughput
// and time to first token at 1, 8 and 32 streaming chat clients.
//
//   node --import tsx bench/serve-vs-llama.ts [--clients 1,8,32] [--seconds 20] [--rounds 3]
//     [--max-tokens 128] [--prompt-tokens 64] [--threads N] [--temperature 1] [--llama-args "…"] [--json]
//
// Each round starts each engine's server in turn (alternating which goes first: memory bandwidth
// on these VMs swings from minute to minute), warms it up with one request per slot, then runs
// every client count for --seconds: each client sends streaming requests back to back (each
// with its own prompt: no two share more than their first few template tokens),
// and when the time is up the requests still streaming are cut off. Decode throughput is the
// completion tokens streamed within the window (usage.completion_tokens of finished requests,
// text chunks of cut-off ones) over its length; it is the median of the rounds. Time to first
// token (request sent to first chunk with text) is the p50/p99 over all rounds' requests (those
// cut off before their first token left out). A request the server fails is counted apart and
// its tokens are not counted. llama-server runs as built, with its defaults (Jinja chat template,
// output parsing); --llama-args "…" adds flags.
// Both servers get one slot per client at the largest count (dsv3 --max-batch, llama-server
// -np with -c = slots × --ctx-per-slot), and both keep their prompt caches at their defaults.
// dsv3 cannot be told to ignore EOS, so each row also shows the mean completion tokens of
// finished requests (with random weights EOS is one id among 8192: rarely drawn).

import { setMaxListeners } from 'node:events';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Tokenizer } from '../src/text/tokenizer.ts';
import {
  benchSChatDir, benchSChatGguf, chatBody, median, percentile, startDsv3, startLlama, streamRequest,
  textOfTokens, type Server, type StreamResult,
} from './serve-common.ts';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '1,8,32' },
    seconds: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    'max-tokens': { type: 'string', default: '128' },
    'prompt-tokens': { type: 'string', default: '64' },
    'ctx-per-slot': { type: 'string', default: '1024' },
    threads: { type: 'string' },
    temperature: { type: 'string', default: '1' },
    engines: { type: 'string', default: 'dsv3,llama.cpp' },
    kernels: { type: 'string' },
    'llama-args': { type: 'string' },
    json: { type: 'boolean' },
  },
});
const levels = values.clients!.split(',').map(Number);
const seconds = Number(values.seconds);
const rounds = Math.max(1, Number(values.rounds));
const maxTokens = Number(values['max-tokens']);
const promptTokens = Number(values['prompt-tokens']);
const ctxPerSlot = Number(values['ctx-per-slot']);
const threads = Number(values.threads ?? availableParallelism());
const temperature = Number(values.temperature);
const engines = values.engines!.split(',') as Server['engine'][];
const slots = Math.max(...levels);
const llamaArgs = values['llama-args']?.split(' ').filter(Boolean) ?? [];
for (const e of engines) if (e !== 'dsv3' && e !== 'llama.cpp') throw new Error(`--engines: unknown engine "${e}"`);
if (promptTokens + maxTokens + 32 > ctxPerSlot) throw new Error('--ctx-per-slot is too small for --prompt-tokens + --max-tokens');
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

const gguf = benchSChatGguf();
const tok = Tokenizer.fromDir(benchSChatDir());
const count = (s: string) => tok.encode(s).length;

// Prompts: 64 texts of about --prompt-tokens tokens, each request's led by its own
// "r<request> c<client> n<clients>." so that no two requests share more than the template's first
// tokens (a prefix cache finds nothing to reuse); the same for both engines and every round.
const pool = Array.from({ length: 64 }, (_, i) => textOfTokens(Math.max(1, promptTokens - 8), 1000 + i, count));
const prompt = (level: number, client: number, j: number) => `r${j} c${client} n${level}. ${pool[(7 * client + j) % pool.length]}`;
const body = (level: number, client: number, j: number, tokens = maxTokens) =>
  chatBody([{ role: 'user', content: prompt(level, client, j) }], tokens, { temperature, seed: 1e6 * level + 1e3 * client + j });

interface Level {
  tps: number;
  ttft: number[];
  finished: StreamResult[];
  cut: number;
  noFirstToken: number;
  /** Requests the server failed (HTTP error or an error event); their tokens are not counted. */
  errors: number;
}

async function runLevel(s: Server, c: number): Promise<Level> {
  const ctrl = new AbortController();
  setMaxListeners(4 * c + 16, ctrl.signal); // one per request in flight
  const all: StreamResult[] = [];
  const errors: string[] = [];
  const t0 = performance.now();
  const timer = setTimeout(() => ctrl.abort(), seconds * 1e3);
  await Promise.all(Array.from({ length: c }, async (_, i) => {
    for (let j = 0; !ctrl.signal.aborted; j++) {
      try {
        all.push(await streamRequest(s.url, '/v1/chat/completions', body(c, i, j), ctrl.signal));
      } catch (e) {
        errors.push(`${(e as Error).message} ${String((e as { cause?: unknown }).cause ?? '')}`);
      }
    }
  }));
  if (errors.length) log(`${s.engine}, ${c} clients: ${errors.length} failed requests, e.g. ${errors[0].slice(0, 300)}`);
  clearTimeout(timer);
  const wall = Math.min(performance.now() - t0, seconds * 1e3) / 1e3;
  const waited = await s.idle(); // the cut-off requests are cancelled (and their slots freed)
  if (waited > 1000) log(`${s.engine}: ${(waited / 1e3).toFixed(1)} s until the cut-off requests were dropped`);
  const finished = all.filter((r) => !r.aborted);
  return {
    tps: all.reduce((a, r) => a + r.tokens, 0) / wall,
    ttft: all.flatMap((r) => (r.ttftMs === null ? [] : [r.ttftMs])),
    finished,
    cut: all.length - finished.length,
    noFirstToken: all.filter((r) => r.ttftMs === null).length,
    errors: errors.length,
  };
}

async function runEngine(engine: Server['engine']): Promise<Map<number, Level>> {
  log(`${engine}: starting (${threads} threads, ${slots} slots)…`);
  const s = engine === 'dsv3'
    ? await startDsv3({ model: gguf, threads, maxBatch: slots, kernels: values.kernels })
    : await startLlama({ model: gguf, threads, slots, ctxPerSlot, extra: llamaArgs });
  try {
    // Warm-up: one request per slot at once, with prompts no level uses.
    await Promise.all(Array.from({ length: slots }, (_, i) => streamRequest(s.url, '/v1/chat/completions', body(0, i, 0, 16))));
    const out = new Map<number, Level>();
    for (const c of levels) {
      const r = await runLevel(s, c);
      log(`${engine}, ${c} clients: ${r.tps.toFixed(1)} tok/s, TTFT p50 ${percentile(r.ttft, 50).toFixed(0)} ms, ` +
        `${r.finished.length} finished + ${r.cut} cut off (${r.noFirstToken} before their first token)`);
      out.set(c, r);
    }
    return out;
  } finally {
    await s.stop();
  }
}

const results: Record<string, Map<number, Level>[]> = { dsv3: [], 'llama.cpp': [] };
log(`bench-s (${gguf}), ${threads} threads, ${promptTokens}-token prompts, max_tokens ${maxTokens}, ` +
  `temperature ${temperature}, ${seconds} s per client count, ${rounds} rounds`);
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? engines : [...engines].reverse();
  for (const e of order) results[e].push(await runEngine(e));
}

interface Row { clients: number; metric: 'decode_tps' | 'ttft_p50_ms' | 'ttft_p99_ms'; dsv3: number; llama_cpp: number }
const rows: Row[] = [];
const pooled = (e: string, c: number) => results[e].flatMap((m) => m.get(c)!.ttft);
const stat = (e: string, c: number, metric: Row['metric']) => {
  if (!results[e].length) return NaN;
  if (metric === 'decode_tps') return median(results[e].map((m) => m.get(c)!.tps));
  return percentile(pooled(e, c), metric === 'ttft_p50_ms' ? 50 : 99);
};
for (const c of levels) {
  for (const metric of ['decode_tps', 'ttft_p50_ms', 'ttft_p99_ms'] as const) {
    rows.push({ clients: c, metric, dsv3: stat('dsv3', c, metric), llama_cpp: stat('llama.cpp', c, metric) });
  }
}
const r3 = (x: number) => (Number.isFinite(x) ? +x.toFixed(3) : null);
const tokensPerRequest = (e: string, c: number) => {
  const f = results[e].flatMap((m) => m.get(c)!.finished);
  return f.length ? f.reduce((a, r) => a + r.tokens, 0) / f.length : NaN;
};

const failed = (e: string, c: number) => results[e].reduce((a, m) => a + m.get(c)!.errors, 0);

if (values.json) {
  for (const r of rows) {
    process.stdout.write(JSON.stringify({
      bench: 'serve', model: 'bench-s', clients: r.clients, metric: r.metric, dsv3: r3(r.dsv3), llama_cpp: r3(r.llama_cpp),
      ratio: r3(r.dsv3 / r.llama_cpp), threads, max_tokens: maxTokens, prompt_tokens: promptTokens, rounds,
      ...(r.metric === 'decode_tps'
        ? {
          dsv3_rounds: results.dsv3.map((m) => r3(m.get(r.clients)!.tps)),
          llama_cpp_rounds: results['llama.cpp'].map((m) => r3(m.get(r.clients)!.tps)),
          dsv3_tokens_per_request: r3(tokensPerRequest('dsv3', r.clients)),
          llama_cpp_tokens_per_request: r3(tokensPerRequest('llama.cpp', r.clients)),
          dsv3_failed_requests: failed('dsv3', r.clients),
          llama_cpp_failed_requests: failed('llama.cpp', r.clients),
        }
        : {}),
    }) + '\n');
  }
} else {
  const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  const pair = (a: number, b: number, d = 1) => `${f(a, d)} / ${f(b, d)} (${f(a / b, 2)})`;
  const get = (c: number, m: Row['metric']) => rows.find((r) => r.clients === c && r.metric === m)!;
  console.log(`bench-s, ${threads} threads, ${promptTokens}-token prompts, max_tokens ${maxTokens}, ${seconds} s × ${rounds} rounds; dsv3 / llama.cpp (ratio)`);
  console.log('| clients | decode tok/s | TTFT p50 ms | TTFT p99 ms | tokens/request |');
  console.log('|---|---|---|---|---|');
  for (const c of levels) {
    const d = get(c, 'decode_tps');
    const p50 = get(c, 'ttft_p50_ms');
    const p99 = get(c, 'ttft_p99_ms');
    console.log(`| ${c} | ${pair(d.dsv3, d.llama_cpp)} | ${pair(p50.dsv3, p50.llama_cpp, 0)} | ${pair(p99.dsv3, p99.llama_cpp, 0)} | ` +
      `${f(tokensPerRequest('dsv3', c))} / ${f(tokensPerRequest('llama.cpp', c))} |`);
  }
  for (const e of engines) {
    for (const c of levels) if (failed(e, c)) console.log(`${e}: ${failed(e, c)} failed requests at ${c} clients (not counted)`);
  }
  if (results.dsv3.length && results['llama.cpp'].length) {
    for (const c of levels) {
      const per = results.dsv3.map((m, i) => f(m.get(c)!.tps / results['llama.cpp'][i].get(c)!.tps, 2));
      console.log(`throughput ratio per round at ${c} clients: ${per.join(', ')}`);
    }
  }
}
