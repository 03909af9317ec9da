// MTP speculative decoding against plain decoding, greedy, in one run: decode tokens/s
// (prefill excluded), the draft policy's decisions (decode steps by draft length), acceptance
// per draft position and tokens per drafted verify pass. The outputs are checked to be
// identical to plain decoding's.
//   node --import tsx bench/speculative.ts [DIR] [--tokens 200] [--rounds 3] [--batch 1]
//     [--draft-vocab N] [--bench-s] [--configs plain,a1,a2,a3,f1,f2,f3] [--fresh] [--prompts P]
//     [--instances 4]
// DIR defaults to the shipped model; --bench-s uses a random bench-s-sized checkpoint with an
// MTP module (written once into .cache/bench/). --batch B decodes B sequences together
// (maxBatch B), each wave of B prompts submitted at once; the speed of a wave is its tokens
// after the first over the time from its first token to its last. A round decodes --prompts
// prompts (waves of B): by default B, or at batch 1 three (eight with --tokens under 200),
// every wave under every configuration, in a new random order each time, so that
// configurations are compared over the same seconds. Each ratio to plain decoding (the
// geometric mean of the plain configurations in the round) is the 20%-trimmed mean of the
// rounds' ratios, ± its standard error. Each configuration keeps its Schedulers over all its
// rounds, as `dsv3 serve` and the library's Model do (the draft policy's measurements carry
// over), --instances of them used in turn; --fresh makes a new one per round, a new process's
// first requests, which pay for measuring each option at each batch size. Configurations:
// plain decoding (named again: a control, plain against itself); `aK` is `--speculative mtp
// --draft-tokens K` (the adaptive policy: each step drafts 0 … K tokens, whichever it expects
// to decode fastest); `fK` drafts K tokens every step (policy 'fixed'), what speculating costs
// or gains when forced.

import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { loadKernels } from '../src/kernels/index.ts';
import { Scheduler, type SeqResult } from '../src/engine/scheduler.ts';
import { Sampler } from '../src/engine/sampler.ts';
import { draftVocabulary, type SpecStats } from '../src/engine/speculative.ts';
import { Tokenizer } from '../src/text/tokenizer.ts';
import { benchSMtpDir } from './bench-s-mtp.ts';
import { Rng } from '../src/tensor/random.ts';

const { values, positionals } = parseArgs({
  options: {
    tokens: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '3' },
    batch: { type: 'string', default: '1' },
    'draft-vocab': { type: 'string' },
    'bench-s': { type: 'boolean' },
    configs: { type: 'string', default: 'plain,a1,a2,a3,f1,f2,f3' },
    fresh: { type: 'boolean' },
    prompts: { type: 'string' },
    instances: { type: 'string', default: '4' },
  },
  allowPositionals: true,
});
const ROOT = resolve(import.meta.dirname, '..');
let dir = positionals[0] ?? join(ROOT, 'models', 'default');
if (values['bench-s']) dir = benchSMtpDir();
const n = Number(values.tokens);
const B = Number(values.batch);
const model = DeepseekV3.load(dir, { kernels: loadKernels(), mtp: true });
const TEXTS = [
  'The jury said', 'In the morning, the city', 'He told me that the', 'She opened the door and',
  'The committee will meet', 'After the war, many', 'It was the first time', 'They walked along the river',
];
const hasTokenizer = existsSync(join(dir, 'tokenizer.json'));
const tok = hasTokenizer ? Tokenizer.fromDir(dir) : null;
// Batch 1: three (or eight) prompts one after another; batch B: one wave of B prompts.
const P = Number(values.prompts ?? (B === 1 ? (n < 200 ? 8 : 3) : B));
const prompts = Array.from({ length: P }, (_, i) => TEXTS[i % TEXTS.length]).map((t, i) =>
  tok ? tok.encode(t, { addSpecialTokens: true }) : [1 + i, 40 + 7 * i, 60 + 3 * i, 900 - i]);

