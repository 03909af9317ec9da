// ggml's block formats (src/tensor/quants.ts), checked four ways: hand-built blocks decoded to
// the numbers the format definition (ggml-common.h) gives; llama.cpp's own quantiser and
// dequantiser output (test/fixtures/ggml-quants, see its README) reproduced bit for bit;
// round trips within stated error bounds; and the reference kernels reading block weights.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DsError } from '../errors.ts';
import { F16_TABLE, FORMATS, f32ToF16, rowBytes, type BlockType } from './dtypes.ts';
import { decodeBlocks, dequantizeQ8_0, quantizeBlocks, quantizeQ8_0 } from './quants.ts';
import { f32Weight, type LinearWeight } from './weight.ts';
import { decodeRow, refKernels } from '../kernels/ref/index.ts';

const TYPES: readonly BlockType[] = ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];
const FIXTURES = join(import.meta.dirname, '../../test/fixtures/ggml-quants');

function decode(t: BlockType, q: Uint8Array, n: number): Float32Array {
  const y = new Float32Array(n);
  decodeBlocks(t, q, 0, n, y);
  return y;
}

/** f16 bits as little-endian bytes. */
const h16 = (bits: number): number[] => [bits & 0xff, bits >> 8];

// ---------------------------------------------------------------------------------------------
// Layouts

test('block sizes: FORMATS agrees with the ggml-common.h structs, and quantizeBlocks with both', () => {
  // sizeof(block_*) in ggml-common.h, field by field.
  const sizes: Record<BlockType, [number, number]> = {
    Q8_0: [32, 2 + 32], // d, qs[32]
    Q4_0: [32, 2 + 16], // d, qs[16]
    Q5_0: [32, 2 + 4 + 16], // d, qh[4], qs[16]
    Q4_1: [32, 2 + 2 + 16], // d, m, qs[16]
    Q5_1: [32, 2 + 2 + 4 + 16], // d, m, qh[4], qs[16]
    Q4_K: [256, 2 + 2 + 12 + 128], // d, dmin, scales[12], qs[128]
    Q5_K: [256, 2 + 2 + 12 + 32 + 128], // d, dmin, scales[12], qh[32], qs[128]
    Q6_K: [256, 128 + 64 + 16 + 2], // ql[128], qh[64], scales[16], d
  };
  for (const t of TYPES) {
    const [elems, bytes] = sizes[t];
    assert.equal(FORMATS[t].blockElems, elems, t);
    assert.equal(FORMATS[t].blockBytes, bytes, t);
    assert.equal(quantizeBlocks(t, new Float32Array(3 * elems)).length, 3 * bytes, t);
    assert.equal(rowBytes(t, 2 * elems), 2 * bytes, t);
    assert.throws(() => quantizeBlocks(t, new Float32Array(elems + 1)), (e: unknown) => e instanceof DsError && /multiple of/.test(e.message));
  }
});

test('Q8_0 hand-built block: x = d · q', () => {
  // d = 0x3800: exponent 14 → 2^(14−15) = 0.5. q[j] = 8j − 128 (int8, byte (8j + 128) mod 256).
  // So x[j] = 0.5 · (8j − 128) = 4j − 64: −64, −60, …, 60.
  const b = Uint8Array.from([...h16(0x3800), ...Array.from({ length: 32 }, (_, j) => (8 * j + 128) & 0xff)]);
  const y = decode('Q8_0', b, 32);
  assert.deepEqual([...y], Array.from({ length: 32 }, (_, j) => 4 * j - 64));
});

test('Q4_0 hand-built block: value j in the low nibble of byte j, value j+16 in its high nibble, x = (q − 8) · d', () => {
  // d = 0x4000 = 2. Byte j = j | (15 − j) << 4, so value j has q = j → 2(j − 8) and value j+16
  // has q = 15 − j → 2(7 − j). E.g. x[0] = −16, x[15] = 14, x[16] = 14, x[31] = −16.
  const b = Uint8Array.from([...h16(0x4000), ...Array.from({ length: 16 }, (_, j) => j | ((15 - j) << 4))]);
  const y = decode('Q4_0', b, 32);
  const want = [...Array.from({ length: 16 }, (_, j) => 2 * (j - 8)), ...Array.from({ length: 16 }, (_, j) => 2 * (7 - j))];
  assert.deepEqual([...y], want);
  assert.deepEqual([y[0], y[15], y[16], y[31]], [-16, 14, 14, -16]);
});

