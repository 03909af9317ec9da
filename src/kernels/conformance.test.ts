// One conformance suite, run against every available backend: the TypeScript reference
// (the oracle, so it checks itself trivially plus batch invariance) and the native addon
// at every instruction-set level this CPU supports (avx512, avx2, generic).
//
// Tolerances (Δ = backend − ref, ref computed in float64 and rounded once):
//  - matmul-type ops (matmul, matmulT, attention scores / P·V): max|Δ| ≤ 1e-5·(1 + max|ref|)·√K/4,
//    K the reduction length. A float32 dot product accumulated in lanes has a rounding error
//    that grows like √K·2^-24·|x||w| for random signs (the worst case is linear in K/lanes);
//    1e-5·√K/4 is > 100× the typical error and still catches any wrong element or block scale
//    (those are O(1) errors).
//  - elementwise and row ops (rmsNorm, rope, softmax, siluMul, scatterAddRows):
//    max|Δ| ≤ 1e-6·max|ref| (a few float32 ulps; the native exp is a ~2 ulp polynomial).
//  - exact (bitwise): embedding, add, gatherRows, and moeRoute's chosen index sets.
//  - block-format (ggml) weights: matmul and matmulHeads are bitwise the reference at every
//    level. The reference defines llama.cpp's integer arithmetic (ref/qdot.ts: activations
//    quantised to 8 bits, exact integer block sums, one fixed float32 order), so there is no
//    rounding left to tolerate. matmulT/matmulTHeads widen the weights exactly (closeDot);
//    embedding is bitwise. ffnExperts is bitwise its composition from the backend's own ops;
//    against the reference's composition it is closeDot over 4·K only: its down projection
//    re-quantises siluMul's output, where the native exp can differ in the last bit and so
//    move an 8-bit code by one.
// Batch invariance: a row of a matmul (and a query of attention) computed inside a bigger
// call is bitwise identical to computing it alone; native results are bitwise identical
// for 1 and 2 threads.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Kernels, RouteParams } from './kernels.ts';
import { ffnExpertsComposed, matmulHeadsComposed, matmulTHeadsComposed, refKernels } from './ref/index.ts';
import { loadNative, nativeAddon, nativeInfo, nativeLoadError, setNativeLevel, setThreads } from './native.ts';
import type { LinearWeight } from '../tensor/weight.ts';
import { FORMATS, f32ToBf16, f32ToE4m3, type BlockType, type DType } from '../tensor/dtypes.ts';
import { quantizeBlocks } from '../tensor/quants.ts';

// ---- deterministic random data ----
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function randArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r();
  return a;
}

const f16Scratch = new DataView(new ArrayBuffer(4));
/** float32 → IEEE half bits (round to nearest even; values here are in range). */
function f32ToF16(v: number): number {
  f16Scratch.setFloat32(0, v);
  const x = f16Scratch.getUint32(0);
  const sign = (x >>> 16) & 0x8000;
  const e = ((x >>> 23) & 0xff) - 127 + 15;
  let m = x & 0x7fffff;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    m |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (m >>> 13);
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++;
  return sign | r;
}

/** A random weight in the given dtype (F8: codes over the whole e4m3 range, incl. subnormals). */
function makeWeight(dtype: DType, rows: number, cols: number, seed: number, block: [number, number] = [128, 128],
  scaleRange: [number, number] = [2e-4, 3e-3]): LinearWeight {
  const v = randArray(rows * cols, seed);
  switch (dtype) {
    case 'F32':
      return { dtype, rows, cols, data: v };
    case 'BF16': {
      const d = new Uint16Array(v.length);
      for (let i = 0; i < v.length; i++) d[i] = f32ToBf16(v[i]);
      return { dtype, rows, cols, data: d };
    }
    case 'F16': {
      const d = new Uint16Array(v.length);
      for (let i = 0; i < v.length; i++) d[i] = f32ToF16(v[i]);
      return { dtype, rows, cols, data: d };
    }
    case 'F8_E4M3': {
      const r = rng(seed + 7);
      const d = new Uint8Array(v.length);
      for (let i = 0; i < v.length; i++) {
        // |w| = 2^u for u in [-11, 8.8): normals and subnormals, signs mixed, a few zeros.
        const mag = r() < 0.02 ? 0 : 2 ** (-11 + 19.8 * r());
        d[i] = f32ToE4m3(v[i] < 0 ? -mag : mag);
      }
      const sr = Math.ceil(rows / block[0]);
      const sc = Math.ceil(cols / block[1]);
      const scale = randArray(sr * sc, seed + 13, scaleRange[0], scaleRange[1]);
      return { dtype, rows, cols, data: d, scale, block };
    }
  }
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) if (!Number.isNaN(a[i])) m = Math.max(m, Math.abs(a[i]));
  return m;
}
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(a[i]) !== Number.isNaN(b[i])) return Infinity;
    if (d > m) m = d;
  }
  return m;
}
/** matmul-type tolerance for reduction length K (see the header). */
function closeDot(got: Float32Array, want: Float32Array, K: number, what: string): void {
  const tol = 1e-5 * (1 + maxAbs(want)) * Math.sqrt(Math.max(K, 1)) / 4;
  const d = maxDiff(got, want);
  assert.ok(d <= tol, `${what}: max|Δ| = ${d} > ${tol}`);
}
/** elementwise tolerance (see the header). */
function closeElem(got: Float32Array, want: Float32Array, what: string): void {
  const tol = 1e-6 * maxAbs(want);
  const d = maxDiff(got, want);
  assert.ok(d <= tol, `${what}: max|Δ| = ${d} > ${tol}`);
}
function bitwise(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, what);
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) assert.fail(`${what}: element ${i} differs: ${got[i]} vs ${want[i]}`);
  }
}

const DTYPES: DType[] = ['F32', 'BF16', 'F16', 'F8_E4M3'];

