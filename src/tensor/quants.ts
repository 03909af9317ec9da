// ggml's block-quantised weight formats: widening blocks to float32, and quantising float32
// values into blocks.
//
// decodeBlocks gives the very float32 values ggml's dequantize_row_<type> gives: the same
// products and differences, each rounded to float32 in the same order. quantizeBlocks gives
// the very bytes of ggml's reference quantisers (quantize_row_<type>_ref, which is what
// llama-quantize runs when it has no importance matrix). C evaluates those in float32 (x86-64
// SSE, no fused multiply-add), so every intermediate here goes through Math.fround; an
// addition, product, quotient or square root of two float32 values computed in float64 and
// then rounded to float32 is exactly the float32 operation, so one fround per C operation is
// enough. Block layouts follow ggml-common.h; offsets are in bytes within a block.
//
//   Q8_0  34 B / 32:  f16 d @0, int8 q[32] @2.                       x = q·d
//   Q4_0  18 B / 32:  f16 d @0, 16 bytes @2: byte j holds value j in its low nibble and
//                     value j+16 in its high nibble.                   x = (q − 8)·d
//   Q5_0  22 B / 32:  f16 d @0, u32 qh @2 (bit j: fifth bit of value j), nibbles @6 as in
//                     Q4_0.                                            x = (q − 16)·d
//   Q4_1  20 B / 32:  f16 d @0, f16 m @2, nibbles @4 as in Q4_0.       x = q·d + m
//   Q5_1  24 B / 32:  f16 d @0, f16 m @2, u32 qh @4 as in Q5_0, nibbles @8.  x = q·d + m
//   Q4_K 144 B / 256: f16 d @0, f16 dmin @2, 12 bytes of packed 6-bit (scale, min) pairs
//                     for eight groups of 32 @4, 128 bytes of nibbles @16. Nibble bytes come
//                     in four runs of 32, run c covering values 64c…64c+63: byte l holds
//                     value 64c+l low and 64c+32+l high.   x = (d·sc)·q − dmin·m, per group
//   Q5_K 176 B / 256: as Q4_K, with 32 bytes qh @16 and the nibbles @48; value 64c+l takes
//                     its fifth bit from bit 2c of qh[l], value 64c+32+l from bit 2c+1.
//   Q6_K 210 B / 256: ql[128] @0, qh[64] @128, int8 scales[16] @192 (one per 16 values),
//                     f16 d @208. Two halves of 128 values, half h using ql[64h…], qh[32h…]
//                     and scales[8h…]: for l < 32, values +l, +32+l, +64+l, +96+l take the
//                     low nibble of ql[l], low of ql[32+l], high of ql[l], high of ql[32+l],
//                     and bit pairs 0–1, 2–3, 4–5, 6–7 of qh[l] as bits 4–5. x = (d·sc)·(q − 32)
//
// The 6-bit K-quant (scale, min) pair of group j < 4 is (s[j] & 63, s[j+4] & 63); of group
// j ≥ 4 it is ((s[j+4] & 15) | (s[j−4] >> 6) << 4, (s[j+4] >> 4) | (s[j] >> 6) << 4).

import { DsError } from '../errors.ts';
import { F16_TABLE, FORMATS, f32ToF16, type BlockType } from './dtypes.ts';

const f = Math.fround;

/** Values per block of the plain 32-value formats and per K-quant super-block. */
export const QK8_0 = 32;
export const QK_K = 256;

// ---------------------------------------------------------------------------------------------
// Decoding

/**
 * Widen `n` values (a multiple of the block size) of `dtype` blocks, read from `src` at byte
 * `srcOffset`, to float32 in `dst` from `dstOffset`: bit for bit what dequantize_row_<type>
 * computes.
 */