test('Q5_0 hand-built block: bit j of the little-endian u32 qh is value j’s fifth bit, x = (q − 16) · d', () => {
  // d = 1. qh = 0x8000FFFF (bytes FF FF 00 80): values 0…15 and 31 have the fifth bit.
  // Byte j = j | j << 4 (both nibbles j). Value j < 16: (j + 16) − 16 = j. Value 16 + j:
  // j − 16 for j < 15, and value 31 = (15 + 16) − 16 = 15.
  const b = Uint8Array.from([...h16(0x3c00), 0xff, 0xff, 0x00, 0x80, ...Array.from({ length: 16 }, (_, j) => j | (j << 4))]);
  const y = decode('Q5_0', b, 32);
  const want = [...Array.from({ length: 16 }, (_, j) => j), ...Array.from({ length: 15 }, (_, j) => j - 16), 15];
  assert.deepEqual([...y], want);
});

test('Q4_1 hand-built block: f16 d, f16 m, then nibbles as in Q4_0, x = q · d + m', () => {
  // d = 0x3800 = 0.5, m = 0xC000 = −2. Byte j = j | (15 − j) << 4, so value j has q = j →
  // 0.5j − 2 and value j+16 has q = 15 − j → 0.5(15 − j) − 2. E.g. x[0] = −2, x[15] = 5.5,
  // x[16] = 5.5, x[31] = −2.
  const b = Uint8Array.from([...h16(0x3800), ...h16(0xc000), ...Array.from({ length: 16 }, (_, j) => j | ((15 - j) << 4))]);
  const y = decode('Q4_1', b, 32);
  const want = [...Array.from({ length: 16 }, (_, j) => 0.5 * j - 2), ...Array.from({ length: 16 }, (_, j) => 0.5 * (15 - j) - 2)];
  assert.deepEqual([...y], want);
  assert.deepEqual([y[0], y[15], y[16], y[31]], [-2, 5.5, 5.5, -2]);
});

test('Q5_1 hand-built block: f16 d, f16 m, u32 qh (bit j: value j’s fifth bit), nibbles, x = q · d + m', () => {
  // d = 1, m = 0xB400 = −0.25. qh = 0x8000FFFF (bytes FF FF 00 80 at offset 4): values 0…15
  // and 31 have the fifth bit. Byte j = j | j << 4. Value j < 16: q = j + 16 → j + 15.75.
  // Value 16 + j: q = j → j − 0.25 for j < 15, and value 31: q = 31 → 30.75.
  const b = Uint8Array.from([...h16(0x3c00), ...h16(0xb400), 0xff, 0xff, 0x00, 0x80, ...Array.from({ length: 16 }, (_, j) => j | (j << 4))]);
  const y = decode('Q5_1', b, 32);
  const want = [...Array.from({ length: 16 }, (_, j) => j + 15.75), ...Array.from({ length: 15 }, (_, j) => j - 0.25), 30.75];
  assert.deepEqual([...y], want);
  assert.deepEqual([y[0], y[15], y[16], y[31]], [15.75, 30.75, -0.25, 30.75]);
});

