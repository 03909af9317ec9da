// DeepSeek-V3 (and V2): embedding → decoder layers → RMSNorm → lm_head, plus the MTP
// modules. One forward call takes a batch of sequences of different lengths, each with its
// own latent cache, flattens their new tokens into one [T, D] matrix for every projection,
// and runs attention per sequence. Which kernels run is decided by whoever builds the model.
// Training uses the same forward with a Tape (ForwardOptions.tape), then backward /
// mtpBackward, on the float32 copy forTraining() makes.

import { HEAP, Reused, Scratch } from '../tensor/scratch.ts';
import { DsError } from '../errors.ts';
import { configFromGguf, loadConfig, type DeepseekConfig } from '../io/config.ts';
import { GgufFile, isGgufPath } from '../io/gguf.ts';
import type { QuantRecipe } from '../io/gguf-recipes.ts';
import { quantizeWeightsSteps } from './quantize.ts';
import { runSteps, runStepsAsync, type Steps } from './steps.ts';
import { Checkpoint } from '../io/safetensors.ts';
import type { Kernels, RouteParams } from '../kernels/kernels.ts';
import type { TrainKernels } from '../kernels/train.ts';
import { blockBackward, blockForward, type StepContext } from './block.ts';
import { SequenceCache } from './cache.ts';
import type { AttnImpl, MlaDims, SeqSlice } from './mla.ts';
import { routeParams, type Routing } from './moe.ts';
import { mtpBackward, mtpForward, type MtpOutput } from './mtp.ts';
import { ropeFrequencies, softmaxScale } from './rope.ts';
import { embeddingBackward, linearBackward, type BackwardContext, type Tape } from './tape.ts';
import { checkUnusedTensors, gradientTree, joinKvB, loadGgufWeightsSteps, loadWeightsSteps, tensorTable, mapMatrices, widenMatrix, type ModelWeights } from './weights.ts';

export interface SeqInput {
  /** New tokens of this sequence; they take positions cache length … +len-1. */
  ids: ArrayLike<number>;
  cache: SequenceCache;
}

export interface ForwardOptions {
  attn?: AttnImpl;
  /**
   * Which rows get logits: every token, the last token of each sequence, none, or the last
   * n[i] rows of sequence i (a verify pass: one head matmul over every row that is read).
   */
  logits?: 'all' | 'last' | 'none' | readonly number[];
  onRoute?: (layer: number, r: Routing) => void;
  /** Called with the residual stream [T, D] after each layer (for debugging and tests). */
  onLayer?: (layer: number, x: Float32Array) => void;
  /**
   * Return the outputs (hidden and logits; mtp()'s logits and block) in memory the model
   * reuses: valid until its next forward() or mtp() call, and not with `tape`. For a caller
   * that reads them before the next pass, as the scheduler's steps do: on the shipped model a
   * fresh logits array every decode step had the garbage collector run a full collection
   * every few hundred steps, 7% of decode time.
   */
  reuse?: boolean;
  /**
   * Training: record what backward needs. Every sequence must start at position 0 (fresh
   * caches), and the model should come from forTraining().
   */
  tape?: Tape;
}

export interface MtpOptions extends Omit<ForwardOptions, 'logits'> {
  logits?: 'all' | 'last' | 'none';
  module?: number;
  vocab?: number;
}

export interface ForwardResult {
  /** [T, D] final hidden states after model.norm (the MTP input). */
  hidden: Float32Array;
  /** [rows, vocab]: T rows for 'all', one per sequence for 'last', sequence by sequence for n[]. */
  logits: Float32Array;
  seqs: SeqSlice[];
}

export interface MtpInput {
  /** The tokens t_{i+1} that follow each hidden state. */
  ids: ArrayLike<number>;
  /** [len, D] main-model hidden states h_i (after model.norm). */
  hidden: Float32Array;
  cache: SequenceCache;
}

