// Block-weight dot products as llama.cpp's CPU backend defines them: the activations are
// quantised too, and the dot product is a sum of exact integer block sums, each turned into
// a float once. This file is the executable definition (the native kernels must give the
// same float32 bits); native/README.md states the same contract.
//
// For a weight of block type T, each row of x is first quantised to T's "vec_dot type"
// (ggml-cpu.c type_traits_cpu): Q8_0 for Q4_0, Q5_0 and Q8_0; Q8_1 for Q4_1 and Q5_1; Q8_K for
// Q4_K, Q5_K and Q6_K, by ggml's reference quantisers (quantize_row_q8_0_ref, _q8_1_ref,
// _q8_K_ref in ggml-quants.c), bit for bit:
//
//   Q8_0 / Q8_1 (blocks of 32): amax = max |x|; d = amax / 127; id = d ? 1/d : 0;
//     q = (int8) roundf(x·id) (halves away from zero); d is stored as f16 (nearest-even) and
//     the dot products use that f16 widened. Q8_1 also stores s = f16(Σq · d).
//   Q8_K (blocks of 256): the value of largest magnitude max (the first one on ties); if it
//     is 0: d = 0 and q = 0; else iscale = −127 / max, q = min(127, nearest_int(iscale·x))
//     (nearest, ties to even, by ggml's 1.5·2^23 trick), d = 1 / iscale (float32, not
//     rounded to f16), bsums[j] = Σ of q over values 16j … 16j+15.
//
// Then each output is, per block b of the row (ggml_vec_dot_<T>_<V>_generic in
// ggml-cpu/quants.c; dw, dmw: the weight block's f16 scale and min-scale widened; dx: the
// activation block's scale; every product and sum rounded to float32 on its own, no FMA):
//
//   Q4_0: sumi = Σ (q4 − 8)·q;  v = (sumi·dw)·dx        out: o = 0; o += v_b for b = 0, 1, …
//   Q5_0: sumi = Σ (q5 − 16)·q; v = (dw·dx)·sumi        (the same sequential sum)
//   Q8_0: sumi = Σ w·q;         v = sumi·(dw·dx)
//   Q4_1: sumi = Σ q4·q;        v = (dw·dx)·sumi + m·s   (m: the weight block's f16 min, s: Q8_1's s)
//   Q5_1: sumi = Σ q5·q;        v = (dw·dx)·sumi + m·s
//   Q4_K, Q5_K: S = Σ_j sc_j·Σ_{p in group j} q4·q (eight groups of 32, 6-bit scales sc_j),
//         Mn = Σ_{i<16} bsums_i·min_{i/2};  A += (dw·dx)·S;  B −= (dmw·dx)·Mn;  out = B + A
//   Q6_K: S = Σ_i sc_i·Σ_{p in group i} (q6 − 32)·q (sixteen groups of 16, int8 scales);
//         A += (dw·dx)·S;  out = 0 + A
//
// with A, B float32 accumulators starting at +0, blocks in increasing order. The integer sums
// are exact (|S| < 2^31); S and Mn are converted to float32 (nearest-even: above 2^24 this
// rounds) before their one multiplication. This is ggml's generic C code term for term, except
// that for the K-quants ggml keeps eight float partial sums (values whose position ≡ l mod 8)
// and adds them up at the end: here their exact integer total is formed first, so a K-quant
// block costs one float product instead of eight (the results differ from ggml's by float32
// rounding only; test/fixtures/ggml-quants holds ggml's own numbers, see qdot.test.ts).
// llama.cpp's x86 builds also differ from its generic code: their AVX quantize_row_q8_0 rounds
// ties to even and uses id = 127/amax, and their SIMD dot products keep float partial sums per
// vector lane; the generic definition is the one that does not depend on the machine.

import { F16_TABLE, FORMATS, f32ToF16, type BlockType } from '../../tensor/dtypes.ts';
import { half, kMin, kScale, nearestInt, roundf, truncToI8 } from '../../tensor/quants.ts';

const f = Math.fround;