// ---- ggml block formats ----
const BLOCK_TYPES: BlockType[] = ['Q4_0', 'Q5_0', 'Q8_0', 'Q4_1', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];
/** Byte offsets of a block's f16 scales (d, and dmin for Q4_K/Q5_K). */
const HALF_FIELDS: Record<BlockType, number[]> = {
  Q4_0: [0], Q5_0: [0], Q8_0: [0], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208], Q4_1: [0, 2], Q5_1: [0, 2],
};
/** Reduction lengths: multiples of the block size, and (for the 32-value blocks) odd multiples. */
function blockKs(dtype: BlockType): number[] {
  return FORMATS[dtype].blockElems === 32 ? [32, 96, 160, 288] : [256, 768, 2304];
}
/**
 * A random block-format weight: 'quantised' rounds random floats with ggml's reference
 * quantiser (realistic blocks); 'random' is random bytes (every bit pattern of quants,
 * sub-scales and mins) with the f16 scales set to finite values in [0.01, 0.1].
 */
function makeBlockWeight(dtype: BlockType, rows: number, cols: number, seed: number,
  kind: 'quantised' | 'random' = 'quantised'): LinearWeight {
  const { blockElems, blockBytes } = FORMATS[dtype];
  if (kind === 'quantised') return { dtype, rows, cols, data: quantizeBlocks(dtype, randArray(rows * cols, seed)) };
  const r = rng(seed);
  const data = new Uint8Array((rows * cols / blockElems) * blockBytes);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  for (let b = 0; b < data.length; b += blockBytes) {
    for (const o of HALF_FIELDS[dtype]) {
      const h = f32ToF16(0.01 + 0.09 * r());
      data[b + o] = h & 0xff;
      data[b + o + 1] = h >> 8;
    }
  }
  return { dtype, rows, cols, data };
}
const BLOCK_KINDS = ['quantised', 'random'] as const;

// ---- the backends ----
interface Backend {
  name: string;
  k: Kernels;
  setup?: () => void;
  native: boolean;
}
const backends: Backend[] = [{ name: 'ref', k: refKernels, native: false }];
const native = loadNative();
const info = nativeInfo();
if (native && info) {
  for (const level of info.levels) {
    backends.push({ name: `native/${level}`, k: native, setup: () => setNativeLevel(level), native: true });
  }
}

if (!native) {
  it('native backend', { skip: `native kernels unavailable (${nativeLoadError()}); only ref is checked` }, () => {});
}

after(() => {
  if (info) {
    setNativeLevel(info.level);
    setThreads(info.threads);
  }
});

