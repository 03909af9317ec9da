// One dsv3 measurement run in its own process (so its peak RSS is its own): loads a
// checkpoint with the native kernels and times prefill and decode the way llama-bench does.
// Prints one JSON object on stdout. Used by bench/run.ts.
//   node --import tsx bench/dsv3-worker.ts DIR THREADS [--quick]

import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { loadKernels } from '../src/kernels/index.ts';
import { Rng } from '../src/tensor/random.ts';

const [dir, threadsArg] = process.argv.slice(2);
const quick = process.argv.includes('--quick');
const threads = Number(threadsArg);
const backend = process.argv.includes('--any-kernels') ? 'auto' : 'native';
const model = DeepseekV3.load(dir, { kernels: loadKernels({ backend, threads }), mtp: false });
const V = model.cfg.vocab_size;
const rng = new Rng(1);
const tokens = (n: number) => Array.from({ length: n }, () => rng.int(V));
const reps = quick ? 2 : 3;

/** Median of `reps` timings of fn (seconds), after one untimed warm-up run as llama-bench does. */
function time(fn: () => void, setup: () => void = () => {}): number {
  setup();
  fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    setup();
    const t0 = performance.now();
    fn();
    t.push((performance.now() - t0) / 1e3);
  }
  return t.sort((a, b) => a - b)[Math.floor(t.length / 2)];
}

function prefill(n: number): number {
  const ids = tokens(n);
  const s = time(() => void model.forward([{ ids, cache: model.newCache() }], { logits: 'last' }));
  return n / s;
}

/** Decode `n` tokens one at a time for `batch` sequences after a `depth`-token prompt each. */
function decode(n: number, depth: number, batch: number): number {
  let caches = [model.newCache()];
  let next = [0];
  const s = time(
    () => {
      for (let i = 0; i < n; i++) {
        const r = model.forward(caches.map((cache, j) => ({ ids: [next[j]], cache })), { logits: 'last' });
        next = caches.map((_, j) => argmax(r.logits.subarray(j * V, (j + 1) * V)));
      }
    },
    () => {
      caches = Array.from({ length: batch }, () => model.newCache());
      next = caches.map(() => rng.int(V));
      if (depth > 0) model.forward(caches.map((cache) => ({ ids: tokens(depth), cache })), { logits: 'none' });
    },
  );
  return (n * batch) / s;
}

function argmax(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
  return b;
}

model.forward([{ ids: tokens(16), cache: model.newCache() }], { logits: 'last' }); // warm-up
const out = {
  prefill_128: prefill(128),
  prefill_512: prefill(512),
  decode_tg64: decode(64, 0, 1),
  decode_d512: decode(64, 512, 1),
  decode_b8: decode(quick ? 16 : 64, 128, 8),
  peak_rss_mb: process.resourceUsage().maxRSS / 1024,
};
process.stdout.write(JSON.stringify(out) + '\n');
