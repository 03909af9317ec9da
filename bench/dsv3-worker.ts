// One dsv3 measurement run in its own process (so its peak RSS is its own): loads a
// checkpoint with the native kernels and times prefill and decode the way llama-bench does
// (engine/bench.ts). Prints one JSON object on stdout. Used by bench/run.ts.
//   node --import tsx bench/dsv3-worker.ts DIR|FILE.gguf THREADS [--quick] [--large]
// --large (bench-l, real-size models): prefill of 512 tokens and 32 decoded tokens only, two
// timed runs each, as llama-bench -p 512 -n 32 -r 2.

import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { loadKernels } from '../src/kernels/index.ts';
import { activeWeightBytes, benchModel } from '../src/engine/bench.ts';

const [dir, threadsArg] = process.argv.slice(2);
const quick = process.argv.includes('--quick');
const threads = Number(threadsArg);
const backend = process.argv.includes('--any-kernels') ? 'auto' : 'native';
const model = DeepseekV3.load(dir, { kernels: loadKernels({ backend, threads }), mtp: false });
const large = process.argv.includes('--large');
const figures = large
  ? benchModel(model, { prompts: [512], decodeTokens: 32, depth: 0, batch: 1, batchDepth: 0, reps: 2 })
  : benchModel(model, { prompts: [128, 512], decodeTokens: 64, depth: 512, batch: 8, batchDepth: 128, reps: quick ? 2 : 3 });
const [p128, p512, tg64, d512, b8] = large ? [undefined, figures[0], figures[1]] : figures;
const out = {
  prefill_128: p128?.value ?? null,
  prefill_512: p512!.value,
  decode_tg64: tg64!.value,
  decode_d512: d512?.value ?? null,
  decode_b8: b8?.value ?? null,
  peak_rss_mb: process.resourceUsage().maxRSS / 1024,
  active_bytes: activeWeightBytes(model),
};
process.stdout.write(JSON.stringify(out) + '\n');
