// MTP speculative decoding against plain decoding, greedy, in one run: decode tokens/s
// (prefill excluded), the draft policy's decisions (decode steps by draft length), acceptance
// per draft position and tokens per drafted verify pass. The outputs are checked to be
// identical to plain decoding's.
//   node --import tsx bench/speculative.ts [DIR] [--tokens 200] [--rounds 3] [--batch 1]
//     [--draft-vocab N] [--bench-s] [--configs plain,a1,a2,a3,f1,f2,f3] [--fresh] [--prompts P]
// DIR defaults to the shipped model; --bench-s uses a random bench-s-sized checkpoint with an
// MTP module (written once into .cache/bench/). --batch B decodes B sequences together
// (maxBatch B), each wave of B prompts submitted at once; the speed of a wave is its tokens
// after the first over the time from its first token to its last. A round decodes --prompts
// prompts (waves of B): by default B, or at batch 1 three (eight with --tokens under 200).
// Each configuration keeps one Scheduler over all its rounds, as `dsv3 serve` and the library's
// Model do (the draft policy's measurements carry over); --fresh makes a new one per round, a
// new process's first requests, which pay for measuring each option at each batch size.
// Configurations: plain decoding (named again: a control, plain against itself); `aK` is `--speculative mtp --draft-tokens K` (the adaptive
// policy: each step drafts 0 … K tokens, whichever it expects to decode fastest); `fK` drafts
// K tokens every step (policy 'fixed'), what speculating costs or gains when forced.

import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
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
    batch: { type: 'string', default: '1' },
    'draft-vocab': { type: 'string' },
    'bench-s': { type: 'boolean' },
    configs: { type: 'string', default: 'plain,a1,a2,a3,f1,f2,f3' },
    fresh: { type: 'boolean' },
    prompts: { type: 'string' },
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

const schedulers = new Map<Config, Scheduler>();
async function run(c: Config) {
  let s = schedulers.get(c);
  if (!s || values.fresh) {
    s = new Scheduler(model, {
      maxBatch: B,
      speculative: c.k ? { draftTokens: c.k, draftVocab: N, policy: c.policy } : undefined,
    });
    schedulers.set(c, s);
  }
  const before = s.draftPolicy?.stats;
  const out: { ids: number[]; r: SeqResult }[] = [];
  let tokens = 0;
  let secs = 0;
  for (let w = 0; w < prompts.length; w += B) {
    const wave = await Promise.all(prompts.slice(w, w + B).map((prompt) => {
      const ids: number[] = [];
      return new Promise<{ ids: number[]; r: SeqResult }>((done) =>
        s!.submit({ prompt, maxNewTokens: n, sampler: new Sampler({ temperature: 0 }), onToken: (id) => void ids.push(id), onDone: (r) => done({ ids, r }) }));
    }));
    out.push(...wave);
    tokens += wave.reduce((a, o) => a + o.r.completionTokens - 1, 0);
    secs += (Math.max(...wave.map((o) => o.r.totalMs)) - Math.min(...wave.map((o) => o.r.ttftMs))) / 1e3;
  }
  const after = s.draftPolicy?.stats;
  return { out, tps: tokens / secs, spec: out.map((o) => o.r.spec!), explored: (after?.explored ?? 0) - (before?.explored ?? 0) };
}

// Rounds over the configurations in rotating order; each speed is the median over the rounds,
// and each ratio the median of the rounds' ratios to plain decoding in the same round
// (throughput on this shared VM drifts between minutes, which sequential runs mistake for a
// speed-up or a slow-down).
const ROUNDS = Number(values.rounds);
const runs = new Map<Config, Awaited<ReturnType<typeof run>>[]>(CONFIGS.map((c) => [c, []]));
const load0 = loadavg()[0];
// Warm-up (the JIT; and each persistent Scheduler's first requests, which --fresh measures).
for (const c of values.fresh ? [CONFIGS[0]] : CONFIGS) await run(c);
for (let r = 0; r < ROUNDS; r++) {
  for (let i = 0; i < CONFIGS.length; i++) {
    const c = CONFIGS[(i + r) % CONFIGS.length];
    runs.get(c)!.push(await run(c));
  }
}
const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
};
const plain = CONFIGS[0];
const base = runs.get(plain)!;
const pct = (x: number) => (x * 100).toFixed(0) + '%';
console.log(
  `model ${dir}: ${prompts.length} prompts × ${n} greedy tokens, batch ${B}, draft vocabulary ${N}, ` +
    `median of ${ROUNDS} rounds, ${values.fresh ? 'a new Scheduler each round' : 'one Scheduler per configuration'}; load average ${load0.toFixed(1)} → ${loadavg()[0].toFixed(1)}`,
);
console.log(`plain decoding: ${median(base.map((x) => x.tps)).toFixed(1)} tok/s`);
for (const c of CONFIGS.slice(1)) {
  const rs = runs.get(c)!;
  const ratios = rs.map((x, i) => x.tps / base[i].tps);
  const line = `${c.name}: ${median(rs.map((x) => x.tps)).toFixed(1)} tok/s (${median(ratios).toFixed(3)}× plain; rounds ` +
    `${ratios.map((x) => x.toFixed(2)).join(' ')})`;
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