export function decodeBlocks(
  dtype: BlockType,
  src: Uint8Array,
  srcOffset: number,
  n: number,
  dst: Float32Array,
  dstOffset = 0,
): void {
  const { blockElems, blockBytes } = FORMATS[dtype];
  if (n % blockElems !== 0) {
    throw new RangeError(`${dtype} decodes whole blocks of ${blockElems} values, not ${n}`);
  }
  const nb = n / blockElems;
  if (srcOffset < 0 || srcOffset + nb * blockBytes > src.length) {
    throw new RangeError(`${dtype}: ${nb} blocks at byte ${srcOffset} run past the ${src.length} bytes given`);
  }
  if (dstOffset < 0 || dstOffset + n > dst.length) {
    throw new RangeError(`${dtype}: ${n} values at ${dstOffset} do not fit a destination of ${dst.length}`);
  }
  switch (dtype) {
    case 'Q8_0':
      return decodeQ8_0(src, srcOffset, nb, dst, dstOffset);
    case 'Q4_0':
      return decodeQ4_0(src, srcOffset, nb, dst, dstOffset);
    case 'Q5_0':
      return decodeQ5_0(src, srcOffset, nb, dst, dstOffset);
    case 'Q4_1':
      return decodeQ4_1(src, srcOffset, nb, dst, dstOffset);
    case 'Q5_1':
      return decodeQ5_1(src, srcOffset, nb, dst, dstOffset);
    case 'Q4_K':
      return decodeQ4_K(src, srcOffset, nb, dst, dstOffset);
    case 'Q5_K':
      return decodeQ5_K(src, srcOffset, nb, dst, dstOffset);
    case 'Q6_K':
      return decodeQ6_K(src, srcOffset, nb, dst, dstOffset);
  }
}

/** The f16 at byte `o` (little-endian), widened. */
export function half(src: Uint8Array, o: number): number {
  return F16_TABLE[src[o] | (src[o + 1] << 8)];
}

/** Scale (6 bits) of K-quant group j, from the 12 packed bytes at `s`. */
export function kScale(src: Uint8Array, s: number, j: number): number {
  return j < 4 ? src[s + j] & 63 : (src[s + j + 4] & 15) | ((src[s + j - 4] >> 6) << 4);
}

/** Min (6 bits) of K-quant group j, from the 12 packed bytes at `s`. */
export function kMin(src: Uint8Array, s: number, j: number): number {
  return j < 4 ? src[s + j + 4] & 63 : (src[s + j + 4] >> 4) | ((src[s + j] >> 6) << 4);
}

function decodeQ8_0(src: Uint8Array, so: number, nb: number, dst: Float32Array, o: number): void {
  for (let b = 0; b < nb; b++, so += 34, o += 32) {
    const d = half(src, so);
    for (let j = 0; j < 32; j++) dst[o + j] = ((src[so + 2 + j] << 24) >> 24) * d;
  }
}

