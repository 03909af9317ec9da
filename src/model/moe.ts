// Feed-forward blocks: the dense SwiGLU MLP and DeepSeekMoE (fine-grained routed experts
// plus always-on shared experts). Tokens are grouped by expert so each expert runs one
// GEMM over all of its tokens; results are scattered back in expert order, so a token's
// output never depends on which other tokens share the batch.
//
// Legend: T tokens, D hidden size, E routed experts, k experts per token (topk).

import type { DeepseekConfig } from '../io/config.ts';
import type { Kernels, RouteParams } from '../kernels/kernels.ts';
import type { MlpWeights, MoeWeights } from './weights.ts';

/** down_proj(silu(gate_proj(x)) · up_proj(x)); x [T, D] → [T, D]. */
export function mlpForward(K: Kernels, w: MlpWeights, x: Float32Array, T: number): Float32Array {
  const I = w.gate_proj.rows;
  const g = new Float32Array(T * I);
  const u = new Float32Array(T * I);
  K.matmul(g, x, T, w.gate_proj);
  K.matmul(u, x, T, w.up_proj);
  K.siluMul(g, g, u, T * I);
  const out = new Float32Array(T * w.down_proj.rows);
  K.matmul(out, g, T, w.down_proj);
  return out;
}

/**
 * The gate's parameters. As in DeepSeek's reference (inference/model.py), the chosen
 * weights are renormalised exactly when scoring is sigmoid (V3); softmax scores (V2) are
 * used as they are. For the released configs this agrees with norm_topk_prob.
 */
export function routeParams(cfg: DeepseekConfig, bias: Float32Array | null): RouteParams {
  return {
    topk: cfg.num_experts_per_tok,
    nGroup: cfg.n_group,
    topkGroup: cfg.topk_group,
    scoring: cfg.scoring_func,
    bias,
    normalize: cfg.scoring_func === 'sigmoid',
    scale: cfg.routed_scaling_factor,
  };
}

export interface Routing {
  /** [T, k] chosen experts, descending selection score. */
  idx: Int32Array;
  /** [T, k] their weights (normalised, times routed_scaling_factor). */
  weights: Float32Array;
}

/** Route x [T, D] with the layer's gate. */
export function route(K: Kernels, w: MoeWeights, p: RouteParams, x: Float32Array, T: number): Routing {
  const E = w.gate.rows;
  const logits = new Float32Array(T * E);
  K.matmul(logits, x, T, w.gate);
  const idx = new Int32Array(T * p.topk);
  const weights = new Float32Array(T * p.topk);
  K.moeRoute(idx, weights, logits, T, E, p);
  return { idx, weights };
}

/** Σ_k weight_k · expert_k(x) + shared(x); x [T, D] → [T, D]. */
export function moeForward(
  K: Kernels,
  w: MoeWeights,
  p: RouteParams,
  x: Float32Array,
  T: number,
  onRoute?: (r: Routing) => void,
): Float32Array {
  const D = w.gate.cols;
  const E = w.experts.length;
  const r = route(K, w, p, x, T);
  onRoute?.(r);

  // Counting sort of the (token, slot) pairs by expert, tokens in order within an expert.
  const count = new Int32Array(E + 1);
  for (let i = 0; i < r.idx.length; i++) count[r.idx[i] + 1]++;
  for (let e = 0; e < E; e++) count[e + 1] += count[e];
  const rows = new Int32Array(r.idx.length);
  const wts = new Float32Array(r.idx.length);
  const fill = count.slice(0, E);
  for (let i = 0; i < r.idx.length; i++) {
    const j = fill[r.idx[i]]++;
    rows[j] = Math.floor(i / p.topk);
    wts[j] = r.weights[i];
  }

  const y = new Float32Array(T * D);
  for (let e = 0; e < E; e++) {
    const n = count[e + 1] - count[e];
    if (n === 0) continue;
    const er = rows.subarray(count[e], count[e + 1]);
    const xe = new Float32Array(n * D);
    K.gatherRows(xe, x, er, D);
    const ye = mlpForward(K, w.experts[e], xe, n);
    K.scatterAddRows(y, ye, er, wts.subarray(count[e], count[e + 1]), D);
  }
  if (w.shared) K.add(y, mlpForward(K, w.shared, x, T), T * D);
  return y;
}