export interface LoadOptions {
  kernels: Kernels;
  /** Load the MTP modules too (default true when the config has them). */
  mtp?: boolean;
  /**
   * Quantise every matrix at load with llama-quantize's recipe of that name (q8_0, q6_k,
   * q4_k_m), row by row from the stored format. Notes on fallbacks go to `onNote`.
   */
  quantize?: QuantRecipe;
  onNote?: (note: string) => void;
  /**
   * Progress: tensors read ('load'; instant for mapped files) and matrices quantised
   * ('quantize'), each out of `total`.
   */
  onProgress?: (stage: 'load' | 'quantize', done: number, total: number) => void;
}

/** Per-tensor progress callbacks for a load of `cfg` (counts from the name table). */
function progress(cfg: DeepseekConfig, opts: LoadOptions, mtp: boolean) {
  if (!opts.onProgress) return { onTensor: undefined, onMatrix: undefined };
  const slots = tensorTable(cfg, { mtp });
  const tensors = slots.length;
  const matrices = slots.filter((s) => s.kind === 'matrix').length;
  let t = 0;
  let m = 0;
  return {
    onTensor: () => opts.onProgress!('load', ++t, tensors),
    onMatrix: () => opts.onProgress!('quantize', Math.min(++m, matrices), matrices),
  };
}

export class DeepseekV3 {
  readonly dims: MlaDims;
  private readonly routes: (RouteParams | null)[];
  /** Whether this is a training copy (forTraining): F32 matrices, MTP embedding/head tied. */
  private training = false;
  /** The attention path forward() and mtp() take when their options name none. */
  attn: AttnImpl = 'absorb';
  /** Temporary arrays of one inference pass (forward or mtp), reused by the next. */
  private readonly scratch = new Scratch();
  /** The outputs of passes run with `reuse`, by kind. */
  private readonly outs = { hidden: new Reused(), logits: new Reused(), mtpLogits: new Reused(), block: new Reused() };

  constructor(
    readonly cfg: DeepseekConfig,
    readonly weights: ModelWeights,
    readonly K: Kernels,
  ) {
    this.dims = {
      H: cfg.num_attention_heads,
      dNope: cfg.qk_nope_head_dim,
      dRope: cfg.qk_rope_head_dim,
      dV: cfg.v_head_dim,
      C: cfg.kv_lora_rank,
      eps: cfg.rms_norm_eps,
      scale: softmaxScale(cfg),
      freqs: ropeFrequencies(cfg),
    };
    const layers = [...weights.layers, ...weights.mtp.map((m) => m.layer)];
    this.routes = layers.map((l) => (l.moe ? routeParams(cfg, l.moe.bias) : null));
  }

  /**
   * Load a Hugging Face checkpoint folder (config.json and safetensors weights) or a llama.cpp
   * `deepseek2` GGUF file (config from its metadata; no MTP module).
   */
  static load(path: string, opts: LoadOptions): DeepseekV3 {
    return runSteps(DeepseekV3.loadSteps(path, opts));
  }

  /**
   * load, letting the event loop run between tensors (and between matrices when quantising),
   * so timers and I/O keep going during a long load. When `signal` aborts, loading stops at
   * the next tensor, the files are closed, and the promise rejects with the signal's reason.
   */
  static loadAsync(path: string, opts: LoadOptions & { signal?: AbortSignal }): Promise<DeepseekV3> {
    return runStepsAsync(DeepseekV3.loadSteps(path, opts), opts.signal);
  }

  /** The work of load, pausing after every tensor read and every matrix quantised. */
  static *loadSteps(path: string, opts: LoadOptions): Steps<DeepseekV3> {
    if (isGgufPath(path)) return yield* DeepseekV3.loadGguf(path, opts);
    const dir = path;
    const cfg = loadConfig(dir);
    const ckpt = Checkpoint.open(dir, { map: opts.kernels.mapFile });
    try {
      // Mapped tensors are used in place; read ones go where the backend wants them.
      const alloc = ckpt.isMapped ? undefined : opts.kernels.weightAllocator?.();
      const mtp = (opts.mtp ?? true) && cfg.num_nextn_predict_layers > 0;
      const p = progress(cfg, opts, mtp);
      const w = yield* loadWeightsSteps(ckpt, cfg, { mtp, alloc, onTensor: p.onTensor });
      const note = checkUnusedTensors(ckpt.names(), cfg, { where: dir, dtypeOf: (n) => (ckpt.has(n) ? ckpt.entry(n).dtype : undefined) });
      if (note) opts.onNote?.(note);
      return yield* DeepseekV3.finish(cfg, w, opts, p.onMatrix);
    } finally {
      ckpt.close();
    }
  }

