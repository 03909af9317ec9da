// The checkpoint name table of DeepSeek-V3/V2 (Hugging Face spelling) and the loader that
// turns raw tensors into model weights. Every tensor's expected shape is derived from the
// config and checked on load, so a mismatched checkpoint fails here with the tensor named,
// not later inside a kernel. Matrices stay in their stored dtype (zero-copy views on the
// bytes io read); only 1-D vectors (norms, router bias) are widened to float32.

import type { DeepseekConfig } from '../io/config.ts';
import type { Allocator, Checkpoint, RawTensor } from '../io/safetensors.ts';
import { DsError } from '../errors.ts';
import { isDType, toF32, type WeightDType } from '../tensor/dtypes.ts';
import type { GgufFile } from '../io/gguf.ts';
import { ggufLocation } from '../io/gguf-names.ts';
import type { LinearWeight } from '../tensor/weight.ts';
import { decodeRow } from '../kernels/ref/index.ts';
import { runSteps, type Steps } from './steps.ts';

export interface AttnWeights {
  /** q_lora_rank > 0: q = q_b_proj(q_a_layernorm(q_a_proj(x))); otherwise q = q_proj(x). */
  q_a_proj: LinearWeight | null;
  q_a_layernorm: Float32Array | null;
  q_b_proj: LinearWeight | null;
  q_proj: LinearWeight | null;
  /** [C + R, D]: the KV latent, then the shared RoPE key. */
  kv_a_proj_with_mqa: LinearWeight;
  kv_a_layernorm: Float32Array;
  /**
   * [H · (dNope + dV), C]: per head, the key up-projection rows then the value rows. Null when
   * the checkpoint holds it split (llama.cpp's GGUF layout for the absorbed path), as
   * k_b_proj [H · C, dNope] (each head's key rows, transposed) and v_b_proj [H · dV, C].
   */
  kv_b_proj: LinearWeight | null;
  k_b_proj: LinearWeight | null;
  v_b_proj: LinearWeight | null;
  o_proj: LinearWeight;
}

export interface MlpWeights {
  gate_proj: LinearWeight;
  up_proj: LinearWeight;
  down_proj: LinearWeight;
}

export interface MoeWeights {
  /** Router [E, D]. */
  gate: LinearWeight;
  /** e_score_correction_bias [E] (noaux_tc), used for selection only. */
  bias: Float32Array | null;
  experts: MlpWeights[];
  shared: MlpWeights | null;
}

export interface LayerWeights {
  input_layernorm: Float32Array;
  post_attention_layernorm: Float32Array;
  self_attn: AttnWeights;
  /** Exactly one of mlp (dense layers) and moe is set. */
  mlp: MlpWeights | null;
  moe: MoeWeights | null;
}

export interface MtpWeights {
  embed_tokens: LinearWeight;
  enorm: Float32Array;
  hnorm: Float32Array;
  /** [D, 2D]: columns 0…D-1 take the normed embedding, D…2D-1 the normed hidden state. */
  eh_proj: LinearWeight;
  layer: LayerWeights;
  norm: Float32Array;
  head: LinearWeight;
}

export interface ModelWeights {
  embed_tokens: LinearWeight;
  layers: LayerWeights[];
  norm: Float32Array;
  lm_head: LinearWeight;
  mtp: MtpWeights[];
}

/** Whether decoder layer `i` uses DeepSeekMoE (else a dense SwiGLU MLP). */
export function isMoeLayer(cfg: DeepseekConfig, i: number): boolean {
  return i >= cfg.first_k_dense_replace && i % cfg.moe_layer_freq === 0;
}

const MATRIX_DTYPES = new Set(['F32', 'BF16', 'F16', 'F8_E4M3']);

/** Where the walker below gets tensors from: a checkpoint, or a recorder of names. */
interface TensorSource {
  has(name: string): boolean;
  linear(name: string, rows: number, cols: number): LinearWeight;
  vector(name: string, shape: number[]): Float32Array;
}

class CheckpointSource implements TensorSource {
  constructor(
    readonly ckpt: Checkpoint,
    readonly cfg: DeepseekConfig,
    /** Where weight matrices are read into (vectors are widened to fresh f32 arrays). */
    readonly alloc?: Allocator,
  ) {}

  has(name: string): boolean {
    return this.ckpt.has(name);
  }

