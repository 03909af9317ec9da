// FP8 mixed-precision training, simulated faithfully on CPU (DeepSeek-V3 §3.3): every GEMM
// of the linear layers takes its inputs quantised to e4m3 with fine-grained scales (1×128
// tiles along the inner dimension for activations and gradients, 128×128 blocks for
// weights), accumulates in fp32, and writes fp32. Master weights, the optimizer, the
// embedding, the output head, the MoE router, norms and attention stay in higher precision.
// Implemented as a Kernels decorator: the model does not know it is being quantised.

import type { Kernels } from '../kernels/kernels.ts';
import { composedOps } from '../kernels/ref/index.ts';
import { E4M3_TABLE, f32ToE4m3 } from '../tensor/dtypes.ts';
import type { LinearWeight } from '../tensor/weight.ts';

const TILE = 128;
const E4M3_MAX = 448;

/** Round-trip one value through e4m3 at the given scale. */
function q(v: number, scale: number): number {
  return E4M3_TABLE[f32ToE4m3(v / scale)] * scale;
}

/** x [rows, cols] quantised to e4m3 with one scale (amax / 448) per tR × tC tile. */
function quantiseTiles(x: Float32Array, rows: number, cols: number, tR: number, tC: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r0 = 0; r0 < rows; r0 += tR) {
    for (let c0 = 0; c0 < cols; c0 += tC) {
      const r1 = Math.min(rows, r0 + tR);
      const c1 = Math.min(cols, c0 + tC);
      let amax = 0;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(x[r * cols + c]));
      const s = amax > 0 ? amax / E4M3_MAX : 1;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[r * cols + c] = q(x[r * cols + c], s);
    }
  }
  return out;
}

/** Activations or gradients [rows, cols] in 1×128 tiles along each row (the inner dimension). */
export const quantiseRows = (x: Float32Array, rows: number, cols: number) => quantiseTiles(x, rows, cols, 1, TILE);

/** [rows, cols] in 128×1 tiles down each column (inner dimension = rows). */
export const quantiseCols = (x: Float32Array, rows: number, cols: number) => quantiseTiles(x, rows, cols, TILE, 1);

/** A weight [rows, cols] in 128×128 blocks. */
export const quantiseBlocks = (x: Float32Array, rows: number, cols: number) => quantiseTiles(x, rows, cols, TILE, TILE);

export interface Fp8Kernels extends Kernels {
  /** Forget cached quantised weights (call after every optimizer step). */
  newStep(): void;
}

/**
 * Wrap `base` so that GEMMs run on e4m3-rounded inputs. `weights` holds the data of the model's
 * matrices that count as GEMM weights (128×128 blocks); `exempt` ones (head, router) stay
 * full precision. Any other matrix passed as a weight is an activation or gradient used in
 * a weight-gradient GEMM, quantised in 128×1 tiles along its inner (row) dimension.
 */
export function fp8Kernels(base: Kernels, weights: Set<LinearWeight['data']>, exempt: Set<LinearWeight['data']>): Fp8Kernels {
  let cache = new Map<LinearWeight['data'], LinearWeight>();
  const blockQ = (w: LinearWeight): LinearWeight => {
    let c = cache.get(w.data);
    if (!c) {
      const data = quantiseBlocks(w.data as Float32Array, w.rows, w.cols);
      c = { dtype: 'F32', rows: w.rows, cols: w.cols, data };
      cache.set(w.data, c);
    }
    return c;
  };
  // A matmul's inner dimension is the weight's columns; a matmulT's is its rows.
  const operand = (w: LinearWeight, innerIsRows: boolean): LinearWeight => {
    if (w.dtype !== 'F32') return w;
    if (weights.has(w.data)) return blockQ(w);
    const f = innerIsRows ? quantiseCols : quantiseRows;
    return { dtype: 'F32', rows: w.rows, cols: w.cols, data: f(w.data as Float32Array, w.rows, w.cols) };
  };
  const k: Fp8Kernels = {
    ...base,
    name: `${base.name}+fp8sim`,
    newStep: () => {
      cache = new Map();
    },
    matmul(out, x, M, w, r0, N) {
      if (exempt.has(w.data)) return base.matmul(out, x, M, w, r0, N);
      base.matmul(out, quantiseRows(x, M, w.cols), M, operand(w, false), r0, N);
    },
    matmulT(out, x, M, w, r0, R) {
      if (exempt.has(w.data)) return base.matmulT(out, x, M, w, r0, R);
      base.matmulT(out, quantiseRows(x, M, R), M, operand(w, true), r0, R);
    },
    // The grouped ops go through the FP8 matmuls above, one GEMM at a time.
    ...composedOps(() => k),
  };
  return k;
}
