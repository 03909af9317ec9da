// The pure-TypeScript TrainKernels: the executable definition of every backward loop and
// the oracle a native version will be tested against. Like ref/index.ts: plain loops, one
// row at a time, sums in float64 (JS numbers), rounded to float32 on store. Attention and
// RMSNorm recompute what their forward computed (probabilities, inverse rms) from the
// saved inputs, exactly as the forward kernels do, instead of keeping it.

import type { RouteParams } from '../kernels.ts';
import type { TrainKernels } from '../train.ts';
import { latentProbs, rotatePairs } from './index.ts';

function rmsNormBackward(
  dx: Float32Array,
  dw: Float32Array,
  dy: Float32Array,
  x: Float32Array,
  w: Float32Array,
  M: number,
  eps: number,
): void {
  const D = w.length;
  const dwAcc = new Float64Array(D);
  for (let m = 0; m < M; m++) {
    const o = m * D;
    let ss = 0;
    for (let d = 0; d < D; d++) ss += x[o + d] * x[o + d];
    const inv = 1 / Math.sqrt(ss / D + eps);
    // y = x·inv·w: ∂/∂x = inv·(dy∘w) − x·inv³·(Σ dy∘w∘x)/D.
    let dot = 0;
    for (let d = 0; d < D; d++) {
      dot += dy[o + d] * w[d] * x[o + d];
      dwAcc[d] += dy[o + d] * x[o + d] * inv;
    }
    const k = (inv * inv * inv * dot) / D;
    for (let d = 0; d < D; d++) dx[o + d] = inv * dy[o + d] * w[d] - x[o + d] * k;
  }
  for (let d = 0; d < D; d++) dw[d] += dwAcc[d];
}

function ropeBackward(
  dx: Float32Array,
  T: number,
  H: number,
  stride: number,
  offset: number,
  pos: Int32Array,
  freqs: Float32Array,
): void {
  // The transpose of the forward rotation: rotation by −angle.
  rotatePairs(dx, T, H, stride, offset, pos, freqs, -1);
}

function siluMulBackward(
  dgate: Float32Array,
  dup: Float32Array,
  dout: Float32Array,
  gate: Float32Array,
  up: Float32Array,
  n: number,
): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    const sig = 1 / (1 + Math.exp(-g));
    // silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
    dup[i] = dout[i] * g * sig;
    dgate[i] = dout[i] * up[i] * sig * (1 + g * (1 - sig));
  }
}

/** Softmax of the row in place (float64), as the forward kernels compute it. */
function softmaxRow(x: Float64Array, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    x[i] = Math.exp(x[i] - max);
    sum += x[i];
  }
  for (let i = 0; i < n; i++) x[i] /= sum;
}

function attentionBackward(
  dq: Float32Array,
  dk: Float32Array,
  dv: Float32Array,
  dout: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  T: number,
  H: number,
  Dk: number,
  Dv: number,
  p0: number,
  scale: number,
): void {
  const S = p0 + T;
  const dkAcc = new Float64Array(S * H * Dk);
  const dvAcc = new Float64Array(S * H * Dv);
  const p = new Float64Array(S);
  const ds = new Float64Array(S);
  for (let t = 0; t < T; t++) {
    const St = p0 + t + 1;
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * Dk;
      const oo = (t * H + h) * Dv;
      for (let s = 0; s < St; s++) {
        const ko = (s * H + h) * Dk;
        let a = 0;
        for (let d = 0; d < Dk; d++) a += q[qo + d] * k[ko + d];
        p[s] = a * scale;
      }
      softmaxRow(p, St);
      // dS = P∘(dP − Σ P∘dP), dP[s] = dout · v[s]; the scale goes with dS.
      let sum = 0;
      for (let s = 0; s < St; s++) {
        const vo = (s * H + h) * Dv;
        let a = 0;
        for (let d = 0; d < Dv; d++) a += dout[oo + d] * v[vo + d];
        ds[s] = a;
        sum += p[s] * a;
      }
      for (let s = 0; s < St; s++) ds[s] = p[s] * (ds[s] - sum) * scale;
      for (let d = 0; d < Dk; d++) {
        let a = 0;
        for (let s = 0; s < St; s++) a += ds[s] * k[(s * H + h) * Dk + d];
        dq[qo + d] = a;
      }
      for (let s = 0; s < St; s++) {
        const ko = (s * H + h) * Dk;
        const vo = (s * H + h) * Dv;
        for (let d = 0; d < Dk; d++) dkAcc[ko + d] += ds[s] * q[qo + d];
        for (let d = 0; d < Dv; d++) dvAcc[vo + d] += p[s] * dout[oo + d];
      }
    }
  }
  dk.set(dkAcc);
  dv.set(dvAcc);
}