  private read(name: string, shape: number[], alloc?: Allocator): RawTensor {
    const e = this.ckpt.entry(name);
    if (e.shape.length !== shape.length || e.shape.some((v, i) => v !== shape[i])) {
      throw new DsError(
        'BAD_SHAPE',
        `${e.file}: tensor "${name}" has shape [${e.shape}], the config implies [${shape}]`,
      );
    }
    return this.ckpt.read(name, alloc);
  }

  linear(name: string, rows: number, cols: number): LinearWeight {
    const e = this.ckpt.entry(name);
    if (!MATRIX_DTYPES.has(e.dtype) || !isDType(e.dtype)) {
      throw new DsError('BAD_DTYPE', `${e.file}: tensor "${name}" has dtype ${e.dtype}, not a weight dtype`);
    }
    const t = this.read(name, [rows, cols], this.alloc);
    const bytes = t.data;
    // Read matrices were just copied into memory, so scanning them costs little; mapped ones
    // are scanned only when small (the rest of a mapped file is not touched at load).
    if (!this.ckpt.isMapped || bytes.byteLength <= SCAN_MAPPED_BYTES) finiteOrThrow(t.dtype, bytes, name, e.file);
    switch (t.dtype) {
      case 'F32':
      case 'BF16':
      case 'F16':
        return matrixOf(t.dtype, rows, cols, bytes);
      case 'F8_E4M3': {
        const block = this.cfg.quantization_config?.weight_block_size ?? [128, 128];
        const sName = scaleName(name);
        if (!this.ckpt.has(sName)) {
          throw new DsError('MISSING_TENSOR', `${e.file}: FP8 tensor "${name}" has no "${sName}" block scales`);
        }
        const sShape = [Math.ceil(rows / block[0]), Math.ceil(cols / block[1])];
        const scale = this.vector(sName, sShape);
        return { dtype: 'F8_E4M3', rows, cols, data: bytes, scale, block: [block[0], block[1]] };
      }
    }
  }

  vector(name: string, shape: number[]): Float32Array {
    const e = this.ckpt.entry(name);
    if (!isDType(e.dtype) || e.dtype === 'F8_E4M3') {
      throw new DsError('BAD_DTYPE', `${e.file}: tensor "${name}" has dtype ${e.dtype}, expected a float dtype`);
    }
    const t = this.read(name, shape);
    const v = toF32(t.dtype, t.data);
    finiteOrThrow('F32', new Uint8Array(v.buffer, v.byteOffset, v.byteLength), name, e.file);
    return v;
  }
}

/**
 * Tensors of a llama.cpp `deepseek2` GGUF file under our names (io/gguf-names.ts): stacked
 * experts are sliced per expert (a view, no copy), the split attn_k_b / attn_v_b become
 * k_b_proj / v_b_proj. Matrices stay in their stored format.
 */
class GgufSource implements TensorSource {
  /** The last stacked expert tensor read (when the file is read, not mapped). */
  private stacked: { name: string; data: Uint8Array } | null = null;

  constructor(
    readonly file: GgufFile,
    readonly cfg: DeepseekConfig,
    readonly alloc?: Allocator,
  ) {}

  has(name: string): boolean {
    const loc = ggufLocation(name);
    return loc !== null && this.file.has(loc.name);
  }

  private locate(name: string) {
    const loc = ggufLocation(name);
    if (!loc || !this.file.has(loc.name)) {
      throw new DsError('MISSING_TENSOR', `${this.file.path}: no tensor ${loc ? `"${loc.name}" ` : ''}for "${name}"`);
    }
    return loc;
  }

