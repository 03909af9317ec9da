// Feed-forward blocks: the dense SwiGLU MLP and DeepSeekMoE (fine-grained routed experts
// plus always-on shared experts). Tokens are grouped by expert so each expert runs one
// GEMM over all of its tokens; results are scattered back in expert order, so a token's
// output never depends on which other tokens share the batch.
//
// The backward passes follow each forward in reverse. Gradients reach the router through
// the routing weights of the chosen experts; the choice itself (top-k, groups, the
// selection bias) is a constant of the step.
//
// Legend: T tokens, D hidden size, I intermediate size, E routed experts, k experts per
// token (topk).

import type { DeepseekConfig } from '../io/config.ts';
import type { Kernels, RouteParams } from '../kernels/kernels.ts';
import type { TrainKernels } from '../kernels/train.ts';
import { NONE, linearBackward } from './tape.ts';
import { HEAP, type Alloc } from '../tensor/scratch.ts';
import type { MlpWeights, MoeWeights } from './weights.ts';

/** What mlpBackward needs, kept by mlpForward when training. */
export class MlpSaved {
  /** [T, D] input. */
  x = NONE;
  /** [T, I] gate_proj and up_proj outputs, and silu(gate) · up (down_proj's input). */
  g = NONE;
  u = NONE;
  a = NONE;
}

/** down_proj(silu(gate_proj(x)) · up_proj(x)); x [T, D] → [T, D]. */
export function mlpForward(
  K: Kernels,
  w: MlpWeights,
  x: Float32Array,
  T: number,
  saved?: MlpSaved,
  mem: Alloc = HEAP,
): Float32Array {
  if (!saved) {
    // Inference: one kernel call (the same numbers as the steps below).
    const out = mem.f32(T * w.down_proj.rows);
    const all = allRows(T, mem);
    const offsets = mem.i32(2);
    offsets[1] = T;
    K.ffnExperts(out, x, w.down_proj.rows, [w], offsets, all.rows, all.ones);
    return out;
  }
  const I = w.gate_proj.rows;
  const g = new Float32Array(T * I);
  const u = new Float32Array(T * I);
  K.matmul(g, x, T, w.gate_proj);
  K.matmul(u, x, T, w.up_proj);
  const a = saved ? new Float32Array(T * I) : g; // inference overwrites the gate in place
  K.siluMul(a, g, u, T * I);
  const out = new Float32Array(T * w.down_proj.rows);
  K.matmul(out, a, T, w.down_proj);
  if (saved) {
    saved.x = x;
    saved.g = g;
    saved.u = u;
    saved.a = a;
  }
  return out;
}

/** Rows 0 … T-1 with weight 1 each (a network that serves every token). */
function allRows(T: number, mem: Alloc): { rows: Int32Array; ones: Float32Array } {
  const rows = mem.i32(T);
  for (let i = 0; i < T; i++) rows[i] = i;
  return { rows, ones: mem.f32(T).fill(1) };
}

/** Backward of mlpForward: dy [T, D] → dx [T, D]; weight gradients accumulate in gw. */
export function mlpBackward(
  K: Kernels,
  TK: TrainKernels,
  w: MlpWeights,
  gw: MlpWeights,
  s: MlpSaved,
  dy: Float32Array,
  T: number,
): Float32Array {
  const I = w.gate_proj.rows;
  const da = linearBackward(K, gw.down_proj, w.down_proj, dy, s.a, T);
  const dg = new Float32Array(T * I);
  const du = new Float32Array(T * I);
  TK.siluMulBackward(dg, du, da, s.g, s.u, T * I);
  const dx = linearBackward(K, gw.gate_proj, w.gate_proj, dg, s.x, T);
  K.add(dx, linearBackward(K, gw.up_proj, w.up_proj, du, s.x, T), dx.length);
  return dx;
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
  /** [T, E] the router logits x · gateᵀ (before sigmoid/softmax). */
  logits: Float32Array;
}

/** Route x [T, D] with the layer's gate. */
export function route(K: Kernels, w: MoeWeights, p: RouteParams, x: Float32Array, T: number, mem: Alloc = HEAP): Routing {
  const E = w.gate.rows;
  const logits = mem.f32(T * E);
  K.matmul(logits, x, T, w.gate);
  const idx = mem.i32(T * p.topk);
  const weights = mem.f32(T * p.topk);
  K.moeRoute(idx, weights, logits, T, E, p);
  return { idx, weights, logits };
}

/** What moeBackward needs, kept by moeForward when training. */
export class MoeSaved {
  /** [T, D] input. */
  x = NONE;
  route: Routing = { idx: new Int32Array(0), weights: NONE, logits: NONE };
  /** The (token, slot) pairs in expert order: expert e has pairs count[e] … count[e+1]-1. */
  count: Int32Array = new Int32Array(0);
  /** Per pair: its token, its index t·k + j in route.idx, its routing weight. */
  rows: Int32Array = new Int32Array(0);
  slots: Int32Array = new Int32Array(0);
  wts = NONE;
  /** Per routed expert (null when it got no tokens): its record and its outputs [n, D]. */
  experts: (MlpSaved | null)[] = [];
  ye: Float32Array[] = [];
  shared: MlpSaved | null = null;
  /**
   * [T, E] a gradient on the router logits from outside the layer's output (the
   * sequence-wise balance loss), added in moeBackward; null for none.
   */
  dLogits: Float32Array | null = null;
}

