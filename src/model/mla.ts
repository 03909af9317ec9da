// Multi-head Latent Attention (DeepSeek-V2/V3) over a flat batch of tokens from several
// sequences. Two mathematically identical paths:
//  - absorb: kv_b_proj's key half is folded into the query and its value half into the
//    output, so attention runs directly on the cached latents (what inference uses);
//  - naive: the latents are expanded to per-head keys and values, then plain attention.
// Both read and write the same latent cache, so they can be swapped at any step.
//
// mlaBackward is the forward in reverse, for either path, from what mlaForward saved;
// the two paths give the same gradients up to float rounding.
//
// Legend: T tokens in the call, H heads, dNope/dRope/dV head dims, dQk = dNope + dRope,
// C kv_lora_rank, R = dRope, S cached positions of a sequence, D hidden size.

import type { Kernels } from '../kernels/kernels.ts';
import type { TrainKernels } from '../kernels/train.ts';
import { copyBlock } from '../tensor/layout.ts';
import { HEAP, type Alloc } from '../tensor/scratch.ts';
import type { LayerCache } from './cache.ts';
import { NONE, linearBackward, linearTBackward } from './tape.ts';
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

/** What mlaBackward needs; mlaForward fills it when training (arrays it computed anyway). */
export class MlaSaved {
  /** [T, D] the input (already input-normed). */
  x = NONE;
  /** [T, q_lora_rank] q_a_proj's output before and after q_a_layernorm (q_lora_rank > 0). */
  qa = NONE;
  qaN = NONE;
  /** [T, H, dQk] queries after RoPE. */
  q = NONE;
  /** [T, C + R] kv_a_proj_with_mqa's output: the latent before its norm, the unrotated key. */
  kvA = NONE;
  /** [T, C] normed latents and [T, R] rotated RoPE keys: what the cache holds. */
  lat = NONE;
  kPe = NONE;
  /** absorb: [T, H, C] latent queries, [T, H, R] RoPE queries, [T, H, C] attended latents. */
  qLat = NONE;
  qPe = NONE;
  oLat = NONE;
  /** naive, per sequence: [S, H, dQk] keys and [S, H, dV] values. */
  k: Float32Array[] = [];
  v: Float32Array[] = [];
  /** [T, H, dV] the heads' outputs (o_proj's input). */
  o = NONE;
}

/** The compressed KV of x [T, D]: latents [T, C] (normed) and one RoPE key [T, R] per token. */
function latentKv(K: Kernels, w: AttnWeights, d: MlaDims, x: Float32Array, T: number, pos: Int32Array, mem: Alloc) {
  const { C, dRope: R } = d;
  const kvA = mem.f32(T * (C + R));
  K.matmul(kvA, x, T, w.kv_a_proj_with_mqa);
  const lat = mem.f32(T * C);
  const kPe = mem.f32(T * R);
  copyBlock(lat, 0, C, kvA, 0, C + R, T, C);
  copyBlock(kPe, 0, R, kvA, C, C + R, T, R);
  K.rmsNorm(lat, lat, w.kv_a_layernorm, T, d.eps);
  K.rope(kPe, T, 1, R, 0, pos, d.freqs);
  return { kvA, lat, kPe };
}

/**
 * Only the cache half of mlaForward: append the latents of x [T, D] (already input-normed)
 * to each sequence's cache, for rows whose attention output nobody reads. The entries are
 * the ones mlaForward would write (each row's latent depends on that row alone).
 */
export function mlaAppend(
  K: Kernels,
  w: AttnWeights,
  d: MlaDims,
  x: Float32Array,
  T: number,
  pos: Int32Array,
  seqs: SeqSlice[],
  caches: LayerCache[],
  mem: Alloc = HEAP,
): void {
  const { lat, kPe } = latentKv(K, w, d, x, T, pos, mem);
  seqs.forEach((s, i) => caches[i].update(lat.subarray(s.row * d.C), kPe.subarray(s.row * d.dRope), s.p0, s.len));
}

