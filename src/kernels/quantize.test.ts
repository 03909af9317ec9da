// Kernels.quantize: every backend gives the bytes of the reference (decodeRow, then
// quantizeBlocks per row), from every stored dtype, and llama.cpp's own bytes on the
// ggml-quants fixture (test/fixtures/ggml-quants/README.md).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { backends } from '../../test/helpers/backends.ts';
import { FORMATS, f32ToBf16, f32ToF16, rowBytes, type BlockType } from '../tensor/dtypes.ts';
import { quantizeBlocks } from '../tensor/quants.ts';
import type { LinearWeight } from '../tensor/weight.ts';
import { quantizeMatrix } from '../model/quantize.ts';
import { decodeRow, refKernels } from './ref/index.ts';
import type { Kernels } from './kernels.ts';

const TYPES: readonly BlockType[] = ['Q8_0', 'Q4_0', 'Q5_0', 'Q4_1', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'];
const FIXTURES = join(import.meta.dirname, '../../test/fixtures/ggml-quants');
const fixture = (name: string) => new Uint8Array(readFileSync(join(FIXTURES, name)));

/** Deterministic xorshift32 in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/**
 * Weight-like values: roughly bell-shaped with a scale that changes every 32 values, a few
 * outliers, and some all-zero, constant and tiny groups (the quantisers' special cases).
 */
function values(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(n);
  for (let g = 0; g < n; g += 32) {
    const kind = Math.floor(r() * 16);
    const scale = 2 ** (Math.floor(r() * 12) - 8);
    for (let i = g; i < Math.min(n, g + 32); i++) {
      const bell = (r() + r() + r() - 1.5) * 2;
      let v = bell * scale;
      if (r() < 0.01) v *= 20;
      if (kind === 0) v = 0;
      else if (kind === 1) v = scale;
      else if (kind === 2) v *= 1e-20;
      else if (kind === 3) v = Math.abs(v);
      x[i] = v;
    }
  }
  return x;
}

function f32W(rows: number, cols: number, seed: number): LinearWeight {
  return { dtype: 'F32', rows, cols, data: values(rows * cols, seed) };
}

function bf16W(rows: number, cols: number, seed: number): LinearWeight {
  const x = values(rows * cols, seed);
  return { dtype: 'BF16', rows, cols, data: Uint16Array.from(x, f32ToBf16) };
}

function f16W(rows: number, cols: number, seed: number): LinearWeight {
  const x = values(rows * cols, seed);
  return { dtype: 'F16', rows, cols, data: Uint16Array.from(x, f32ToF16) };
}

/** e4m3 codes (no NaN codes) with per-block scales; edge blocks may be partial. */
function f8W(rows: number, cols: number, block: [number, number], seed: number): LinearWeight {
  const r = rng(seed);
  const data = new Uint8Array(rows * cols);
  for (let i = 0; i < data.length; i++) {
    let c = Math.floor(r() * 256);
    if ((c & 0x7f) === 0x7f) c ^= 1;
    data[i] = c;
  }
  const sr = Math.ceil(rows / block[0]);
  const sc = Math.ceil(cols / block[1]);
  const scale = Float32Array.from({ length: sr * sc }, () => 2 ** (Math.floor(r() * 16) - 12) * (1 + r()));
  return { dtype: 'F8_E4M3', rows, cols, data, scale, block };
}

/** A matrix stored in a block type (quantised by the reference from F32 values). */
function blockW(type: BlockType, rows: number, cols: number, seed: number): LinearWeight {
  const data = new Uint8Array(rows * rowBytes(type, cols));
  refKernels.quantize(data, f32W(rows, cols, seed), type);
  return { dtype: type, rows, cols, data };
}

function quantized(K: Kernels, w: LinearWeight, type: BlockType): Uint8Array {
  const out = new Uint8Array(w.rows * rowBytes(type, w.cols));
  K.quantize(out, w, type);
  return out;
}

/** The first byte where a and b differ, as a message (or '' when equal). */
function firstDiff(a: Uint8Array, b: Uint8Array): string {
  if (a.length !== b.length) return `lengths ${a.length} vs ${b.length}`;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `byte ${i}: ${a[i]} vs ${b[i]}`;
  return '';
}

test('ref quantize is decodeRow + quantizeBlocks, row after row', () => {
  const w = bf16W(3, 512, 7);
  const row = new Float32Array(512);
  for (const t of TYPES) {
    const got = quantized(refKernels, w, t);
    const rb = rowBytes(t, 512);
    for (let r = 0; r < 3; r++) {
      decodeRow(w, r, row);
      assert.deepEqual(got.subarray(r * rb, (r + 1) * rb), quantizeBlocks(t, row), `${t} row ${r}`);
    }
  }
});

for (const K of backends()) {
  test(`quantize [${K.name}]: llama.cpp's bytes on the ggml-quants fixture, as one row and as seven`, () => {
    const x = new Float32Array(fixture('input.f32').buffer);
    for (const t of TYPES) {
      const want = fixture(`${t}.q`);
      for (const [rows, cols] of [[1, 1792], [7, 256]]) {
        const got = quantized(K, { dtype: 'F32', rows, cols, data: x }, t);
        assert.equal(firstDiff(got, want), '', `${t} [${rows}x${cols}]`);
      }
    }
  });

  test(`quantize [${K.name}]: cols not a multiple of the block size, or a short out, throw`, () => {
    for (const t of TYPES) {
      const be = FORMATS[t].blockElems;
      const w = f32W(2, be + 16, 1);
      assert.throws(() => K.quantize(new Uint8Array(1 << 16), w, t), /multiple of/, t);
      const ok = f32W(2, be, 2);
      assert.throws(() => K.quantize(new Uint8Array(2 * FORMATS[t].blockBytes - 1), ok, t), /too short/, t);
    }
  });
}

const native = backends().find((k) => k.name === 'native');

test('native quantize is byte-identical to the reference from every stored dtype', { skip: !native && 'native kernels not built' }, () => {
  const K = native!;
  const sources: [string, LinearWeight, readonly BlockType[]][] = [
    ['F32 [37x768]', f32W(37, 768, 11), TYPES],
    ['BF16 [300x512]', bf16W(300, 512, 12), TYPES],
    ['F16 [9x1024]', f16W(9, 1024, 13), TYPES],
    // 300 rows: the third row block of 128 is partial.
    ['F8 block 128 [300x768]', f8W(300, 768, [128, 128], 14), TYPES],
    // 160 cols: the second column block of 128 is partial (32-value types only).
    ['F8 block 128 [5x160]', f8W(5, 160, [128, 128], 15), ['Q8_0', 'Q4_0', 'Q5_0']],
    ['Q4_K [6x512]', blockW('Q4_K', 6, 512, 16), TYPES],
    ['Q8_0 [4x256]', blockW('Q8_0', 4, 256, 17), TYPES],
    ['Q6_K [3x256]', blockW('Q6_K', 3, 256, 18), ['Q4_K', 'Q5_0']],
  ];
  for (const [what, w, types] of sources) {
    for (const t of types) {
      assert.equal(firstDiff(quantized(K, w, t), quantized(refKernels, w, t)), '', `${what} → ${t}`);
    }
  }
});

test('quantizeMatrix goes through K.quantize and keeps a matrix already in the type', { skip: !native && 'native kernels not built' }, () => {
  const w = bf16W(40, 512, 21);
  for (const t of ['Q4_K', 'Q8_0'] as const) {
    const a = quantizeMatrix(native!, w, t);
    const b = quantizeMatrix(refKernels, w, t);
    assert.equal(a.dtype, t);
    assert.deepEqual(a.data, b.data);
    assert.equal(quantizeMatrix(native!, a, t), a);
  }
});
