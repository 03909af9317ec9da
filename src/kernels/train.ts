// The TrainKernels interface: the backward loops of training that are not matrix products.
// Heavy backward matmuls (dX = dY·W, dW = dYᵀ·X) go through Kernels.matmul/matmulT, so a
// faster Kernels backend speeds them up as it is; everything else a backward pass loops
// over lives here, with the pure-TypeScript definition in ref/train.ts.
//
// Conventions as in kernels.ts: float32, row-major, contiguous. Outputs named d* are
// written unless the doc says "accumulated" (+=); weight gradients are always accumulated,
// since a weight can be used several times in one step.
//
// Legend: M/T rows (tokens), D row width, H heads, S = p0 + T key positions, C latent width,
// R rope dims, E routed experts, V vocabulary.

import type { RouteParams } from './kernels.ts';

export interface TrainKernels {
  readonly name: string;

  /**
   * Backward of Kernels.rmsNorm (y = x · inv · w, inv = 1/sqrt(mean(x²) + eps)); inv is
   * recomputed from x. dx [M, D] written, dw [D] accumulated.
   */
  rmsNormBackward(
    dx: Float32Array,
    dw: Float32Array,
    dy: Float32Array,
    x: Float32Array,
    w: Float32Array,
    M: number,
    eps: number,
  ): void;

  /** Backward of Kernels.rope, in place: the same pairs rotated by −pos[t] · freqs[i]. */
  ropeBackward(
    dx: Float32Array,
    T: number,
    H: number,
    stride: number,
    offset: number,
    pos: Int32Array,
    freqs: Float32Array,
  ): void;

  /** Backward of Kernels.siluMul (out = silu(gate) · up): dgate, dup [n] written. */
  siluMulBackward(
    dgate: Float32Array,
    dup: Float32Array,
    dout: Float32Array,
    gate: Float32Array,
    up: Float32Array,
    n: number,
  ): void;

  /**
   * Backward of Kernels.attention for one sequence (probabilities recomputed from q, k).
   * dq [T, H, Dk] written; dk [S, H, Dk] and dv [S, H, Dv] written (every key position).
   */
  attentionBackward(
    dq: Float32Array,
    dk: Float32Array,
    dv: Float32Array,
    dout: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    T: number,
    H: number,
    Dk: number,
    Dv: number,
    p0: number,
    scale: number,
  ): void;

  /**
   * Backward of Kernels.attnLatent for one sequence (probabilities recomputed).
   * dqLat [T, H, C], dqPe [T, H, R] written; dkv [S, C], dpe [S, R] written.
   */
  attnLatentBackward(
    dqLat: Float32Array,
    dqPe: Float32Array,
    dkv: Float32Array,
    dpe: Float32Array,
    dout: Float32Array,
    qLat: Float32Array,
    qPe: Float32Array,
    kv: Float32Array,
    pe: Float32Array,
    T: number,
    H: number,
    C: number,
    R: number,
    p0: number,
    scale: number,
  ): void;

  /**
   * Backward of Kernels.moeRoute through the routing weights only (the choice of experts is
   * a constant; the selection bias gets nothing): from dweights [T, topk] (aligned with idx)
   * to dlogits [T, E], written. Sigmoid or softmax scores, then the optional
   * renormalisation over the chosen experts, then × scale.
   */
  moeRouteBackward(
    dlogits: Float32Array,
    dweights: Float32Array,
    logits: Float32Array,
    idx: Int32Array,
    T: number,
    E: number,
    p: RouteParams,
  ): void;

  /**
   * Backward of Kernels.scatterAddRows (out[rows[i]] += weights[i] · src[i]):
   * dsrc[i, :] = weights[i] · dout[rows[i], :] and dweights[i] = dout[rows[i], :] · src[i, :],
   * both written.
   */
  scatterAddRowsBackward(
    dsrc: Float32Array,
    dweights: Float32Array,
    dout: Float32Array,
    src: Float32Array,
    rows: Int32Array,
    weights: Float32Array,
    D: number,
  ): void;

  /**
   * Cross-entropy of each row of logits [M, V] against targets [M]; a target < 0 skips
   * the row. Returns Σ of −log softmax(logits[m])[targets[m]] over the rows it counts, and
   * writes dlogits = gradScale · (softmax − onehot) (zero rows for skipped targets).
   */
  crossEntropy(
    dlogits: Float32Array,
    logits: Float32Array,
    targets: Int32Array,
    M: number,
    V: number,
    gradScale: number,
  ): number;
}