/**
 * x [T, D] (already input-normed) → attention output [T, D]. Appends this call's latents
 * to each sequence's cache for this layer. With `saved`, keeps what mlaBackward needs.
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
  saved?: MlaSaved,
  mem: Alloc = HEAP,
): Float32Array {
  const { H, dNope, dRope, dV, C } = d;
  const R = dRope;
  const dQk = dNope + dRope;

  // Queries: [T, H, dQk], nope part first, RoPE on the last dRope of each head.
  const q = mem.f32(T * H * dQk);
  if (w.q_a_proj) {
    const qa = mem.f32(T * w.q_a_proj.rows);
    K.matmul(qa, x, T, w.q_a_proj);
    const qaN = saved ? new Float32Array(qa.length) : qa;
    K.rmsNorm(qaN, qa, w.q_a_layernorm!, T, d.eps);
    K.matmul(q, qaN, T, w.q_b_proj!);
    if (saved) {
      saved.qa = qa;
      saved.qaN = qaN;
    }
  } else {
    K.matmul(q, x, T, w.q_proj!);
  }
  K.rope(q, T, H, dQk, dNope, pos, d.freqs);

  const { kvA, lat, kPe } = latentKv(K, w, d, x, T, pos, mem);

  const o = mem.f32(T * H * dV); // [T, H, dV]
  const kvb = w.kv_b_proj;
  if (impl === 'absorb') {
    // q_nope[h] · W_uk[h] → a query in latent space: qLat [T, H, C]; qPe [T, H, R].
    const qLat = mem.f32(T * H * C);
    const qPe = mem.f32(T * H * R);
    if (kvb) {
      K.matmulTHeads(qLat, q, T, H, dQk, kvb, 0, dNope + dV, dNope);
    } else {
      // Split layout: k_b_proj holds W_uk[h] transposed, [C, dNope] per head.
      const qNope = mem.f32(T * H * dNope); // [T, H, dNope]
      for (let h = 0; h < H; h++) copyBlock(qNope, h * dNope, H * dNope, q, h * dQk, H * dQk, T, dNope);
      K.matmulHeads(qLat, qNope, T, H, w.k_b_proj!, 0, C, C);
    }
    for (let h = 0; h < H; h++) copyBlock(qPe, h * R, H * R, q, h * dQk + dNope, H * dQk, T, R);
    const oLat = mem.f32(T * H * C);
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
    if (saved) {
      saved.qLat = qLat;
      saved.qPe = qPe;
      saved.oLat = oLat;
    }
    // Per head, W_uv[h] maps the attended latent to the value space: o [T, H, dV].
    if (kvb) K.matmulHeads(o, oLat, T, H, kvb, dNope, dNope + dV, dV);
    else K.matmulHeads(o, oLat, T, H, w.v_b_proj!, 0, dV, dV);
  } else {
    for (let i = 0; i < seqs.length; i++) {
      const s = seqs[i];
      const view = caches[i].update(lat.subarray(s.row * C), kPe.subarray(s.row * R), s.p0, s.len);
      const S = s.p0 + s.len;
      // Expand every cached latent to per-head keys [S, H, dQk] and values [S, H, dV].
      const kvFull = new Float32Array(S * H * (dNope + dV)); // [S, H, dNope + dV]
      if (kvb) {
        K.matmul(kvFull, view.kv, S, kvb);
      } else {
        // Split layout: per head, keys through k_b_proj's rows transposed, values through v_b_proj.
        const kh = new Float32Array(S * dNope);
        const vh = new Float32Array(S * dV);
        for (let h = 0; h < H; h++) {
          K.matmulT(kh, view.kv, S, w.k_b_proj!, h * C, C);
          K.matmul(vh, view.kv, S, w.v_b_proj!, h * dV, dV);
          copyBlock(kvFull, h * (dNope + dV), H * (dNope + dV), kh, 0, dNope, S, dNope);
          copyBlock(kvFull, h * (dNope + dV) + dNope, H * (dNope + dV), vh, 0, dV, S, dV);
        }
      }
      const k = new Float32Array(S * H * dQk);
      const v = new Float32Array(S * H * dV);
      for (let h = 0; h < H; h++) {
        const src = h * (dNope + dV);
        copyBlock(k, h * dQk, H * dQk, kvFull, src, H * (dNope + dV), S, dNope);
        copyBlock(k, h * dQk + dNope, H * dQk, view.pe, 0, R, S, R);
        copyBlock(v, h * dV, H * dV, kvFull, src + dNope, H * (dNope + dV), S, dV);
      }
      if (saved) {
        saved.k.push(k);
        saved.v.push(v);
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

  const out = mem.f32(T * w.o_proj.rows);
  K.matmul(out, o, T, w.o_proj);
  if (saved) {
    saved.x = x;
    saved.q = q;
    saved.kvA = kvA;
    saved.lat = lat;
    saved.kPe = kPe;
    saved.o = o;
  }
  return out;
}

/**
 * Backward of mlaForward: dout [T, D] → dx [T, D], accumulating the weight gradients in g.
 * Runs on what `s` saved, along the same path; sequences must have started at position 0
 * (a training forward over whole sequences), so every key is one of this call's tokens.
 */
