// A multi-turn chat through the servers: 10 turns, each request the whole conversation so far
// (system prompt, every user message and answer) plus a new user message, as a chat client sends
// it; about 2k tokens of history by turn 10. Time to first token of every turn with the prefix
// cache and without it, for `dsv3 serve` (default --cache-mb, and --cache-mb 0) and for
// llama-server on the same bench-s GGUF file (bench/serve-common.ts) with its prompt cache
// ("cache_prompt": true, its default) and without ("cache_prompt": false), same threads.
//
//   node --import tsx bench/multiturn.ts [--turns 10] [--user 150] [--answer 50] [--system 64]
//     [--rounds 3] [--threads N] [--cache-mb N] [--engines dsv3,llama.cpp] [--json]
//
// Messages are random lowercase words sized in tokens with the bench tokenizer. Each turn
// generates --answer tokens, but the assistant message the client sends back is a fixed text of
// --answer tokens (random weights' output, decoded and encoded again, would not give back the
// same tokens, and a fixed history makes every engine and setting see the very same prompts),
// so the prompt of turn t starts with the whole prompt of turn t-1 and each turn adds
// --answer + --user tokens and a few template tokens. Every variant runs on a fresh server
// (warmed up with an unrelated request), one conversation per round, the order of the variants
// rotating from round to round; each figure is the median of the rounds.

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Tokenizer } from '../src/text/tokenizer.ts';
import {
  benchSChatDir, benchSChatGguf, chatBody, median, startDsv3, startLlama, streamRequest, textOfTokens, type Server,
} from './serve-common.ts';

const { values } = parseArgs({
  options: {
    turns: { type: 'string', default: '10' },
    user: { type: 'string', default: '150' },
    answer: { type: 'string', default: '50' },
    system: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '3' },
    threads: { type: 'string' },
    'cache-mb': { type: 'string' },
    temperature: { type: 'string', default: '1' },
    engines: { type: 'string', default: 'dsv3,llama.cpp' },
    kernels: { type: 'string' },
    json: { type: 'boolean' },
  },
});
const turns = Number(values.turns);
const userLen = Number(values.user);
const answerLen = Number(values.answer);
const systemLen = Number(values.system);
const rounds = Math.max(1, Number(values.rounds));
const threads = Number(values.threads ?? availableParallelism());
const temperature = Number(values.temperature);
const engines = values.engines!.split(',');
for (const e of engines) if (e !== 'dsv3' && e !== 'llama.cpp') throw new Error(`--engines: unknown engine "${e}"`);
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

const gguf = benchSChatGguf();
const tok = Tokenizer.fromDir(benchSChatDir());
const count = (s: string) => tok.encode(s).length;

// The conversation: the same for every variant and round.
const system = textOfTokens(systemLen, 1, count);
const users = Array.from({ length: turns }, (_, t) => textOfTokens(userLen, 100 + t, count));
const answers = Array.from({ length: turns }, (_, t) => textOfTokens(answerLen, 200 + t, count));
const warmUp = [{ role: 'user', content: `w ${textOfTokens(64, 999, count)}` }];

interface Variant { name: string; engine: 'dsv3' | 'llama.cpp'; cache: boolean }
const variants: Variant[] = [
  { name: 'dsv3 cache', engine: 'dsv3', cache: true },
  { name: 'dsv3 no cache', engine: 'dsv3', cache: false },
  { name: 'llama.cpp cache', engine: 'llama.cpp', cache: true },
  { name: 'llama.cpp no cache', engine: 'llama.cpp', cache: false },
].filter((v) => engines.includes(v.engine)) as Variant[];

interface Turn { prompt: number | null; cached: number | null; ttft: number }

