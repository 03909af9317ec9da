// Timing a loaded model the way llama-bench does: prefill of a fresh prompt, decoding one
// token at a time at batch 1 (from an empty cache and after a prompt) and at batch B, each
// the median of `reps` timed runs after one untimed warm-up. Random token ids (the speed
// does not depend on them), greedy picks. Used by `dsv3 bench` and `npm run bench`.

import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { LinearWeight } from '../tensor/weight.ts';
import type { MlpWeights } from '../model/weights.ts';
import { Rng } from '../tensor/random.ts';

export interface BenchOptions {
  /** Prompt lengths to prefill. */
  prompts: number[];
  /** Tokens decoded per decode run. */
  decodeTokens: number;
  /** Prompt length before the second batch-1 decode run (0: skip it). */
  depth: number;
  /** Sequences of the batched decode run (1 or less: skip it), each after `batchDepth` tokens. */
  batch: number;
  batchDepth: number;
  /** Timed runs per figure (the median is reported). */
  reps: number;
}

export interface BenchFigure {
  metric: 'prefill_tps' | 'decode_tps';
  /** Prompt length: prefilled, or in the cache before decoding. */
  prompt: number;
  batch: number;
  /** Tokens per second (all sequences together). */
  value: number;
}

/** Every figure of `opts`, in order: prefill per prompt, decode b1, b1 after depth, batched. */
export function benchModel(model: DeepseekV3, opts: BenchOptions): BenchFigure[] {
  const V = model.cfg.vocab_size;
  const rng = new Rng(1);
  const tokens = (n: number) => Array.from({ length: n }, () => rng.int(V));

  const time = (fn: () => void, setup: () => void = () => {}): number => {
    setup();
    fn();
    const t: number[] = [];
    for (let i = 0; i < opts.reps; i++) {
      setup();
      const t0 = performance.now();
      fn();
      t.push((performance.now() - t0) / 1e3);
    }
    return t.sort((a, b) => a - b)[Math.floor((t.length - 1) / 2)];
  };

  const prefill = (n: number): BenchFigure => {
    const ids = tokens(n);
    const s = time(() => void model.forward([{ ids, cache: model.newCache() }], { logits: 'last', reuse: true }));
    return { metric: 'prefill_tps', prompt: n, batch: 1, value: n / s };
  };

  const decode = (n: number, depth: number, batch: number): BenchFigure => {
    let caches = [model.newCache()];
    let next = [0];
    const s = time(
      () => {
        for (let i = 0; i < n; i++) {
          // (Outputs in reused memory, as the scheduler's steps take them.)
          const r = model.forward(caches.map((cache, j) => ({ ids: [next[j]], cache })), { logits: 'last', reuse: true });
          next = caches.map((_, j) => model.K.argmax(r.logits.subarray(j * V, (j + 1) * V)));
        }
      },
      () => {
        caches = Array.from({ length: batch }, () => model.newCache());
        next = caches.map(() => rng.int(V));
        if (depth > 0) model.forward(caches.map((cache) => ({ ids: tokens(depth), cache })), { logits: 'none', reuse: true });
      },
    );
    return { metric: 'decode_tps', prompt: depth, batch, value: (n * batch) / s };
  };

  model.forward([{ ids: tokens(Math.min(16, model.cfg.max_position_embeddings - 1)), cache: model.newCache() }], { logits: 'last' });
  const out = opts.prompts.map(prefill);
  out.push(decode(opts.decodeTokens, 0, 1));
  if (opts.depth > 0) out.push(decode(opts.decodeTokens, opts.depth, 1));
  if (opts.batch > 1) out.push(decode(opts.decodeTokens, opts.batchDepth, opts.batch));
  return out;
}

/** Bytes a matrix occupies as loaded (FP8: codes plus block scales). */
function bytesOf(w: LinearWeight | null): number {
  return w ? w.data.byteLength + (w.scale?.byteLength ?? 0) : 0;
}

const mlpBytes = (m: MlpWeights) => bytesOf(m.gate_proj) + bytesOf(m.up_proj) + bytesOf(m.down_proj);

/**
 * Weight bytes one token reads at batch 1, as loaded: every layer's attention, its dense MLP
 * or router + shared experts + num_experts_per_tok routed experts (of average size), and
 * the output head (the embedding row and the norms are negligible). The batch-1 decode
 * roofline is memory bandwidth over this.
 */
export function activeWeightBytes(model: DeepseekV3): number {
  const w = model.weights;
  let n = bytesOf(w.lm_head);
  for (const l of w.layers) {
    const a = l.self_attn;
    n += bytesOf(a.q_a_proj) + bytesOf(a.q_b_proj) + bytesOf(a.q_proj) + bytesOf(a.kv_a_proj_with_mqa);
    n += bytesOf(a.kv_b_proj) + bytesOf(a.k_b_proj) + bytesOf(a.v_b_proj) + bytesOf(a.o_proj);
    if (l.mlp) n += mlpBytes(l.mlp);
    if (l.moe) {
      const e = l.moe.experts;
      const routed = e.reduce((s, x) => s + mlpBytes(x), 0) / Math.max(1, e.length);
      n += bytesOf(l.moe.gate) + (l.moe.shared ? mlpBytes(l.moe.shared) : 0) + model.cfg.num_experts_per_tok * routed;
    }
  }
  return n;
}