for (const be of backends) {
  describe(`kernels conformance: ${be.name}`, () => {
    const K = be.k;
    const K_ = K; // for tests that name a reduction length K
    before(() => be.setup?.());

    it('matmul: all dtypes, odd sizes, partial FP8 blocks', () => {
      const shapes: [number, number][] = [[1, 1], [7, 5], [130, 257], [257, 130]];
      for (const dtype of DTYPES) {
        for (const [cols, rows] of shapes) {
          const w = makeWeight(dtype, rows, cols, rows * 31 + cols);
          for (const M of [1, 3, 17, 64]) {
            const x = randArray(M * cols, M + cols);
            const want = new Float32Array(M * rows);
            const got = new Float32Array(M * rows).fill(NaN);
            refKernels.matmul(want, x, M, w);
            K.matmul(got, x, M, w);
            closeDot(got, want, cols, `${dtype} M=${M} K=${cols} N=${rows}`);
          }
        }
      }
    });

    it('matmul: FP8 200x300 with [128,128] blocks, odd [16,24] blocks, large scales, long K', () => {
      const cases: [string, LinearWeight][] = [
        ['200x300 [128,128]', makeWeight('F8_E4M3', 200, 300, 5)],
        ['90x100 [16,24]', makeWeight('F8_E4M3', 90, 100, 6, [16, 24])],
        ['70x150 scales to 300', makeWeight('F8_E4M3', 70, 150, 7, [128, 128], [0.5, 300])],
        ['40x2100 [128,128] (K split in chunks)', makeWeight('F8_E4M3', 40, 2100, 8)],
        ['40x2100 BF16 (K split in chunks)', makeWeight('BF16', 40, 2100, 9)],
      ];
      for (const [what, w] of cases) {
        for (const M of [1, 3, 17, 64]) {
          const x = randArray(M * w.cols, M * 3);
          const want = new Float32Array(M * w.rows);
          const got = new Float32Array(M * w.rows);
          refKernels.matmul(want, x, M, w);
          K.matmul(got, x, M, w);
          closeDot(got, want, w.cols, `${what} M=${M}`);
        }
      }
    });

    it('matmul: FP8 rows of x at extreme magnitudes stay accurate (no overflow, no subnormal loss)', () => {
      // The native FP8 path scales x by 2^64 (exactly) unless a row holds |x| >= 2^50; rows of
      // tiny values must not lose precision to subnormal products, nor huge ones overflow.
      const w = makeWeight('F8_E4M3', 300, 260, 15);
      for (const [what, mag] of [['huge', 2 ** 70], ['tiny', 1e-30], ['mixed', 0]] as const) {
        for (const M of [1, 3, 20]) {
          const x = randArray(M * 260, 16 + M);
          if (mag) for (let i = 0; i < x.length; i++) x[i] *= mag;
          else for (let m = 0; m < M; m++) x[m * 260 + 7] = 2 ** 52; // one huge entry per row
          const want = new Float32Array(M * 300);
          const got = new Float32Array(M * 300);
          refKernels.matmul(want, x, M, w);
          K.matmul(got, x, M, w);
          assert.ok(got.every(Number.isFinite), `${what} M=${M}: finite`);
          // Relative to the outputs' own size (closeDot's absolute floor would hide tiny rows).
          const tol = 1e-5 * maxAbs(want) * Math.sqrt(260) / 4;
          assert.ok(maxDiff(got, want) <= tol, `${what} M=${M}: max|Δ| = ${maxDiff(got, want)} > ${tol}`);
          const one = new Float32Array(300);
          K.matmul(one, x.subarray((M - 1) * 260), 1, w);
          bitwise(one, got.subarray((M - 1) * 300), `${what} M=${M}: the last row alone`);
        }
      }
    });

    it('matmul and matmulT: FP8 NaN codes (0x7F, 0xFF) give NaN exactly where ref does', () => {
      const w = makeWeight('F8_E4M3', 50, 300, 12);
      const d = w.data as Uint8Array;
      d[3 * 300 + 5] = 0x7f;
      d[17 * 300 + 290] = 0xff;
      d[40 * 300 + 130] = 0x7f;
      for (const M of [1, 3, 17]) {
        const x = randArray(M * 300, 13);
        const want = new Float32Array(M * 50);
        const got = new Float32Array(M * 50);
        refKernels.matmul(want, x, M, w);
        K.matmul(got, x, M, w);
        closeDot(got, want, 300, `matmul M=${M}`);
        assert.ok(Number.isNaN(got[3]) && Number.isNaN(got[17]) && Number.isNaN(got[40]) && !Number.isNaN(got[4]));
        const xt = randArray(M * 50, 14);
        const wantT = new Float32Array(M * 300);
        const gotT = new Float32Array(M * 300);
        refKernels.matmulT(wantT, xt, M, w, 0, 50);
        K.matmulT(gotT, xt, M, w, 0, 50);
        closeDot(gotT, wantT, 50, `matmulT M=${M}`);
      }
    });

    it('matmul: row slices (r0 > 0, N < rows)', () => {
      for (const dtype of DTYPES) {
        const w = makeWeight(dtype, 300, 130, 11);
        for (const M of [1, 17]) {
          for (const [r0, N] of [[37, 100], [129, 171], [299, 1]]) {
            const x = randArray(M * 130, r0);
            const want = new Float32Array(M * N);
            const got = new Float32Array(M * N);
            refKernels.matmul(want, x, M, w, r0, N);
            K.matmul(got, x, M, w, r0, N);
            closeDot(got, want, 130, `${dtype} M=${M} r0=${r0} N=${N}`);
          }
        }
      }
    });

    it('matmulT: all dtypes, odd sizes, row slices', () => {
      for (const dtype of DTYPES) {
        for (const [rows, cols] of [[7, 1], [200, 7], [300, 130], [160, 257]]) {
          const w = makeWeight(dtype, rows, cols, rows + cols * 7);
          for (const M of [1, 3, 17, 64]) {
            for (const [r0, R] of [[0, rows], [rows > 7 ? 5 : 0, Math.min(rows - (rows > 7 ? 5 : 0), 130)]]) {
              const x = randArray(M * R, M + R);
              const want = new Float32Array(M * cols);
              const got = new Float32Array(M * cols);
              refKernels.matmulT(want, x, M, w, r0, R);
              K.matmulT(got, x, M, w, r0, R);
              closeDot(got, want, R, `${dtype} M=${M} R=${R} r0=${r0} C=${cols}`);
            }
          }
        }
      }
      const w8 = makeWeight('F8_E4M3', 90, 100, 3, [16, 24]);
      const x = randArray(5 * 50, 1);
      const want = new Float32Array(5 * 100);
      const got = new Float32Array(5 * 100);
      refKernels.matmulT(want, x, 5, w8, 33, 50);
      K.matmulT(got, x, 5, w8, 33, 50);
      closeDot(got, want, 50, 'F8 [16,24] blocks');
    });

    it('argmax: the same index as the reference (ties, NaN, infinities, signed zeros, empty)', () => {
      const cases: [string, number[]][] = [
        ['empty', []],
        ['all NaN', [NaN, NaN, NaN]],
        ['all -inf', [-Infinity, -Infinity]],
        ['NaN first', [NaN, 1, 3, 3, NaN, 2]],
        ['ties: the lowest index', [5, 7, 7, 1, 7]],
        ['+inf', [1, Infinity, 2, Infinity]],
        ['signed zeros', [-0, 0, -1]],
        ['zeros, +0 first', [0, -0, -1]],
      ];
      for (const n of [1, 7, 8, 9, 100, 8192, 8193]) {
        const x = randArray(n, 90 + n, -3, 3);
        if (n > 50) {
          x[n - 3] = 9; // a late maximum, then a tie
          x[n - 1] = 9;
          x[7] = NaN;
        }
        cases.push([`random n=${n}`, [...x]]);
      }
      for (const [what, v] of cases) {
        const x = Float32Array.from(v);
        assert.equal(K.argmax(x), refKernels.argmax(x), what);
        assert.equal(K.argmax(x.subarray(1)), refKernels.argmax(x.subarray(1)), `${what}, a view`);
      }
      assert.equal(refKernels.argmax(Float32Array.from([5, 7, 7])), 1);
      assert.equal(refKernels.argmax(new Float32Array(0)), -1);
    });

    it('embedding: exact for every dtype', () => {
      for (const dtype of DTYPES) {
        const w = makeWeight(dtype, 300, 257, 21);
        const ids = Int32Array.from([0, 299, 128, 5, 5]);
        const want = new Float32Array(ids.length * 257);
        const got = new Float32Array(ids.length * 257);
        refKernels.embedding(want, w, ids);
        K.embedding(got, w, ids);
        bitwise(got, want, dtype);
      }
      assert.throws(() => K.embedding(new Float32Array(257), makeWeight('F32', 3, 257, 1), Int32Array.of(3)), RangeError);
    });

    it('rmsNorm', () => {
      for (const D of [1, 7, 130, 257]) {
        for (const M of [1, 3, 17]) {
          const x = randArray(M * D, D, -3, 3);
          const wt = randArray(D, D + 1, 0.5, 1.5);
          const want = new Float32Array(M * D);
          const got = new Float32Array(M * D);
          refKernels.rmsNorm(want, x, wt, M, 1e-6);
          K.rmsNorm(got, x, wt, M, 1e-6);
          closeElem(got, want, `M=${M} D=${D}`);
        }
      }
    });

    it('rope', () => {
      const T = 3, H = 2, stride = 13, offset = 3, half = 5;
      const pos = Int32Array.from([0, 17, 4093]);
      const freqs = new Float32Array(half);
      for (let i = 0; i < half; i++) freqs[i] = 10000 ** (-i / half);
      const want = randArray(T * H * stride, 3);
      const got = want.slice();
      refKernels.rope(want, T, H, stride, offset, pos, freqs);
      K.rope(got, T, H, stride, offset, pos, freqs);
      closeElem(got, want, 'rope');
    });

    it('softmax', () => {
      for (const cols of [1, 7, 130, 257]) {
        for (const rows of [1, 3]) {
          const want = randArray(rows * cols, cols, -10, 10);
          if (cols > 3) want[2] = -Infinity;
          const got = want.slice();
          refKernels.softmax(want, rows, cols);
          K.softmax(got, rows, cols);
          closeElem(got, want, `rows=${rows} cols=${cols}`);
        }
      }
    });

    it('siluMul', () => {
      for (const n of [1, 7, 130, 1000]) {
        const g = randArray(n, n, -20, 20);
        const u = randArray(n, n + 1, -3, 3);
        const want = new Float32Array(n);
        const got = new Float32Array(n);
        refKernels.siluMul(want, g, u, n);
        K.siluMul(got, g, u, n);
        closeElem(got, want, `n=${n}`);
      }
    });

    it('add, gatherRows, scatterAddRows', () => {
      for (const n of [1, 7, 130, 1000]) {
        const a = randArray(n, n);
        const want = randArray(n, n + 1);
        const got = want.slice();
        refKernels.add(want, a, n);
        K.add(got, a, n);
        bitwise(got, want, `add n=${n}`);
      }
      for (const D of [1, 7, 130]) {
        const x = randArray(6 * D, D);
        const rows = Int32Array.from([5, 0, 3, 3, 1]);
        const want = new Float32Array(rows.length * D);
        const got = new Float32Array(rows.length * D);
        refKernels.gatherRows(want, x, rows, D);
        K.gatherRows(got, x, rows, D);
        bitwise(got, want, `gatherRows D=${D}`);
        const src = randArray(rows.length * D, D + 5);
        const wts = randArray(rows.length, D + 6);
        const o1 = randArray(6 * D, D + 7);
        const o2 = o1.slice();
        refKernels.scatterAddRows(o1, src, rows, wts, D);
        K.scatterAddRows(o2, src, rows, wts, D);
        closeElem(o2, o1, `scatterAddRows D=${D}`);
      }
    });

    it('matmulHeads and matmulTHeads: bitwise their per-head composition, every dtype, FP8 blocks across heads', () => {
      // kv_b_proj-like weights: H heads of (dn + dv) rows; FP8 blocks of 16x24 straddle heads.
      for (const dtype of DTYPES) {
        for (const [H, dn, dv, C] of [[1, 5, 3, 7], [3, 13, 11, 40], [4, 24, 20, 130]]) {
          const w = makeWeight(dtype, H * (dn + dv), C, H * 7 + C, [16, 24]);
          for (const M of [1, 3, 20]) {
            const x = randArray(M * H * C, M + C);
            const got = new Float32Array(M * H * dv).fill(NaN);
            K.matmulHeads(got, x, M, H, w, dn, dn + dv, dv);
            const want = new Float32Array(M * H * dv);
            matmulHeadsComposed(K, want, x, M, H, w, dn, dn + dv, dv);
            bitwise(got, want, `matmulHeads ${dtype} H=${H} M=${M}`);
            const oracle = new Float32Array(M * H * dv);
            matmulHeadsComposed(refKernels, oracle, x, M, H, w, dn, dn + dv, dv);
            closeDot(got, oracle, C, `matmulHeads ${dtype} H=${H} M=${M} (against ref)`);

            const xs = dn + 6; // each head's query holds dn latent-bound numbers, then others
            const q = randArray(M * H * xs, M + H);
            const gotT = new Float32Array(M * H * C).fill(NaN);
            K.matmulTHeads(gotT, q, M, H, xs, w, 0, dn + dv, dn);
            const wantT = new Float32Array(M * H * C);
            matmulTHeadsComposed(K, wantT, q, M, H, xs, w, 0, dn + dv, dn);
            bitwise(gotT, wantT, `matmulTHeads ${dtype} H=${H} M=${M}`);
            const oracleT = new Float32Array(M * H * C);
            matmulTHeadsComposed(refKernels, oracleT, q, M, H, xs, w, 0, dn + dv, dn);
            closeDot(gotT, oracleT, dn, `matmulTHeads ${dtype} H=${H} M=${M} (against ref)`);
          }
        }
      }
    });

    it('ffnExperts: bitwise the composed gather/matmul/siluMul/matmul/scatter, every dtype, prefill sizes', () => {
      // Nets of odd widths; rows repeat across nets and some nets get no rows; T = 40 and
      // 300 take the decode and the packed (prefill) GEMM paths inside one call.
      for (const dtype of DTYPES) {
        for (const [T, D] of [[1, 37], [5, 130], [40, 64], [300, 160]]) {
          const widths = [19, 7, 33, 16];
          const nets = widths.map((I, e) => ({
            gate_proj: makeWeight(dtype, I, D, 90 + e),
            up_proj: makeWeight(dtype, I, D, 95 + e),
            down_proj: makeWeight(dtype, D, I, 99 + e),
          }));
          const r = rng(T * 7 + D);
          const rows: number[] = [];
          const offsets = [0];
          for (let e = 0; e < nets.length; e++) {
            if (e !== 1) for (let t = 0; t < T; t++) if (r() < 0.6 || e === 3) rows.push(t);
            offsets.push(rows.length);
          }
          const x = randArray(T * D, T + D);
          const wts = randArray(rows.length, D + 3);
          const y0 = randArray(T * D, D + 4);
          const args = [D, nets, Int32Array.from(offsets), Int32Array.from(rows), wts] as const;
          const got = y0.slice();
          K.ffnExperts(got, x, ...args);
          const want = y0.slice();
          ffnExpertsComposed(K, want, x, ...args);
          bitwise(got, want, `${dtype} T=${T} D=${D} (against this backend's own ops)`);
          const oracle = y0.slice();
          ffnExpertsComposed(refKernels, oracle, x, ...args);
          closeDot(got, oracle, Math.max(D, ...widths) * 4, `${dtype} T=${T} D=${D} (against ref)`);
        }
      }
    });

    it('attnLatent: odd sizes, p0 > 0', () => {
      for (const [T, H, C, R, p0] of [[1, 1, 7, 3, 0], [3, 5, 33, 8, 9], [4, 2, 130, 17, 40], [1, 3, 512, 64, 200]]) {
        const S = p0 + T;
        const qLat = randArray(T * H * C, 1);
        const qPe = randArray(T * H * R, 2);
        const kv = randArray(S * C, 3);
        const pe = randArray(S * R, 4);
        const scale = 1 / Math.sqrt(C + R);
        const want = new Float32Array(T * H * C);
        const got = new Float32Array(T * H * C);
        refKernels.attnLatent(want, qLat, qPe, kv, pe, T, H, C, R, p0, scale);
        K.attnLatent(got, qLat, qPe, kv, pe, T, H, C, R, p0, scale);
        closeDot(got, want, Math.max(C + R, S), `T=${T} H=${H} C=${C} R=${R} p0=${p0}`);
      }
    });

    it('attention: odd sizes, p0 > 0', () => {
      for (const [T, H, Dk, Dv, p0] of [[1, 1, 5, 3, 0], [4, 3, 24, 17, 6], [2, 2, 130, 33, 70], [40, 2, 20, 9, 3]]) {
        const S = p0 + T;
        const q = randArray(T * H * Dk, 5);
        const k = randArray(S * H * Dk, 6);
        const v = randArray(S * H * Dv, 7);
        const scale = 1 / Math.sqrt(Dk);
        const want = new Float32Array(T * H * Dv);
        const got = new Float32Array(T * H * Dv);
        refKernels.attention(want, q, k, v, T, H, Dk, Dv, p0, scale);
        K.attention(got, q, k, v, T, H, Dk, Dv, p0, scale);
        closeDot(got, want, Math.max(Dk, S), `T=${T} H=${H} Dk=${Dk} Dv=${Dv} p0=${p0}`);
      }
    });

    it('moeRoute: sigmoid/softmax, with/without bias and groups, normalize', () => {
      let seed = 100;
      for (const scoring of ['sigmoid', 'softmax'] as const) {
        for (const withBias of [false, true]) {
          for (const [E, nGroup, topkGroup, topk] of [[16, 1, 1, 4], [64, 8, 4, 8], [64, 4, 2, 6], [32, 4, 4, 1]]) {
            for (const normalize of [false, true]) {
              const T = 5;
              const logits = randArray(T * E, seed++, -4, 4);
              const p: RouteParams = {
                topk, nGroup, topkGroup, scoring, normalize, scale: 2.5,
                bias: withBias ? randArray(E, seed++, -0.2, 0.2) : null,
              };
              const wi = new Int32Array(T * topk), ww = new Float32Array(T * topk);
              const gi = new Int32Array(T * topk), gw = new Float32Array(T * topk);
              refKernels.moeRoute(wi, ww, logits, T, E, p);
              K.moeRoute(gi, gw, logits, T, E, p);
              const what = `${scoring} bias=${withBias} E=${E} groups=${nGroup}/${topkGroup} topk=${topk} norm=${normalize}`;
              for (let t = 0; t < T; t++) {
                const want = [...wi.subarray(t * topk, (t + 1) * topk)];
                const got = [...gi.subarray(t * topk, (t + 1) * topk)];
                assert.deepEqual([...got].sort((a, b) => a - b), [...want].sort((a, b) => a - b), `${what} t=${t} experts`);
                for (let j = 0; j < topk; j++) {
                  const e = want[j];
                  const gj = got.indexOf(e);
                  const a = ww[t * topk + j], b = gw[t * topk + gj];
                  assert.ok(Math.abs(a - b) <= 1e-6 * Math.abs(a), `${what} t=${t} weight of ${e}: ${b} vs ${a}`);
                }
              }
            }
          }
        }
      }
    });

    it('block formats: matmul bitwise the reference (direct and packed paths, odd N, row slices), rows alone', () => {
      for (const dtype of BLOCK_TYPES) {
        for (const K of blockKs(dtype)) {
          for (const kind of BLOCK_KINDS) {
            const N = 37;
            const w = makeBlockWeight(dtype, N, K, K + N, kind);
            for (const M of [1, 3, 7, 40]) {
              const x = randArray(M * K, M + K);
              const want = new Float32Array(M * N);
              const got = new Float32Array(M * N).fill(NaN);
              refKernels.matmul(want, x, M, w);
              K_.matmul(got, x, M, w);
              const what = `${dtype} ${kind} M=${M} K=${K} N=${N}`;
              bitwise(got, want, what);
              // A row alone (M = 1) and three rows (direct path) give the numbers of the
              // whole call (M = 40 takes the packed path), bitwise.
              for (const m of [0, M - 1]) {
                const one = new Float32Array(N);
                K_.matmul(one, x.subarray(m * K, (m + 1) * K), 1, w);
                bitwise(one, got.subarray(m * N, (m + 1) * N), `${what}: row ${m} alone`);
              }
              if (M >= 3) {
                const m3 = M >> 1;
                const three = new Float32Array(3 * N);
                K_.matmul(three, x.subarray((m3 - 1) * K, (m3 + 2) * K), 3, w);
                bitwise(three, got.subarray((m3 - 1) * N, (m3 + 2) * N), `${what}: rows ${m3 - 1}..+3`);
              }
              for (const [r0, n] of [[5, 20], [36, 1], [1, 36]]) {
                const ws = new Float32Array(M * n);
                const gs = new Float32Array(M * n);
                refKernels.matmul(ws, x, M, w, r0, n);
                K_.matmul(gs, x, M, w, r0, n);
                bitwise(gs, ws, `${what} r0=${r0} N=${n}`);
                for (let m = 0; m < M; m++) {
                  bitwise(gs.subarray(m * n, (m + 1) * n), got.subarray(m * N + r0, m * N + r0 + n),
                    `${what} r0=${r0} N=${n}: the slice of the full result, row ${m}`);
                }
              }
            }
          }
        }
      }
    });

    it('block formats: activations with rounding ties, zeros, one value, tiny and large rows: bitwise the reference', () => {
      // The activation quantisers' corner cases: Q8_0 blocks whose max is 127 (d = 1, so
      // x·id = x lands on halves, rounded away from zero) and Q8_K blocks whose max is ±127
      // (iscale = ∓1: halves to even), an all-zero row (d = 0), a single nonzero value, values
      // whose f16 d underflows to 0, large and negative maxima. Direct and packed paths.
      const K = 512;
      const rows: Float32Array[] = [];
      rows.push(Float32Array.from({ length: K }, (_, j) => (j % 32 === 0 ? 127 : ((j * 7) % 13) - 6 + 0.5)));
      rows.push(Float32Array.from({ length: K }, (_, j) => (j % 256 === 3 ? -127 : ((j * 5) % 11) - 5 - 0.5)));
      rows.push(new Float32Array(K));
      rows.push(Float32Array.from({ length: K }, (_, j) => (j === 77 ? -3.25 : 0)));
      rows.push(randArray(K, 5, -1e-30, 1e-30));
      rows.push(randArray(K, 6, -3e4, 3e4));
      rows.push(Float32Array.from(randArray(K, 7, -2, 0.5)));
      for (const dtype of BLOCK_TYPES) {
        const w = makeBlockWeight(dtype, 40, K, 17, 'random');
        for (const M of [rows.length, 3 * rows.length + 2]) {
          const x = new Float32Array(M * K);
          for (let m = 0; m < M; m++) x.set(rows[m % rows.length], m * K);
          const want = new Float32Array(M * 40);
          const got = new Float32Array(M * 40).fill(NaN);
          refKernels.matmul(want, x, M, w);
          K_.matmul(got, x, M, w);
          bitwise(got, want, `${dtype} M=${M}`);
        }
      }
    });

    it('block formats: matmulT against ref, row slices, rows bitwise alone', () => {
      for (const dtype of BLOCK_TYPES) {
        for (const C of blockKs(dtype)) {
          for (const kind of BLOCK_KINDS) {
            const rows = 45;
            const w = makeBlockWeight(dtype, rows, C, C + 3, kind);
            for (const M of [1, 3, 7, 40]) {
              for (const [r0, R] of [[0, rows], [7, 30]]) {
                const x = randArray(M * R, M + R);
                const want = new Float32Array(M * C);
                const got = new Float32Array(M * C).fill(NaN);
                refKernels.matmulT(want, x, M, w, r0, R);
                K_.matmulT(got, x, M, w, r0, R);
                const what = `${dtype} ${kind} M=${M} R=${R} r0=${r0} C=${C}`;
                closeDot(got, want, R, what);
                const one = new Float32Array(C);
                K_.matmulT(one, x.subarray((M - 1) * R), 1, w, r0, R);
                bitwise(one, got.subarray((M - 1) * C), `${what}: the last row alone`);
              }
            }
          }
        }
      }
    });

    it('block formats: matmulHeads and matmulTHeads bitwise their per-head composition; matmulHeads bitwise ref, matmulTHeads close', () => {
      for (const dtype of BLOCK_TYPES) {
        const C = blockKs(dtype)[0];
        for (const [H, dn, dv] of [[1, 5, 3], [3, 13, 11]]) {
          const w = makeBlockWeight(dtype, H * (dn + dv), C, H * 7 + C, H === 1 ? 'random' : 'quantised');
          for (const M of [1, 3, 20]) {
            const x = randArray(M * H * C, M + C);
            const got = new Float32Array(M * H * dv).fill(NaN);
            K_.matmulHeads(got, x, M, H, w, dn, dn + dv, dv);
            const want = new Float32Array(M * H * dv);
            matmulHeadsComposed(K_, want, x, M, H, w, dn, dn + dv, dv);
            bitwise(got, want, `matmulHeads ${dtype} H=${H} M=${M}`);
            const oracle = new Float32Array(M * H * dv);
            matmulHeadsComposed(refKernels, oracle, x, M, H, w, dn, dn + dv, dv);
            bitwise(got, oracle, `matmulHeads ${dtype} H=${H} M=${M} (against ref)`);

            const xs = dn + 6;
            const q = randArray(M * H * xs, M + H);
            const gotT = new Float32Array(M * H * C).fill(NaN);
            K_.matmulTHeads(gotT, q, M, H, xs, w, 0, dn + dv, dn);
            const wantT = new Float32Array(M * H * C);
            matmulTHeadsComposed(K_, wantT, q, M, H, xs, w, 0, dn + dv, dn);
            bitwise(gotT, wantT, `matmulTHeads ${dtype} H=${H} M=${M}`);
            const oracleT = new Float32Array(M * H * C);
            matmulTHeadsComposed(refKernels, oracleT, q, M, H, xs, w, 0, dn + dv, dn);
            closeDot(gotT, oracleT, dn, `matmulTHeads ${dtype} H=${H} M=${M} (against ref)`);
          }
        }
      }
    });

    it('block formats: embedding is exact (bitwise ggml dequantisation)', () => {
      for (const dtype of BLOCK_TYPES) {
        for (const D of blockKs(dtype)) {
          for (const kind of BLOCK_KINDS) {
            const w = makeBlockWeight(dtype, 30, D, D + 9, kind);
            const ids = Int32Array.from([0, 29, 12, 5, 5]);
            const want = new Float32Array(ids.length * D);
            const got = new Float32Array(ids.length * D).fill(NaN);
            refKernels.embedding(want, w, ids);
            K_.embedding(got, w, ids);
            bitwise(got, want, `${dtype} ${kind} D=${D}`);
          }
        }
      }
    });

    it('block formats: ffnExperts bitwise the composed ops, close to ref, decode and prefill sizes', () => {
      for (const dtype of BLOCK_TYPES) {
        const small = FORMATS[dtype].blockElems === 32;
        const D = small ? 96 : 256;
        const widths = small ? [32, 64, 160] : [256, 512];
        for (const T of [1, 5, 40]) {
          const nets = widths.map((I, e) => ({
            gate_proj: makeBlockWeight(dtype, I, D, 90 + e, e === 0 ? 'random' : 'quantised'),
            up_proj: makeBlockWeight(dtype, I, D, 95 + e),
            down_proj: makeBlockWeight(dtype, D, I, 99 + e),
          }));
          const r = rng(T * 7 + D);
          const rows: number[] = [];
          const offsets = [0];
          for (let e = 0; e < nets.length; e++) {
            for (let t = 0; t < T; t++) if (r() < 0.6 || e === nets.length - 1) rows.push(t);
            offsets.push(rows.length);
          }
          const x = randArray(T * D, T + D);
          const wts = randArray(rows.length, D + 3);
          const y0 = randArray(T * D, D + 4);
          const args = [D, nets, Int32Array.from(offsets), Int32Array.from(rows), wts] as const;
          const got = y0.slice();
          K_.ffnExperts(got, x, ...args);
          const want = y0.slice();
          ffnExpertsComposed(K_, want, x, ...args);
          bitwise(got, want, `${dtype} T=${T} (against this backend's own ops)`);
          const oracle = y0.slice();
          ffnExpertsComposed(refKernels, oracle, x, ...args);
          // Random-byte gates give large activations; compare relative to the output size.
          closeDot(got, oracle, Math.max(D, ...widths) * 4, `${dtype} T=${T} (against ref)`);
        }
      }
    });

    it('batch invariance: a row inside M=33 equals the row alone (bitwise), every dtype', () => {
      const ws: [string, LinearWeight][] = [
        ...DTYPES.map((d) => [d, makeWeight(d, 70, 2100, 41)] as [string, LinearWeight]),
        ['F8 [16,24]', makeWeight('F8_E4M3', 50, 300, 42, [16, 24])],
        ['F8 big scales', makeWeight('F8_E4M3', 50, 300, 43, [128, 128], [1, 400])],
        ['F32 short rows', makeWeight('F32', 50, 300, 46)],
        ['BF16 short rows', makeWeight('BF16', 50, 700, 47)],
        ...BLOCK_TYPES.map((d) => [d, makeBlockWeight(d, 70, 2304, 48)] as [string, LinearWeight]),
      ];
      for (const [what, w] of ws) {
        const M = 33;
        const x = randArray(M * w.cols, 44);
        const all = new Float32Array(M * w.rows);
        K.matmul(all, x, M, w);
        for (const m of [0, 1, 16, 32]) {
          const one = new Float32Array(w.rows);
          K.matmul(one, x.subarray(m * w.cols, (m + 1) * w.cols), 1, w);
          bitwise(one, all.subarray(m * w.rows, (m + 1) * w.rows), `matmul ${what} row ${m}`);
          const three = new Float32Array(3 * w.rows);
          const m3 = Math.min(m, M - 3);
          K.matmul(three, x.subarray(m3 * w.cols, (m3 + 3) * w.cols), 3, w);
          bitwise(three, all.subarray(m3 * w.rows, (m3 + 3) * w.rows), `matmul ${what} rows ${m3}..+3`);
        }
        // matmulT over the first 130 rows.
        const R = Math.min(130, w.rows);
        const xt = randArray(M * R, 45);
        const allT = new Float32Array(M * w.cols);
        K.matmulT(allT, xt, M, w, 0, R);
        for (const m of [0, 20, 32]) {
          const one = new Float32Array(w.cols);
          K.matmulT(one, xt.subarray(m * R, (m + 1) * R), 1, w, 0, R);
          bitwise(one, allT.subarray(m * w.cols, (m + 1) * w.cols), `matmulT ${what} row ${m}`);
        }
      }
    });

    it('batch invariance: attnLatent and attention queries equal single-query calls (bitwise)', () => {
      const T = 37, H = 4, C = 70, R = 9, p0 = 11, S = p0 + T;
      const qLat = randArray(T * H * C, 51), qPe = randArray(T * H * R, 52);
      const kv = randArray(S * C, 53), pe = randArray(S * R, 54);
      const all = new Float32Array(T * H * C);
      K.attnLatent(all, qLat, qPe, kv, pe, T, H, C, R, p0, 0.1);
      for (let t = 0; t < T; t++) {
        const one = new Float32Array(H * C);
        K.attnLatent(one, qLat.subarray(t * H * C, (t + 1) * H * C), qPe.subarray(t * H * R, (t + 1) * H * R),
          kv, pe, 1, H, C, R, p0 + t, 0.1);
        bitwise(one, all.subarray(t * H * C, (t + 1) * H * C), `attnLatent t=${t}`);
      }
      const Dk = 24, Dv = 17;
      const q = randArray(T * H * Dk, 55), k = randArray(S * H * Dk, 56), v = randArray(S * H * Dv, 57);
      const allA = new Float32Array(T * H * Dv);
      K.attention(allA, q, k, v, T, H, Dk, Dv, p0, 0.2);
      for (let t = 0; t < T; t++) {
        const one = new Float32Array(H * Dv);
        K.attention(one, q.subarray(t * H * Dk, (t + 1) * H * Dk), k, v, 1, H, Dk, Dv, p0 + t, 0.2);
        bitwise(one, allA.subarray(t * H * Dv, (t + 1) * H * Dv), `attention t=${t}`);
      }
    });

    if (be.native) {
      it('thread invariance: 1 and 2 threads give bitwise identical results', () => {
        const runAll = (): Float32Array[] => {
          const outs: Float32Array[] = [];
          const weights = [...DTYPES.map((d) => makeWeight(d, 300, 700, 61)),
            ...BLOCK_TYPES.map((d) => makeBlockWeight(d, 300, 768, 61))];
          for (const w of weights) {
            for (const M of [1, 4, 40]) {
              const x = randArray(M * w.cols, 62 + M);
              const o = new Float32Array(M * w.rows);
              K.matmul(o, x, M, w);
              outs.push(o);
              const xt = randArray(M * 300, 63 + M);
              const ot = new Float32Array(M * w.cols);
              K.matmulT(ot, xt, M, w, 0, 300);
              outs.push(ot);
            }
          }
          const T = 3, H = 16, C = 128, R = 16, p0 = 300, S = p0 + T;
          const o = new Float32Array(T * H * C);
          K.attnLatent(o, randArray(T * H * C, 64), randArray(T * H * R, 65), randArray(S * C, 66),
            randArray(S * R, 67), T, H, C, R, p0, 0.1);
          outs.push(o);
          const oa = new Float32Array(T * H * 32);
          K.attention(oa, randArray(T * H * 48, 68), randArray(S * H * 48, 69), randArray(S * H * 32, 70),
            T, H, 48, 32, p0, 0.1);
          outs.push(oa);
          return outs;
        };
        setThreads(1);
        const one = runAll();
        setThreads(2);
        const two = runAll();
        setThreads(info!.threads);
        for (let i = 0; i < one.length; i++) bitwise(two[i], one[i], `output ${i}`);
      });

      it('decode order: cache-resident weights (rows side by side) give the streamed order\'s numbers (bitwise)', (t) => {
        const a = nativeAddon()!;
        if (!a.setWeightBytes(1)) {
          t.skip('the last-level cache size is unknown here, so decode never takes the cache-resident order');
          return;
        }
        const ws: [string, LinearWeight][] = [
          ...DTYPES.map((d) => [d, makeWeight(d, 70, 700, 81)] as [string, LinearWeight]),
          ['F8 [16,24]', makeWeight('F8_E4M3', 50, 300, 82, [16, 24])],
          ['BF16 long rows', makeWeight('BF16', 20, 2100, 83)],
          ...BLOCK_TYPES.map((d) => [d, makeBlockWeight(d, 70, 768, 81)] as [string, LinearWeight]),
          ['Q4_0 short rows', makeBlockWeight('Q4_0', 30, 64, 84)],
        ];
        const run = (resident: boolean): Float32Array[] => {
          // 1 byte fits any cache; 2^52 bytes fits none.
          assert.equal(a.setWeightBytes(resident ? 1 : 2 ** 52), resident);
          return ws.flatMap(([, w]) => [1, 3, 33].map((M) => {
            const o = new Float32Array(M * w.rows);
            K.matmul(o, randArray(M * w.cols, 84 + M), M, w);
            return o;
          }));
        };
        const streamed = run(false);
        const resident = run(true);
        a.setWeightBytes(0);
        streamed.forEach((o, i) => bitwise(resident[i], o, `${ws[Math.floor(i / 3)][0]} case ${i % 3}`));
      });

      it('FP8 weights known to hold no NaN code skip the check with the same numbers (bitwise)', () => {
        const a = nativeAddon()!;
        const w = makeWeight('F8_E4M3', 90, 300, 85);
        const d = w.data as Uint8Array;
        for (let i = 0; i < d.length; i++) if ((d[i] & 0x7f) === 0x7f) d[i] = 0x7e;
        assert.equal(a.f8NanFree(d), true);
        const b = w.block!;
        for (const M of [1, 3, 20]) {
          const x = randArray(M * 300, 86 + M);
          const checked = new Float32Array(M * 90);
          const skipped = new Float32Array(M * 90);
          a.matmul(checked, x, M, a.weight(d, 3, 90, 300, w.scale!, b[0], b[1]), 0, 90);
          a.matmul(skipped, x, M, a.weight(d, 4, 90, 300, w.scale!, b[0], b[1]), 0, 90);
          bitwise(skipped, checked, `M=${M}`);
        }
        d[5] = 0xff;
        assert.equal(a.f8NanFree(d), false, 'a NaN code is found');
      });

      it('weightAllocator: zeroed, 64-byte aligned, non-overlapping buffers, big ones on their own', () => {
        const alloc = K.weightAllocator!();
        const sizes = [1, 63, 64, 1000, 3 << 20, 5, 20 << 20, 129];
        const bufs = sizes.map((n) => alloc(n));
        bufs.forEach((b, i) => {
          assert.equal(b.length, sizes[i]);
          assert.equal(b.byteOffset % 64, 0, `buffer ${i} is 64-byte aligned`);
          assert.ok(b.every((v) => v === 0), `buffer ${i} is zeroed`);
          b.fill(i + 1);
        });
        bufs.forEach((b, i) => assert.ok(b.every((v) => v === i + 1), `buffer ${i} kept its bytes`));
        assert.equal(bufs[6].byteOffset, 0, 'a 20 MiB matrix gets a buffer of its own');
      });

      it('rejects sizes that would read or write out of bounds', () => {
        const w = makeWeight('F32', 4, 8, 1);
        assert.throws(() => K.matmul(new Float32Array(3), new Float32Array(8), 1, w), RangeError);
        assert.throws(() => K.matmul(new Float32Array(4), new Float32Array(7), 1, w), RangeError);
        assert.throws(() => K.matmul(new Float32Array(4), new Float32Array(8), 1, w, 2, 3), RangeError);
        assert.throws(() => K.matmulT(new Float32Array(8), new Float32Array(4), 1, w, 1, 4), RangeError);
        const w8 = makeWeight('F8_E4M3', 4, 8, 1);
        assert.throws(() => K.matmul(new Float32Array(4), new Float32Array(8), 1, { ...w8, scale: undefined }), TypeError);
        assert.throws(() => K.matmulHeads(new Float32Array(8), new Float32Array(16), 1, 2, w, 2, 2, 2), RangeError);
        assert.throws(() => K.matmulTHeads(new Float32Array(16), new Float32Array(4), 1, 2, 2, w, 0, 2, 3), RangeError);
        const net = { gate_proj: makeWeight('F32', 3, 8, 2), up_proj: makeWeight('F32', 3, 8, 3), down_proj: makeWeight('F32', 8, 3, 4) };
        const one = Float32Array.of(1);
        assert.throws(() => K.ffnExperts(new Float32Array(8), new Float32Array(8), 8, [net], Int32Array.of(0, 1), Int32Array.of(1), one), RangeError);
        assert.throws(() => K.ffnExperts(new Float32Array(8), new Float32Array(8), 8, [net], Int32Array.of(0, 2), Int32Array.of(0), one), RangeError);
        assert.throws(() => K.ffnExperts(new Float32Array(8), new Float32Array(8), 8, [{ ...net, down_proj: net.gate_proj }], Int32Array.of(0, 1), Int32Array.of(0), one), RangeError);
        // Block formats: whole blocks per row, the exact byte length, raw bytes; checked once, when
        // the weight's descriptor is made.
        const q = makeBlockWeight('Q4_K', 4, 256, 5);
        const a = nativeAddon()!;
        const out4 = new Float32Array(4), x256 = new Float32Array(256);
        assert.throws(() => a.weight(q.data, 13, 4, 255, null, 0, 0), /multiple/);
        assert.throws(() => a.weight((q.data as Uint8Array).subarray(1), 13, 4, 256, null, 0, 0), RangeError);
        assert.throws(() => a.weight(new Uint16Array(288), 13, 4, 256, null, 0, 0), TypeError);
        assert.throws(() => a.weight(q.data, 9, 4, 256, null, 0, 0), /unknown dtype/);
        a.matmul(out4, x256, 1, a.weight(q.data, 13, 4, 256, null, 0, 0), 0, 4);
        // Ops take only descriptors.
        assert.throws(() => a.matmul(out4, x256, 1, {} as never, 0, 4), /weight handle/);
        assert.throws(() => a.matmul(out4, x256, 1, q.data as never, 0, 4), /weight handle/);
      });
    }
  });
}
