// The reference's block-weight arithmetic (ref/qdot.ts) against llama.cpp: activation
// quantisation byte for byte (quantize_row_q8_0_ref / _q8_1_ref / _q8_K_ref) on hand-derived
// values and on llama.cpp's own output, and dot products against ggml's generic vec_dot
// functions (test/fixtures/ggml-quants, see its README).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FORMATS, type BlockType } from '../tensor/dtypes.ts';
import { decodeBlocks, quantizeBlocks } from '../tensor/quants.ts';
import {
  blockDot, quantizeActivations, quantizedRowBytes, VEC_DOT_TYPE, weightRowInts, type QuantizedRow, type WeightRowInts,
} from './ref/qdot.ts';
import { refKernels } from './ref/index.ts';

const FIXTURES = join(import.meta.dirname, '../../test/fixtures/ggml-quants');
const fixture = (name: string): Uint8Array => new Uint8Array(readFileSync(join(FIXTURES, name)));
const f32s = (b: Uint8Array): Float32Array => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
const N = 1792;
const TYPES: BlockType[] = ['Q8_0', 'Q4_0', 'Q5_0', 'Q4_1', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];

test('Q8_K activation quantisation, hand-derived: iscale = −127/max, nearest-even, min(127, ·), bsums, d = 1/iscale', () => {
  // x[j] = j − 128: the value of largest magnitude is −128, so iscale = −127/−128 = 0.9921875
  // (exact) and q = nearest(0.9921875·(j − 128)). x = ±64 lands on ±63.5: ties to even give
  // ±64 (as roundf would); x = ±32 gives ±31.75 → ±32; x = 127 gives 126.0078125 → 126.
  const x = Float32Array.from({ length: 256 }, (_, j) => j - 128);
  const r = quantizeActivations('Q8_K', x, 0, 256);
  assert.equal(r.qs[0], -127);
  assert.equal(r.qs[128], 0);
  assert.equal(r.qs[128 + 64], 64);
  assert.equal(r.qs[128 - 64], -64);
  assert.equal(r.qs[128 + 32], 32);
  assert.equal(r.qs[255], 126);
  assert.equal(r.d[0], Math.fround(1 / 0.9921875));
  for (let g = 0; g < 16; g++) {
    let s = 0;
    for (let j = 0; j < 16; j++) s += r.qs[16 * g + j];
    assert.equal(r.bsums[g], s);
  }
  // A tie to even that roundf would break the other way: x = 2.5·(127/127.0), max 127 → 2.5 → 2.
  const y = new Float32Array(256);
  y[0] = -127; // max = −127, iscale = 1
  y[1] = 2.5;
  y[2] = -3.5;
  y[3] = 0.5;
  const s = quantizeActivations('Q8_K', y, 0, 256);
  assert.deepEqual([...s.qs.subarray(0, 4)], [-127, 2, -4, 0]);
  assert.equal(s.d[0], 1);
  // An all-zero block: d = 0, q = 0.
  const z = quantizeActivations('Q8_K', new Float32Array(512).fill(0.25, 256), 0, 512);
  assert.equal(z.d[0], 0);
  assert.ok(z.qs.subarray(0, 256).every((q) => q === 0));
  assert.equal(z.d[1], Math.fround(1 / Math.fround(-127 / 0.25)));
  assert.ok(z.qs.subarray(256).every((q) => q === -127));
});

test('Q8_0 activation quantisation, hand-derived: d = amax/127 stored as f16, q = roundf(x/d) halves away from zero', () => {
  // amax = 127: d = 1, id = 1, q = roundf(x): 2.5 → 3 and −2.5 → −3 (ties away from zero).
  const x = new Float32Array(32);
  x[0] = 127;
  x[1] = 2.5;
  x[2] = -2.5;
  x[3] = 0.49999997;
  x[4] = -126.5;
  const r = quantizeActivations('Q8_0', x, 0, 32);
  assert.deepEqual([...r.qs.subarray(0, 5)], [127, 3, -3, 0, -127]);
  assert.equal(r.d[0], 1);
  assert.equal(r.dBits[0], 0x3c00);
  // d is rounded to f16 for storage and use; q comes from the float32 d: amax = 1 gives
  // d = 1/127 (f16 0x2008 = 0.00787353515625), id = 127.00000762939453 in float32.
  const y = Float32Array.from({ length: 32 }, (_, j) => (j - 16) / 16);
  const s = quantizeActivations('Q8_0', y, 0, 32);
  assert.equal(s.dBits[0], 0x2008);
  assert.equal(s.d[0], 0.00787353515625);
  assert.equal(s.qs[0], -127);
  assert.equal(s.qs[8], -64); // −0.5 · 127.0000076 = −63.5000038 → −64
  // Q8_1 is Q8_0 plus s = f16(Σq · d).
  const t = quantizeActivations('Q8_1', y, 0, 32);
  assert.deepEqual([...t.qs], [...s.qs]);
  let sum = 0;
  for (const q of t.qs) sum += q;
  assert.equal(sum, -127);
  // s = f16(−127 · d) with the float32 d = 1/127, not its f16 rounding: −1 (f16 0xbc00).
  assert.equal(t.sBits[0], 0xbc00);
  assert.equal(t.s[0], -1);
});