async function conversation(v: Variant, round: number): Promise<Turn[]> {
  const ctxPerSlot = 4096; // bench-s's max_position_embeddings
  const s: Server = v.engine === 'dsv3'
    ? await startDsv3({
      model: gguf, threads, maxBatch: 8, kernels: values.kernels,
      cacheMb: v.cache ? (values['cache-mb'] !== undefined ? Number(values['cache-mb']) : undefined) : 0,
    })
    : await startLlama({ model: gguf, threads, slots: 1, ctxPerSlot });
  // llama-server's per-request switch; dsv3 ignores the field (its cache is --cache-mb).
  const extra = v.engine === 'llama.cpp' ? { cache_prompt: v.cache } : {};
  try {
    await streamRequest(s.url, '/v1/chat/completions', chatBody(warmUp, answerLen, { temperature, seed: 1 }, extra));
    const messages = [{ role: 'system', content: system }];
    const out: Turn[] = [];
    for (let t = 0; t < turns; t++) {
      messages.push({ role: 'user', content: users[t] });
      const r = await streamRequest(s.url, '/v1/chat/completions',
        chatBody(messages, answerLen, { temperature, seed: 1000 * round + t }, extra));
      if (r.ttftMs === null) throw new Error(`${v.name}, turn ${t + 1}: no token came back`);
      out.push({ prompt: r.promptTokens, cached: r.cachedTokens, ttft: r.ttftMs });
      messages.push({ role: 'assistant', content: answers[t] });
    }
    log(`${v.name}, round ${round + 1}: turn ${turns} TTFT ${out[turns - 1].ttft.toFixed(0)} ms ` +
      `(${out[turns - 1].cached ?? '?'} of ${out[turns - 1].prompt ?? '?'} prompt tokens cached)`);
    return out;
  } finally {
    await s.stop();
  }
}

log(`bench-s (${gguf}), ${threads} threads, ${turns} turns: ${systemLen}-token system prompt, ${userLen}-token ` +
  `user messages, ${answerLen}-token answers, ${rounds} rounds`);
const runs = new Map<string, Turn[][]>(variants.map((v) => [v.name, []]));
for (let round = 0; round < rounds; round++) {
  for (let i = 0; i < variants.length; i++) {
    const v = variants[(i + round) % variants.length];
    runs.get(v.name)!.push(await conversation(v, round));
  }
}

const at = (name: string, t: number, k: keyof Turn) => {
  const rs = runs.get(name);
  if (!rs?.length) return NaN;
  const xs = rs.map((r) => r[t][k]).filter((x): x is number => x !== null);
  return xs.length ? median(xs) : NaN;
};
const r3 = (x: number) => (Number.isFinite(x) ? +x.toFixed(3) : null);
const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '—');

if (values.json) {
  for (let t = 0; t < turns; t++) {
    const line: Record<string, unknown> = { bench: 'multiturn', model: 'bench-s', turn: t + 1, metric: 'ttft_ms', threads };
    for (const e of ['dsv3', 'llama.cpp']) {
      if (!engines.includes(e)) continue;
      const k = e === 'dsv3' ? 'dsv3' : 'llama_cpp';
      line[`${k}_prompt_tokens`] = r3(at(`${e} cache`, t, 'prompt'));
      line[`${k}_cached_tokens`] = r3(at(`${e} cache`, t, 'cached'));
      line[`${k}_cache`] = r3(at(`${e} cache`, t, 'ttft'));
      line[`${k}_no_cache`] = r3(at(`${e} no cache`, t, 'ttft'));
      line[`${k}_speedup`] = r3(at(`${e} no cache`, t, 'ttft') / at(`${e} cache`, t, 'ttft'));
    }
    if (engines.length === 2) line.cache_ratio = r3(at('dsv3 cache', t, 'ttft') / at('llama.cpp cache', t, 'ttft'));
    process.stdout.write(JSON.stringify(line) + '\n');
  }
} else {
  console.log(`bench-s, ${threads} threads, ${turns}-turn chat (${systemLen}-token system prompt, ${userLen}-token user ` +
    `messages, ${answerLen}-token answers), time to first token in ms, median of ${rounds} rounds:`);
  const cols = engines.flatMap((e) => [`${e} cached / prompt tokens`, `${e} no cache`, `${e} cache`, `${e} speedup`]);
  console.log(`| turn | ${cols.join(' | ')} |`);
  console.log(`|---|${cols.map(() => '---').join('|')}|`);
  for (let t = 0; t < turns; t++) {
    const cells = engines.flatMap((e) => {
      const off = at(`${e} no cache`, t, 'ttft');
      const on = at(`${e} cache`, t, 'ttft');
      return [`${f(at(`${e} cache`, t, 'cached'))} / ${f(at(`${e} cache`, t, 'prompt'))}`, f(off), f(on), `${f(off / on, 1)}×`];
    });
    console.log(`| ${t + 1} | ${cells.join(' | ')} |`);
  }
}
