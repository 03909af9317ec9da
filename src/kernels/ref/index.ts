// The pure-TypeScript Kernels: the executable definition of every op and the oracle the
// native backend is tested against. Clarity first: plain loops, one row at a time, sums
// accumulated in float64 (JS numbers) and rounded to float32 on store. Each row's result is
// computed by itself, so it never depends on the other rows of the call. The exception is a
// matmul with block-format (ggml) weights, and so matmulHeads and ffnExperts, which are built
// on it: those follow llama.cpp's arithmetic, activations quantised to 8 bits and integer
// block sums combined in float32 in a fixed order (qdot.ts). matmulT and embedding widen
// block weights to float32 exactly (decodeRow) like the plain dtypes.

import type { FfnWeights, Kernels, RouteParams } from '../kernels.ts';
import type { LinearWeight } from '../../tensor/weight.ts';
import { E4M3_TABLE, F16_TABLE, FORMATS, isBlockType, rowBytes, type BlockType } from '../../tensor/dtypes.ts';
import { blockDot, quantizeActivations, VEC_DOT_TYPE, weightRowInts } from './qdot.ts';
import { decodeBlocks, quantizeBlocks } from '../../tensor/quants.ts';
import { copyBlock } from '../../tensor/layout.ts';
import { sampleBatch } from './sample.ts';

/** Widen row `r` of a weight into `dst` (length w.cols) as float32. */
export function decodeRow(w: LinearWeight, r: number, dst: Float32Array): void {
  const K = w.cols;
  const base = r * K;
  switch (w.dtype) {
    case 'F32':
      dst.set((w.data as Float32Array).subarray(base, base + K));
      return;
    case 'BF16': {
      const src = w.data as Uint16Array;
      const u = new Uint32Array(dst.buffer, dst.byteOffset, K);
      for (let k = 0; k < K; k++) u[k] = src[base + k] << 16;
      return;
    }
    case 'F16': {
      const src = w.data as Uint16Array;
      for (let k = 0; k < K; k++) dst[k] = F16_TABLE[src[base + k]];
      return;
    }
    case 'F8_E4M3': {
      const src = w.data as Uint8Array;
      const scale = w.scale!;
      const [bR, bC] = w.block!;
      const sCols = Math.ceil(K / bC);
      const sRow = Math.floor(r / bR) * sCols;
      // W = f32(e4m3) * scale: one float32 multiplication, rounded on store into dst.
      for (let k = 0; k < K; k++) dst[k] = E4M3_TABLE[src[base + k]] * scale[sRow + Math.floor(k / bC)];
      return;
    }
    default:
      // A ggml block type: row r is its own run of blocks, rowBytes(dtype, K) bytes long.
      decodeBlocks(w.dtype, w.data as Uint8Array, r * rowBytes(w.dtype, K), K, dst);
      return;
  }
}

/**
 * matmul. Plain dtypes: each weight row widened to float32 (decodeRow), the dot product summed
 * in float64 and rounded once. Block types: llama.cpp's arithmetic (qdot.ts): every row of x
 * quantised to the type's vec_dot type, then per output the exact integer block sums combined
 * in float32 block by block (blockDot).
 */
function matmul(
  out: Float32Array,
  x: Float32Array,
  M: number,
  w: LinearWeight,
  r0 = 0,
  N = w.rows - r0,
): void {
  const K = w.cols;
  if (isBlockType(w.dtype)) {
    const dtype = w.dtype;
    const xq = Array.from({ length: M }, (_, m) => quantizeActivations(VEC_DOT_TYPE[dtype], x, m * K, K));
    const rb = rowBytes(dtype, K);
    for (let n = 0; n < N; n++) {
      const wi = weightRowInts(dtype, w.data as Uint8Array, (r0 + n) * rb, K);
      for (let m = 0; m < M; m++) out[m * N + n] = blockDot(dtype, wi, xq[m]);
    }
    return;
  }
  const row = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    decodeRow(w, r0 + n, row);
    for (let m = 0; m < M; m++) {
      const xo = m * K;
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[xo + k] * row[k];
      out[m * N + n] = acc;
    }
  }
}