test('activation quantisation is byte-identical to llama.cpp (quantize_row_q8_0_ref / _q8_1_ref / _q8_K_ref on input.f32)', () => {
  const x = f32s(fixture('input.f32'));
  // Q8_0 activations use the same function as Q8_0 weights, whose fixture is Q8_0.q.
  for (const [type, file] of [['Q8_0', 'Q8_0.q'], ['Q8_1', 'Q8_1.q'], ['Q8_K', 'Q8_K.q']] as const) {
    const got = quantizedRowBytes(quantizeActivations(type, x, 0, N));
    assert.deepEqual(got, fixture(file), type);
  }
  assert.deepEqual(quantizedRowBytes(quantizeActivations('Q8_0', x, 0, N)), quantizeBlocks('Q8_0', x));
});

/** The activations of the vec_dot fixture (see its README). */
function fixtureAct(): Float32Array {
  const x = f32s(fixture('input.f32'));
  return Float32Array.from({ length: N }, (_, i) => x[(2559 - i) % N]);
}

/**
 * ggml's generic K-quant dot product term for term (eight float partial sums by position mod 8),
 * from our integers: checks that the integers are ggml's and that only the float lanes differ.
 */
function ggmlGenericK(dtype: BlockType, w: WeightRowInts, x: QuantizedRow, nb: number): number {
  const f = Math.fround;
  const sums = new Float32Array(8);
  let sumf = 0;
  for (let b = 0; b < nb; b++) {
    const aux = new Array<number>(8).fill(0);
    for (let p = 0; p < 256; p++) aux[p % 8] += w.sc[(b * 256 + p) / w.group | 0] * w.codes[b * 256 + p] * x.qs[b * 256 + p];
    const d = f(w.dw[b] * x.d[b]);
    for (let l = 0; l < 8; l++) sums[l] = f(sums[l] + f(d * aux[l]));
    if (dtype !== 'Q6_K') {
      let mn = 0;
      for (let i = 0; i < 16; i++) mn += x.bsums[b * 16 + i] * w.mins[b * 8 + (i >> 1)];
      sumf = f(sumf - f(f(w.dm[b] * x.d[b]) * mn));
    }
  }
  for (let l = 0; l < 8; l++) sumf = f(sumf + sums[l]);
  return sumf;
}

test('dot products against ggml_vec_dot_*_generic (vec_dot.f32): bitwise for 32-value blocks, K-quants to float32 rounding', (t) => {
  const vd = f32s(fixture('vec_dot.f32'));
  const act = fixtureAct();
  let o = 0;
  for (const type of TYPES) {
    const w = weightRowInts(type, fixture(`${type}.q`), 0, N);
    const xq = quantizeActivations(VEC_DOT_TYPE[type], act, 0, N);
    const E = FORMATS[type].blockElems;
    let worst = 0;
    for (let nb = 1; nb <= N / E; nb++) {
      const want = vd[o++];
      const got = blockDot(type, w, xq, nb);
      if (E === 32) {
        assert.ok(Object.is(got, want), `${type} over ${nb} blocks: ${got} vs ggml ${want}`);
        continue;
      }
      // ggml's generic code, replayed from our integers, gives its exact bits...
      assert.ok(Object.is(ggmlGenericK(type, w, xq, nb), want), `${type} over ${nb} blocks: integers`);
      // ...and ours differs from it by float32 rounding: at most one rounding (2^-24 relative)
      // per float operation of either order, of the terms' magnitudes.
      let terms = 0;
      for (let b = 0; b < nb; b++) {
        let S = 0;
        for (let p = 0; p < 256; p++) S += w.sc[(b * 256 + p) / w.group | 0] * w.codes[b * 256 + p] * xq.qs[b * 256 + p];
        let mn = 0;
        if (type !== 'Q6_K') for (let i = 0; i < 16; i++) mn += xq.bsums[b * 16 + i] * w.mins[b * 8 + (i >> 1)];
        terms += Math.abs(w.dw[b] * xq.d[b] * S) + (type !== 'Q6_K' ? Math.abs(w.dm[b] * xq.d[b] * mn) : 0);
      }
      const bound = 2 * (9 * nb + 2) * 2 ** -24 * terms;
      assert.ok(Math.abs(got - want) <= bound, `${type} over ${nb} blocks: ${got} vs ggml ${want}`);
      worst = Math.max(worst, Math.abs(got - want) / Math.abs(want));
    }
    if (E === 256) t.diagnostic(`${type}: largest relative difference from ggml's eight-lane sum ${worst.toExponential(2)}`);
  }
  assert.equal(o, vd.length);
});

test('block-weight matmul (reference): close to the float32 product of the dequantised weights', () => {
  // Catches layout slips (a wrong value order is an O(1) error): the only difference is the
  // 8-bit rounding of x, relative error ~ 1/127 per block.
  const K = 512, Nr = 9, M = 3;
  let s = 7;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296) * 2 - 1;
  const x = Float32Array.from({ length: M * K }, rnd);
  for (const type of TYPES) {
    const data = quantizeBlocks(type, Float32Array.from({ length: Nr * K }, rnd));
    const w = { dtype: type, rows: Nr, cols: K, data };
    const got = new Float32Array(M * Nr);
    refKernels.matmul(got, x, M, w);
    const row = new Float32Array(K);
    for (let n = 0; n < Nr; n++) {
      decodeBlocks(type, data, n * (K / FORMATS[type].blockElems) * FORMATS[type].blockBytes, K, row);
      for (let m = 0; m < M; m++) {
        let want = 0;
        let mag = 0;
        for (let k = 0; k < K; k++) {
          want += x[m * K + k] * row[k];
          mag += Math.abs(x[m * K + k] * row[k]);
        }
        assert.ok(Math.abs(got[m * Nr + n] - want) <= 0.01 * mag, `${type} m=${m} n=${n}: ${got[m * Nr + n]} vs ${want}`);
      }
    }
  }
});