export function mlaBackward(
  K: Kernels,
  TK: TrainKernels,
  w: AttnWeights,
  g: AttnWeights,
  d: MlaDims,
  s: MlaSaved,
  dout: Float32Array,
  T: number,
  pos: Int32Array,
  seqs: SeqSlice[],
  impl: AttnImpl,
): Float32Array {
  const { H, dNope, dRope, dV, C } = d;
  const R = dRope;
  const dQk = dNope + dRope;
  // Training runs on forTraining() copies, which always hold the joint kv_b_proj.
  const kvb = w.kv_b_proj;
  if (!kvb) throw new Error('mlaBackward: needs kv_b_proj (train a forTraining() copy)');
  for (const sq of seqs) {
    if (sq.p0 !== 0) throw new Error('mlaBackward: sequences must start at position 0');
  }

  const dO = linearBackward(K, g.o_proj, w.o_proj, dout, s.o, T); // [T, H, dV]
  const dq = new Float32Array(T * H * dQk); // [T, H, dQk]
  const dLat = new Float32Array(T * C); // [T, C] the normed latents
  const dKPe = new Float32Array(T * R); // [T, R] the rotated RoPE keys
  if (impl === 'absorb') {
    // o[h] = oLat[h] · W_uv[h]ᵀ.
    const dOLat = new Float32Array(T * H * C);
    const dvh = new Float32Array(T * dV);
    const th = new Float32Array(T * C);
    for (let h = 0; h < H; h++) {
      copyBlock(dvh, 0, dV, dO, h * dV, H * dV, T, dV);
      copyBlock(th, 0, C, s.oLat, h * C, H * C, T, C);
      const dth = linearBackward(K, g.kv_b_proj!, kvb, dvh, th, T, h * (dNope + dV) + dNope, dV);
      copyBlock(dOLat, h * C, H * C, dth, 0, C, T, C);
    }
    // Attention over the latents; the latent is both key and value.
    const dqLat = new Float32Array(T * H * C);
    const dqPe = new Float32Array(T * H * R);
    for (const sq of seqs) {
      TK.attnLatentBackward(
        dqLat.subarray(sq.row * H * C),
        dqPe.subarray(sq.row * H * R),
        dLat.subarray(sq.row * C, (sq.row + sq.len) * C),
        dKPe.subarray(sq.row * R, (sq.row + sq.len) * R),
        dOLat.subarray(sq.row * H * C),
        s.qLat.subarray(sq.row * H * C),
        s.qPe.subarray(sq.row * H * R),
        s.lat.subarray(sq.row * C, (sq.row + sq.len) * C),
        s.kPe.subarray(sq.row * R, (sq.row + sq.len) * R),
        sq.len,
        H,
        C,
        R,
        0,
        d.scale,
      );
    }
    // qLat[h] = q_nope[h] · W_uk[h]; the RoPE queries pass through.
    const qh = new Float32Array(T * dNope);
    for (let h = 0; h < H; h++) {
      copyBlock(th, 0, C, dqLat, h * C, H * C, T, C);
      copyBlock(qh, 0, dNope, s.q, h * dQk, H * dQk, T, dNope);
      const dqh = linearTBackward(K, g.kv_b_proj!, kvb, th, qh, T, h * (dNope + dV), dNope);
      copyBlock(dq, h * dQk, H * dQk, dqh, 0, dNope, T, dNope);
      copyBlock(dq, h * dQk + dNope, H * dQk, dqPe, h * R, H * R, T, R);
    }
  } else {
    for (const [i, sq] of seqs.entries()) {
      const S = sq.len;
      const dk = new Float32Array(S * H * dQk);
      const dv = new Float32Array(S * H * dV);
      TK.attentionBackward(
        dq.subarray(sq.row * H * dQk),
        dk,
        dv,
        dO.subarray(sq.row * H * dV),
        s.q.subarray(sq.row * H * dQk),
        s.k[i],
        s.v[i],
        sq.len,
        H,
        dQk,
        dV,
        0,
        d.scale,
      );
      // Back through the expansion: kvFull [S, H·(dNope + dV)] = lat · kv_bᵀ; the RoPE key
      // is shared by every head, so its gradient sums over heads.
      const dKvFull = new Float32Array(S * H * (dNope + dV));
      for (let h = 0; h < H; h++) {
        const dst = h * (dNope + dV);
        copyBlock(dKvFull, dst, H * (dNope + dV), dk, h * dQk, H * dQk, S, dNope);
        copyBlock(dKvFull, dst + dNope, H * (dNope + dV), dv, h * dV, H * dV, S, dV);
      }
      for (let t = 0; t < S; t++) {
        for (let h = 0; h < H; h++) {
          const o = (t * H + h) * dQk + dNope;
          for (let r = 0; r < R; r++) dKPe[(sq.row + t) * R + r] += dk[o + r];
        }
      }
      const lat = s.lat.subarray(sq.row * C, (sq.row + S) * C);
      dLat.set(linearBackward(K, g.kv_b_proj!, kvb, dKvFull, lat, S), sq.row * C);
    }
  }

  // The compressed KV: un-rotate the key, back through kv_a_layernorm, then kv_a_proj.
  TK.ropeBackward(dKPe, T, 1, R, 0, pos, d.freqs);
  const latRaw = new Float32Array(T * C);
  copyBlock(latRaw, 0, C, s.kvA, 0, C + R, T, C);
  const dLatRaw = new Float32Array(T * C);
  TK.rmsNormBackward(dLatRaw, g.kv_a_layernorm, dLat, latRaw, w.kv_a_layernorm, T, d.eps);
  const dKvA = new Float32Array(T * (C + R));
  copyBlock(dKvA, 0, C + R, dLatRaw, 0, C, T, C);
  copyBlock(dKvA, C, C + R, dKPe, 0, R, T, R);
  const dx = linearBackward(K, g.kv_a_proj_with_mqa, w.kv_a_proj_with_mqa, dKvA, s.x, T);

  // Queries: un-rotate, then back through q_b_proj, q_a_layernorm, q_a_proj (or q_proj).
  TK.ropeBackward(dq, T, H, dQk, dNope, pos, d.freqs);
  if (w.q_a_proj) {
    const dqaN = linearBackward(K, g.q_b_proj!, w.q_b_proj!, dq, s.qaN, T);
    const dqa = new Float32Array(dqaN.length);
    TK.rmsNormBackward(dqa, g.q_a_layernorm!, dqaN, s.qa, w.q_a_layernorm!, T, d.eps);
    K.add(dx, linearBackward(K, g.q_a_proj!, w.q_a_proj, dqa, s.x, T), dx.length);
  } else {
    K.add(dx, linearBackward(K, g.q_proj!, w.q_proj!, dq, s.x, T), dx.length);
  }
  return dx;
}