const V = model.cfg.vocab_size;
const N = Number(values['draft-vocab'] ?? draftVocabulary(V));
interface Config { name: string; k: number; policy?: 'adaptive' | 'fixed' }
const CONFIGS: Config[] = values.configs.split(',').map((c, i) => {
  // (plain again: the same against itself, what the rounds' noise alone makes of a ratio)
  if (c === 'plain') return { name: i === 0 ? 'plain decoding' : 'plain decoding again (control)', k: 0 };
  const m = /^([af])([1-9])$/.exec(c);
  if (!m) throw new Error(`--configs: unknown configuration "${c}" (plain, aK or fK)`);
  const k = Number(m[2]);
  return m[1] === 'a' ? { name: `adaptive k<=${k}`, k, policy: 'adaptive' } : { name: `fixed k=${k}`, k, policy: 'fixed' };
});
if (CONFIGS[0].k !== 0) throw new Error('--configs: the first configuration must be plain (the reference)');

// Schedulers by configuration: round r runs instance r mod --instances (one instance alone can
// run a few percent faster or slower than another of the same configuration throughout a run,
// like a different memory layout would).
const INSTANCES = Number(values.instances);
const schedulers = new Map<Config, Scheduler[]>(CONFIGS.map((c) => [c, []]));
type Seqs = { ids: number[]; r: SeqResult }[];
/** One wave (prompts w … w+B−1) under configuration c: its sequences, and the decode time. */
async function wave(c: Config, w: number, s: Scheduler): Promise<{ out: Seqs; tokens: number; secs: number }> {
  const out = await Promise.all(prompts.slice(w, w + B).map((prompt) => {
    const ids: number[] = [];
    return new Promise<{ ids: number[]; r: SeqResult }>((done) =>
      s.submit({ prompt, maxNewTokens: n, sampler: new Sampler({ temperature: 0 }), onToken: (id) => void ids.push(id), onDone: (r) => done({ ids, r }) }));
  }));
  const tokens = out.reduce((a, o) => a + o.r.completionTokens - 1, 0);
  const secs = (Math.max(...out.map((o) => o.r.totalMs)) - Math.min(...out.map((o) => o.r.ttftMs))) / 1e3;
  return { out, tokens, secs };
}

