// The Kernels interface: every hot loop of the model goes through it. The pure-TypeScript
// implementation in ref/ is the executable definition of each op and the test oracle;
// the native addon implements the same signatures. Model code only sees this interface.
//
// Conventions: all activations are float32, row-major, contiguous. Outputs are written
// (not accumulated) unless the doc says otherwise. Every op must give a result for a row
// that does not depend on how many other rows are in the call (batch invariance), so that
// batched, incremental and speculative decoding agree token for token.
//
// Legend: M/T rows (tokens), K in-features, N out-features, H heads, S cached positions,
// C kv_lora_rank (latent width), R qk_rope_head_dim, E routed experts.

import type { BlockType } from '../tensor/dtypes.ts';
import type { LinearWeight } from '../tensor/weight.ts';

/** How the MoE gate turns router logits into expert choices (DeepSeekMoE). */
export interface RouteParams {
  /** Routed experts per token (num_experts_per_tok). */
  topk: number;
  /** Expert groups (n_group) and how many of them survive (topk_group). */
  nGroup: number;
  topkGroup: number;
  scoring: 'sigmoid' | 'softmax';
  /** e_score_correction_bias: added to the scores for selection only; null when absent. */
  bias: Float32Array | null;
  /** Divide the chosen (unbiased) scores by their sum. */
  normalize: boolean;
  /** routed_scaling_factor, applied last. */
  scale: number;
}

/** The three matrices of one SwiGLU network: a routed or shared expert, or a dense MLP. */
export interface FfnWeights {
  /** [I, D] */
  gate_proj: LinearWeight;
  /** [I, D] */
  up_proj: LinearWeight;
  /** [D, I] */
  down_proj: LinearWeight;
}

/**
 * One row of Kernels.sampleBatch: how to pick the next token from one row of logits
 * (engine/sampler.ts's Sampler makes these; the fields are its SamplingParams, resolved).
 */
export interface SampleRow {
  /** Which row of the logits matrix. */
  row: number;
  /** >= 0; 0 is greedy (argmax, lowest id on ties). */
  temperature: number;
  /** Keep the k most likely (ties with the k-th kept); 0: off. */
  topK: number;
  /** Keep the smallest most-likely set with mass >= topP, in (0, 1]; 1: off. */
  topP: number;
  /** Drop what is less likely than minP times the most likely, in [0, 1]; 0: off. */
  minP: number;
  /** HF-style, > 0 (1: off); frequency and presence are OpenAI-style (0: off). */
  repetitionPenalty: number;
  frequencyPenalty: number;
  presencePenalty: number;
  /** Ids at or past this are never picked (Infinity: none are cut). */
  vocab: number;
  /**
   * The uniform draw in [0, 1) to sample with. It is not used (SampleResult.drew false) when
   * the pick is an argmax: temperature 0, or a logit of +Infinity.
   */
  u: number;
  /** Token ids the penalties count, with repeats (ids in 0 … V-1); null or unread without penalties. */
  history: ArrayLike<number> | null;
  /**
   * Allowed ids (grammar-constrained decoding): bit (id & 31) of word (id >> 5) set means
   * allowed; ids past the mask are not. null: every id.
   */
  mask: Int32Array | Uint32Array | null;
  /** Report the raw logits' log-softmax at the pick and this many best alternatives; -1: none. */
  logprobs: number;
}

export interface IdLogprob {
  id: number;
  logprob: number;
}

export interface SampleResult {
  /** The pick; -1 when there is nothing to pick (every logit -Infinity, NaN, masked or past vocab). */
  id: number;
  /** Whether the row's u was used. */
  drew: boolean;
  /** With logprobs >= 0: the float32 log-softmax of the raw logits (before penalties, mask, temperature) at id. */
  logprob?: number;
  /** With logprobs >= 0: the ids below vocab with the largest logprobs, best first (ties: lower id). */
  top?: IdLogprob[];
}

/** A file mapped into memory (Kernels.mapFile); it stays mapped while any view is alive. */
export interface MappedFile {
  readonly byteLength: number;
  view(offset: number, length: number): Uint8Array;
}

export interface Kernels {
  readonly name: string;

  /**
   * Optional: a function that hands out the memory weight matrices are loaded into, for a
   * backend that wants them laid out its way (the native one packs them into arenas backed
   * by 2 MiB pages: streaming thousands of small experts over 4 KiB pages costs a TLB miss
   * per page). Buffers are zeroed and 64-byte aligned. Absent: plain buffers.
   */
  weightAllocator?(): (bytes: number) => Uint8Array;

  /**
   * Optional: a checkpoint file mapped into memory (private, copy-on-write), so that weights
   * are used in place (pages shared with the page cache, loaded on first touch); `view` gives
   * bytes of it without copying. Null, or absent: the file is read into memory
   * (weightAllocator), which a backend may prefer for small files.
   */
  mapFile?(path: string): MappedFile | null;

  /**
   * out[m, n] = Σ_k x[m, k] · W[r0 + n, k] for n < N. x is [M, W.cols], out is [M, N].
   * r0 defaults to 0 and N to W.rows - r0. The weight is widened to f32 inside the kernel;
   * except for block-format (ggml) weights, where x is quantised to the type's vec_dot type and
   * the dot products are llama.cpp's integer block sums (ref/qdot.ts defines the numbers).
   */
  matmul(out: Float32Array, x: Float32Array, M: number, w: LinearWeight, r0?: number, N?: number): void;

  /**
   * Transposed use of a row slice: out[m, c] = Σ_r x[m, r] · W[r0 + r, c] for r < R.
   * x is [M, R], out is [M, W.cols]. (MLA absorbs kv_b_proj's key half into q this way.)
   */
  matmulT(out: Float32Array, x: Float32Array, M: number, w: LinearWeight, r0: number, R: number): void;