function attnLatentBackward(
  dqLat: Float32Array,
  dqPe: Float32Array,
  dkv: Float32Array,
  dpe: Float32Array,
  dout: Float32Array,
  qLat: Float32Array,
  qPe: Float32Array,
  kv: Float32Array,
  pe: Float32Array,
  T: number,
  H: number,
  C: number,
  R: number,
  p0: number,
  scale: number,
): void {
  const S = p0 + T;
  const dkvAcc = new Float64Array(S * C);
  const dpeAcc = new Float64Array(S * R);
  const p = new Float64Array(S);
  const ds = new Float64Array(S);
  for (let t = 0; t < T; t++) {
    const St = p0 + t + 1;
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * C;
      const ro = (t * H + h) * R;
      latentProbs(p, qLat, qo, qPe, ro, kv, pe, St, C, R, scale);
      // The latent is both key and value: dP[s] = dout · kv[s].
      let sum = 0;
      for (let s = 0; s < St; s++) {
        let a = 0;
        for (let c = 0; c < C; c++) a += dout[qo + c] * kv[s * C + c];
        ds[s] = a;
        sum += p[s] * a;
      }
      for (let s = 0; s < St; s++) ds[s] = p[s] * (ds[s] - sum) * scale;
      for (let c = 0; c < C; c++) {
        let a = 0;
        for (let s = 0; s < St; s++) a += ds[s] * kv[s * C + c];
        dqLat[qo + c] = a;
      }
      for (let r = 0; r < R; r++) {
        let a = 0;
        for (let s = 0; s < St; s++) a += ds[s] * pe[s * R + r];
        dqPe[ro + r] = a;
      }
      for (let s = 0; s < St; s++) {
        for (let c = 0; c < C; c++) dkvAcc[s * C + c] += p[s] * dout[qo + c] + ds[s] * qLat[qo + c];
        for (let r = 0; r < R; r++) dpeAcc[s * R + r] += ds[s] * qPe[ro + r];
      }
    }
  }
  dkv.set(dkvAcc);
  dpe.set(dpeAcc);
}

function moeRouteBackward(
  dlogits: Float32Array,
  dweights: Float32Array,
  logits: Float32Array,
  idx: Int32Array,
  T: number,
  E: number,
  p: RouteParams,
): void {
  const k = p.topk;
  const s = new Float64Array(E);
  const ds = new Float64Array(E);
  for (let t = 0; t < T; t++) {
    // The affinities, as Kernels.moeRoute computes them (float32 values).
    for (let e = 0; e < E; e++) s[e] = logits[t * E + e];
    if (p.scoring === 'softmax') softmaxRow(s, E);
    else for (let e = 0; e < E; e++) s[e] = 1 / (1 + Math.exp(-s[e]));
    for (let e = 0; e < E; e++) s[e] = Math.fround(s[e]);

    // w_j = scale · s_j / Σ_chosen s (or scale · s_j): only the chosen experts' s get a gradient.
    ds.fill(0);
    if (p.normalize) {
      let sum = 0;
      let dot = 0;
      for (let j = 0; j < k; j++) {
        const e = idx[t * k + j];
        sum += s[e];
        dot += dweights[t * k + j] * s[e];
      }
      for (let j = 0; j < k; j++) {
        const e = idx[t * k + j];
        ds[e] = p.scale * (dweights[t * k + j] / sum - dot / (sum * sum));
      }
    } else {
      for (let j = 0; j < k; j++) ds[idx[t * k + j]] = p.scale * dweights[t * k + j];
    }

    if (p.scoring === 'softmax') {
      let dot = 0;
      for (let e = 0; e < E; e++) dot += ds[e] * s[e];
      for (let e = 0; e < E; e++) dlogits[t * E + e] = s[e] * (ds[e] - dot);
    } else {
      for (let e = 0; e < E; e++) dlogits[t * E + e] = ds[e] * s[e] * (1 - s[e]);
    }
  }
}

function scatterAddRowsBackward(
  dsrc: Float32Array,
  dweights: Float32Array,
  dout: Float32Array,
  src: Float32Array,
  rows: Int32Array,
  weights: Float32Array,
  D: number,
): void {
  for (let i = 0; i < rows.length; i++) {
    const o = rows[i] * D;
    const w = weights[i];
    let dot = 0;
    for (let d = 0; d < D; d++) {
      dsrc[i * D + d] = w * dout[o + d];
      dot += dout[o + d] * src[i * D + d];
    }
    dweights[i] = dot;
  }
}

function crossEntropy(
  dlogits: Float32Array,
  logits: Float32Array,
  targets: Int32Array,
  M: number,
  V: number,
  gradScale: number,
): number {
  let total = 0;
  for (let m = 0; m < M; m++) {
    const o = m * V;
    const y = targets[m];
    if (y < 0) {
      dlogits.fill(0, o, o + V);
      continue;
    }
    if (y >= V) throw new RangeError(`target ${y} outside [0, ${V})`);
    let max = -Infinity;
    for (let v = 0; v < V; v++) if (logits[o + v] > max) max = logits[o + v];
    // One exp per logit: keep exp(l - max) in dlogits, then scale it into the gradient.
    let sum = 0;
    for (let v = 0; v < V; v++) {
      const e = Math.exp(logits[o + v] - max);
      dlogits[o + v] = e;
      sum += e;
    }
    total += Math.log(sum) + max - logits[o + y];
    const k = gradScale / sum;
    for (let v = 0; v < V; v++) dlogits[o + v] *= k;
    dlogits[o + y] -= gradScale;
  }
  return total;
}

export const refTrainKernels: TrainKernels = {
  name: 'ref',
  rmsNormBackward,
  ropeBackward,
  siluMulBackward,
  attentionBackward,
  attnLatentBackward,
  moeRouteBackward,
  scatterAddRowsBackward,
  crossEntropy,
};