  private static *loadGguf(path: string, opts: LoadOptions): Steps<DeepseekV3> {
    const file = GgufFile.open(path, { map: opts.kernels.mapFile });
    try {
      const embd = file.info('token_embd.weight');
      const cfg = configFromGguf(file.metadata, (n) => file.has(n), embd.shape[0], path);
      // Mapped tensors are used in place; read ones go where the backend wants them.
      const alloc = file.isMapped ? undefined : opts.kernels.weightAllocator?.();
      const p = progress(cfg, opts, false);
      const w = yield* loadGgufWeightsSteps(file, cfg, { alloc, onTensor: p.onTensor });
      const nextn = Number(file.metadata.get('deepseek2.nextn_predict_layers') ?? 0);
      const note = checkUnusedTensors(file.header.tensors.map((t) => t.name), cfg, { where: path, gguf: { nextn } });
      if (note) opts.onNote?.(note);
      return yield* DeepseekV3.finish(cfg, w, opts, p.onMatrix);
    } finally {
      file.close();
    }
  }

  private static *finish(cfg: DeepseekConfig, w: ModelWeights, opts: LoadOptions, onMatrix?: () => void): Steps<DeepseekV3> {
    if (opts.quantize) {
      const notes: string[] = [];
      w = yield* quantizeWeightsSteps(opts.kernels, w, cfg, opts.quantize, { alloc: opts.kernels.weightAllocator?.(), notes, onMatrix });
      for (const n of notes) opts.onNote?.(n);
    }
    return new DeepseekV3(cfg, w, opts.kernels);
  }

  get hasMtp(): boolean {
    return this.weights.mtp.length > 0;
  }

  /** An empty latent cache for one sequence (main layers, then MTP modules). */
  newCache(): SequenceCache {
    const n = this.cfg.num_hidden_layers + this.weights.mtp.length;
    const c = this.cfg;
    return new SequenceCache(n, c.kv_lora_rank, c.qk_rope_head_dim, c.max_position_embeddings);
  }

  /** Flatten a batch: token ids, positions, and each sequence's slice. */
  private flatten(batch: { ids: ArrayLike<number>; cache: SequenceCache }[], layer: number) {
    const T = batch.reduce((n, b) => n + b.ids.length, 0);
    const ids = new Int32Array(T);
    const pos = new Int32Array(T);
    const seqs: SeqSlice[] = [];
    let row = 0;
    for (const [i, b] of batch.entries()) {
      const len = b.ids.length;
      if (len === 0) throw new DsError('BAD_INPUT', `sequence ${i} of the batch has no tokens`);
      const p0 = b.cache.layers[layer].length;
      if (p0 + len > this.cfg.max_position_embeddings) {
        throw new DsError(
          'CONTEXT_OVERFLOW',
          `sequence ${i}: ${p0 + len} positions exceed max_position_embeddings ` +
            `(${this.cfg.max_position_embeddings})`,
        );
      }
      for (let j = 0; j < len; j++) {
        const id = b.ids[j];
        if (!Number.isInteger(id) || id < 0 || id >= this.cfg.vocab_size) {
          throw new DsError('BAD_INPUT', `token id ${id} is outside the vocabulary [0, ${this.cfg.vocab_size})`);
        }
        ids[row + j] = id;
        pos[row + j] = p0 + j;
      }
      seqs.push({ row, len, p0 });
      row += len;
    }
    return { T, ids, pos, seqs };
  }

  /**
   * The context of one pass. At inference its temporaries come from the scratch arena,
   * which this resets: nothing a pass returns may be taken from it (outputs are fresh arrays,
   * or with `reuse` arrays of their own).
   */
  private context(T: number, pos: Int32Array, seqs: SeqSlice[], opts: ForwardOptions): StepContext {
    const impl = opts.attn ?? this.attn;
    if (opts.reuse && opts.tape) throw new DsError('BAD_INPUT', 'reuse: training keeps its outputs on the tape');
    if (!opts.tape) this.scratch.reset();
    const mem = opts.tape ? HEAP : this.scratch;
    return { K: this.K, dims: this.dims, T, pos, seqs, impl, onRoute: opts.onRoute, tape: opts.tape, mem };
  }

