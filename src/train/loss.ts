// The training losses of DeepSeek-V3 and their gradients with respect to the logits:
// next-token cross-entropy (main model), the MTP cross-entropy (row i predicts token i+2),
// and the complementary sequence-wise balance loss of each MoE layer (V3 paper, §2.1.2,
// eq. 17–20), exactly as ../shared/golden's train.json documents them.
//
// Legend: B sequences, T rows of the flat batch, V vocabulary, E routed experts, K_r
// experts per token, T_b rows of sequence b.

import type { RouteParams } from '../kernels/kernels.ts';
import type { TrainKernels } from '../kernels/train.ts';
import type { SeqSlice } from '../model/mla.ts';
import type { Routing } from '../model/moe.ts';

/** The α train.json reports the balance loss with (the V3 paper's value). */
export const BALANCE_ALPHA = 1e-4;

/**
 * Which experts count as "selected" in f_i: 'routed' = the router's actual choice (with the
 * selection bias and the group limit; the paper's), 'raw' = the plain top-K_r of the
 * unbiased scores (the formula read literally; train.json's *_raw_topk fields).
 */
export type BalanceTopk = 'routed' | 'raw';

/**
 * Mean cross-entropy of logits [T, V] against targets [T] (−1 skips a row), over the rows
 * it counts. Writes dLogits = weight · ∂mean/∂logits. Returns the mean and the row count.
 */
export function meanCrossEntropy(
  TK: TrainKernels,
  dLogits: Float32Array,
  logits: Float32Array,
  targets: Int32Array,
  V: number,
  weight: number,
): { mean: number; count: number } {
  const T = targets.length;
  let count = 0;
  for (let t = 0; t < T; t++) if (targets[t] >= 0) count++;
  if (count === 0) {
    dLogits.fill(0, 0, T * V);
    return { mean: 0, count };
  }
  const sum = TK.crossEntropy(dLogits, logits, targets, T, V, weight / count);
  return { mean: sum / count, count };
}

/** Indices of the k largest values; ties go to the lower index. */
function topk(v: Float64Array, k: number): number[] {
  const idx = Array.from(v.keys());
  idx.sort((a, b) => (v[b] !== v[a] ? (v[b] > v[a] ? 1 : -1) : a - b));
  return idx.slice(0, k);
}

/**
 * Σ_i f_i · P_i of one MoE layer for each sequence (the balance loss without α), where
 * s[t][i] = sigmoid (or softmax) of the router logits, no bias; s' = s / Σ_j s[t][j];
 * P_i = (1/T_b) Σ_t s'[t][i]; f_i = E / (K_r · T_b) · #{t : i selected for t}.
 * With dLogits, adds coef · ∂(Σ_b Σ_i f_i P_i)/∂logits to it (f is a constant).
 */
export function sequenceBalance(
  route: Routing,
  seqs: SeqSlice[],
  p: RouteParams,
  E: number,
  which: BalanceTopk = 'routed',
  dLogits?: Float32Array,
  coef = 0,
): number[] {
  const k = p.topk;
  const out: number[] = [];
  const s = new Float64Array(E);
  for (const sq of seqs) {
    const Tb = sq.len;
    // Normalised scores of every row, and the selection counts.
    const sn = new Float64Array(Tb * E);
    const scores = new Float64Array(Tb * E);
    const count = new Float64Array(E);
    for (let t = 0; t < Tb; t++) {
      const o = (sq.row + t) * E;
      for (let e = 0; e < E; e++) s[e] = route.logits[o + e];
      if (p.scoring === 'softmax') {
        const max = Math.max(...s);
        let z = 0;
        for (let e = 0; e < E; e++) {
          s[e] = Math.exp(s[e] - max);
          z += s[e];
        }
        for (let e = 0; e < E; e++) s[e] /= z;
      } else {
        for (let e = 0; e < E; e++) s[e] = 1 / (1 + Math.exp(-s[e]));
      }
      let sum = 0;
      for (let e = 0; e < E; e++) sum += s[e];
      for (let e = 0; e < E; e++) {
        scores[t * E + e] = s[e];
        sn[t * E + e] = s[e] / sum;
      }
      const chosen = which === 'routed' ? route.idx.subarray((sq.row + t) * k, (sq.row + t + 1) * k) : topk(s, k);
      for (const e of chosen) count[e]++;
    }
    const f = count.map((c) => (E / (k * Tb)) * c);
    let L = 0;
    for (let e = 0; e < E; e++) {
      let P = 0;
      for (let t = 0; t < Tb; t++) P += sn[t * E + e];
      L += (f[e] * P) / Tb;
    }
    out.push(L);
    if (!dLogits || coef === 0) continue;

    // ∂L/∂s'[t][i] = f_i / T_b; through s' = s / Σ s, then the scoring function.
    const ds = new Float64Array(E);
    for (let t = 0; t < Tb; t++) {
      let sum = 0;
      let dot = 0;
      for (let e = 0; e < E; e++) {
        sum += scores[t * E + e];
        dot += (f[e] / Tb) * sn[t * E + e];
      }
      for (let e = 0; e < E; e++) ds[e] = (coef * (f[e] / Tb - dot)) / sum;
      const o = (sq.row + t) * E;
      if (p.scoring === 'softmax') {
        let d2 = 0;
        for (let e = 0; e < E; e++) d2 += ds[e] * scores[t * E + e];
        for (let e = 0; e < E; e++) dLogits[o + e] += scores[t * E + e] * (ds[e] - d2);
      } else {
        for (let e = 0; e < E; e++) {
          const se = scores[t * E + e];
          dLogits[o + e] += ds[e] * se * (1 - se);
        }
      }
    }
  }
  return out;
}