/** ggml's vec_dot_type of each block type: what the activations are quantised to. */
export type VecDotType = 'Q8_0' | 'Q8_1' | 'Q8_K';
export const VEC_DOT_TYPE: Readonly<Record<BlockType, VecDotType>> = {
  Q4_0: 'Q8_0', Q5_0: 'Q8_0', Q8_0: 'Q8_0', Q4_1: 'Q8_1', Q5_1: 'Q8_1', Q4_K: 'Q8_K', Q5_K: 'Q8_K', Q6_K: 'Q8_K',
};

/** Values per block of a vec_dot type. */
export const VEC_DOT_BLOCK: Readonly<Record<VecDotType, number>> = { Q8_0: 32, Q8_1: 32, Q8_K: 256 };

/** One row of activations quantised to a vec_dot type. */
export interface QuantizedRow {
  type: VecDotType;
  /** The int8 values, one per activation. */
  qs: Int8Array;
  /** Per block, the scale the dot products use: Q8_0/Q8_1 the stored f16 widened, Q8_K float32. */
  d: Float32Array;
  /** Q8_1: per block the stored f16 s (d · Σq) widened; otherwise empty. */
  s: Float32Array;
  /** Q8_K: sixteen sums of 16 values per block; otherwise empty. */
  bsums: Int32Array;
  /** Q8_0/Q8_1: the f16 bits of d and s as stored (for byte comparisons); otherwise empty. */
  dBits: Uint16Array;
  sBits: Uint16Array;
}

/** Quantise x[xo … xo+n) (n a multiple of the block size) to `type`, as ggml's reference quantisers do. */
export function quantizeActivations(type: VecDotType, x: ArrayLike<number>, xo: number, n: number): QuantizedRow {
  const B = VEC_DOT_BLOCK[type];
  if (n % B !== 0) throw new RangeError(`${type} quantises whole blocks of ${B} values, not ${n}`);
  const nb = n / B;
  const qs = new Int8Array(n);
  const d = new Float32Array(nb);
  const row: QuantizedRow = {
    type, qs, d, s: new Float32Array(type === 'Q8_1' ? nb : 0), bsums: new Int32Array(type === 'Q8_K' ? nb * 16 : 0),
    dBits: new Uint16Array(type === 'Q8_K' ? 0 : nb), sBits: new Uint16Array(type === 'Q8_1' ? nb : 0),
  };
  for (let b = 0; b < nb; b++) {
    const o = xo + b * B;
    if (type === 'Q8_K') {
      let amax = 0;
      let max = 0;
      for (let j = 0; j < 256; j++) {
        const a = Math.abs(x[o + j]);
        if (a > amax) {
          amax = a;
          max = x[o + j];
        }
      }
      if (amax === 0) continue; // d = 0, q = 0 (ggml leaves the bsums unwritten; they are 0 here)
      const iscale = f(-127 / max);
      for (let j = 0; j < 256; j++) qs[b * 256 + j] = Math.min(127, nearestInt(f(iscale * x[o + j])));
      for (let g = 0; g < 16; g++) {
        let sum = 0;
        for (let j = 0; j < 16; j++) sum += qs[b * 256 + g * 16 + j];
        row.bsums[b * 16 + g] = sum;
      }
      d[b] = f(1 / iscale);
    } else {
      let amax = 0;
      for (let j = 0; j < 32; j++) {
        const a = Math.abs(x[o + j]);
        amax = amax > a ? amax : a;
      }
      const dd = f(amax / 127);
      const id = dd !== 0 ? f(1 / dd) : 0;
      let sum = 0;
      for (let j = 0; j < 32; j++) {
        const q = truncToI8(roundf(f(x[o + j] * id)));
        qs[b * 32 + j] = q;
        sum += q;
      }
      row.dBits[b] = f32ToF16(dd);
      d[b] = F16_TABLE[row.dBits[b]];
      if (type === 'Q8_1') {
        row.sBits[b] = f32ToF16(f(sum * dd));
        row.s[b] = F16_TABLE[row.sBits[b]];
      }
    }
  }
  return row;
}

