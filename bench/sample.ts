// Sampling speed at DeepSeek-V3's vocabulary (129,280 logits a row): Kernels.sampleBatch in
// TypeScript (the reference: what engine/sampler.ts computes, one row after another) against the
// native addon (all rows of the batch over the thread pool), in µs per row, for batches of 1, 8
// and 32 rows and the settings a server sees. Both pick the same ids (src/kernels/sample.test.ts).
//   node --import tsx bench/sample.ts [--threads N] [--batches 1,8,32] [--json]
// Logits are LLM-like: a few large values over a long normal tail. Each case is the median of
// repeated calls; cpu% is process CPU time / (wall time · threads): well below 100 means other
// processes took the cores and the numbers are high.

import { refKernels } from '../src/kernels/ref/index.ts';
import { loadNative, nativeAddon, nativeInfo, nativeLoadError, nativeMathMatches, setThreads } from '../src/kernels/native.ts';
import type { Kernels, SampleRow } from '../src/kernels/kernels.ts';
import { Rng } from '../src/tensor/random.ts';

const args = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const native = loadNative();
const addon = nativeAddon();
if (!native || !addon || typeof addon.sampleBatch !== 'function' || !nativeMathMatches(addon)) {
  console.error(`the native sampler is unavailable (${native ? 'stale addon or non-fdlibm Math' : nativeLoadError()}); run npm run build:native`);
  process.exit(1);
}
if (opt('--threads')) setThreads(Number(opt('--threads')));
const info = nativeInfo()!;
const batches = (opt('--batches') ?? '1,8,32').split(',').map(Number);
const V = 129280;
const VOCAB = 128815; // DeepSeek-V3's tokenizer: the padding ids are never picked

const rng = new Rng(1);
const maxB = Math.max(...batches);
const logits = new Float32Array(V * maxB);
for (let i = 0; i < logits.length; i++) logits[i] = 2 * rng.normal() + (rng.uniform() < 0.002 ? 6 + 8 * rng.uniform() : 0);
const history = Array.from({ length: 600 }, () => Math.floor(rng.uniform() * VOCAB));
const mask = new Int32Array(Math.ceil(V / 32));
for (let i = 0; i < V; i++) if (rng.uniform() < 0.3) mask[i >> 5]! |= 1 << (i & 31);

const BASE: Omit<SampleRow, 'row' | 'u'> = {
  temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0,
  vocab: VOCAB, history: null, mask: null, logprobs: -1,
};
const CASES: [string, Partial<SampleRow>][] = [
  ['greedy', { temperature: 0 }],
  ['T=0.7', { temperature: 0.7 }],
  ['T=0.7 top-p 0.95', { temperature: 0.7, topP: 0.95 }],
  ['T=0.7 top-k 40', { temperature: 0.7, topK: 40 }],
  ['T=1 min-p 0.05', { minP: 0.05 }],
  ['T=0.6 top-p 0.95, penalties (600 ids)', { temperature: 0.6, topP: 0.95, frequencyPenalty: 0.5, presencePenalty: 0.3, history }],
  ['T=0.7 top-p 0.95, grammar mask', { temperature: 0.7, topP: 0.95, mask }],
  ['T=0.7 top-p 0.95, logprobs 5', { temperature: 0.7, topP: 0.95, logprobs: 5 }],
];

/** Median µs per row of sampleBatch over `b` rows, and the CPU use. */
function time(K: Kernels, p: Partial<SampleRow>, b: number, budgetMs: number): [number, number] {
  const rows = (): SampleRow[] => Array.from({ length: b }, (_, row) => ({ ...BASE, ...p, row, u: rng.uniform() }));
  K.sampleBatch(logits, V, rows());
  const times: number[] = [];
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  while (times.length < 3 || (performance.now() - t0 < budgetMs && times.length < 200)) {
    const r = rows();
    const t = performance.now();
    K.sampleBatch(logits, V, r);
    times.push((performance.now() - t) * 1000 / b);
  }
  const c = process.cpuUsage(c0);
  const threads = K === refKernels ? 1 : Math.min(b, info.threads);
  times.sort((x, y) => x - y);
  return [times[Math.floor(times.length / 2)]!, (c.user + c.system) / 1000 / (performance.now() - t0) / threads];
}

const results: { case: string; batch: number; tsUs: number; nativeUs: number; speedup: number }[] = [];
if (!args.includes('--json')) {
  console.log(`dsv3 sampling bench: V = ${V}, native ${addon.level()} with ${info.threads} threads; µs per row (cpu%)`);
  console.log(`${'case'.padEnd(40)} ${batches.map((b) => `batch ${b}: TS → native`.padStart(30)).join('')}`);
}
for (const [name, p] of CASES) {
  const cells: string[] = [];
  for (const b of batches) {
    const [ts, tsCpu] = time(refKernels, p, b, 1500);
    const [nat, natCpu] = time(native, p, b, 1000);
    results.push({ case: name, batch: b, tsUs: ts, nativeUs: nat, speedup: ts / nat });
    cells.push(`${ts.toFixed(0)} (${(tsCpu * 100).toFixed(0)}%) → ${nat.toFixed(0)} (${(natCpu * 100).toFixed(0)}%)`.padStart(30));
  }
  if (!args.includes('--json')) console.log(`${name.padEnd(40)} ${cells.join('')}`);
}
if (args.includes('--json')) console.log(JSON.stringify({ V, level: addon.level(), threads: info.threads, results }, null, 1));