  /** Run the main model on the new tokens of every sequence, appending to their caches. */
  forward(batch: SeqInput[], opts: ForwardOptions = {}): ForwardResult {
    const { K, cfg, weights: w } = this;
    const D = cfg.hidden_size;
    const { T, ids, pos, seqs } = this.flatten(batch, 0);
    const mode = opts.logits ?? 'last';
    if (typeof mode !== 'string' && (mode.length !== seqs.length || seqs.some((s, i) => !(Number.isInteger(mode[i]) && mode[i] >= 0 && mode[i] <= s.len)))) {
      throw new DsError('BAD_INPUT', `logits: one row count per sequence, each 0 … its tokens (got ${JSON.stringify(mode)})`);
    }
    const ctx = this.context(T, pos, seqs, opts);

    const x = ctx.mem.f32(T * D); // the residual stream [T, D]
    K.embedding(x, w.embed_tokens, ids);
    for (let l = 0; l < w.layers.length; l++) {
      const caches = batch.map((b) => b.cache.layers[l]);
      blockForward(ctx, w.layers[l], this.routes[l], l, caches, x);
      opts.onLayer?.(l, x);
    }
    const hidden = opts.reuse ? this.outs.hidden.view(T * D) : new Float32Array(T * D);
    K.rmsNorm(hidden, x, w.norm, T, this.dims.eps);
    if (opts.tape) opts.tape.main = { ctx, ids, x, hidden };

    let rows: Float32Array;
    let nRows: number;
    if (mode === 'all') {
      rows = hidden;
      nRows = T;
    } else if (mode === 'last' || typeof mode !== 'string') {
      const take = (i: number) => (mode === 'last' ? 1 : mode[i]);
      nRows = 0;
      for (let i = 0; i < seqs.length; i++) nRows += take(i);
      rows = ctx.mem.f32(nRows * D);
      let at = 0;
      seqs.forEach((s, i) => {
        const n = take(i);
        rows.set(hidden.subarray((s.row + s.len - n) * D, (s.row + s.len) * D), at * D);
        at += n;
      });
    } else {
      nRows = 0;
      rows = hidden;
    }
    const logits = opts.reuse ? this.outs.logits.view(nRows * cfg.vocab_size) : new Float32Array(nRows * cfg.vocab_size);
    if (nRows > 0) K.matmul(logits, rows, nRows, w.lm_head);
    return { hidden, logits, seqs };
  }

  /**
   * Run MTP module `k` (default 0): row i of a sequence combines hidden[i] with ids[i] and
   * predicts the token after ids[i]. Rows take positions from the module's cache length on.
   * With `logits: 'last'`, only each sequence's last row runs the module's layer and head
   * (one row of logits and of `block` each); the other rows only fill the module's cache.
   * With `logits: 'none'`, every row only fills the cache (empty logits and block).
   * With `vocab`, they cover only token ids 0 … vocab-1 (a draft vocabulary; see
   * engine/scheduler.ts): the head's other rows are not read.
   */
  mtp(batch: MtpInput[], opts: MtpOptions = {}): MtpOutput {
    const k = opts.module ?? 0;
    const m = this.weights.mtp[k];
    if (!m) throw new DsError('BAD_INPUT', `this model has no MTP module ${k} (loaded ${this.weights.mtp.length})`);
    const index = this.cfg.num_hidden_layers + k;
    const D = this.cfg.hidden_size;
    const { T, ids, pos, seqs } = this.flatten(batch, index);
    for (const [i, b] of batch.entries()) {
      if (b.hidden.length !== b.ids.length * D) {
        throw new DsError('BAD_INPUT', `MTP input ${i}: ${b.ids.length} ids but ${b.hidden.length / D} hidden rows`);
      }
    }
    const ctx = this.context(T, pos, seqs, opts);
    // (After the arena's reset: no input is in it, since nothing a pass returns is.)
    const hidden = ctx.mem.f32(T * D);
    for (const [i, b] of batch.entries()) hidden.set(b.hidden, seqs[i].row * D);
    const caches = batch.map((b) => b.cache.layers[index]);
    const V = m.head.rows;
    const vocab = opts.vocab ?? V;
    if (!(Number.isInteger(vocab) && vocab >= 1 && vocab <= V)) {
      throw new DsError('BAD_INPUT', `MTP vocab must be an integer in 1 … ${V} (got ${opts.vocab})`);
    }
    if (opts.tape && vocab !== V) throw new DsError('BAD_INPUT', 'training runs the MTP head over the whole vocabulary');
    const mode = opts.logits === 'none' ? 'none' : opts.logits === 'last';
    const out = opts.reuse ? { logits: this.outs.mtpLogits, block: this.outs.block } : undefined;
    return mtpForward(ctx, m, this.routes[index]!, index, caches, ids, hidden, mode, vocab, out);
  }