function decodeQ4_0(src: Uint8Array, so: number, nb: number, dst: Float32Array, o: number): void {
  for (let b = 0; b < nb; b++, so += 18, o += 32) {
    const d = half(src, so);
    for (let j = 0; j < 16; j++) {
      const q = src[so + 2 + j];
      dst[o + j] = ((q & 15) - 8) * d;
      dst[o + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

function decodeQ5_0(src: Uint8Array, so: number, nb: number, dst: Float32Array, o: number): void {
  for (let b = 0; b < nb; b++, so += 22, o += 32) {
    const d = half(src, so);
    const qh = src[so + 2] | (src[so + 3] << 8) | (src[so + 4] << 16) | (src[so + 5] << 24);
    for (let j = 0; j < 16; j++) {
      const q = src[so + 6 + j];
      const lo = (q & 15) | (((qh >>> j) & 1) << 4);
      const hi = (q >> 4) | (((qh >>> (j + 16)) & 1) << 4);
      dst[o + j] = (lo - 16) * d;
      dst[o + j + 16] = (hi - 16) * d;
    }
  }
}

// The "_1" formats: q·d, then + m, each a float32 operation. (q·d is in fact exact: a 5-bit
// integer times an f16 needs at most 16 significant bits. So only the sum rounds, and a fused
// multiply-add would give the same value.)
function decodeQ4_1(src: Uint8Array, so: number, nb: number, dst: Float32Array, o: number): void {
  for (let b = 0; b < nb; b++, so += 20, o += 32) {
    const d = half(src, so);
    const m = half(src, so + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[so + 4 + j];
      dst[o + j] = f((q & 15) * d) + m;
      dst[o + j + 16] = f((q >> 4) * d) + m;
    }
  }
}

function decodeQ5_1(src: Uint8Array, so: number, nb: number, dst: Float32Array, o: number): void {
  for (let b = 0; b < nb; b++, so += 24, o += 32) {
    const d = half(src, so);
    const m = half(src, so + 2);
    const qh = src[so + 4] | (src[so + 5] << 8) | (src[so + 6] << 16) | (src[so + 7] << 24);
    for (let j = 0; j < 16; j++) {
      const q = src[so + 8 + j];
      const lo = (q & 15) | (((qh >>> j) & 1) << 4);
      const hi = (q >> 4) | (((qh >>> (j + 16)) & 1) << 4);
      dst[o + j] = f(lo * d) + m;
      dst[o + j + 16] = f(hi * d) + m;
    }
  }
}

function decodeQ4_K(src: Uint8Array, so: number, nb: number, dst: Float32Array, o: number): void {
  for (let b = 0; b < nb; b++, so += 144, o += 256) {
    const d = half(src, so);
    const dmin = half(src, so + 2);
    for (let c = 0; c < 4; c++) {
      const d1 = f(d * kScale(src, so + 4, 2 * c));
      const m1 = f(dmin * kMin(src, so + 4, 2 * c));
      const d2 = f(d * kScale(src, so + 4, 2 * c + 1));
      const m2 = f(dmin * kMin(src, so + 4, 2 * c + 1));
      const q = so + 16 + 32 * c;
      const y = o + 64 * c;
      for (let l = 0; l < 32; l++) {
        dst[y + l] = f(d1 * (src[q + l] & 15)) - m1;
        dst[y + 32 + l] = f(d2 * (src[q + l] >> 4)) - m2;
      }
    }
  }
}

function decodeQ5_K(src: Uint8Array, so: number, nb: number, dst: Float32Array, o: number): void {
  for (let b = 0; b < nb; b++, so += 176, o += 256) {
    const d = half(src, so);
    const dmin = half(src, so + 2);
    const qh = so + 16;
    for (let c = 0; c < 4; c++) {
      const d1 = f(d * kScale(src, so + 4, 2 * c));
      const m1 = f(dmin * kMin(src, so + 4, 2 * c));
      const d2 = f(d * kScale(src, so + 4, 2 * c + 1));
      const m2 = f(dmin * kMin(src, so + 4, 2 * c + 1));
      const u1 = 1 << (2 * c);
      const u2 = 2 << (2 * c);
      const q = so + 48 + 32 * c;
      const y = o + 64 * c;
      for (let l = 0; l < 32; l++) {
        const h = src[qh + l];
        dst[y + l] = f(d1 * ((src[q + l] & 15) + (h & u1 ? 16 : 0))) - m1;
        dst[y + 32 + l] = f(d2 * ((src[q + l] >> 4) + (h & u2 ? 16 : 0))) - m2;
      }
    }
  }
}

function decodeQ6_K(src: Uint8Array, so: number, nb: number, dst: Float32Array, o: number): void {
  for (let b = 0; b < nb; b++, so += 210, o += 256) {
    const d = half(src, so + 208);
    for (let h = 0; h < 2; h++) {
      const ql = so + 64 * h;
      const qh = so + 128 + 32 * h;
      const sc = so + 192 + 8 * h;
      const y = o + 128 * h;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const a = src[ql + l];
        const c = src[ql + 32 + l];
        const hb = src[qh + l];
        const q1 = ((a & 15) | ((hb & 3) << 4)) - 32;
        const q2 = ((c & 15) | (((hb >> 2) & 3) << 4)) - 32;
        const q3 = ((a >> 4) | (((hb >> 4) & 3) << 4)) - 32;
        const q4 = ((c >> 4) | (((hb >> 6) & 3) << 4)) - 32;
        dst[y + l] = f(d * ((src[sc + is] << 24) >> 24)) * q1;
        dst[y + 32 + l] = f(d * ((src[sc + is + 2] << 24) >> 24)) * q2;
        dst[y + 64 + l] = f(d * ((src[sc + is + 4] << 24) >> 24)) * q3;
        dst[y + 96 + l] = f(d * ((src[sc + is + 6] << 24) >> 24)) * q4;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Quantising

/**
 * Quantise float32 values (a multiple of the block size: rows are simply concatenated, as
 * blocks never straddle rows) to `dtype` blocks, byte for byte as ggml's
 * quantize_row_<type>_ref.
 */
export function quantizeBlocks(dtype: BlockType, x: Float32Array): Uint8Array {
  const { blockElems, blockBytes } = FORMATS[dtype];
  if (x.length % blockElems !== 0) {
    throw new DsError('BAD_INPUT', `${dtype} needs a multiple of ${blockElems} values, got ${x.length}`);
  }
  const nb = x.length / blockElems;
  const out = new Uint8Array(nb * blockBytes);
  switch (dtype) {
    case 'Q8_0':
      quantizeQ8_0Into(x, nb, out);
      break;
    case 'Q4_0':
      quantizeQ4_0Into(x, nb, out);
      break;
    case 'Q5_0':
      quantizeQ5_0Into(x, nb, out);
      break;
    case 'Q4_1':
      quantizeQ4_1Into(x, nb, out);
      break;
    case 'Q5_1':
      quantizeQ5_1Into(x, nb, out);
      break;
    case 'Q4_K':
    case 'Q5_K':
      quantizeQ45_KInto(dtype, x, nb, out);
      break;
    case 'Q6_K':
      quantizeQ6_KInto(x, nb, out);
      break;
  }
  return out;
}

/** Q8_0 blocks of `x` (quantize_row_q8_0_ref). */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  return quantizeBlocks('Q8_0', x);
}

/** Q8_0 bytes back to float32 (dequantize_row_q8_0). */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const n = (bytes.byteLength / FORMATS.Q8_0.blockBytes) * QK8_0;
  const out = new Float32Array(n);
  decodeBlocks('Q8_0', bytes, 0, n, out);
  return out;
}

/** ggml's smallest group maximum that still counts as non-zero (GROUP_MAX_EPS). */
const GROUP_MAX_EPS = f(1e-15);

const niF32 = new Float32Array(1);
const niI32 = new Int32Array(niF32.buffer);

/**
 * ggml's nearest_int of a float32 value: add 1.5·2²³ in float32, so the sum's low mantissa
 * bits hold the value rounded half to even, and read those bits back. Valid for |v| < 2²²;
 * outside that it returns the same meaningless bits C does.
 */
export function nearestInt(v: number): number {
  niF32[0] = v + 12582912;
  return (niI32[0] & 0x7fffff) - 0x400000;
}

/** C's roundf: nearest, halves away from zero. */
export function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

/**
 * C's float → int8_t conversion as x86-64 compilers emit it: truncate to int32 (cvttss2si,
 * which gives INT32_MIN for NaN and out-of-range values), then keep the low byte, signed.
 */
export function truncToI8(v: number): number {
  const t = Math.trunc(v);
  const i = t >= -2147483648 && t <= 2147483647 ? t : -2147483648;
  return (i << 24) >> 24;
}

function putHalf(out: Uint8Array, o: number, v: number): void {
  const h = f32ToF16(v);
  out[o] = h & 0xff;
  out[o + 1] = h >>> 8;
}

function quantizeQ8_0Into(x: Float32Array, nb: number, out: Uint8Array): void {
  for (let b = 0; b < nb; b++) {
    const xo = b * 32;
    const o = b * 34;
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(x[xo + j]);
      amax = amax > a ? amax : a;
    }
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    putHalf(out, o, d);
    for (let j = 0; j < 32; j++) out[o + 2 + j] = truncToI8(roundf(f(x[xo + j] * id)));
  }
}

/**
 * The shared part of Q4_0 and Q5_0: d = −(the value of largest magnitude) / 2^(bits−1), and
 * each level min(top, int8(x/d + 2^(bits−1) + 0.5)), truncated. Writes d and returns the
 * levels through `levels` (32 entries).
 */
function signedLevels(x: Float32Array, xo: number, bits: 4 | 5, out: Uint8Array, o: number, levels: Uint8Array): void {
  const mid = bits === 4 ? 8 : 16;
  const top = 2 * mid - 1;
  let amax = 0;
  let max = 0;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j];
    const a = Math.abs(v);
    if (amax < a) {
      amax = a;
      max = v;
    }
  }
  const d = f(max / -mid);
  const id = d !== 0 ? f(1 / d) : 0;
  putHalf(out, o, d);
  const bias = mid + 0.5;
  for (let j = 0; j < 32; j++) levels[j] = Math.min(top, truncToI8(f(f(x[xo + j] * id) + bias)));
}

function quantizeQ4_0Into(x: Float32Array, nb: number, out: Uint8Array): void {
  const L = new Uint8Array(32);
  for (let b = 0; b < nb; b++) {
    const o = b * 18;
    signedLevels(x, b * 32, 4, out, o, L);
    for (let j = 0; j < 16; j++) out[o + 2 + j] = L[j] | (L[j + 16] << 4);
  }
}

function quantizeQ5_0Into(x: Float32Array, nb: number, out: Uint8Array): void {
  const L = new Uint8Array(32);
  for (let b = 0; b < nb; b++) {
    const o = b * 22;
    signedLevels(x, b * 32, 5, out, o, L);
    packFiveBits(L, out, o + 2, o + 6);
  }
}

/**
 * Five-bit levels L[0…31] as Q5_0 and Q5_1 store them: the low four bits as Q4_0's nibbles at
 * `qs`, and the fifth bit of value j as bit j of the little-endian u32 at `qhAt`.
 */
function packFiveBits(L: Uint8Array, out: Uint8Array, qhAt: number, qs: number): void {
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    out[qs + j] = (L[j] & 15) | ((L[j + 16] & 15) << 4);
    qh |= ((L[j] >> 4) & 1) << j;
    qh |= ((L[j + 16] >> 4) & 1) << (j + 16);
  }
  out[qhAt] = qh & 0xff;
  out[qhAt + 1] = (qh >>> 8) & 0xff;
  out[qhAt + 2] = (qh >>> 16) & 0xff;
  out[qhAt + 3] = qh >>> 24;
}

/** FLT_MAX, where ggml's Q4_1 / Q5_1 quantisers start their search for the block's range. */
const FLT_MAX = 3.4028234663852886e38;

/**
 * The shared part of Q4_1 and Q5_1: the block's range [min, max] in 2^bits − 1 equal steps,
 * d = (max − min) / (2^bits − 1), written as f16 at `o` and min as f16 at o + 2; each level
 * int((x − min)·(1/d) + 0.5), truncated, from the float32 d and min (not their f16 roundings).
 * Q4_1 caps the level at 15 after an int8 conversion; Q5_1 converts straight to uint8 with no
 * cap. Levels land in `levels` (32 entries, kept to their low byte as C's uint8_t keeps them).
 */
function affineLevels(x: Float32Array, xo: number, bits: 4 | 5, out: Uint8Array, o: number, levels: Uint8Array): void {
  let min = FLT_MAX;
  let max = -FLT_MAX;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const d = f(f(max - min) / ((1 << bits) - 1));
  const id = d !== 0 ? f(1 / d) : 0;
  putHalf(out, o, d);
  putHalf(out, o + 2, min);
  for (let j = 0; j < 32; j++) {
    const t = truncToI8(f(f(f(x[xo + j] - min) * id) + 0.5));
    levels[j] = bits === 4 ? Math.min(15, t) : t;
  }
}

function quantizeQ4_1Into(x: Float32Array, nb: number, out: Uint8Array): void {
  const L = new Uint8Array(32);
  for (let b = 0; b < nb; b++) {
    const o = b * 20;
    affineLevels(x, b * 32, 4, out, o, L);
    for (let j = 0; j < 16; j++) out[o + 4 + j] = L[j] | (L[j + 16] << 4);
  }
}

function quantizeQ5_1Into(x: Float32Array, nb: number, out: Uint8Array): void {
  const L = new Uint8Array(32);
  for (let b = 0; b < nb; b++) {
    const o = b * 24;
    affineLevels(x, b * 32, 5, out, o, L);
    packFiveBits(L, out, o + 4, o + 8);
  }
}

/**
 * ggml's make_qkx2_quants for a group of 32 with squared-error weights: fit x ≈ scale·l − the
 * min (l in 0…nmax, min ≤ 0) by trying nstep+1 scales around nmax/(max − min), each followed
 * by a weighted least-squares (scale, min) for its levels, and keeping the lowest weighted
 * squared error. Levels go to L[lo…lo+31]; result[0] = scale, result[1] = −min.
 */
function makeQkx2Quants(
  nmax: number,
  x: Float32Array,
  xo: number,
  w: Float32Array,
  L: Uint8Array,
  lo: number,
  aux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
  result: Float32Array,
): void {
  const n = 32;
  let min = x[xo];
  let max = x[xo];
  let sumW = w[0];
  let sumX = f(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i];
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = f(sumW + w[i]);
    sumX = f(sumX + f(w[i] * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    result[0] = 0;
    result[1] = -min;
    return;
  }
  // min moves whenever a trial wins, and later trials measure from the new one, as in C.
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i];
    const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(v - min)))));
    L[lo + i] = l;
    let diff = f(f(f(scale * l) + min) - v);
    diff = f(diff * diff);
    bestError = f(bestError + f(w[i] * diff));
  }
  for (let is = 0; is <= nstep; is++) {
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i];
      const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(v - min)))));
      aux[i] = l;
      const wl = f(w[i] * l);
      sumL = f(sumL + wl);
      sumL2 = f(sumL2 + f(wl * l));
      sumXL = f(sumXL + f(wl * v));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (D > 0) {
      let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
      let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        let diff = f(f(f(thisScale * aux[i]) + thisMin) - x[xo + i]);
        diff = f(diff * diff);
        curError = f(curError + f(w[i] * diff));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = aux[i];
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  result[0] = scale;
  result[1] = -min;
}