// The 6-bit (scale, min) pairs of the eight K-quant groups used by the Q4_K and Q5_K blocks:
const K_SC = [1, 2, 3, 4, 17, 33, 50, 63];
const K_M = [0, 5, 10, 63, 16, 31, 32, 48];
// packed by hand as ggml does (get_scale_min_k4 unpacks it): bytes 0…3 hold sc[0…3] in their
// low 6 bits and the top 2 bits of sc[4…7] above; bytes 4…7 likewise m[0…3] and the top bits of
// m[4…7]; bytes 8…11 hold sc[4…7] & 15 low and m[4…7] & 15 high.
//   sc4 = 17 = 01|0001, sc5 = 33 = 10|0001, sc6 = 50 = 11|0010, sc7 = 63 = 11|1111
//   m4  = 16 = 01|0000, m5  = 31 = 01|1111, m6  = 32 = 10|0000, m7  = 48 = 11|0000
//   byte 0 = 1 | 1<<6 = 0x41, 1 = 2 | 2<<6 = 0x82, 2 = 3 | 3<<6 = 0xC3, 3 = 4 | 3<<6 = 0xC4
//   byte 4 = 0 | 1<<6 = 0x40, 5 = 5 | 1<<6 = 0x45, 6 = 10 | 2<<6 = 0x8A, 7 = 63 | 3<<6 = 0xFF
//   byte 8 = 1 | 0<<4 = 0x01, 9 = 1 | 15<<4 = 0xF1, 10 = 2 | 0<<4 = 0x02, 11 = 15 | 0<<4 = 0x0F
const K_SCALE_BYTES = [0x41, 0x82, 0xc3, 0xc4, 0x40, 0x45, 0x8a, 0xff, 0x01, 0xf1, 0x02, 0x0f];
/** Nibble byte l of run c (values 64c + l low, 64c + 32 + l high) in the hand-built K blocks. */
const kLow = (c: number, l: number) => (l + 3 * c) & 15;
const kHigh = (c: number, l: number) => (5 * l + c) & 15;
const kNibbles = () => Array.from({ length: 128 }, (_, i) => kLow(i >> 5, i & 31) | (kHigh(i >> 5, i & 31) << 4));

test('Q4_K hand-built block: packed 6-bit scales and mins, x = d·sc·q − dmin·m per group of 32', () => {
  // d = 1, dmin = 0x3800 = 0.5. Value i lies in run c = i >> 6 and group g = i >> 5; its q is
  // the low nibble of byte 32c + (i & 31) when (i & 63) < 32, else the high nibble.
  // x = sc[g]·q − m[g]/2. E.g. x[0] = 1·0 − 0 = 0; x[32] = 2·0 − 2.5 = −2.5;
  // x[33] = 2·5 − 2.5 = 7.5; x[255] (g 7, q = (5·31 + 3) & 15 = 14) = 63·14 − 24 = 858.
  const b = Uint8Array.from([...h16(0x3c00), ...h16(0x3800), ...K_SCALE_BYTES, ...kNibbles()]);
  const y = decode('Q4_K', b, 256);
  for (let i = 0; i < 256; i++) {
    const c = i >> 6;
    const g = i >> 5;
    const q = (i & 63) < 32 ? kLow(c, i & 31) : kHigh(c, i & 31);
    assert.equal(y[i], K_SC[g] * q - K_M[g] / 2, `value ${i}`);
  }
  assert.deepEqual([y[0], y[32], y[33], y[255]], [0, -2.5, 7.5, 858]);
});

test('Q5_K hand-built block: Q4_K plus a fifth bit from qh (bit 2c for the low nibbles of run c, 2c+1 for the high)', () => {
  // As the Q4_K block, with qh[l] = 0x55 (bits 0, 2, 4, 6) for even l and 0xAA for odd l: the
  // low-nibble values of even l and the high-nibble values of odd l get +16.
  // x = sc[g]·(q + 16·bit) − m[g]/2. E.g. x[0] = 1·16 = 16; x[1] = 1·1 = 1;
  // x[33] = 2·(5 + 16) − 2.5 = 39.5; x[32] = 2·0 − 2.5 = −2.5.
  const qh = Array.from({ length: 32 }, (_, l) => (l % 2 === 0 ? 0x55 : 0xaa));
  const b = Uint8Array.from([...h16(0x3c00), ...h16(0x3800), ...K_SCALE_BYTES, ...qh, ...kNibbles()]);
  const y = decode('Q5_K', b, 256);
  for (let i = 0; i < 256; i++) {
    const c = i >> 6;
    const g = i >> 5;
    const l = i & 31;
    const high = (i & 63) >= 32;
    const bit = (qh[l] >> (2 * c + (high ? 1 : 0))) & 1;
    const q = (high ? kHigh(c, l) : kLow(c, l)) + 16 * bit;
    assert.equal(y[i], K_SC[g] * q - K_M[g] / 2, `value ${i}`);
  }
  assert.deepEqual([y[0], y[1], y[32], y[33]], [16, 1, -2.5, 39.5]);
});