const rng = new Rng(1);
function shuffled<T>(xs: readonly T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * One round: every wave under every configuration, the configurations taking turns wave by
 * wave in random order (throughput on this shared VM drifts from second to second, which
 * configurations timed one after another would mistake for a speed-up or a slow-down).
 */
async function round(r: number, configs: Config[]) {
  const res = new Map(configs.map((c) => [c, { out: [] as Seqs, tokens: 0, secs: 0, explored0: 0 }]));
  const inst = new Map<Config, Scheduler>();
  for (const c of configs) {
    const all = schedulers.get(c)!;
    const i = values.fresh ? 0 : r % INSTANCES;
    if (!all[i] || values.fresh) {
      all[i] = new Scheduler(model, {
        maxBatch: B,
        speculative: c.k ? { draftTokens: c.k, draftVocab: N, policy: c.policy } : undefined,
      });
    }
    inst.set(c, all[i]);
    res.get(c)!.explored0 = all[i].draftPolicy?.stats.explored ?? 0;
  }
  for (let w = 0; w < prompts.length; w += B) {
    // (In a new random order each time: a configuration always run after the same other one
    // would pay for that one's leftovers, its garbage to collect, say, throughout a run.)
    for (const c of shuffled(configs)) {
      const x = await wave(c, w, inst.get(c)!);
      const acc = res.get(c)!;
      acc.out.push(...x.out);
      acc.tokens += x.tokens;
      acc.secs += x.secs;
    }
  }
  return new Map([...res].map(([c, x]) => [c, {
    out: x.out,
    tps: x.tokens / x.secs,
    spec: x.out.map((o) => o.r.spec!),
    explored: (inst.get(c)!.draftPolicy?.stats.explored ?? 0) - x.explored0,
  }]));
}

// Each speed is the median over the rounds, and each ratio the 20%-trimmed mean (± its
// standard error) of the rounds' ratios to plain decoding in the same round: to the geometric
// mean of every plain configuration's speed, so that no single instance's quirks (one can run
// a few percent off another throughout a run) become the reference.
const ROUNDS = Number(values.rounds);
type Run = { out: Seqs; tps: number; spec: SpecStats[]; explored: number };
const runs = new Map<Config, Run[]>(CONFIGS.map((c) => [c, []]));
const load0 = loadavg()[0];
// Warm-up (the JIT; and each persistent Scheduler's first requests, which --fresh measures).
if (values.fresh) await round(0, [CONFIGS[0]]);
else for (let i = 0; i < INSTANCES; i++) await round(i, CONFIGS);
for (let r = 0; r < ROUNDS; r++) for (const [c, x] of await round(r, CONFIGS)) runs.get(c)!.push(x);
const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
};
/** The 20%-trimmed mean and its standard error (from the winsorized variance). */
function trimmed(v: number[]): { mean: number; se: number } {
  const s = [...v].sort((a, b) => a - b);
  const g = Math.floor(0.2 * s.length);
  const kept = s.slice(g, s.length - g);
  const mean = kept.reduce((a, x) => a + x, 0) / kept.length;
  const w = s.map((x) => Math.min(Math.max(x, s[g]), s[s.length - 1 - g]));
  const wm = w.reduce((a, x) => a + x, 0) / w.length;
  const wv = w.reduce((a, x) => a + (x - wm) ** 2, 0) / (w.length - 1);
  return { mean, se: Math.sqrt(wv) / (0.6 * Math.sqrt(s.length)) };
}
const base = runs.get(CONFIGS[0])!;
const plains = CONFIGS.filter((c) => c.k === 0).map((c) => runs.get(c)!);
const ref = base.map((_, i) => Math.exp(plains.reduce((a, rs) => a + Math.log(rs[i].tps), 0) / plains.length));
const pct = (x: number) => (x * 100).toFixed(0) + '%';
console.log(
  `model ${dir}: ${prompts.length} prompts × ${n} greedy tokens, batch ${B}, draft vocabulary ${N}, ` +
    `${ROUNDS} rounds, ${values.fresh ? 'a new Scheduler each round' : 'Schedulers kept over the rounds'}; load average ${load0.toFixed(1)} → ${loadavg()[0].toFixed(1)}`,
);
console.log(`plain decoding: ${median(base.map((x) => x.tps)).toFixed(1)} tok/s`);
for (const c of plains.length > 1 ? CONFIGS : CONFIGS.slice(1)) {
  const rs = runs.get(c)!;
  const ratios = rs.map((x, i) => x.tps / ref[i]);
  const t = trimmed(ratios);
  const line = `${c.name}: ${median(rs.map((x) => x.tps)).toFixed(1)} tok/s (${t.mean.toFixed(3)} ± ${t.se.toFixed(3)}× plain; ` +
    `median ${median(ratios).toFixed(3)}×)`;
  if (c.k === 0) {
    console.log(line);
    continue;
  }
  const same = rs.every((x) => x.out.every((o, i) => o.ids.join() === base[0].out[i].ids.join()));
  const all = rs.flatMap((x) => x.spec);
  const perPos = Array.from({ length: c.k }, (_, j) => {
    const p = all.reduce((a, s) => a + (s.proposed[j] ?? 0), 0);
    return p ? pct(all.reduce((a, s) => a + (s.accepted[j] ?? 0), 0) / p) : '–';
  });
  const steps = all.reduce((a, s) => a + s.steps, 0);
  const emitted = all.reduce((a, s) => a + s.emitted, 0);
  // Each sequence's decode steps by the drafts it verified (one that stopped keeping MTP rows
  // decodes plain, whatever the policy chooses for the others).
  const decided = new Array(c.k + 1).fill(0);
  for (const sp of all) sp.lengths.forEach((d, k) => (decided[k] += d));
  const explored = rs.reduce((a, x) => a + x.explored, 0);
  const total = decided.reduce((a, b) => a + b, 0);
  console.log(
    `${line}, sequence steps by draft length [${decided.map((d) => pct(d / total)).join(', ')}]` +
      ` (${explored} exploring), acceptance per position [${perPos.join(', ')}], ` +
      `${steps ? (emitted / steps).toFixed(2) : '–'} tokens per drafted step, output ${same ? 'identical' : 'DIFFERENT'}`,
  );
}