/**
 * quantize_row_q4_K_ref / quantize_row_q5_K_ref: per group of 32 a (scale, min) fit by
 * make_qkx2_quants weighted by rms(group) + |x|; the eight scales and eight mins quantised to
 * 6 bits against their maxima (d = max scale / 63, dmin = max min / 63, in f16); then every
 * value re-quantised against its group's stored scale and min.
 */
function quantizeQ45_KInto(dtype: 'Q4_K' | 'Q5_K', x: Float32Array, nb: number, out: Uint8Array): void {
  const five = dtype === 'Q5_K';
  const nmax = five ? 31 : 15;
  const rmin = five ? -0.5 : -1;
  const nstep = five ? 15 : 20;
  const rdelta = f(0.1);
  const blockBytes = five ? 176 : 144;
  const L = new Uint8Array(256);
  const aux = new Uint8Array(32);
  const w = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  const fit = new Float32Array(2);
  for (let b = 0; b < nb; b++) {
    const xb = b * 256;
    const o = b * blockBytes;
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      const xo = xb + 32 * j;
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(x[xo + l] * x[xo + l]));
      const avX = f(Math.sqrt(f(sumX2 / 32)));
      for (let l = 0; l < 32; l++) w[l] = avX + Math.abs(x[xo + l]);
      makeQkx2Quants(nmax, x, xo, w, L, 32 * j, aux, rmin, rdelta, nstep, fit);
      scales[j] = fit[0];
      mins[j] = fit[1];
      if (scales[j] > maxScale) maxScale = scales[j];
      if (mins[j] > maxMin) maxMin = mins[j];
    }
    const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
    const s = o + 4;
    for (let j = 0; j < 8; j++) {
      const ls = Math.min(63, nearestInt(f(invScale * scales[j])) & 0xff);
      const lm = Math.min(63, nearestInt(f(invMin * mins[j])) & 0xff);
      if (j < 4) {
        out[s + j] = ls;
        out[s + j + 4] = lm;
      } else {
        out[s + j + 4] = (ls & 15) | ((lm & 15) << 4);
        out[s + j - 4] |= (ls >> 4) << 6;
        out[s + j] |= (lm >> 4) << 6;
      }
    }
    putHalf(out, o, f(maxScale / 63));
    putHalf(out, o + 2, f(maxMin / 63));
    const dAll = half(out, o);
    const dminAll = half(out, o + 2);
    for (let j = 0; j < 8; j++) {
      const d = f(dAll * kScale(out, s, j));
      if (d === 0) continue; // the group keeps the levels of its fit
      const dm = f(dminAll * kMin(out, s, j));
      const xo = xb + 32 * j;
      for (let i = 0; i < 32; i++) {
        L[32 * j + i] = Math.max(0, Math.min(nmax, nearestInt(f(f(x[xo + i] + dm) / d))));
      }
    }
    if (five) {
      const qh = o + 16;
      for (let c = 0; c < 4; c++) {
        const m1 = 1 << (2 * c);
        const m2 = 2 << (2 * c);
        const q = o + 48 + 32 * c;
        for (let j = 0; j < 32; j++) {
          let l1 = L[64 * c + j];
          let l2 = L[64 * c + 32 + j];
          if (l1 > 15) {
            l1 -= 16;
            out[qh + j] |= m1;
          }
          if (l2 > 15) {
            l2 -= 16;
            out[qh + j] |= m2;
          }
          out[q + j] = l1 | (l2 << 4);
        }
      }
    } else {
      for (let c = 0; c < 4; c++) {
        const q = o + 16 + 32 * c;
        for (let l = 0; l < 32; l++) out[q + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4);
      }
    }
  }
}