/** A quantised row as ggml's blocks (block_q8_0 / block_q8_1 / block_q8_K), little-endian. */
export function quantizedRowBytes(row: QuantizedRow): Uint8Array {
  const nb = row.d.length;
  const B = VEC_DOT_BLOCK[row.type];
  const size = row.type === 'Q8_K' ? 292 : row.type === 'Q8_1' ? 36 : 34;
  const out = new Uint8Array(nb * size);
  const v = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const o = b * size;
    if (row.type === 'Q8_K') {
      v.setFloat32(o, row.d[b], true);
      out.set(new Uint8Array(row.qs.buffer, b * 256, 256), o + 4);
      for (let g = 0; g < 16; g++) v.setInt16(o + 260 + 2 * g, row.bsums[b * 16 + g], true);
    } else {
      v.setUint16(o, row.dBits[b], true);
      let q = o + 2;
      if (row.type === 'Q8_1') {
        v.setUint16(o + 2, row.sBits[b], true);
        q = o + 4;
      }
      out.set(new Uint8Array(row.qs.buffer, b * B, B), q);
    }
  }
  return out;
}

/**
 * The integers of one weight row that its dot products use: `codes` per value (the signed
 * quant the generic C code multiplies: q4 − 8, q5 − 16, w, q4, q5, q4, q5, q6 − 32 for Q4_0,
 * Q5_0, Q8_0, Q4_1, Q5_1, Q4_K, Q5_K, Q6_K), per group the integer scale (K-quants: groups of
 * 32, or 16 for Q6_K; 1 otherwise), the K-quant mins per group of 32, and per block the float
 * scales (dw; dm = dmin for Q4_K/Q5_K, m for Q4_1/Q5_1).
 */
export interface WeightRowInts {
  codes: Int8Array;
  group: number;
  sc: Int32Array;
  mins: Int32Array;
  dw: Float32Array;
  dm: Float32Array;
}