  /**
   * The model as training sees it: every matrix widened to float32 (fp32 master weights;
   * F32 matrices and all vectors are shared with this model, not copied) and each MTP
   * module's embedding and head replaced by the main model's embed_tokens and lm_head,
   * which they are during training.
   */
  forTraining(): DeepseekV3 {
    if (this.training) return this;
    const w = joinKvB(mapMatrices(this.weights, widenMatrix), this.cfg);
    const tied = { ...w, mtp: w.mtp.map((m) => ({ ...m, embed_tokens: w.embed_tokens, head: w.lm_head })) };
    const model = new DeepseekV3(this.cfg, tied, this.K);
    model.training = true;
    return model;
  }

  /** Zeroed gradients shaped like the weights, and each one by Hugging Face name. */
  gradients(): { tree: ModelWeights; byName: Map<string, Float32Array> } {
    return gradientTree(this.cfg, this.weights);
  }

  private backwardContext(ctx: StepContext, tape: Tape, TK: TrainKernels): BackwardContext {
    return { ...ctx, onRoute: undefined, tape, TK };
  }

  /**
   * Backward of forward() as recorded on `tape`: dLogits [T, vocab] is the gradient of the
   * logits of every row (forward with logits 'all'), dHidden [T, D] an extra gradient of
   * the hidden states after model.norm (from the MTP modules), either may be null.
   * Accumulates into the gradient tree `g` (see gradients()).
   */
  backward(
    tape: Tape,
    g: ModelWeights,
    dLogits: Float32Array | null,
    dHidden: Float32Array | null,
    TK: TrainKernels,
  ): void {
    const { K, weights: w } = this;
    const s = tape.main;
    if (!s) throw new Error('backward: the tape holds no main-model forward pass');
    const ctx = this.backwardContext(s.ctx, tape, TK);
    const T = s.ctx.T;
    const D = this.cfg.hidden_size;
    const dh = dHidden ? dHidden.slice(0, T * D) : new Float32Array(T * D);
    if (dLogits) K.add(dh, linearBackward(K, g.lm_head, w.lm_head, dLogits, s.hidden, T), T * D);
    const dx = new Float32Array(T * D);
    TK.rmsNormBackward(dx, g.norm, dh, s.x, w.norm, T, this.dims.eps);
    for (let l = w.layers.length - 1; l >= 0; l--) {
      blockBackward(ctx, w.layers[l], g.layers[l], this.routes[l], l, dx);
    }
    embeddingBackward(K, g.embed_tokens, dx, s.ids);
  }

  /**
   * Backward of mtp() for module `k` as recorded on `tape`: dLogits [rows, vocab] → the
   * gradient of its input hidden states [rows, D]. Accumulates into `g`.
   */
  mtpBackward(tape: Tape, g: ModelWeights, dLogits: Float32Array, TK: TrainKernels, k = 0): Float32Array {
    const index = this.cfg.num_hidden_layers + k;
    const s = tape.mtp.get(index);
    if (!s?.ctx) throw new Error(`mtpBackward: the tape holds no pass of MTP module ${k}`);
    const ctx = this.backwardContext(s.ctx, tape, TK);
    return mtpBackward(ctx, this.weights.mtp[k], g.mtp[k], this.routes[index]!, index, dLogits);
  }
}