/** Σ_k weight_k · expert_k(x) + shared(x); x [T, D] → [T, D]. */
export function moeForward(
  K: Kernels,
  w: MoeWeights,
  p: RouteParams,
  x: Float32Array,
  T: number,
  onRoute?: (r: Routing) => void,
  saved?: MoeSaved,
  mem: Alloc = HEAP,
): Float32Array {
  const D = w.gate.cols;
  const E = w.experts.length;
  // Routing decisions handed to onRoute may be kept by the caller: fresh arrays then.
  const r = route(K, w, p, x, T, onRoute ? HEAP : mem);
  onRoute?.(r);

  // Counting sort of the (token, slot) pairs by expert, tokens in order within an expert.
  const count = mem.i32(E + 1);
  for (let i = 0; i < r.idx.length; i++) count[r.idx[i] + 1]++;
  for (let e = 0; e < E; e++) count[e + 1] += count[e];
  const rows = mem.i32(r.idx.length);
  const wts = mem.f32(r.idx.length);
  const slots = saved ? new Int32Array(r.idx.length) : null;
  const fill = count.slice(0, E);
  for (let i = 0; i < r.idx.length; i++) {
    const j = fill[r.idx[i]]++;
    rows[j] = Math.floor(i / p.topk);
    wts[j] = r.weights[i];
    if (slots) slots[j] = i;
  }
  if (saved) {
    saved.x = x;
    saved.route = r;
    saved.count = count;
    saved.rows = rows;
    saved.slots = slots!;
    saved.wts = wts;
    saved.experts = new Array(E).fill(null);
    saved.ye = new Array(E).fill(NONE);
  }

  const y = mem.f32(T * D);
  if (!saved) {
    // Inference: every expert that got tokens, then the shared experts over all tokens
    // (weight 1, which adds exactly as K.add does), in one kernel call.
    const S = w.shared ? T : 0;
    const nets = [];
    const offsets = [0];
    for (let e = 0; e < E; e++) {
      if (count[e + 1] === count[e]) continue;
      nets.push(w.experts[e]);
      offsets.push(count[e + 1]);
    }
    const netRows = mem.i32(rows.length + S);
    const netWts = mem.f32(rows.length + S);
    netRows.set(rows);
    netWts.set(wts);
    if (w.shared) {
      const all = allRows(T, mem);
      netRows.set(all.rows, rows.length);
      netWts.set(all.ones, rows.length);
      nets.push(w.shared);
      offsets.push(rows.length + T);
    }
    const offs = mem.i32(offsets.length);
    offs.set(offsets);
    K.ffnExperts(y, x, D, nets, offs, netRows, netWts);
    return y;
  }
  for (let e = 0; e < E; e++) {
    const n = count[e + 1] - count[e];
    if (n === 0) continue;
    const er = rows.subarray(count[e], count[e + 1]);
    const xe = new Float32Array(n * D);
    K.gatherRows(xe, x, er, D);
    const es = saved ? new MlpSaved() : undefined;
    const ye = mlpForward(K, w.experts[e], xe, n, es);
    K.scatterAddRows(y, ye, er, wts.subarray(count[e], count[e + 1]), D);
    if (saved) {
      saved.experts[e] = es!;
      saved.ye[e] = ye;
    }
  }
  if (w.shared) {
    if (saved) saved.shared = new MlpSaved();
    K.add(y, mlpForward(K, w.shared, x, T, saved?.shared ?? undefined), T * D);
  }
  return y;
}

/** Backward of moeForward: dy [T, D] → dx [T, D]; weight gradients accumulate in gw. */
export function moeBackward(
  K: Kernels,
  TK: TrainKernels,
  w: MoeWeights,
  gw: MoeWeights,
  p: RouteParams,
  s: MoeSaved,
  dy: Float32Array,
  T: number,
): Float32Array {
  const D = w.gate.cols;
  const E = w.experts.length;
  const dx = w.shared ? mlpBackward(K, TK, w.shared, gw.shared!, s.shared!, dy, T) : new Float32Array(T * D);

  // Each expert: back through the weighted scatter, the expert, and the gather.
  const dWeights = new Float32Array(T * p.topk); // [T, k], aligned with route.idx
  for (let e = 0; e < E; e++) {
    const es = s.experts[e];
    if (!es) continue;
    const a = s.count[e];
    const n = s.count[e + 1] - a;
    const er = s.rows.subarray(a, a + n);
    const dye = new Float32Array(n * D);
    const dwe = new Float32Array(n);
    TK.scatterAddRowsBackward(dye, dwe, dy, s.ye[e], er, s.wts.subarray(a, a + n), D);
    for (let j = 0; j < n; j++) dWeights[s.slots[a + j]] = dwe[j];
    const dxe = mlpBackward(K, TK, w.experts[e], gw.experts[e], es, dye, n);
    K.scatterAddRows(dx, dxe, er, new Float32Array(n).fill(1), D);
  }

  // The router: through the chosen experts' weights to the logits, then the gate matmul.
  const dLogits = new Float32Array(T * E);
  TK.moeRouteBackward(dLogits, dWeights, s.route.logits, s.route.idx, T, E, p);
  if (s.dLogits) K.add(dLogits, s.dLogits, T * E);
  K.add(dx, linearBackward(K, gw.gate, w.gate, dLogits, s.x, T), T * D);
  return dx;
}