  linear(name: string, rows: number, cols: number): LinearWeight {
    const loc = this.locate(name);
    const info = this.file.info(loc.name);
    const dtype = this.file.dtype(loc.name);
    const shape = info.shape;
    const lead = shape.slice(0, -1).reduce((a, b) => a * b, 1);
    const want = loc.expert === undefined ? rows : this.cfg.n_routed_experts * rows;
    if (shape[shape.length - 1] !== cols || lead !== want || (loc.expert !== undefined && shape[0] !== this.cfg.n_routed_experts)) {
      const implied = loc.expert === undefined ? `[${rows}, ${cols}]` : `[${this.cfg.n_routed_experts}, ${rows}, ${cols}]`;
      throw new DsError('BAD_SHAPE', `${this.file.path}: tensor "${loc.name}" has shape [${shape}], the metadata implies ${implied}`);
    }
    let bytes: Uint8Array;
    if (loc.expert === undefined) {
      bytes = this.file.tensor(loc.name, this.alloc).data;
    } else {
      if (this.stacked?.name !== loc.name) this.stacked = { name: loc.name, data: this.file.tensor(loc.name, this.alloc).data };
      const per = this.stacked.data.byteLength / this.cfg.n_routed_experts;
      bytes = this.stacked.data.subarray(loc.expert * per, (loc.expert + 1) * per);
    }
    // As for safetensors; block-quantized types (scales inside the blocks) are not scanned.
    if (!this.file.isMapped || bytes.byteLength <= SCAN_MAPPED_BYTES) finiteOrThrow(dtype, bytes, loc.name, this.file.path);
    return matrixOf(dtype, rows, cols, bytes);
  }

  vector(name: string, shape: number[]): Float32Array {
    const loc = this.locate(name);
    const t = this.file.tensor(loc.name);
    const n = shape.reduce((a, b) => a * b, 1);
    if (t.shape.reduce((a, b) => a * b, 1) !== n) {
      throw new DsError('BAD_SHAPE', `${this.file.path}: tensor "${loc.name}" has shape [${t.shape}], the metadata implies [${shape}]`);
    }
    if (!isDType(t.dtype)) throw new DsError('BAD_DTYPE', `${this.file.path}: tensor "${loc.name}" is ${t.dtype}, expected F32, F16 or BF16`);
    const v = toF32(t.dtype, t.data, n);
    finiteOrThrow('F32', new Uint8Array(v.buffer, v.byteOffset, v.byteLength), loc.name, this.file.path);
    return v;
  }
}

/** Matrices of a mapped file up to this size are scanned for NaN/Inf at load (1 MiB). */
const SCAN_MAPPED_BYTES = 1 << 20;

/**
 * The index of the first NaN or infinite value of float data in a stored format (F32, BF16,
 * F16; F8_E4M3 has NaN codes and no infinities), or -1; other formats are not scanned (-1).
 */
export function firstNonFinite(dtype: string, bytes: Uint8Array): number {
  const aligned = (k: number) => (bytes.byteOffset % k === 0 ? bytes : bytes.slice());
  switch (dtype) {
    case 'F32': {
      const b = aligned(4);
      const u = new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
      for (let i = 0; i < u.length; i++) if ((u[i] & 0x7f800000) === 0x7f800000) return i;
      return -1;
    }
    case 'BF16':
    case 'F16': {
      const mask = dtype === 'BF16' ? 0x7f80 : 0x7c00;
      const b = aligned(2);
      const u = new Uint16Array(b.buffer, b.byteOffset, b.byteLength >>> 1);
      for (let i = 0; i < u.length; i++) if ((u[i] & mask) === mask) return i;
      return -1;
    }
    case 'F8_E4M3':
      for (let i = 0; i < bytes.length; i++) if ((bytes[i] & 0x7f) === 0x7f) return i;
      return -1;
    default:
      return -1;
  }
}

/** A model error (BAD_WEIGHTS) naming the tensor when its data hold NaN or infinite values. */
function finiteOrThrow(dtype: string, bytes: Uint8Array, name: string, file: string): void {
  const i = firstNonFinite(dtype, bytes);
  if (i >= 0) {
    throw new DsError('BAD_WEIGHTS', `${file}: tensor "${name}" holds NaN or infinite values (first at element ${i}); the checkpoint is corrupt or its training diverged`);
  }
}

/** A LinearWeight over stored bytes (typed views where the format has elements wider than a byte). */
function matrixOf(dtype: WeightDType, rows: number, cols: number, bytes: Uint8Array): LinearWeight {
  const n = rows * cols;
  switch (dtype) {
    case 'F32':
      return { dtype, rows, cols, data: bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, n) : new Float32Array(bytes.slice().buffer, 0, n) };
    case 'BF16':
    case 'F16':
      return { dtype, rows, cols, data: bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint16Array(bytes.slice().buffer, 0, n) };
    default:
      return { dtype, rows, cols, data: bytes };
  }
}

/** The FP8 block-scale tensor that goes with a weight. */
export function scaleName(weightName: string): string {
  return weightName.replace(/\.weight$/, '.weight_scale_inv');
}

