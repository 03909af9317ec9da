// Multi-head Latent Attention (DeepSeek-V2/V3) over a flat batch of tokens from several
// sequences. Two mathematically identical paths:
//  - absorb: kv_b_proj's key half is folded into the query and its value half into the
//    output, so attention runs directly on the cached latents (what inference uses);
//  - naive: the latents are expanded to per-head keys and values, then plain attention.
// Both read and write the same latent cache, so they can be swapped at any step.
//
// Legend: T tokens in the call, H heads, dNope/dRope/dV head dims, dQk = dNope + dRope,
// C kv_lora_rank, R = dRope, S cached positions of a sequence, D hidden size.

import type { Kernels } from '../kernels/kernels.ts';
import type { LayerCache } from './cache.ts';
import type { AttnWeights } from './weights.ts';

export type AttnImpl = 'absorb' | 'naive';

export interface MlaDims {
  H: number;
  dNope: number;
  dRope: number;
  dV: number;
  C: number;
  eps: number;
  scale: number;
  freqs: Float32Array;
}

/** A run of consecutive tokens of one sequence inside the flat batch. */
export interface SeqSlice {
  /** First row of this sequence in the flat batch. */
  row: number;
  /** Number of new tokens. */
  len: number;
  /** Position of the first new token (= tokens already cached). */
  p0: number;
}

/** Copy a [rows, width] block between strided row-major layouts. */
function copyBlock(
  dst: Float32Array,
  dOff: number,
  dStride: number,
  src: Float32Array,
  sOff: number,
  sStride: number,
  rows: number,
  width: number,
): void {
  for (let r = 0; r < rows; r++) {
    dst.set(src.subarray(sOff + r * sStride, sOff + r * sStride + width), dOff + r * dStride);
  }
}

/**
 * x [T, D] (already input-normed) → attention output [T, D]. Appends this call's latents
 * to each sequence's cache for this layer.
 */
export function mlaForward(
  K: Kernels,
  w: AttnWeights,
  d: MlaDims,
  x: Float32Array,
  T: number,
  pos: Int32Array,
  seqs: SeqSlice[],
  caches: LayerCache[],
  impl: AttnImpl,
): Float32Array {
  const { H, dNope, dRope, dV, C } = d;
  const R = dRope;
  const dQk = dNope + dRope;

  // Queries: [T, H, dQk], nope part first, RoPE on the last dRope of each head.
  const q = new Float32Array(T * H * dQk);
  if (w.q_a_proj) {
    const qa = new Float32Array(T * w.q_a_proj.rows);
    K.matmul(qa, x, T, w.q_a_proj);
    K.rmsNorm(qa, qa, w.q_a_layernorm!, T, d.eps);
    K.matmul(q, qa, T, w.q_b_proj!);
  } else {
    K.matmul(q, x, T, w.q_proj!);
  }
  K.rope(q, T, H, dQk, dNope, pos, d.freqs);

  // The compressed KV: latent [T, C] (normed) and one RoPE key [T, R] shared by all heads.
  const kvA = new Float32Array(T * (C + R));
  K.matmul(kvA, x, T, w.kv_a_proj_with_mqa);
  const lat = new Float32Array(T * C);
  const kPe = new Float32Array(T * R);
  copyBlock(lat, 0, C, kvA, 0, C + R, T, C);
  copyBlock(kPe, 0, R, kvA, C, C + R, T, R);
  K.rmsNorm(lat, lat, w.kv_a_layernorm, T, d.eps);
  K.rope(kPe, T, 1, R, 0, pos, d.freqs);

  const o = new Float32Array(T * H * dV); // [T, H, dV]
  const kvb = w.kv_b_proj;
  if (impl === 'absorb') {
    // q_nope[h] · W_uk[h] → a query in latent space: qLat [T, H, C]; qPe [T, H, R].
    const qLat = new Float32Array(T * H * C);
    const qPe = new Float32Array(T * H * R);
    const qh = new Float32Array(T * dNope);
    const th = new Float32Array(T * C);
    for (let h = 0; h < H; h++) {
      copyBlock(qh, 0, dNope, q, h * dQk, H * dQk, T, dNope);
      K.matmulT(th, qh, T, kvb, h * (dNope + dV), dNope);
      copyBlock(qLat, h * C, H * C, th, 0, C, T, C);
      copyBlock(qPe, h * R, H * R, q, h * dQk + dNope, H * dQk, T, R);
    }
    const oLat = new Float32Array(T * H * C);
    for (let i = 0; i < seqs.length; i++) {
      const s = seqs[i];
      const view = caches[i].update(lat.subarray(s.row * C), kPe.subarray(s.row * R), s.p0, s.len);
      K.attnLatent(
        oLat.subarray(s.row * H * C),
        qLat.subarray(s.row * H * C),
        qPe.subarray(s.row * H * R),
        view.kv,
        view.pe,
        s.len,
        H,
        C,
        R,
        s.p0,
        d.scale,
      );
    }
    // Per head, W_uv[h] maps the attended latent to the value space: o [T, H, dV].
    const vh = new Float32Array(T * dV);
    for (let h = 0; h < H; h++) {
      copyBlock(th, 0, C, oLat, h * C, H * C, T, C);
      K.matmul(vh, th, T, kvb, h * (dNope + dV) + dNope, dV);
      copyBlock(o, h * dV, H * dV, vh, 0, dV, T, dV);
    }
  } else {
    for (let i = 0; i < seqs.length; i++) {
      const s = seqs[i];
      const view = caches[i].update(lat.subarray(s.row * C), kPe.subarray(s.row * R), s.p0, s.len);
      const S = s.p0 + s.len;
      // Expand every cached latent to per-head keys [S, H, dQk] and values [S, H, dV].
      const kvFull = new Float32Array(S * H * (dNope + dV));
      K.matmul(kvFull, view.kv, S, kvb);
      const k = new Float32Array(S * H * dQk);
      const v = new Float32Array(S * H * dV);
      for (let h = 0; h < H; h++) {
        const src = h * (dNope + dV);
        copyBlock(k, h * dQk, H * dQk, kvFull, src, H * (dNope + dV), S, dNope);
        copyBlock(k, h * dQk + dNope, H * dQk, view.pe, 0, R, S, R);
        copyBlock(v, h * dV, H * dV, kvFull, src + dNope, H * (dNope + dV), S, dV);
      }
      K.attention(
        o.subarray(s.row * H * dV),
        q.subarray(s.row * H * dQk),
        k,
        v,
        s.len,
        H,
        dQk,
        dV,
        s.p0,
        d.scale,
      );
    }
  }

  const out = new Float32Array(T * w.o_proj.rows);
  K.matmul(out, o, T, w.o_proj);
  return out;
}
