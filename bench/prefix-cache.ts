// Prefix caching in a multi-turn chat: 10 turns, each turn's prompt the whole conversation so
// far (system prompt, every user message and answer) plus a new user message, about 2k tokens
// of history by turn 10, as a chat client re-sends it. Time to first token of every turn with
// the prefix cache and without it, on the bench-s-sized checkpoint (random BF16 weights, written
// once into .cache/bench/), native kernels, greedy, token ids (no tokenizer in the timing).
//   node --import tsx bench/prefix-cache.ts [--turns 10] [--user 160] [--answer 40] [--rounds 2]

import { parseArgs } from 'node:util';
import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { loadKernels } from '../src/kernels/index.ts';
import { Scheduler } from '../src/engine/scheduler.ts';
import { Sampler } from '../src/engine/sampler.ts';
import { benchSMtpDir } from './bench-s-mtp.ts';

const { values } = parseArgs({
  options: {
    turns: { type: 'string', default: '10' },
    user: { type: 'string', default: '160' },
    answer: { type: 'string', default: '40' },
    rounds: { type: 'string', default: '2' },
  },
});
const turns = Number(values.turns);
const userLen = Number(values.user);
const answerLen = Number(values.answer);
const model = DeepseekV3.load(benchSMtpDir(), { kernels: loadKernels(), mtp: false });
const V = 8000;
const words = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 131 + seed * 977 + 7) % V);

/** One conversation; returns each turn's prompt length, cached tokens and time to first token (ms). */
async function conversation(cacheMb: number) {
  const s = new Scheduler(model, { prefixCacheBytes: cacheMb * 2 ** 20 });
  let history = words(64, 0); // the system prompt
  const out: { prompt: number; cached: number; ttft: number }[] = [];
  for (let t = 1; t <= turns; t++) {
    const prompt = [...history, ...words(userLen, t)];
    const ids: number[] = [];
    const r = await new Promise<{ cachedTokens?: number; ttftMs: number }>((done) => s.submit({
      prompt,
      maxNewTokens: answerLen,
      sampler: new Sampler({ temperature: 0 }),
      onToken: (id) => void ids.push(id),
      onDone: done,
    }));
    out.push({ prompt: prompt.length, cached: r.cachedTokens ?? 0, ttft: r.ttftMs });
    history = [...prompt, ...ids];
  }
  return { turns: out, cache: s.prefixCache?.stats };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

await conversation(0); // warm-up
const runs: Record<string, Awaited<ReturnType<typeof conversation>>[]> = { off: [], on: [] };
for (let i = 0; i < Number(values.rounds); i++) {
  runs.off.push(await conversation(0));
  runs.on.push(await conversation(1024));
}
console.log(`bench-s, ${turns}-turn chat (${userLen}-token user messages, ${answerLen}-token answers), time to first token (ms), median of ${values.rounds}:`);
console.log('turn | prompt tokens | cached | TTFT, no cache | TTFT, cache');
for (let t = 0; t < turns; t++) {
  const off = median(runs.off.map((r) => r.turns[t].ttft));
  const on = median(runs.on.map((r) => r.turns[t].ttft));
  const p = runs.on[0].turns[t];
  console.log(`${String(t + 1).padStart(4)} | ${String(p.prompt).padStart(13)} | ${String(p.cached).padStart(6)} | ${off.toFixed(0).padStart(14)} | ${on.toFixed(0).padStart(11)}`);
}
const c = runs.on[0].cache!;
console.log(`cache after the conversation: ${c.tokens} tokens, ${(c.bytes / 2 ** 20).toFixed(1)} MiB`);