/** One tensor of the checkpoint table: a matrix (quantisable) or a vector (norm, bias). */
export interface TensorSlot {
  name: string;
  shape: number[];
  kind: 'matrix' | 'vector';
}

class Recorder implements TensorSource {
  readonly slots: TensorSlot[] = [];
  constructor(readonly cfg: DeepseekConfig) {}
  /** A full checkpoint: everything but an lm_head that is tied to the embedding. */
  has(name: string): boolean {
    return !(name === 'lm_head.weight' && this.cfg.tie_word_embeddings);
  }
  linear(name: string, rows: number, cols: number): LinearWeight {
    this.slots.push({ name, shape: [rows, cols], kind: 'matrix' });
    return { dtype: 'F32', rows, cols, data: new Float32Array(0) };
  }
  vector(name: string, shape: number[]): Float32Array {
    this.slots.push({ name, shape, kind: 'vector' });
    return new Float32Array(0);
  }
}

/**
 * Builds the model's weight structure from tensor names: the one checkpoint name table. Each
 * method is a generator that yields after every tensor, so a load can pause between tensors
 * (DeepseekV3.loadAsync); run to the end at once (runSteps) it is a plain synchronous walk.
 */
class Walker {
  constructor(
    readonly src: TensorSource,
    readonly cfg: DeepseekConfig,
    /** Called after each tensor (load progress). */
    readonly onTensor: () => void = () => {},
  ) {}

  *linear(name: string, rows: number, cols: number): Steps<LinearWeight> {
    const w = this.src.linear(name, rows, cols);
    this.onTensor();
    yield;
    return w;
  }

  *vector(name: string, shape: number[]): Steps<Float32Array> {
    const v = this.src.vector(name, shape);
    this.onTensor();
    yield;
    return v;
  }

  *mlp(prefix: string, inter: number): Steps<MlpWeights> {
    const D = this.cfg.hidden_size;
    return {
      gate_proj: yield* this.linear(`${prefix}.gate_proj.weight`, inter, D),
      up_proj: yield* this.linear(`${prefix}.up_proj.weight`, inter, D),
      down_proj: yield* this.linear(`${prefix}.down_proj.weight`, D, inter),
    };
  }