function matmulT(
  out: Float32Array,
  x: Float32Array,
  M: number,
  w: LinearWeight,
  r0: number,
  R: number,
): void {
  const C = w.cols;
  const acc = new Float64Array(M * C);
  const row = new Float32Array(C);
  for (let r = 0; r < R; r++) {
    decodeRow(w, r0 + r, row);
    for (let m = 0; m < M; m++) {
      const xv = x[m * R + r];
      const ao = m * C;
      for (let c = 0; c < C; c++) acc[ao + c] += xv * row[c];
    }
  }
  out.set(acc.subarray(0, M * C));
}

function embedding(out: Float32Array, table: LinearWeight, ids: Int32Array): void {
  const D = table.cols;
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (id < 0 || id >= table.rows) throw new RangeError(`token id ${id} outside [0, ${table.rows})`);
    decodeRow(table, id, out.subarray(t * D, (t + 1) * D));
  }
}

function rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, M: number, eps: number) {
  const D = weight.length;
  for (let m = 0; m < M; m++) {
    const o = m * D;
    let ss = 0;
    for (let d = 0; d < D; d++) ss += x[o + d] * x[o + d];
    const inv = 1 / Math.sqrt(ss / D + eps);
    for (let d = 0; d < D; d++) out[o + d] = x[o + d] * inv * weight[d];
  }
}

/**
 * Rotate interleaved pairs of x[t, h, offset : offset + 2·freqs.length] by sign·pos[t]·freqs[i]
 * (sign −1 is the transpose, i.e. RoPE's backward pass).
 */
export function rotatePairs(
  x: Float32Array,
  T: number,
  H: number,
  stride: number,
  offset: number,
  pos: Int32Array,
  freqs: Float32Array,
  sign: 1 | -1,
): void {
  const half = freqs.length;
  const cos = new Float32Array(half);
  const sin = new Float32Array(half);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos[t] * freqs[i]);
      cos[i] = Math.cos(angle);
      sin[i] = sign * Math.sin(angle);
    }
    for (let h = 0; h < H; h++) {
      const o = (t * H + h) * stride + offset;
      for (let i = 0; i < half; i++) {
        const a = x[o + 2 * i];
        const b = x[o + 2 * i + 1];
        x[o + 2 * i] = a * cos[i] - b * sin[i];
        x[o + 2 * i + 1] = a * sin[i] + b * cos[i];
      }
    }
  }
}

function rope(
  x: Float32Array,
  T: number,
  H: number,
  stride: number,
  offset: number,
  pos: Int32Array,
  freqs: Float32Array,
): void {
  rotatePairs(x, T, H, stride, offset, pos, freqs, 1);
}

function softmaxRow(x: Float32Array | Float64Array, o: number, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[o + i] > max) max = x[o + i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[o + i] - max);
    x[o + i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) x[o + i] /= sum;
}

function softmax(x: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) softmaxRow(x, r * cols, cols);
}

function siluMul(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    out[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
}

function add(out: Float32Array, a: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] += a[i];
}

/**
 * Attention probabilities of one absorbed-MLA query (qLat at qo, qPe at ro) over cached
 * positions 0 … S-1: p[s] = softmax_s((qLat · kv[s] + qPe · pe[s]) · scale).
 */
export function latentProbs(
  p: Float64Array,
  qLat: Float32Array,
  qo: number,
  qPe: Float32Array,
  ro: number,
  kv: Float32Array,
  pe: Float32Array,
  S: number,
  C: number,
  R: number,
  scale: number,
): void {
  for (let s = 0; s < S; s++) {
    let a = 0;
    for (let c = 0; c < C; c++) a += qLat[qo + c] * kv[s * C + c];
    let b = 0;
    for (let r = 0; r < R; r++) b += qPe[ro + r] * pe[s * R + r];
    p[s] = (a + b) * scale;
  }
  softmaxRow(p, 0, S);
}

function attnLatent(
  out: Float32Array,
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
  const p = new Float64Array(p0 + T);
  for (let t = 0; t < T; t++) {
    const S = p0 + t + 1;
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * C;
      const ro = (t * H + h) * R;
      latentProbs(p, qLat, qo, qPe, ro, kv, pe, S, C, R, scale);
      for (let c = 0; c < C; c++) {
        let acc = 0;
        for (let s = 0; s < S; s++) acc += p[s] * kv[s * C + c];
        out[qo + c] = acc;
      }
    }
  }
}

