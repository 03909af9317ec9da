// One dsv3 measurement run in its own process (so its peak RSS is its own): loads a
// checkpoint with the native kernels and times prefill and decode the way llama-bench does
// (engine/bench.ts). Prints one JSON object on stdout. Used by bench/run.ts.
//   node --import tsx bench/dsv3-worker.ts DIR THREADS [--quick]

import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { loadKernels } from '../src/kernels/index.ts';
import { activeWeightBytes, benchModel } from '../src/engine/bench.ts';

const [dir, threadsArg] = process.argv.slice(2);
const quick = process.argv.includes('--quick');
const threads = Number(threadsArg);
const backend = process.argv.includes('--any-kernels') ? 'auto' : 'native';
const model = DeepseekV3.load(dir, { kernels: loadKernels({ backend, threads }), mtp: false });
const [p128, p512, tg64, d512, b8] = benchModel(model, {
  prompts: [128, 512],
  decodeTokens: 64,
  depth: 512,
  batch: 8,
  batchDepth: 128,
  reps: quick ? 2 : 3,
});
const out = {
  prefill_128: p128.value,
  prefill_512: p512.value,
  decode_tg64: tg64.value,
  decode_d512: d512.value,
  decode_b8: b8.value,
  peak_rss_mb: process.resourceUsage().maxRSS / 1024,
  active_bytes: activeWeightBytes(model),
};
process.stdout.write(JSON.stringify(out) + '\n');