  *attention(prefix: string): Steps<AttnWeights> {
    const c = this.cfg;
    const D = c.hidden_size;
    const H = c.num_attention_heads;
    const dQk = c.qk_nope_head_dim + c.qk_rope_head_dim;
    const lora = c.q_lora_rank > 0;
    const split = !this.src.has(`${prefix}.kv_b_proj.weight`) && this.src.has(`${prefix}.k_b_proj.weight`);
    return {
      q_a_proj: lora ? yield* this.linear(`${prefix}.q_a_proj.weight`, c.q_lora_rank, D) : null,
      q_a_layernorm: lora ? yield* this.vector(`${prefix}.q_a_layernorm.weight`, [c.q_lora_rank]) : null,
      q_b_proj: lora ? yield* this.linear(`${prefix}.q_b_proj.weight`, H * dQk, c.q_lora_rank) : null,
      q_proj: lora ? null : yield* this.linear(`${prefix}.q_proj.weight`, H * dQk, D),
      kv_a_proj_with_mqa: yield* this.linear(
        `${prefix}.kv_a_proj_with_mqa.weight`,
        c.kv_lora_rank + c.qk_rope_head_dim,
        D,
      ),
      kv_a_layernorm: yield* this.vector(`${prefix}.kv_a_layernorm.weight`, [c.kv_lora_rank]),
      kv_b_proj: split ? null : yield* this.linear(`${prefix}.kv_b_proj.weight`, H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
      k_b_proj: split ? yield* this.linear(`${prefix}.k_b_proj.weight`, H * c.kv_lora_rank, c.qk_nope_head_dim) : null,
      v_b_proj: split ? yield* this.linear(`${prefix}.v_b_proj.weight`, H * c.v_head_dim, c.kv_lora_rank) : null,
      o_proj: yield* this.linear(`${prefix}.o_proj.weight`, D, H * c.v_head_dim),
    };
  }

  *moe(prefix: string): Steps<MoeWeights> {
    const c = this.cfg;
    const E = c.n_routed_experts;
    const useBias = c.topk_method === 'noaux_tc';
    const gate = yield* this.linear(`${prefix}.gate.weight`, E, c.hidden_size);
    const bias = useBias ? yield* this.vector(`${prefix}.gate.e_score_correction_bias`, [E]) : null;
    const experts: MlpWeights[] = [];
    for (let e = 0; e < E; e++) experts.push(yield* this.mlp(`${prefix}.experts.${e}`, c.moe_intermediate_size));
    const shared =
      c.n_shared_experts > 0
        ? yield* this.mlp(`${prefix}.shared_experts`, c.n_shared_experts * c.moe_intermediate_size)
        : null;
    return { gate, bias, experts, shared };
  }

  *layer(i: number, moe: boolean): Steps<LayerWeights> {
    const p = `model.layers.${i}`;
    const D = this.cfg.hidden_size;
    return {
      input_layernorm: yield* this.vector(`${p}.input_layernorm.weight`, [D]),
      post_attention_layernorm: yield* this.vector(`${p}.post_attention_layernorm.weight`, [D]),
      self_attn: yield* this.attention(`${p}.self_attn`),
      mlp: moe ? null : yield* this.mlp(`${p}.mlp`, this.cfg.intermediate_size),
      moe: moe ? yield* this.moe(`${p}.mlp`) : null,
    };
  }

  /** MTP module k sits at layer index num_hidden_layers + k. */
  *mtp(k: number, main: { embed: LinearWeight; head: LinearWeight }): Steps<MtpWeights> {
    const c = this.cfg;
    const D = c.hidden_size;
    const i = c.num_hidden_layers + k;
    const p = `model.layers.${i}`;
    // The released checkpoint stores copies of the main embedding and head here; a
    // checkpoint that leaves them out shares the main ones.
    const own = (name: string, fallback: LinearWeight) =>
      this.src.has(name) ? this.linear(name, c.vocab_size, D) : none(fallback);
    return {
      embed_tokens: yield* own(`${p}.embed_tokens.weight`, main.embed),
      enorm: yield* this.vector(`${p}.enorm.weight`, [D]),
      hnorm: yield* this.vector(`${p}.hnorm.weight`, [D]),
      eh_proj: yield* this.linear(`${p}.eh_proj.weight`, D, 2 * D),
      layer: yield* this.layer(i, true),
      norm: yield* this.vector(`${p}.shared_head.norm.weight`, [D]),
      head: yield* own(`${p}.shared_head.head.weight`, main.head),
    };
  }
}

/** A result without a step (a tensor the walk shares instead of reading). */
function* none<T>(v: T): Steps<T> {
  return v;
}

/**
 * Load every weight the config calls for, pausing after every tensor (run it with runSteps or
 * runStepsAsync). MTP modules are loaded when `mtp` is true and the config has them
 * (num_nextn_predict_layers).
 */
export function loadWeightsSteps(
  ckpt: Checkpoint,
  cfg: DeepseekConfig,
  opts: { mtp?: boolean; alloc?: Allocator; onTensor?: () => void } = {},
): Steps<ModelWeights> {
  return walkSteps(new CheckpointSource(ckpt, cfg, opts.alloc), cfg, opts.mtp ?? false, opts.onTensor);
}

/** Load every weight of a deepseek2 GGUF file (which holds no MTP module), pausing after every tensor. */
export function loadGgufWeightsSteps(
  file: GgufFile,
  cfg: DeepseekConfig,
  opts: { alloc?: Allocator; onTensor?: () => void } = {},
): Steps<ModelWeights> {
  return walkSteps(new GgufSource(file, cfg, opts.alloc), cfg, false, opts.onTensor);
}

/** Every tensor a checkpoint of this config holds (FP8 scales not included), in load order. */
export function tensorTable(cfg: DeepseekConfig, opts: { mtp?: boolean } = {}): TensorSlot[] {
  const r = new Recorder(cfg);
  walk(r, cfg, opts.mtp ?? true);
  return r.slots;
}

/**
 * Gradients have the shape of the weights: a zeroed ModelWeights whose matrices are F32.
 * `byName` maps each trained tensor's Hugging Face name to its gradient, in load order.
 * Tying follows training: lm_head shares the embedding's gradient exactly when the model
 * shares the tensor, and each MTP module's embed_tokens / shared_head.head are the main
 * model's (no entries of their own). e_score_correction_bias gets no gradient (it is
 * steered by the balancing rule, not by the loss): its slot is zeros, not in byName.
 */
export function gradientTree(
  cfg: DeepseekConfig,
  w: ModelWeights,
): { tree: ModelWeights; byName: Map<string, Float32Array> } {
  const src = new ZeroSource(w.lm_head !== w.embed_tokens);
  return { tree: walk(src, cfg, w.mtp.length > 0), byName: src.byName };
}

/**
 * The float32 data of every trained tensor of a float32 model (DeepseekV3.forTraining), by
 * Hugging Face name, in the order and with the tying of gradientTree: the arrays an
 * optimizer updates in place.
 */
export function trainedTensors(cfg: DeepseekConfig, w: ModelWeights): Map<string, Float32Array> {
  const { tree, byName } = gradientTree(cfg, w);
  const nameOf = new Map([...byName].map(([n, a]) => [a, n]));
  const found = new Map<string, Float32Array>();
  // The gradient tree mirrors the weights field by field: walk both together.
  const visit = (g: unknown, x: unknown): void => {
    if (g instanceof Float32Array) {
      const name = nameOf.get(g);
      if (name) found.set(name, x as Float32Array);
    } else if (g && typeof g === 'object' && 'dtype' in g && 'data' in g) {
      const m = x as LinearWeight;
      if (m.dtype !== 'F32') throw new Error(`trainedTensors: a ${m.dtype} matrix; use forTraining()`);
      visit(g.data, m.data);
    } else if (g && typeof g === 'object') {
      for (const k of Object.keys(g)) visit((g as Record<string, unknown>)[k], (x as Record<string, unknown>)[k]);
    }
  };
  visit(tree, w);
  return new Map([...byName.keys()].map((n) => [n, found.get(n)!]));
}

class ZeroSource implements TensorSource {
  readonly byName = new Map<string, Float32Array>();
  constructor(readonly ownHead: boolean) {}
  /** Asked only about lm_head under tied embeddings and the MTP modules' embedding/head. */
  has(name: string): boolean {
    return name === 'lm_head.weight' && this.ownHead;
  }
  linear(name: string, rows: number, cols: number): LinearWeight {
    const data = new Float32Array(rows * cols);
    this.byName.set(name, data);
    return { dtype: 'F32', rows, cols, data };
  }
  vector(name: string, shape: number[]): Float32Array {
    const v = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (!name.endsWith('.e_score_correction_bias')) this.byName.set(name, v);
    return v;
  }
}

/** A matrix as float32 (itself when it already is): row by row, as the kernels widen it. */
export function widenMatrix(m: LinearWeight): LinearWeight {
  if (m.dtype === 'F32') return m;
  const data = new Float32Array(m.rows * m.cols);
  for (let r = 0; r < m.rows; r++) decodeRow(m, r, data.subarray(r * m.cols, (r + 1) * m.cols));
  return { dtype: 'F32', rows: m.rows, cols: m.cols, data };
}

/**
 * The same weights with every matrix passed through f (each distinct matrix once, so
 * shared tensors stay shared). Vectors are kept as they are.
 */
export function mapMatrices(w: ModelWeights, f: (m: LinearWeight) => LinearWeight): ModelWeights {
  const done = new Map<LinearWeight, LinearWeight>();
  const m = (x: LinearWeight) => done.get(x) ?? done.set(x, f(x)).get(x)!;
  const mlp = (x: MlpWeights): MlpWeights => ({
    gate_proj: m(x.gate_proj),
    up_proj: m(x.up_proj),
    down_proj: m(x.down_proj),
  });
  const opt = (x: LinearWeight | null) => (x ? m(x) : null);
  const layer = (l: LayerWeights): LayerWeights => ({
    ...l,
    self_attn: {
      ...l.self_attn,
      q_a_proj: opt(l.self_attn.q_a_proj),
      q_b_proj: opt(l.self_attn.q_b_proj),
      q_proj: opt(l.self_attn.q_proj),
      kv_a_proj_with_mqa: m(l.self_attn.kv_a_proj_with_mqa),
      kv_b_proj: opt(l.self_attn.kv_b_proj),
      k_b_proj: opt(l.self_attn.k_b_proj),
      v_b_proj: opt(l.self_attn.v_b_proj),
      o_proj: m(l.self_attn.o_proj),
    },
    mlp: l.mlp && mlp(l.mlp),
    moe: l.moe && {
      ...l.moe,
      gate: m(l.moe.gate),
      experts: l.moe.experts.map(mlp),
      shared: l.moe.shared && mlp(l.moe.shared),
    },
  });
  return {
    embed_tokens: m(w.embed_tokens),
    layers: w.layers.map(layer),
    norm: w.norm,
    lm_head: m(w.lm_head),
    mtp: w.mtp.map((x) => ({
      ...x,
      embed_tokens: m(x.embed_tokens),
      eh_proj: m(x.eh_proj),
      layer: layer(x.layer),
      head: m(x.head),
    })),
  };
}

function walk(src: TensorSource, cfg: DeepseekConfig, mtp: boolean, onTensor?: () => void): ModelWeights {
  return runSteps(walkSteps(src, cfg, mtp, onTensor));
}

function* walkSteps(src: TensorSource, cfg: DeepseekConfig, mtp: boolean, onTensor?: () => void): Steps<ModelWeights> {
  const L = new Walker(src, cfg, onTensor);
  const D = cfg.hidden_size;
  const embed = yield* L.linear('model.embed_tokens.weight', cfg.vocab_size, D);
  const head =
    cfg.tie_word_embeddings && !src.has('lm_head.weight')
      ? embed
      : yield* L.linear('lm_head.weight', cfg.vocab_size, D);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < cfg.num_hidden_layers; i++) layers.push(yield* L.layer(i, isMoeLayer(cfg, i)));
  const norm = yield* L.vector('model.norm.weight', [D]);
  const nMtp = mtp ? cfg.num_nextn_predict_layers : 0;
  const mtpWeights: MtpWeights[] = [];
  for (let k = 0; k < nMtp; k++) mtpWeights.push(yield* L.mtp(k, { embed, head }));
  return { embed_tokens: embed, layers, norm, lm_head: head, mtp: mtpWeights };
}