/**
 * ggml's make_qx_quants for a group of 16 with rmse_type 1 and no importance weights:
 * symmetric levels l in −nmax…nmax−1 (stored +nmax) from −nmax/max, then 18 nearby scales
 * tried, keeping the one that maximises (Σ w·x·l)² / Σ w·l² with w = x². Returns the scale.
 */
function makeQxQuants(nmax: number, x: Float32Array, xo: number, L: Uint8Array, lo: number): number {
  const n = 16;
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const a = Math.abs(x[xo + i]);
    if (a > amax) {
      amax = a;
      max = x[xo + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + n);
    return 0;
  }
  let iscale = f(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i];
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(f(iscale * v))));
    L[lo + i] = l + nmax;
    const w = f(v * v);
    sumlx = f(sumlx + f(f(w * v) * l));
    suml2 = f(suml2 + f(f(w * l) * l));
  }
  let scale = suml2 !== 0 ? f(sumlx / suml2) : 0;
  let best = f(scale * sumlx);
  const tenth = f(0.1);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = f(-f(nmax + f(tenth * is)) / max);
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i];
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(f(iscale * v))));
      const w = f(v * v);
      sumlx = f(sumlx + f(f(w * v) * l));
      suml2 = f(suml2 + f(f(w * l) * l));
    }
    if (suml2 > 0 && f(sumlx * sumlx) > f(best * suml2)) {
      for (let i = 0; i < n; i++) {
        L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, nearestInt(f(iscale * x[xo + i]))));
      }
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}