test('Q6_K hand-built block: 4+2-bit quants, int8 scale per 16 values, x = d·sc·(q − 32)', () => {
  // d = 0x3400: exponent 13 → 0.25. sc[k] = ±(k + 1) alternating, sc[15] = −128. Value i has
  // q = (7i + 3) mod 64 and group i >> 4. Layout, per half h and l < 32: values 128h + l,
  // +32, +64, +96 keep their low 4 bits in the low nibble of ql[64h + l], the low nibble of
  // ql[64h + 32 + l], the high nibble of ql[64h + l] and the high nibble of ql[64h + 32 + l],
  // and their top 2 bits in bits 0–1, 2–3, 4–5, 6–7 of qh[32h + l].
  // E.g. x[0] = 0.25·1·(3 − 32) = −7.25; x[255] (q = 1788 mod 64 = 60) = 0.25·(−128)·28 = −896.
  const q = (i: number) => (7 * i + 3) & 63;
  const sc = Array.from({ length: 16 }, (_, k) => (k === 15 ? -128 : k % 2 ? -(k + 1) : k + 1));
  const ql = new Array<number>(128);
  const qh = new Array<number>(64);
  for (let h = 0; h < 2; h++) {
    for (let l = 0; l < 32; l++) {
      const [a, b, c, d] = [0, 32, 64, 96].map((k) => q(128 * h + k + l));
      ql[64 * h + l] = (a & 15) | ((c & 15) << 4);
      ql[64 * h + 32 + l] = (b & 15) | ((d & 15) << 4);
      qh[32 * h + l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((d >> 4) << 6);
    }
  }
  const block = Uint8Array.from([...ql, ...qh, ...sc.map((s) => s & 0xff), ...h16(0x3400)]);
  const y = decode('Q6_K', block, 256);
  for (let i = 0; i < 256; i++) assert.equal(y[i], 0.25 * sc[i >> 4] * (q(i) - 32), `value ${i}`);
  assert.deepEqual([y[0], y[255]], [-7.25, -896]);
});

test('decodeBlocks: reads from srcOffset, writes from dstOffset, and refuses partial or out-of-range blocks', () => {
  const x = Float32Array.from({ length: 512 }, (_, i) => Math.sin(i) * (1 + (i % 7)));
  for (const t of TYPES) {
    const q = quantizeBlocks(t, x);
    const whole = decode(t, q, 512);
    const { blockElems, blockBytes } = FORMATS[t];
    const skip = 256 / blockElems; // blocks in the first 256 values
    const dst = new Float32Array(300).fill(7);
    decodeBlocks(t, q, skip * blockBytes, 256, dst, 20);
    assert.deepEqual(dst.subarray(20, 276), whole.subarray(256), t);
    assert.ok(dst.subarray(0, 20).every((v) => v === 7) && dst.subarray(276).every((v) => v === 7), `${t} writes only its range`);
    assert.throws(() => decodeBlocks(t, q, 0, blockElems + 1, new Float32Array(2 * blockElems)), RangeError);
    assert.throws(() => decodeBlocks(t, q, blockBytes, 512, new Float32Array(512)), RangeError);
    assert.throws(() => decodeBlocks(t, q, 0, 512, new Float32Array(511)), RangeError);
  }
});

// ---------------------------------------------------------------------------------------------
// llama.cpp's own bytes

/** A 32-bit integer hash of i (murmur3's finaliser). */
function hash32(i: number): number {
  let h = (i + 0x9e3779b9) | 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A bell-shaped value in (−2, 2): four uniforms summed and centred (variance 1/3). */
function bell(i: number): number {
  let s = -2;
  for (let k = 0; k < 4; k++) s += hash32(4 * i + k) / 2 ** 32;
  return s;
}

/** Super-block k of the candidate stream, written to x[at…at+255]. */
function candidate(k: number, x: Float32Array, at: number): void {
  for (let j = 0; j < 256; j++) {
    const i = (1 << 20) + 256 * k + j;
    let v = bell(i) * 2 ** ((((j >> 5) * 3 + k) % 7) - 3);
    if (hash32(i) % 53 === 0) v *= 10;
    x[at + j] = v;
  }
}

/** The fixture's input (test/fixtures/ggml-quants/README.md describes each super-block). */
function fixtureInput(): Float32Array {
  const x = new Float32Array(7 * 256);
  candidate(1152, x, 0);
  for (let i = 256; i < 512; i++) x[i] = bell(i) * 2 ** (((i >> 5) % 7) - 3);
  for (let i = 256; i < 512; i += 37) x[i] *= 16; // outliers
  for (let i = 416; i < 448; i++) x[i] = Math.abs(x[i]) + 0.1; // a group all positive
  for (let i = 448; i < 480; i++) x[i] = -Math.abs(x[i]) - 0.05; // a group all negative
  // 512…543 stay zero: a zero block.
  for (let i = 544; i < 576; i++) x[i] = bell(i) * 1e-6; // tiny
  for (let i = 576; i < 592; i++) x[i] = bell(i) * 1e-30; // below ggml's GROUP_MAX_EPS
  // 592…607 stay zero
  for (let i = 608; i < 640; i++) x[i] = 0.5; // constant
  for (let j = 0; j < 32; j++) x[640 + j] = -8 + 0.5 * j; // Q4_0 with d = 1: every x/d + 8.5 a tie
  x[672] = 127; // Q8_0 with d = 1: the rest are halves, rounded away from zero
  for (let j = 1; j < 32; j++) x[672 + j] = j - 16 + 0.5;
  for (let i = 704; i < 768; i++) x[i] = bell(i) * 1000; // large
  // Nearly zero: Q6_K's group scales are all below GROUP_MAX_EPS, but not zero.
  for (let i = 768; i < 800; i++) x[i] = bell(i) * 1e-14;
  // 800…1023 stay zero.
  candidate(865, x, 1024);
  candidate(203, x, 1280);
  // 1536…1791 stay zero: an all-zero super-block.
  return x;
}

function fixture(name: string): Uint8Array {
  return new Uint8Array(readFileSync(join(FIXTURES, name)));
}

test('fixture input is the documented formula', () => {
  assert.deepEqual(fixture('input.f32'), new Uint8Array(fixtureInput().buffer));
});

for (const t of TYPES) {
  test(`${t}: quantizeBlocks gives llama.cpp's quantize_row_${t.toLowerCase()}_ref bytes, decodeBlocks its dequantize_row bits`, () => {
    const x = fixtureInput();
    const want = fixture(`${t}.q`);
    const got = quantizeBlocks(t, x);
    assert.equal(got.length, want.length);
    const bb = FORMATS[t].blockBytes;
    for (let i = 0; i < want.length; i++) {
      if (got[i] !== want[i]) assert.fail(`byte ${i} (block ${Math.floor(i / bb)}, offset ${i % bb}): ${got[i]} != llama.cpp's ${want[i]}`);
    }
    // Compare bit patterns, so that −0 against +0 (or a NaN) would count too.
    const wantY = new Uint32Array(fixture(`${t}.dequant.f32`).buffer);
    const gotY = new Uint32Array(decode(t, want, x.length).buffer);
    for (let i = 0; i < wantY.length; i++) {
      if (gotY[i] !== wantY[i]) assert.fail(`value ${i}: 0x${gotY[i].toString(16)} != llama.cpp's 0x${wantY[i].toString(16)}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Round trips

/** Normal(0, 1) values from a seeded LCG and Box–Muller. */
function normals(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  return x;
}

function relRms(x: Float32Array, y: Float32Array): number {
  let e = 0;
  let r = 0;
  for (let i = 0; i < x.length; i++) {
    e += (y[i] - x[i]) ** 2;
    r += x[i] ** 2;
  }
  return Math.sqrt(e / r);
}

// RMS error / data RMS after quantize → decode, for weight-like rows (normal, σ = 0.02) and for
// rows where every 101st value is a 20σ outlier. Measured on these data (seed 17):
//   normal:   Q8_0 0.52%, Q6_K 1.77%, Q5_K 3.61%, Q5_1 3.76%, Q5_0 4.22%, Q4_K 7.12%, Q4_1 7.79%,
//             Q4_0 8.47%
//   outliers: Q8_0 1.15%, Q6_K 3.34%, Q5_K 4.89%, Q5_1 5.03%, Q5_0 8.81%, Q4_K 9.89%, Q4_1 10.8%,
//             Q4_0 15.0%
// (other seeds move these by a few percent of themselves). The bounds leave ~15–25% of margin.
// For scale, a uniform quantiser with 2^b levels over ±amax (amax ≈ 2.1σ for 32 normals) has
// RMS error amax / (2^(b−1)·√12): 0.48% at 8 bits, 7.6% at 4 bits.
const BOUNDS: Record<BlockType, { normal: number; outliers: number }> = {
  Q8_0: { normal: 0.0065, outliers: 0.014 },
  Q6_K: { normal: 0.021, outliers: 0.04 },
  Q5_K: { normal: 0.042, outliers: 0.058 },
  Q5_1: { normal: 0.045, outliers: 0.06 },
  Q5_0: { normal: 0.05, outliers: 0.105 },
  Q4_K: { normal: 0.082, outliers: 0.115 },
  Q4_1: { normal: 0.092, outliers: 0.13 },
  Q4_0: { normal: 0.098, outliers: 0.175 },
};

for (const t of TYPES) {
  test(`${t} round trip: error bounds, zero blocks exact, rows independent, tiny and subnormal-scale data`, () => {
    const rows = 6;
    const cols = 1024;
    const normal = normals(rows * cols, 17).map((v) => v * 0.02);
    const outliers = normal.map((v, i) => (i % 101 === 7 ? v * 20 : v));
    for (const [name, x] of [['normal', normal], ['outliers', outliers]] as const) {
      const err = relRms(x, decode(t, quantizeBlocks(t, x), x.length));
      assert.ok(err < BOUNDS[t][name], `${t} ${name}: relative RMS error ${(100 * err).toFixed(3)}% ≥ ${100 * BOUNDS[t][name]}%`);
    }

    // Blocks never straddle rows: quantising row by row gives the same bytes.
    const q = quantizeBlocks(t, normal);
    const rb = rowBytes(t, cols);
    for (let r = 0; r < rows; r++) {
      assert.deepEqual(quantizeBlocks(t, normal.subarray(r * cols, (r + 1) * cols)), q.subarray(r * rb, (r + 1) * rb), `${t} row ${r}`);
    }

    // A zeroed stretch of whole super-blocks decodes to exact zeros; the rest keeps its bound.
    const holed = normal.slice();
    holed.fill(0, 1024, 1536);
    const yh = decode(t, quantizeBlocks(t, holed), holed.length);
    assert.ok(yh.subarray(1024, 1536).every((v) => v === 0), `${t}: zero blocks decode to 0`);
    assert.ok(relRms(holed, yh) < BOUNDS[t].normal, `${t}: zero blocks spoil the others`);

    // Small but f16-representable scales (σ = 1e-3) keep roughly the same relative error.
    const small = normal.map((v) => v / 20);
    const es = relRms(small, decode(t, quantizeBlocks(t, small), small.length));
    assert.ok(es < 1.25 * BOUNDS[t].normal, `${t} σ = 1e-3: ${(100 * es).toFixed(3)}%`);

    // Below f16's range every block scale flushes to 0, as in ggml: all zeros, never NaN.
    const tiny = normal.map((v) => v * 1e-7);
    assert.ok(decode(t, quantizeBlocks(t, tiny), tiny.length).every((v) => v === 0), `${t}: sub-f16 data decodes to 0`);
  });
}

test('the 32-value formats are idempotent: re-quantising decoded values gives the same bytes', () => {
  // For Q4_1 / Q5_1 with d and m within f16's range, as here: the decoded block's extremes are
  // m and 15·d + m (Q5_1: 31·d + m), from which the quantiser finds the same f16 d and m again.
  const x = normals(64 * 32, 5).map((v, i) => v * (i % 97 === 0 ? 30 : 1));
  for (const t of ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1'] as const) {
    const q = quantizeBlocks(t, x);
    assert.deepEqual(quantizeBlocks(t, decode(t, q, x.length)), q, t);
  }
});

test('K-quants: re-quantising decoded values moves them by under 30% of the first pass’s error', () => {
  // Not idempotent (the scale search may settle elsewhere), but near a fixed point: the second
  // pass moves values by 9–15% of the first pass's error on these data.
  const x = normals(32 * 256, 9).map((v, i) => 0.02 * v * (i % 101 === 3 ? 20 : 1));
  for (const t of ['Q4_K', 'Q5_K', 'Q6_K'] as const) {
    const y = decode(t, quantizeBlocks(t, x), x.length);
    const y2 = decode(t, quantizeBlocks(t, y), x.length);
    let e1 = 0;
    let e2 = 0;
    for (let i = 0; i < x.length; i++) {
      e1 += (y[i] - x[i]) ** 2;
      e2 += (y2[i] - y[i]) ** 2;
    }
    assert.ok(Math.sqrt(e2) < 0.3 * Math.sqrt(e1), `${t}: second pass ${Math.sqrt(e2)} vs first ${Math.sqrt(e1)}`);
  }
});

test('f32ToF16 (now in dtypes.ts) and the Q8_0 helpers agree with quantizeBlocks / decodeBlocks', () => {
  const x = normals(256, 3);
  assert.deepEqual(quantizeQ8_0(x), quantizeBlocks('Q8_0', x));
  assert.deepEqual(dequantizeQ8_0(quantizeQ8_0(x)), decode('Q8_0', quantizeQ8_0(x), 256));
  for (const v of [0.5, -2.5, 1, 65504, 2 ** -24]) assert.equal(F16_TABLE[f32ToF16(v)], v, `${v} is a half`);
  // 1/3 lies between halves 0x3555 (0.333251953125) and 0x3556 (0.33349609375), nearer the first.
  assert.equal(f32ToF16(1 / 3), 0x3555);
});

// ---------------------------------------------------------------------------------------------
// Reference kernels

test('decodeRow of a block LinearWeight is decodeBlocks on that row’s bytes; ref matmulT uses it (matmul: see qdot.test.ts)', () => {
  const rows = 5;
  for (const t of TYPES) {
    const cols = FORMATS[t].blockElems === 32 ? 96 : 512;
    const x = normals(rows * cols, 23);
    const data = quantizeBlocks(t, x);
    const w: LinearWeight = { dtype: t, rows, cols, data };
    const rb = rowBytes(t, cols);
    const all = decode(t, data, rows * cols);
    const row = new Float32Array(cols);
    for (let r = 0; r < rows; r++) {
      decodeRow(w, r, row);
      const want = new Float32Array(cols);
      decodeBlocks(t, data, r * rb, cols, want);
      assert.deepEqual(row, want, `${t} row ${r}`);
      assert.deepEqual(row, all.subarray(r * cols, (r + 1) * cols), `${t} row ${r} within the whole`);
    }
    // matmulT sees exactly the decoded matrix. (matmul quantises the activations too, as
    // llama.cpp does: src/kernels/ref/qdot.ts.)
    const wf = f32Weight(all, rows, cols);
    const M = 3;
    const b = normals(M * rows, 31);
    const p1 = new Float32Array(M * cols);
    const p2 = new Float32Array(M * cols);
    refKernels.matmulT(p1, b, M, w, 0, rows);
    refKernels.matmulT(p2, b, M, wf, 0, rows);
    assert.deepEqual(p1, p2, `${t} matmulT`);
  }
});