/**
 * The same float32 weights with every split kv_b (k_b_proj, v_b_proj: llama.cpp's layout)
 * joined back into kv_b_proj [H · (dNope + dV), C], exactly (a transpose and a copy), as
 * training and the naive attention path use it.
 */
export function joinKvB(w: ModelWeights, cfg: DeepseekConfig): ModelWeights {
  const H = cfg.num_attention_heads;
  const C = cfg.kv_lora_rank;
  const nope = cfg.qk_nope_head_dim;
  const dv = cfg.v_head_dim;
  const join = (l: LayerWeights): LayerWeights => {
    const a = l.self_attn;
    if (a.kv_b_proj || !a.k_b_proj || !a.v_b_proj) return l;
    const kb = widenMatrix(a.k_b_proj).data as Float32Array; // [H, C, nope]
    const vb = widenMatrix(a.v_b_proj).data as Float32Array; // [H, dv, C]
    const out = new Float32Array(H * (nope + dv) * C);
    for (let h = 0; h < H; h++) {
      const base = h * (nope + dv) * C;
      for (let n = 0; n < nope; n++) {
        for (let c = 0; c < C; c++) out[base + n * C + c] = kb[(h * C + c) * nope + n];
      }
      out.set(vb.subarray(h * dv * C, (h + 1) * dv * C), base + nope * C);
    }
    const kv_b_proj: LinearWeight = { dtype: 'F32', rows: H * (nope + dv), cols: C, data: out };
    return { ...l, self_attn: { ...a, kv_b_proj, k_b_proj: null, v_b_proj: null } };
  };
  return { ...w, layers: w.layers.map(join), mtp: w.mtp.map((m) => ({ ...m, layer: join(m.layer) })) };
}