/**
 * quantize_row_q6_K_ref: per group of 16 a symmetric 6-bit fit (make_qx_quants); the sixteen
 * scales quantised to int8 against the one of largest magnitude (d = that scale / −128, f16);
 * then every value re-quantised against its group's stored scale. A super-block whose scales
 * are all ~0 is stored as zeros.
 */
function quantizeQ6_KInto(x: Float32Array, nb: number, out: Uint8Array): void {
  const L = new Uint8Array(256);
  const scales = new Float32Array(16);
  for (let b = 0; b < nb; b++) {
    const xb = b * 256;
    const o = b * 210;
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const scale = makeQxQuants(32, x, xb + 16 * ib, L, 16 * ib);
      scales[ib] = scale;
      const a = Math.abs(scale);
      if (a > maxAbsScale) {
        maxAbsScale = a;
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) continue; // the block stays all zero bytes (d = +0)
    const iscale = f(-128 / maxScale);
    putHalf(out, o + 208, f(1 / iscale));
    for (let ib = 0; ib < 16; ib++) out[o + 192 + ib] = Math.min(127, nearestInt(f(iscale * scales[ib]))) & 0xff;
    const dAll = half(out, o + 208);
    for (let j = 0; j < 16; j++) {
      const d = f(dAll * ((out[o + 192 + j] << 24) >> 24));
      if (d === 0) continue; // the group keeps the levels of its fit
      const xo = xb + 16 * j;
      for (let i = 0; i < 16; i++) {
        L[16 * j + i] = 32 + Math.max(-32, Math.min(31, nearestInt(f(x[xo + i] / d))));
      }
    }
    for (let h = 0; h < 2; h++) {
      const ql = o + 64 * h;
      const qh = o + 128 + 32 * h;
      const j = 128 * h;
      for (let l = 0; l < 32; l++) {
        const a = L[j + l];
        const c = L[j + l + 32];
        const e = L[j + l + 64];
        const g = L[j + l + 96];
        out[ql + l] = (a & 15) | ((e & 15) << 4);
        out[ql + 32 + l] = (c & 15) | ((g & 15) << 4);
        out[qh + l] = (a >> 4) | ((c >> 4) << 2) | ((e >> 4) << 4) | ((g >> 4) << 6);
      }
    }
  }
}