/** Decode the integers of the `n` values of a row of `dtype` blocks at byte `so` of `src`. */
export function weightRowInts(dtype: BlockType, src: Uint8Array, so: number, n: number): WeightRowInts {
  const { blockElems, blockBytes } = FORMATS[dtype];
  const nb = n / blockElems;
  const group = dtype === 'Q6_K' ? 16 : 32;
  const codes = new Int8Array(n);
  const sc = new Int32Array(n / group).fill(1);
  const kq = dtype === 'Q4_K' || dtype === 'Q5_K';
  const mins = new Int32Array(kq ? n / 32 : 0);
  const dw = new Float32Array(nb);
  const dm = new Float32Array(dtype === 'Q4_1' || dtype === 'Q5_1' || kq ? nb : 0);
  for (let b = 0; b < nb; b++) {
    const o = so + b * blockBytes;
    const c = b * blockElems;
    switch (dtype) {
      case 'Q8_0':
        dw[b] = half(src, o);
        for (let j = 0; j < 32; j++) codes[c + j] = (src[o + 2 + j] << 24) >> 24;
        break;
      case 'Q4_0':
      case 'Q4_1': {
        const off = dtype === 'Q4_0' ? 8 : 0;
        const qo = dtype === 'Q4_0' ? o + 2 : o + 4;
        dw[b] = half(src, o);
        if (dtype === 'Q4_1') dm[b] = half(src, o + 2);
        for (let j = 0; j < 16; j++) {
          codes[c + j] = (src[qo + j] & 15) - off;
          codes[c + 16 + j] = (src[qo + j] >> 4) - off;
        }
        break;
      }
      case 'Q5_0':
      case 'Q5_1': {
        const off = dtype === 'Q5_0' ? 16 : 0;
        const ho = dtype === 'Q5_0' ? o + 2 : o + 4;
        dw[b] = half(src, o);
        if (dtype === 'Q5_1') dm[b] = half(src, o + 2);
        const qh = src[ho] | (src[ho + 1] << 8) | (src[ho + 2] << 16) | (src[ho + 3] << 24);
        for (let j = 0; j < 16; j++) {
          codes[c + j] = ((src[ho + 4 + j] & 15) | (((qh >>> j) & 1) << 4)) - off;
          codes[c + 16 + j] = ((src[ho + 4 + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - off;
        }
        break;
      }
      case 'Q4_K':
      case 'Q5_K': {
        dw[b] = half(src, o);
        dm[b] = half(src, o + 2);
        for (let j = 0; j < 8; j++) {
          sc[b * 8 + j] = kScale(src, o + 4, j);
          mins[b * 8 + j] = kMin(src, o + 4, j);
        }
        const five = dtype === 'Q5_K';
        const qo = five ? o + 48 : o + 16;
        for (let g = 0; g < 4; g++) {
          for (let l = 0; l < 32; l++) {
            const byte = src[qo + 32 * g + l];
            const h = five ? src[o + 16 + l] : 0;
            codes[c + 64 * g + l] = (byte & 15) | (((h >> (2 * g)) & 1) << 4);
            codes[c + 64 * g + 32 + l] = (byte >> 4) | (((h >> (2 * g + 1)) & 1) << 4);
          }
        }
        break;
      }
      case 'Q6_K': {
        dw[b] = half(src, o + 208);
        for (let j = 0; j < 16; j++) sc[b * 16 + j] = (src[o + 192 + j] << 24) >> 24;
        for (let h = 0; h < 2; h++) {
          const ql = o + 64 * h;
          const qh = o + 128 + 32 * h;
          const y = c + 128 * h;
          for (let l = 0; l < 32; l++) {
            const a = src[ql + l];
            const e = src[ql + 32 + l];
            const hb = src[qh + l];
            codes[y + l] = ((a & 15) | ((hb & 3) << 4)) - 32;
            codes[y + 32 + l] = ((e & 15) | (((hb >> 2) & 3) << 4)) - 32;
            codes[y + 64 + l] = ((a >> 4) | (((hb >> 4) & 3) << 4)) - 32;
            codes[y + 96 + l] = ((e >> 4) | (((hb >> 6) & 3) << 4)) - 32;
          }
        }
        break;
      }
    }
  }
  return { codes, group, sc, mins, dw, dm };
}

/**
 * One output: the dot product of a weight row (its integers, weightRowInts) with a quantised
 * activation row over `nb` blocks starting at block `b0`, in float32 as the header states.
 */
export function blockDot(dtype: BlockType, w: WeightRowInts, x: QuantizedRow, nb = w.dw.length, b0 = 0): number {
  const E = FORMATS[dtype].blockElems;
  const { codes, group, sc } = w;
  const qs = x.qs;
  let o = 0; // Q8_0-family sum; for the K-quants: B (the min term)
  let A = 0;
  for (let b = b0; b < b0 + nb; b++) {
    let S = 0; // exact: |S| < 2^31
    for (let g = (b * E) / group; g < ((b + 1) * E) / group; g++) {
      let p = 0;
      for (let k = g * group; k < (g + 1) * group; k++) p += codes[k] * qs[k];
      S += sc[g] * p;
    }
    const dw = w.dw[b];
    const dx = x.d[b];
    switch (dtype) {
      case 'Q4_0':
        o = f(o + f(f(S * dw) * dx));
        break;
      case 'Q5_0':
        o = f(o + f(f(dw * dx) * S));
        break;
      case 'Q8_0':
        o = f(o + f(S * f(dw * dx)));
        break;
      case 'Q4_1':
      case 'Q5_1':
        o = f(o + f(f(f(dw * dx) * S) + f(w.dm[b] * x.s[b])));
        break;
      case 'Q4_K':
      case 'Q5_K': {
        let Mn = 0;
        for (let i = 0; i < 16; i++) Mn += x.bsums[b * 16 + i] * w.mins[b * 8 + (i >> 1)];
        A = f(A + f(f(dw * dx) * f(S)));
        o = f(o - f(f(w.dm[b] * dx) * f(Mn)));
        break;
      }
      case 'Q6_K':
        A = f(A + f(f(dw * dx) * f(S)));
        break;
    }
  }
  return dtype === 'Q4_K' || dtype === 'Q5_K' || dtype === 'Q6_K' ? f(o + A) : o;
}