/**
 * The stored tensors a load of `cfg` leaves unread, checked once the weights are read (so a
 * missing or misshapen tensor is reported first). A tensor the model has no place for means
 * the checkpoint and the config disagree (a config with fewer layers than the checkpoint,
 * a stray or misnamed tensor) and is an error (UNUSED_TENSOR) naming it. Tolerated:
 * the MTP layers the config declares when MTP is not loaded (silently: the released
 * layout), and extras a known format may carry, which come back as one note naming them:
 * rotary `inv_freq` buffers of older Hugging Face exports; in GGUF files llama.cpp's
 * `rope_freqs` / `attn_rot_embd`, MTP (NextN) blocks, and attn_k_b / attn_v_b beside the
 * attn_kv_b that is used. `names` are the stored names (GGUF names for a GGUF file); `dtypeOf`
 * tells FP8 weights, whose `weight_scale_inv` is used, from the others.
 */
export function checkUnusedTensors(
  names: Iterable<string>,
  cfg: DeepseekConfig,
  opts: { where: string; gguf?: { nextn: number }; dtypeOf?: (name: string) => string | undefined },
): string | null {
  const gguf = opts.gguf;
  const table = tensorTable(cfg, { mtp: !gguf }).map((s) => s.name);
  table.push('lm_head.weight'); // stored even when tied: then it is used instead of the embedding
  const L = cfg.num_hidden_layers;
  const layers = L + (gguf ? 0 : cfg.num_nextn_predict_layers);
  const stored = new Set(names);
  const known = new Set<string>();
  const add = (hf: string) => {
    if (!gguf) return void known.add(hf);
    const loc = ggufLocation(hf);
    if (loc) known.add(loc.name);
  };
  for (const n of table) add(n);
  const extras: string[] = [];
  const unused: string[] = [];
  // MLA's kv_b: stored joint (used) or split (used when the joint one is absent).
  const kvb = (i: number) => (gguf ? `blk.${i}.attn_kv_b.weight` : `model.layers.${i}.self_attn.kv_b_proj.weight`);
  const split = gguf ? /^blk\.(\d+)\.attn_[kv]_b\.weight$/ : /^model\.layers\.(\d+)\.self_attn\.[kv]_b_proj\.weight$/;
  const layerOf = gguf ? /^blk\.(\d+)\./ : /^model\.layers\.(\d+)\./;
  for (const name of stored) {
    if (known.has(name)) continue;
    if (!gguf && name.endsWith('.weight_scale_inv')) {
      const w = name.replace(/\.weight_scale_inv$/, '.weight');
      if ((known.has(w) || split.test(w)) && opts.dtypeOf?.(w) === 'F8_E4M3') continue;
    }
    const s = split.exec(name.replace(/\.weight_scale_inv$/, '.weight'));
    if (s && Number(s[1]) < layers) {
      if (stored.has(kvb(Number(s[1])))) extras.push(name);
      continue;
    }
    const layer = layerOf.exec(name);
    if (gguf && layer && Number(layer[1]) >= L && Number(layer[1]) < L + gguf.nextn) {
      extras.push(name);
      continue;
    }
    if (/\.rotary_emb\.inv_freq$/.test(name) || (gguf && (name === 'rope_freqs.weight' || /^blk\.\d+\.attn_rot_embd/.test(name)))) {
      extras.push(name);
      continue;
    }
    unused.push(name);
  }
  if (unused.length > 0) {
    const beyond = unused.map((n) => layerOf.exec(n)).filter((m) => m && Number(m[1]) >= layers);
    if (beyond.length > 0) {
      const top = Math.max(...beyond.map((m) => Number(m![1])));
      const what = gguf
        ? `block_count ${L + gguf.nextn}${gguf.nextn ? ` (${gguf.nextn} of them NextN)` : ''}`
        : `num_hidden_layers ${L} + num_nextn_predict_layers ${cfg.num_nextn_predict_layers}`;
      throw new DsError(
        'UNUSED_TENSOR',
        `${opts.where}: the checkpoint holds layer ${top} (${beyond[0]![0]}…) but the config declares ${layers} layers ` +
          `(${what}): it has fewer layers than the checkpoint`,
      );
    }
    const shown = unused.slice(0, 5).map((n) => `"${n}"`).join(', ');
    throw new DsError(
      'UNUSED_TENSOR',
      `${opts.where}: ${unused.length} tensor${unused.length > 1 ? 's' : ''} the config has no place for: ${shown}` +
        `${unused.length > 5 ? `, … (${unused.length - 5} more)` : ''}`,
    );
  }
  if (extras.length === 0) return null;
  // One line: names with their layer numbers folded, and how many of each.
  const groups = new Map<string, number>();
  for (const n of extras) {
    const g = n.replace(/^(model\.layers|blk)\.\d+\./, '$1.*.');
    groups.set(g, (groups.get(g) ?? 0) + 1);
  }
  const list = [...groups].map(([g, k]) => (k > 1 ? `${g} (×${k})` : g)).join(', ');
  return `warning: ${opts.where}: ignoring ${extras.length} tensor${extras.length > 1 ? 's' : ''} the model does not use: ${list}`;
}