  /**
   * matmul once per head over a head-major layout (absorbed MLA's value up-projection): for
   * h < H, out[m, h·N + n] = Σ_k x[m, h·K + k] · W[r0 + h·step + n, k], K = W.cols; x is
   * [M, H·K], out [M, H·N]. Each head's numbers are those of matmul on its slices.
   */
  matmulHeads(
    out: Float32Array,
    x: Float32Array,
    M: number,
    H: number,
    w: LinearWeight,
    r0: number,
    step: number,
    N: number,
  ): void;

  /**
   * matmulT once per head (absorbed MLA's query absorption): for h < H,
   * out[m, h·C + c] = Σ_r x[m, h·xs + r] · W[r0 + h·step + r, c] for r < R, C = W.cols; x is
   * [M, H·xs] (each head's first R numbers are used), out [M, H·C]. Each head's numbers are
   * those of matmulT on its slices.
   */
  matmulTHeads(
    out: Float32Array,
    x: Float32Array,
    M: number,
    H: number,
    xs: number,
    w: LinearWeight,
    r0: number,
    step: number,
    R: number,
  ): void;

  /** out[t, :] = row ids[t] of the table, widened to f32. out is [T, table.cols]. */
  embedding(out: Float32Array, table: LinearWeight, ids: Int32Array): void;

  /** out[m, :] = x[m, :] / sqrt(mean(x[m, :]²) + eps) * weight. D = weight.length. */
  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, M: number, eps: number): void;

  /**
   * In place, rotate interleaved pairs (x[2i], x[2i+1]) of the slice
   * x[t, h, offset : offset + 2·freqs.length] by the angle pos[t] · freqs[i].
   * x is [T, H, stride].
   */
  rope(
    x: Float32Array,
    T: number,
    H: number,
    stride: number,
    offset: number,
    pos: Int32Array,
    freqs: Float32Array,
  ): void;

  /** In-place softmax over each row of a [rows, cols] matrix. */
  softmax(x: Float32Array, rows: number, cols: number): void;

  /** out[i] = silu(gate[i]) · up[i] for i < n (SwiGLU). */
  siluMul(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;

  /** out[i] += a[i] for i < n. */
  add(out: Float32Array, a: Float32Array, n: number): void;

  /**
   * Absorbed MLA attention of one sequence over its latent cache.
   * Query t sits at position p0 + t and sees cached positions 0 … p0 + t.
   * score[t, h, s] = (qLat[t, h] · kv[s] + qPe[t, h] · pe[s]) · scale, softmax over s,
   * out[t, h] = Σ_s p[t, h, s] · kv[s].
   * qLat [T, H, C], qPe [T, H, R], kv [S, C], pe [S, R] with S ≥ p0 + T, out [T, H, C].
   */
  attnLatent(
    out: Float32Array,
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
   * Plain causal multi-head attention of one sequence (the naive MLA path).
   * q [T, H, Dk], k [S, H, Dk], v [S, H, Dv], out [T, H, Dv]; query t sits at p0 + t.
   */
  attention(
    out: Float32Array,
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
   * DeepSeekMoE gate from router logits [T, E]: fills outIdx [T, topk] with the chosen
   * experts (descending selection score) and outW [T, topk] with their final weights.
   */
  moeRoute(
    outIdx: Int32Array,
    outW: Float32Array,
    logits: Float32Array,
    T: number,
    E: number,
    p: RouteParams,
  ): void;

  /** out[i, :] = x[rows[i], :] for i < rows.length; rows of width D. */
  gatherRows(out: Float32Array, x: Float32Array, rows: Int32Array, D: number): void;

  /**
   * DeepSeekMoE's expert dispatch (inference): for each network e in order, and each i in
   * offsets[e] … offsets[e+1]-1 in order, y[rows[i], :] += weights[i] · down(silu(gate(x_i)) ·
   * up(x_i)) with x_i = x[rows[i], :]; x and y are [T, D]. The result is exactly that of
   * gatherRows, matmul, siluMul, matmul and scatterAddRows (ffnExpertsComposed); a backend
   * may run all networks in one go.
   */
  ffnExperts(
    y: Float32Array,
    x: Float32Array,
    D: number,
    nets: readonly FfnWeights[],
    offsets: Int32Array,
    rows: Int32Array,
    weights: Float32Array,
  ): void;

  /** out[rows[i], :] += weights[i] · src[i, :] for i < rows.length, in order of i. */
  scatterAddRows(
    out: Float32Array,
    src: Float32Array,
    rows: Int32Array,
    weights: Float32Array,
    D: number,
  ): void;

  /**
   * The index of the largest element of x, the lowest one on ties; NaN never wins. -1 when
   * no element exceeds -Infinity (x empty, or all -Infinity or NaN). Greedy decoding's pick.
   */
  argmax(x: Float32Array): number;

  /**
   * Next-token picks for a batch: for each row r, a token from logits[r.row · V … + V) under
   * r's penalties, mask, temperature, top-k / top-p / min-p and draw u, plus the logprobs it
   * asks for. ref/sample.ts defines the numbers (float64, index order); every backend gives
   * the same ids and the same logprob bits. Logits are not modified.
   */
  sampleBatch(logits: Float32Array, V: number, rows: readonly SampleRow[]): SampleResult[];

  /**
   * Quantise every row of w (any stored dtype, widened to float32 exactly as the reference
   * decodeRow does) to `type` blocks, row after row into out (w.rows · rowBytes(type, w.cols)
   * bytes): the bytes of quantizeBlocks (ggml's quantize_row_<type>_ref) on each row. w.cols
   * must be a multiple of the type's block size.
   */
  quantize(out: Uint8Array, w: LinearWeight, type: BlockType): void;
}