function attention(
  out: Float32Array,
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
  const p = new Float64Array(p0 + T);
  for (let t = 0; t < T; t++) {
    const S = p0 + t + 1;
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * Dk;
      for (let s = 0; s < S; s++) {
        const ko = (s * H + h) * Dk;
        let a = 0;
        for (let d = 0; d < Dk; d++) a += q[qo + d] * k[ko + d];
        p[s] = a * scale;
      }
      softmaxRow(p, 0, S);
      const oo = (t * H + h) * Dv;
      for (let d = 0; d < Dv; d++) {
        let acc = 0;
        for (let s = 0; s < S; s++) acc += p[s] * v[(s * H + h) * Dv + d];
        out[oo + d] = acc;
      }
    }
  }
}

/** Indices of the `k` largest values, descending; ties go to the lower index. */
function topkIndices(v: Float64Array, k: number): number[] {
  const idx = Array.from(v.keys());
  idx.sort((a, b) => (v[b] !== v[a] ? (v[b] > v[a] ? 1 : -1) : a - b));
  return idx.slice(0, k);
}

function moeRoute(
  outIdx: Int32Array,
  outW: Float32Array,
  logits: Float32Array,
  T: number,
  E: number,
  p: RouteParams,
): void {
  const s = new Float64Array(E);
  const c = new Float64Array(E);
  const G = p.nGroup;
  const perGroup = E / G;
  const groupScore = new Float64Array(G);
  for (let t = 0; t < T; t++) {
    // Affinities s (float32 values, as the reference computes them).
    for (let e = 0; e < E; e++) s[e] = logits[t * E + e];
    if (p.scoring === 'softmax') softmaxRow(s, 0, E);
    else for (let e = 0; e < E; e++) s[e] = 1 / (1 + Math.exp(-s[e]));
    for (let e = 0; e < E; e++) s[e] = Math.fround(s[e]);
    // Selection scores: the balancing bias steers the choice but never the weights.
    for (let e = 0; e < E; e++) c[e] = p.bias ? Math.fround(s[e] + p.bias[e]) : s[e];
    if (G > 1) {
      for (let g = 0; g < G; g++) {
        const grp = c.subarray(g * perGroup, (g + 1) * perGroup);
        if (p.bias) {
          const [i0, i1] = topkIndices(grp, 2);
          groupScore[g] = grp[i0] + grp[i1];
        } else {
          groupScore[g] = Math.max(...grp);
        }
      }
      const kept = new Set(topkIndices(groupScore, p.topkGroup));
      for (let g = 0; g < G; g++) {
        if (!kept.has(g)) c.fill(-Infinity, g * perGroup, (g + 1) * perGroup);
      }
    }
    const chosen = topkIndices(c, p.topk);
    let sum = 0;
    for (const e of chosen) sum += s[e];
    for (let j = 0; j < p.topk; j++) {
      const e = chosen[j];
      const w = p.normalize ? Math.fround(s[e] / sum) : s[e];
      outIdx[t * p.topk + j] = e;
      outW[t * p.topk + j] = w * p.scale;
    }
  }
}

function gatherRows(out: Float32Array, x: Float32Array, rows: Int32Array, D: number): void {
  for (let i = 0; i < rows.length; i++) {
    out.set(x.subarray(rows[i] * D, (rows[i] + 1) * D), i * D);
  }
}

/** Kernels.argmax, for any array of numbers (the sampler also runs it on float64 weights). */
export function argmax(x: ArrayLike<number>): number {
  let best = -1;
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (v > max) {
      max = v;
      best = i;
    }
  }
  return best;
}

function scatterAddRows(
  out: Float32Array,
  src: Float32Array,
  rows: Int32Array,
  weights: Float32Array,
  D: number,
): void {
  for (let i = 0; i < rows.length; i++) {
    const o = rows[i] * D;
    const w = weights[i];
    for (let d = 0; d < D; d++) out[o + d] += w * src[i * D + d];
  }
}

/**
 * Run `op` once per head on contiguous copies: head h reads inW numbers of each of the M rows
 * of x at h·xs (row stride H·xs) and writes outW numbers of out at h·outW (row stride H·outW).
 */
