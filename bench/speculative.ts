// MTP speculative decoding vs plain decoding at batch 1, greedy, in one run: decode tokens/s
// (prefill excluded), acceptance per draft position, tokens per verify pass. The outputs are
// checked to be identical.
//   node --import tsx bench/speculative.ts [DIR] [--tokens 200] [--rounds 3] [--draft-vocab N] [--bench-s]
// DIR defaults to the shipped model; --bench-s uses a random bench-s-sized checkpoint with an
// MTP module (written once into .cache/bench/).

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { loadKernels } from '../src/kernels/index.ts';
import { Scheduler, type SeqResult } from '../src/engine/scheduler.ts';
import { Sampler } from '../src/engine/sampler.ts';
import { draftVocabulary } from '../src/engine/speculative.ts';
import { Tokenizer } from '../src/text/tokenizer.ts';
import { benchSMtpDir } from './bench-s-mtp.ts';

const { values, positionals } = parseArgs({
  options: {
    tokens: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '3' },
    'draft-vocab': { type: 'string' },
    'bench-s': { type: 'boolean' },
  },
  allowPositionals: true,
});
const ROOT = resolve(import.meta.dirname, '..');
let dir = positionals[0] ?? join(ROOT, 'models', 'default');
if (values['bench-s']) dir = benchSMtpDir();
const n = Number(values.tokens);
const model = DeepseekV3.load(dir, { kernels: loadKernels(), mtp: true });
const prompts = existsSync(join(dir, 'tokenizer.json'))
  ? ['The jury said', 'In the morning, the city', 'He told me that the'].map((p) =>
      Tokenizer.fromDir(dir).encode(p, { addSpecialTokens: true }))
  : [[1, 2, 3], [40, 50, 60, 70], [900]];

// Configurations: plain decoding, then k drafts from the default draft vocabulary, and k = 1
// from the whole vocabulary (what drafting cost before the draft vocabulary).
const V = model.cfg.vocab_size;
const N = Number(values['draft-vocab'] ?? draftVocabulary(V));
const CONFIGS = [
  { name: 'plain decoding', k: 0, vocab: V },
  { name: `MTP k=1, all ${V} ids`, k: 1, vocab: V },
  ...[1, 2, 3].map((k) => ({ name: `MTP k=${k}, ${N} ids`, k, vocab: N })),
];
type Config = (typeof CONFIGS)[number];

async function run(c: Config) {
  const s = new Scheduler(model, { maxBatch: 1, speculative: c.k ? { draftTokens: c.k, draftVocab: c.vocab } : undefined });
  const out: { ids: number[]; r: SeqResult }[] = [];
  for (const prompt of prompts) {
    const ids: number[] = [];
    const r = await new Promise<SeqResult>((done) =>
      s.submit({ prompt, maxNewTokens: n, sampler: new Sampler({ temperature: 0 }), onToken: (id) => void ids.push(id), onDone: done }));
    out.push({ ids, r });
  }
  const tokens = out.reduce((a, o) => a + o.r.completionTokens - 1, 0);
  const secs = out.reduce((a, o) => a + (o.r.totalMs - o.r.ttftMs) / 1e3, 0);
  return { out, tps: tokens / secs, spec: out.map((o) => o.r.spec) };
}

// Rounds over the configurations in rotating order; each speed is the median over the rounds
// (throughput on this shared VM drifts between minutes, which sequential runs mistake for
// a speed-up or a slow-down).
const ROUNDS = Number(values.rounds);
const runs = new Map<Config, Awaited<ReturnType<typeof run>>[]>(CONFIGS.map((c) => [c, []]));
await run(CONFIGS[0]); // warm-up
for (let r = 0; r < ROUNDS; r++) {
  for (let i = 0; i < CONFIGS.length; i++) {
    const c = CONFIGS[(i + r) % CONFIGS.length];
    runs.get(c)!.push(await run(c));
  }
}
const med = (c: Config) => {
  const v = runs.get(c)!.map((x) => x.tps).sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
};
const plain = CONFIGS[0];
const base = runs.get(plain)![0];
console.log(`model ${dir}: ${prompts.length} prompts × ${n} greedy tokens, batch 1, median of ${ROUNDS} rounds`);
console.log(`plain decoding: ${med(plain).toFixed(1)} tok/s`);
for (const c of CONFIGS.slice(1)) {
  const r = runs.get(c)![0];
  const same = runs.get(c)!.every((x) => x.out.every((o, i) => o.ids.join() === base.out[i].ids.join()));
  const proposed = r.spec.map((s) => s!.proposed);
  const accepted = r.spec.map((s) => s!.accepted);
  const perPos = proposed[0].map((_, j) => {
    const p = proposed.reduce((a, x) => a + (x[j] ?? 0), 0);
    const a = accepted.reduce((a2, x) => a2 + (x[j] ?? 0), 0);
    return p ? a / p : 0;
  });
  const steps = r.spec.reduce((a, s) => a + s!.steps, 0);
  const emitted = r.spec.reduce((a, s) => a + s!.emitted, 0);
  console.log(
    `${c.name}: ${med(c).toFixed(1)} tok/s (${(med(c) / med(plain)).toFixed(2)}×), acceptance per position ` +
      `[${perPos.map((x) => (x * 100).toFixed(0) + '%').join(', ')}], ${(emitted / steps).toFixed(2)} tokens per step, ` +
      `output ${same ? 'identical' : 'DIFFERENT'}`,
  );
}
