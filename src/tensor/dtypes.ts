// The storage dtypes dsv3 understands, and how one element of each widens to float32.
// This is the table every other layer consults: io uses the byte sizes, kernels use the
// decoders. Nothing here allocates per-tensor memory; decoding tables are built once.

/** Safetensors dtype tags that dsv3 can hold weights in. */
export type DType = 'F32' | 'BF16' | 'F16' | 'F8_E4M3';

export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F32: 4,
  BF16: 2,
  F16: 2,
  F8_E4M3: 1,
};

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/**
 * ggml's block-quantised formats (GGUF files): a row is a run of blocks of `blockElems`
 * values, each stored in `blockBytes` bytes (scales and packed integers). Decoders and
 * quantisers live in quants.ts.
 */
export type BlockType = 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q4_K' | 'Q5_K' | 'Q6_K';

/** Every dtype a weight matrix (LinearWeight) can be held in. */
export type WeightDType = DType | BlockType;

export interface FormatTraits {
  /** Values per block (1 for the plain dtypes). */
  blockElems: number;
  /** Bytes per block. */
  blockBytes: number;
  /** ggml_type id in GGUF files; null for F8_E4M3, which GGUF cannot hold. */
  ggml: number | null;
  /** The dtype code the native addon takes (native/common.h DType). */
  native: number;
}

/**
 * The one table of weight formats. Adding a format means a row here, its decoder and
 * quantiser in quants.ts, and its row in the addon's table (native/common.h).
 */
export const FORMATS: Readonly<Record<WeightDType, FormatTraits>> = {
  F32: { blockElems: 1, blockBytes: 4, ggml: 0, native: 0 },
  BF16: { blockElems: 1, blockBytes: 2, ggml: 30, native: 1 },
  F16: { blockElems: 1, blockBytes: 2, ggml: 1, native: 2 },
  F8_E4M3: { blockElems: 1, blockBytes: 1, ggml: null, native: 3 },
  Q4_0: { blockElems: 32, blockBytes: 18, ggml: 2, native: 10 },
  Q5_0: { blockElems: 32, blockBytes: 22, ggml: 6, native: 11 },
  Q8_0: { blockElems: 32, blockBytes: 34, ggml: 8, native: 12 },
  Q4_K: { blockElems: 256, blockBytes: 144, ggml: 12, native: 13 },
  Q5_K: { blockElems: 256, blockBytes: 176, ggml: 13, native: 14 },
  Q6_K: { blockElems: 256, blockBytes: 210, ggml: 14, native: 15 },
  Q4_1: { blockElems: 32, blockBytes: 20, ggml: 3, native: 16 },
  Q5_1: { blockElems: 32, blockBytes: 24, ggml: 7, native: 17 },
};

export function isBlockType(s: string): s is BlockType {
  return Object.prototype.hasOwnProperty.call(FORMATS, s) && FORMATS[s as WeightDType].blockElems > 1;
}

/** The weight dtype of a ggml_type id, or undefined when dsv3 has no such format. */
export function formatOfGgml(id: number): WeightDType | undefined {
  return (Object.keys(FORMATS) as WeightDType[]).find((k) => FORMATS[k].ggml === id);
}

/** Bytes of one row of `cols` values (cols must be a multiple of the block size). */
export function rowBytes(dtype: WeightDType, cols: number): number {
  const f = FORMATS[dtype];
  if (cols % f.blockElems !== 0) {
    throw new RangeError(`${dtype} rows hold whole blocks of ${f.blockElems} values, not ${cols}`);
  }
  return (cols / f.blockElems) * f.blockBytes;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** BF16 is the upper half of a float32: widen by shifting the bits back. */
export function bf16ToF32(bits: number): number {
  u32Scratch[0] = bits << 16;
  return f32Scratch[0];
}

/** Round a float32 value to BF16 bits, nearest-even (NaN stays NaN). */
export function f32ToBf16(v: number): number {
  f32Scratch[0] = v;
  const u = u32Scratch[0];
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Round a float to IEEE half precision bits, nearest-even (what ggml's FP32_TO_FP16 does). */
export function f32ToF16(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // Inf / NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    // Subnormal half (or zero): shift the full significand right, rounding to nearest-even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // may carry into the exponent: correct
  return sign | h;
}

function halfToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** IEEE half precision widened to float32, as a 65536-entry table. */
export const F16_TABLE: Float32Array = (() => {
  const t = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) t[i] = halfToF32(i);
  return t;
})();

/**
 * float8 e4m3fn (torch.float8_e4m3fn): 1 sign, 4 exponent bits (bias 7), 3 mantissa bits,
 * no infinities, 0x7F/0xFF are NaN, largest finite 448.
 */
export const E4M3_TABLE: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let i = 0; i < 256; i++) {
    const s = i & 0x80 ? -1 : 1;
    const e = (i >>> 3) & 0xf;
    const m = i & 7;
    if (e === 15 && m === 7) t[i] = NaN;
    else if (e === 0) t[i] = s * (m / 8) * 2 ** -6;
    else t[i] = s * (1 + m / 8) * 2 ** (e - 7);
  }
  return t;
})();

/** Encode a float to the nearest e4m3fn code (round to nearest even, saturating at ±448). */
export function f32ToE4m3(v: number): number {
  if (Number.isNaN(v)) return 0x7f;
  const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
  const a = Math.abs(v);
  if (a >= 448) return sign | 0x7e;
  // Binary search over the 127 non-negative finite codes, which increase monotonically.
  let lo = 0;
  let hi = 0x7e;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (E4M3_TABLE[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dLo = a - E4M3_TABLE[lo];
  const dHi = E4M3_TABLE[hi] - a;
  const code = dLo < dHi ? lo : dHi < dLo ? hi : (lo & 1 ? hi : lo);
  return sign | code;
}

/** Widen `n` elements of raw little-endian storage to float32. */
export function toF32(dtype: DType, bytes: Uint8Array, n?: number): Float32Array {
  const count = n ?? bytes.byteLength / DTYPE_BYTES[dtype];
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32':
      out.set(new Float32Array(...aligned(bytes, 4), count));
      break;
    case 'BF16': {
      const src = new Uint16Array(...aligned(bytes, 2), count);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) u[i] = src[i] << 16;
      break;
    }
    case 'F16': {
      const src = new Uint16Array(...aligned(bytes, 2), count);
      for (let i = 0; i < count; i++) out[i] = F16_TABLE[src[i]];
      break;
    }
    case 'F8_E4M3':
      for (let i = 0; i < count; i++) out[i] = E4M3_TABLE[bytes[i]];
      break;
  }
  return out;
}

/** `bytes` as a typed-array-compatible (buffer, offset) pair; copies only when misaligned. */
function aligned(bytes: Uint8Array, align: number): [ArrayBufferLike, number] {
  if (bytes.byteOffset % align === 0) return [bytes.buffer, bytes.byteOffset];
  return [bytes.slice().buffer, 0];
}
