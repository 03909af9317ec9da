// What a training forward pass keeps for the backward pass, and the linear-layer backward
// every module shares. The forward functions are the inference ones: given a Tape (through
// StepContext.tape or ForwardOptions.tape) they also leave their inputs and intermediates
// in a *Saved record, keyed by layer index; without one they keep nothing. Each backward
// (mlaBackward, moeBackward, blockBackward, …) sits beside its forward and reads its record.
//
// Weight gradients live in a tree of the same shape as the weights (ModelWeights whose
// matrices are F32 and start at zero; see gradientTree in weights.ts) and are accumulated.
//
// Legend: M rows, K in-features, N out-features.

import type { Kernels } from '../kernels/kernels.ts';
import type { TrainKernels } from '../kernels/train.ts';
import { f32Weight, type LinearWeight } from '../tensor/weight.ts';
import type { BlockSaved, StepContext } from './block.ts';
import type { MtpSaved } from './mtp.ts';

/** An empty array: the value of a saved field the forward did not fill. */
export const NONE: Float32Array = new Float32Array(0);

/** The main model's own part of the record (DeepseekV3.forward). */
export interface MainSaved {
  ctx: StepContext;
  ids: Int32Array;
  /** [T, D] residual stream after the last layer (model.norm's input). */
  x: Float32Array;
  /** [T, D] after model.norm (lm_head's input). */
  hidden: Float32Array;
}

/** The record of one training forward pass (main model and MTP modules). */
export class Tape {
  main: MainSaved | null = null;
  /** By layer index: main layers 0 … L-1, MTP module k at L + k. */
  readonly blocks = new Map<number, BlockSaved>();
  readonly mtp = new Map<number, MtpSaved>();
}

/** What every backward call shares: the forward's context plus the training kernels. */
export interface BackwardContext extends StepContext {
  TK: TrainKernels;
  tape: Tape;
}

/** The float32 data of a gradient matrix. */
export function gradData(g: LinearWeight): Float32Array {
  if (g.dtype !== 'F32') throw new Error(`gradient matrices are F32, got ${g.dtype}`);
  return g.data as Float32Array;
}

/** [rows, cols] → [cols, rows]. */
export function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c];
  return out;
}

/**
 * Backward of y = x · W[r0 : r0+N]ᵀ (Kernels.matmul): returns dx = dy · W[r0 : r0+N]
 * [M, K] and accumulates dW[r0 : r0+N] += dyᵀ · x. dy is [M, N], x is [M, K].
 */
export function linearBackward(
  K: Kernels,
  g: LinearWeight,
  w: LinearWeight,
  dy: Float32Array,
  x: Float32Array,
  M: number,
  r0 = 0,
  N = w.rows - r0,
): Float32Array {
  const C = w.cols;
  const dx = new Float32Array(M * C);
  K.matmulT(dx, dy, M, w, r0, N);
  // dW[n, k] = Σ_m dy[m, n] · x[m, k]: x is the "weight" [M, K] of a transposed product.
  const dw = new Float32Array(N * C);
  K.matmulT(dw, transpose(dy, M, N), N, f32Weight(x.subarray(0, M * C), M, C), 0, M);
  K.add(gradData(g).subarray(r0 * C, (r0 + N) * C), dw, N * C);
  return dx;
}

/**
 * Backward of y = x · W[r0 : r0+R] (Kernels.matmulT, y [M, W.cols], x [M, R]): returns
 * dx = dy · W[r0 : r0+R]ᵀ [M, R] and accumulates dW[r0 : r0+R] += xᵀ · dy.
 */
export function linearTBackward(
  K: Kernels,
  g: LinearWeight,
  w: LinearWeight,
  dy: Float32Array,
  x: Float32Array,
  M: number,
  r0: number,
  R: number,
): Float32Array {
  const C = w.cols;
  const dx = new Float32Array(M * R);
  K.matmul(dx, dy, M, w, r0, R);
  const dw = new Float32Array(R * C);
  K.matmulT(dw, transpose(x, M, R), R, f32Weight(dy.subarray(0, M * C), M, C), 0, M);
  K.add(gradData(g).subarray(r0 * C, (r0 + R) * C), dw, R * C);
  return dx;
}

/** Embedding backward: table[ids[t]] += dx[t] (a scatter-add through Kernels). */
export function embeddingBackward(K: Kernels, g: LinearWeight, dx: Float32Array, ids: Int32Array): void {
  K.scatterAddRows(gradData(g), dx, ids, new Float32Array(ids.length).fill(1), g.cols);
}