function perHead(
  x: Float32Array, xs: number, inW: number, out: Float32Array, outW: number, M: number, H: number,
  op: (oh: Float32Array, xh: Float32Array, h: number) => void,
): void {
  const xh = new Float32Array(M * inW);
  const oh = new Float32Array(M * outW);
  for (let h = 0; h < H; h++) {
    copyBlock(xh, 0, inW, x, h * xs, H * xs, M, inW);
    op(oh, xh, h);
    copyBlock(out, h * outW, H * outW, oh, 0, outW, M, outW);
  }
}

/** matmulHeads from K.matmul, one head at a time (its definition). */
export function matmulHeadsComposed(
  K: Kernels, out: Float32Array, x: Float32Array, M: number, H: number, w: LinearWeight,
  r0: number, step: number, N: number,
): void {
  perHead(x, w.cols, w.cols, out, N, M, H, (oh, xh, h) => K.matmul(oh, xh, M, w, r0 + h * step, N));
}

/** matmulTHeads from K.matmulT, one head at a time (its definition). */
export function matmulTHeadsComposed(
  K: Kernels, out: Float32Array, x: Float32Array, M: number, H: number, xs: number, w: LinearWeight,
  r0: number, step: number, R: number,
): void {
  perHead(x, xs, R, out, w.cols, M, H, (oh, xh, h) => K.matmulT(oh, xh, M, w, r0 + h * step, R));
}

/** ffnExperts built from the other ops of `K` (its definition; the reference runs it). */
export function ffnExpertsComposed(
  K: Kernels,
  y: Float32Array,
  x: Float32Array,
  D: number,
  nets: readonly FfnWeights[],
  offsets: Int32Array,
  rows: Int32Array,
  weights: Float32Array,
): void {
  for (let e = 0; e < nets.length; e++) {
    const a = offsets[e];
    const n = offsets[e + 1] - a;
    if (n === 0) continue;
    const w = nets[e];
    const I = w.gate_proj.rows;
    const r = rows.subarray(a, a + n);
    const xe = new Float32Array(n * D);
    K.gatherRows(xe, x, r, D);
    const g = new Float32Array(n * I);
    const u = new Float32Array(n * I);
    K.matmul(g, xe, n, w.gate_proj);
    K.matmul(u, xe, n, w.up_proj);
    K.siluMul(g, g, u, n * I);
    const ye = new Float32Array(n * D);
    K.matmul(ye, g, n, w.down_proj);
    K.scatterAddRows(y, ye, r, weights.subarray(a, a + n), D);
  }
}

/**
 * The grouped ops (ffnExperts, matmulHeads, matmulTHeads) run through the primitive ops of
 * the kernels `of()` returns: the reference's own, or a decorator's (the FP8 simulation).
 */
export function composedOps(of: () => Kernels): Pick<Kernels, 'ffnExperts' | 'matmulHeads' | 'matmulTHeads'> {
  return {
    ffnExperts: (y, x, D, nets, offsets, rows, weights) => ffnExpertsComposed(of(), y, x, D, nets, offsets, rows, weights),
    matmulHeads: (out, x, M, H, w, r0, step, N) => matmulHeadsComposed(of(), out, x, M, H, w, r0, step, N),
    matmulTHeads: (out, x, M, H, xs, w, r0, step, R) => matmulTHeadsComposed(of(), out, x, M, H, xs, w, r0, step, R),
  };
}

/** Kernels.quantize: decodeRow then quantizeBlocks, one row at a time. */
function quantize(out: Uint8Array, w: LinearWeight, type: BlockType): void {
  const { blockElems } = FORMATS[type];
  if (w.cols % blockElems !== 0) {
    throw new RangeError(`quantize: ${type} needs cols to be a multiple of ${blockElems}, got ${w.cols}`);
  }
  const rb = rowBytes(type, w.cols);
  if (out.length < w.rows * rb) {
    throw new RangeError(`quantize: out is too short (${out.length} < ${w.rows * rb})`);
  }
  const row = new Float32Array(w.cols);
  for (let r = 0; r < w.rows; r++) {
    decodeRow(w, r, row);
    out.set(quantizeBlocks(type, row), r * rb);
  }
}

export const refKernels: Kernels = {
  name: 'ref',
  matmul,
  matmulT,
  embedding,
  rmsNorm,
  rope,
  softmax,
  siluMul,
  add,
  attnLatent,
  attention,
  moeRoute,
  gatherRows,
  scatterAddRows,
  argmax,
  sampleBatch,
  quantize,
  ...composedOps(() => refKernels),
};
