// A weight matrix kept in its stored dtype. Kernels read it and widen each element to
// float32 on the fly; nothing here ever expands a matrix to f32 as a whole.

import type { WeightDType } from './dtypes.ts';

/** Row-major [rows, cols] matrix in its checkpoint dtype: y = x · Wᵀ maps cols → rows. */
export interface LinearWeight {
  dtype: WeightDType;
  rows: number;
  cols: number;
  /**
   * F32 → Float32Array, BF16/F16 → Uint16Array (raw bits), F8_E4M3 → Uint8Array (codes),
   * block types (Q8_0, Q4_K, …) → Uint8Array of rows · rowBytes(dtype, cols) bytes, row after
   * row, each row a run of ggml blocks (cols is a multiple of the block size).
   */
  data: Float32Array | Uint16Array | Uint8Array;
  /**
   * F8_E4M3 only: weight_scale_inv, [ceil(rows / block[0]), ceil(cols / block[1])]. The
   * element (i, j) is e4m3(data[i, j]) * scale[i / block[0], j / block[1]] (one f32 multiply).
   */
  scale?: Float32Array;
  block?: [number, number];
}

/** Wrap a float32 matrix as a LinearWeight. */
export function f32Weight(data: Float32Array, rows: number, cols: number): LinearWeight {
  if (data.length !== rows * cols) throw new Error(`f32Weight: ${data.length} != ${rows}x${cols}`);
  return { dtype: 'F32', rows, cols, data };
}
