// Training ablations for the README, on the same data, seed and schedule: balancing (bias
// update on / off / sequence-wise aux loss only), MTP on / off, FP8 vs full precision.
// Prints a Markdown table and writes loss curves (SVG) into the run folder.
//   node --import tsx bench/train-ablations.ts --tokenizer DIR [--steps 300] [--out runs/ablations]

import { cpSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadKernels } from '../src/kernels/index.ts';
import { RECIPE, train, type TrainOptions, type TrainSummary } from '../src/train/loop.ts';
import { lossCurveSvg } from '../src/train/plot.ts';
import { PRESETS } from '../src/train/presets.ts';
import { Tokenizer } from '../src/text/tokenizer.ts';

const { values: a } = parseArgs({
  options: {
    tokenizer: { type: 'string' },
    data: { type: 'string' },
    steps: { type: 'string', default: '300' },
    out: { type: 'string', default: 'runs/ablations' },
    only: { type: 'string' },
  },
});
if (!a.tokenizer) throw new Error('--tokenizer DIR is required');
const steps = Number(a.steps);
const vocab = Tokenizer.fromDir(a.tokenizer).vocabSize;
const kernels = loadKernels();

const base = (out: string): TrainOptions => ({
  out,
  config: PRESETS.tiny(vocab),
  tokenizerDir: a.tokenizer!,
  sources: [{ kind: 'brown' }, { kind: 'nlp-corpus' }],
  kernels,
  steps,
  batch: 8,
  seqLen: 64,
  lr: 3e-3,
  warmup: Math.round(steps / 10),
  ...RECIPE,
  fp8: false,
  seed: 0,
  valFraction: 0.02,
  evalEvery: Math.round(steps / 6),
  evalWindows: 64,
  saveEvery: 0,
  log: (l) => process.stderr.write(`  ${l}\n`),
});

const VARIANTS: { name: string; over: Partial<TrainOptions> }[] = [
  { name: 'baseline (bias update + seq-aux, MTP λ=0.3)', over: {} },
  { name: 'no bias update (seq-aux only)', over: { biasUpdateSpeed: 0 } },
  { name: 'bias update only (no seq-aux)', over: { seqAux: 0 } },
  { name: 'no balancing at all', over: { biasUpdateSpeed: 0, seqAux: 0 } },
  { name: 'MTP off (λ=0)', over: { mtpWeight: 0 } },
  { name: 'FP8 GEMMs (simulated)', over: { fp8: true } },
];

mkdirSync(a.out!, { recursive: true });
const results: { name: string; r: TrainSummary }[] = [];
for (const [i, v] of VARIANTS.entries()) {
  if (a.only && !a.only.split(',').includes(String(i))) continue;
  const out = join(a.out!, `v${i}`);
  // Reuse the tokenized corpus of an earlier run with the same tokenizer.
  if (a.data && !existsSync(join(out, 'data'))) cpSync(a.data, join(out, 'data'), { recursive: true });
  process.stderr.write(`ablation ${i}: ${v.name}\n`);
  const t0 = performance.now();
  const r = await train({ ...base(out), ...v.over });
  process.stderr.write(`  ${((performance.now() - t0) / 1e3).toFixed(0)} s, ${r.tokensPerSec.toFixed(0)} tok/s\n`);
  results.push({ name: v.name, r });
  writeFileSync(join(a.out!, 'results.json'), JSON.stringify(results.map((x) => ({ name: x.name, ...x.r, history: undefined })), null, 2));
}

const fmtLoad = (r: TrainSummary) =>
  Object.entries(r.expertLoad)
    .map(([k, s]) => `${k.replace('model.layers.', 'L')} ${(s.max / s.mean).toFixed(2)}`)
    .join(', ');
process.stdout.write('| variant | val loss | train loss | max/mean expert load per layer |\n|---|---|---|---|\n');
for (const { name, r } of results) {
  process.stdout.write(`| ${name} | ${r.valLoss?.toFixed(4)} | ${r.finalLoss.toFixed(4)} | ${fmtLoad(r)} |\n`);
}
writeFileSync(
  join(a.out!, 'loss.svg'),
  lossCurveSvg(
    results.map(({ name, r }) => ({ name, points: r.history.map((h) => [h.step, h.loss] as [number, number]) })),
    { title: 'training loss by variant', yLabel: 'main-head cross-entropy' },
  ),
);
