// Hugging Face DeepSeek-V3 / V2 checkpoint → GGUF for llama.cpp's `deepseek2` architecture.
//
// Every name, layout and metadata key follows llama.cpp as node-llama-cpp 3.21.1 ships it
// (conversion/deepseek.py `DeepseekV2Model`, conversion/base.py `TextModel`, gguf-py/gguf/
// constants.py and tensor_mapping.py, and what src/models/deepseek2.cpp and src/llama-model.cpp
// read back). Our own code; the decisions:
//
// * MLA is stored for the absorbed path: kv_b_proj [H·(nope+v), C] is split per head into
//   attn_k_b [H, C, nope] (the key rows, transposed) and attn_v_b [H, v, C]; the KV cache then
//   holds the latent (head_count_kv 1, key_length C+rope, value_length C; key_length_mla and
//   value_length_mla are the per-head sizes).
// * Routed experts are stacked per layer into ffn_{gate,up,down}_exps [E, out, in]; the router is
//   ffn_gate_inp (always F32, as convert_hf_to_gguf forces it), the V3 selection bias is
//   exp_probs_b.bias; expert_gating_func 2 (sigmoid) or 1 (softmax); expert_weights_norm is true
//   exactly when the reference renormalises (sigmoid scoring); expert_weights_scale is
//   routed_scaling_factor; expert_group_count / expert_group_used_count carry group routing.
// * YaRN: rope.scaling.{type "yarn", factor, original_context_length, yarn_beta_fast,
//   yarn_beta_slow} and rope.scaling.yarn_log_multiplier = 0.1·mscale_all_dim (llama.cpp divides
//   the 0.1 back out: TAG_DEEPSEEK2_YARN_LOG_MUL_FIX). Written only when the reference applies
//   YaRN (max_position_embeddings > original_max_position_embeddings).
// * attention.q_lora_rank is always written (0 for V2-Lite's plain q_proj): llama.cpp decides
//   "lite" by layer count (26/27), so a small V2-Lite-style model without the key fails to load.
// * The MTP module (layers ≥ num_hidden_layers) is not exported, as convert_hf_to_gguf's
//   deepseek2 converter skips it (skip_mtp); nextn_predict_layers is not written.
// * Tensor types: 1-D tensors (norms, bias) and the router are F32; other weights as stored
//   (--type auto: F32 stays F32, BF16 stays BF16, FP8 is dequantised and rounded to BF16), or all
//   F32 / F16 / BF16 / Q8_0. FP8 weights are dequantised exactly (e4m3 · block scale in float32)
//   before encoding. Q8_0 needs rows of a multiple of 32; other rows fall back to F16, as gguf-py
//   does.
// * Tokenizer: with a tokenizer.json, tokenizer.ggml.model "gpt2", pre "deepseek-v3", tokens,
//   token_type, merges, special ids and chat template, as convert_hf_to_gguf's _set_vocab_gpt2.
//   Without one (the golden tiny models), a minimal byte-level BPE vocab of vocab_size tokens.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DsError } from '../errors.ts';
import { loadConfig, type DeepseekConfig } from './config.ts';
import { Checkpoint } from './safetensors.ts';
import { E4M3_TABLE, isBlockType, toF32, isDType, type BlockType } from '../tensor/dtypes.ts';
import { ggufExpertsName, ggufName } from './gguf-names.ts';
import { recipeType, type MatrixInfo } from './gguf-recipes.ts';
import {
  encodeTensor,
  kv,
  writeGguf,
  type GgmlTypeName,
  type GgufKV,
  type GgufTensorSpec,
} from './gguf.ts';

export type GgufOutType = 'auto' | 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q6_k' | 'q4_k_m';
export const GGUF_OUT_TYPES: readonly GgufOutType[] = ['auto', 'f32', 'f16', 'bf16', 'q8_0', 'q6_k', 'q4_k_m'];

export const ARCH = 'deepseek2';

/** llama.cpp's LlamaFileType ids for general.file_type (the plain types, then the recipes). */
const FILE_TYPE: Partial<Record<GgmlTypeName, number>> = { F32: 0, F16: 1, Q8_0: 7, BF16: 32 };
const RECIPE_FILE_TYPE: Partial<Record<GgufOutType, number>> = { q8_0: 7, q6_k: 18, q4_k_m: 15 };
/** llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE ids. */
const GATING = { softmax: 1, sigmoid: 2 } as const;
/** gguf-py TokenType. */
const TOKEN_TYPE = { NORMAL: 1, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5 } as const;

export interface ConvertGgufOptions {
  type?: GgufOutType;
  /** general.name (default: the folder's base name). */
  name?: string;
  onTensor?: (name: string, done: number, total: number) => void;
  /**
   * Quantises `rows` rows of `cols` float32 values into a block type (Kernels.quantize: the
   * native one is byte-identical to the TypeScript quantizer and 25-50x faster). Default: the
   * TypeScript quantizer.
   */
  quantize?: (x: Float32Array, type: BlockType, cols: number) => Uint8Array;
}

export interface ConvertGgufReport {
  tensors: number;
  bytes: number;
  /** The ggml type most weights were written in. */
  fileType: GgmlTypeName;
  /** What the file leaves out or approximates (MTP dropped, Q8_0 fallbacks, ...). */
  notes: string[];
}

/** One source matrix or vector, read and widened to float32 (FP8 dequantised exactly). */
interface Source {
  ckpt: Checkpoint;
  cfg: DeepseekConfig;
}

function dtypeOf(src: Source, name: string): string {
  return src.ckpt.entry(name).dtype;
}

/** float32 values of a checkpoint tensor; FP8 as fround(e4m3 · scale), the reference's dequantisation. */
export function readF32(ckpt: Checkpoint, name: string, block: readonly [number, number] = [128, 128]): Float32Array {
  const t = ckpt.read(name);
  if (t.dtype !== 'F8_E4M3') return toF32(t.dtype, t.data);
  const sName = name.replace(/\.weight$/, '.weight_scale_inv');
  if (!ckpt.has(sName)) {
    throw new DsError('MISSING_TENSOR', `${ckpt.entry(name).file}: FP8 tensor "${name}" has no "${sName}" block scales`);
  }
  const s = ckpt.read(sName);
  const scale = toF32(s.dtype, s.data);
  const [rows, cols] = t.shape;
  const [bR, bC] = block;
  const sC = Math.ceil(cols / bC);
  if (t.shape.length !== 2 || scale.length !== Math.ceil(rows / bR) * sC) {
    throw new DsError('BAD_SHAPE', `${ckpt.entry(sName).file}: "${sName}" [${s.shape}] does not tile "${name}" [${t.shape}]`);
  }
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const srow = Math.floor(i / bR) * sC;
    for (let j = 0; j < cols; j++) out[i * cols + j] = Math.fround(E4M3_TABLE[t.data[i * cols + j]] * scale[srow + Math.floor(j / bC)]);
  }
  return out;
}

/** One GGUF tensor: its spec and how to produce its bytes (whole or in chunks). */
interface PlanEntry {
  spec: GgufTensorSpec;
  produce: () => Uint8Array | Iterable<Uint8Array>;
}

/** The stored dtype a GGUF "auto" export keeps (FP8 → BF16). */
function autoType(dtype: string): GgmlTypeName {
  if (dtype === 'F32') return 'F32';
  if (dtype === 'F16') return 'F16';
  return 'BF16';
}

function matrixType(out: GgufOutType, stored: string[], m: MatrixInfo, notes: string[]): GgmlTypeName {
  let t: GgmlTypeName;
  switch (out) {
    case 'f32':
      return 'F32';
    case 'f16':
      return 'F16';
    case 'bf16':
      return 'BF16';
    case 'q8_0':
    case 'q6_k':
    case 'q4_k_m':
      return recipeType(out, m, notes);
    case 'auto': {
      const ts = new Set(stored.map(autoType));
      t = ts.size === 1 ? [...ts][0] : 'F32';
      return t;
    }
  }
}

/** Minimal GPT-2 byte-level alphabet: byte b ↦ one printable code point (bytes_to_unicode). */
export function byteToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const map: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + n++);
  }
  return map;
}

/**
 * Tokenizer metadata for a folder without tokenizer.json: byte-level BPE with `vocabSize` tokens
 * (the 256 byte symbols first, then two-symbol tokens of printable ASCII, each with the merge
 * that makes it; ids past those as unused "[PAD{i}]"), so every id has a distinct token. Only the
 * ids matter to the model.
 */
export function minimalVocab(vocabSize: number): GgufKV[] {
  const bytes = byteToUnicode();
  const printable = bytes.slice(0x21, 0x7f);
  const P = printable.length;
  const tokens: string[] = [];
  const types: number[] = [];
  const merges: string[] = [];
  for (let i = 0; i < vocabSize; i++) {
    const k = i - 256;
    if (i < 256) {
      tokens.push(bytes[i]);
      types.push(TOKEN_TYPE.NORMAL);
    } else if (k < P * P) {
      const a = printable[Math.floor(k / P)];
      const b = printable[k % P];
      tokens.push(a + b);
      types.push(TOKEN_TYPE.NORMAL);
      merges.push(`${a} ${b}`);
    } else {
      tokens.push(`[PAD${i}]`);
      types.push(TOKEN_TYPE.UNUSED);
    }
  }
  return [
    kv.str('tokenizer.ggml.model', 'gpt2'),
    kv.str('tokenizer.ggml.pre', 'deepseek-v3'),
    kv.strs('tokenizer.ggml.tokens', tokens),
    kv.i32s('tokenizer.ggml.token_type', types),
    kv.strs('tokenizer.ggml.merges', merges),
  ];
}

function looksSpecial(t: string): boolean {
  return (t.startsWith('<|') && t.endsWith('|>')) || (t.startsWith('<｜') && t.endsWith('｜>')) || t === '<pad>';
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return undefined;
}

/**
 * Tokenizer metadata from a Hugging Face tokenizer.json (+ tokenizer_config.json), the way
 * convert_hf_to_gguf's _set_vocab_gpt2 writes it: `vocabSize` tokens (missing ids as "[PAD{i}]",
 * unused), added tokens as control (special or "<｜…｜>") or user-defined, merges, the special
 * token ids, add_bos/add_eos and the chat template.
 */
export function tokenizerMetadata(dir: string, vocabSize: number, cfg?: DeepseekConfig): GgufKV[] {
  const file = join(dir, 'tokenizer.json');
  let tj: any;
  try {
    tj = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new DsError('BAD_INPUT', `${file}: cannot read tokenizer (${(e as Error).message})`);
  }
  const model = tj?.model;
  if (!model || model.type !== 'BPE' || typeof model.vocab !== 'object') {
    throw new DsError('BAD_INPUT', `${file}: expected a byte-level BPE tokenizer (model.type "BPE")`);
  }
  const byId = new Map<number, string>();
  for (const [tok, id] of Object.entries(model.vocab as Record<string, number>)) byId.set(id, tok);
  const added = new Map<number, { content: string; special: boolean }>();
  for (const a of (tj.added_tokens ?? []) as { id: number; content: string; special?: boolean }[]) {
    added.set(a.id, { content: a.content, special: Boolean(a.special) });
    byId.set(a.id, a.content);
  }
  const tokens: string[] = [];
  const types: number[] = [];
  for (let i = 0; i < vocabSize; i++) {
    const tok = byId.get(i);
    if (tok === undefined) {
      tokens.push(`[PAD${i}]`);
      types.push(TOKEN_TYPE.UNUSED);
    } else if (added.has(i)) {
      const a = added.get(i)!;
      if (a.special || looksSpecial(tok)) {
        tokens.push(tok);
        types.push(TOKEN_TYPE.CONTROL);
      } else {
        tokens.push(tok.replaceAll('\u2581', ' '));
        types.push(TOKEN_TYPE.USER_DEFINED);
      }
    } else {
      tokens.push(tok);
      types.push(TOKEN_TYPE.NORMAL);
    }
  }
  const merges = ((model.merges ?? []) as (string | [string, string])[]).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const out: GgufKV[] = [
    kv.str('tokenizer.ggml.model', 'gpt2'),
    kv.str('tokenizer.ggml.pre', 'deepseek-v3'),
    kv.strs('tokenizer.ggml.tokens', tokens),
    kv.i32s('tokenizer.ggml.token_type', types),
    kv.strs('tokenizer.ggml.merges', merges),
  ];

  let tc: Record<string, unknown> = {};
  const tcFile = join(dir, 'tokenizer_config.json');
  if (existsSync(tcFile)) {
    try {
      tc = JSON.parse(readFileSync(tcFile, 'utf8'));
    } catch (e) {
      throw new DsError('BAD_INPUT', `${tcFile}: invalid JSON (${(e as Error).message})`);
    }
  }
  const idOf = new Map<string, number>();
  for (const [id, tok] of byId) if (id < vocabSize) idOf.set(tok, id);
  const special = (key: string, fallback: number | null | undefined) => {
    const c = tokenContent(tc[`${key}_token`]);
    const id = c !== undefined ? idOf.get(c) : fallback ?? undefined;
    if (id !== undefined && id !== null && id >= 0 && id < vocabSize) out.push(kv.u32(`tokenizer.ggml.${key}_token_id`, id));
  };
  special('bos', cfg?.bos_token_id);
  const eos = cfg?.eos_token_id;
  special('eos', Array.isArray(eos) ? eos[0] : eos);
  special('unk', undefined);
  special('pad', undefined);
  if (typeof tc.add_bos_token === 'boolean') out.push(kv.bool('tokenizer.ggml.add_bos_token', tc.add_bos_token));
  if (typeof tc.add_eos_token === 'boolean') out.push(kv.bool('tokenizer.ggml.add_eos_token', tc.add_eos_token));
  let template = typeof tc.chat_template === 'string' ? tc.chat_template : undefined;
  const jinja = join(dir, 'chat_template.jinja');
  if (template === undefined && existsSync(jinja)) template = readFileSync(jinja, 'utf8');
  if (template !== undefined) out.push(kv.str('tokenizer.chat_template', template));
  return out;
}

/** The deepseek2 hyper-parameters, as llama.cpp's loader reads them. */
export function modelMetadata(cfg: DeepseekConfig, notes: string[]): GgufKV[] {
  const a = (k: string) => `${ARCH}.${k}`;
  const m: GgufKV[] = [
    kv.u32(a('block_count'), cfg.num_hidden_layers),
    kv.u32(a('context_length'), cfg.max_position_embeddings),
    kv.u32(a('embedding_length'), cfg.hidden_size),
    kv.u32(a('feed_forward_length'), cfg.intermediate_size),
    kv.u32(a('attention.head_count'), cfg.num_attention_heads),
    // MLA runs as MQA over the latent: one KV "head" of kv_lora + rope for keys, kv_lora for values.
    kv.u32(a('attention.head_count_kv'), 1),
    kv.f32(a('rope.freq_base'), cfg.rope_theta),
    kv.f32(a('attention.layer_norm_rms_epsilon'), cfg.rms_norm_eps),
    kv.u32(a('expert_count'), cfg.n_routed_experts),
    kv.u32(a('expert_used_count'), cfg.num_experts_per_tok),
  ];
  // llama.cpp asserts 0 < used < groups when groups > 1; keeping every group is no grouping.
  if (cfg.n_group > 1 && cfg.topk_group < cfg.n_group) {
    m.push(kv.u32(a('expert_group_count'), cfg.n_group), kv.u32(a('expert_group_used_count'), cfg.topk_group));
    if (cfg.topk_method !== 'noaux_tc') {
      notes.push(
        `group-limited routing without the selection bias (${cfg.topk_method}): the reference scores a group by its ` +
          'largest affinity, llama.cpp by the sum of its two largest; expert choices may differ',
      );
    }
  }
  m.push(
    kv.u32(a('expert_gating_func'), GATING[cfg.scoring_func]),
    kv.u32(a('leading_dense_block_count'), cfg.first_k_dense_replace),
    kv.u32(a('vocab_size'), cfg.vocab_size),
    kv.u32(a('attention.q_lora_rank'), cfg.q_lora_rank),
    kv.u32(a('attention.kv_lora_rank'), cfg.kv_lora_rank),
    kv.u32(a('attention.key_length'), cfg.kv_lora_rank + cfg.qk_rope_head_dim),
    kv.u32(a('attention.value_length'), cfg.kv_lora_rank),
    kv.u32(a('attention.key_length_mla'), cfg.qk_nope_head_dim + cfg.qk_rope_head_dim),
    kv.u32(a('attention.value_length_mla'), cfg.v_head_dim),
    kv.u32(a('expert_feed_forward_length'), cfg.moe_intermediate_size),
    kv.u32(a('expert_shared_count'), cfg.n_shared_experts),
    kv.f32(a('expert_weights_scale'), cfg.routed_scaling_factor),
  );
  // The reference renormalises the chosen weights exactly when scoring is sigmoid.
  if (cfg.scoring_func === 'sigmoid') m.push(kv.bool(a('expert_weights_norm'), true));
  m.push(kv.u32(a('rope.dimension_count'), cfg.qk_rope_head_dim));
  const rs = cfg.rope_scaling;
  if (rs && cfg.max_position_embeddings > rs.original_max_position_embeddings) {
    m.push(
      kv.str(a('rope.scaling.type'), 'yarn'),
      kv.f32(a('rope.scaling.factor'), rs.factor),
      kv.u32(a('rope.scaling.original_context_length'), rs.original_max_position_embeddings),
      kv.f32(a('rope.scaling.yarn_beta_fast'), rs.beta_fast),
      kv.f32(a('rope.scaling.yarn_beta_slow'), rs.beta_slow),
      kv.f32(a('rope.scaling.yarn_log_multiplier'), 0.1 * rs.mscale_all_dim),
    );
    // rope_scaling.mscale needs no key: llama.cpp's deepseek2 cancels it (llama-context.cpp sets the
    // cos/sin factor to 1) and scales the scores by (0.1·mscale_all_dim·ln(factor) + 1)², as the
    // reference does.
  }
  return m;
}

/**
 * Convert the checkpoint folder `srcDir` (config.json + safetensors, F32/BF16/FP8) into one GGUF
 * file for llama.cpp's deepseek2 architecture. Streams one tensor (one stacked expert tensor,
 * expert by expert) at a time.
 */
export function convertToGguf(srcDir: string, outFile: string, opts: ConvertGgufOptions = {}): ConvertGgufReport {
  const out = opts.type ?? 'auto';
  if (!GGUF_OUT_TYPES.includes(out)) throw new DsError('BAD_INPUT', `unknown GGUF type "${out}" (${GGUF_OUT_TYPES.join(', ')})`);
  const cfg = loadConfig(srcDir);
  if (existsSync(outFile) && statSync(outFile).isDirectory()) throw new DsError('BAD_INPUT', `${outFile}: is a folder`);
  if (cfg.moe_layer_freq !== 1) {
    throw new DsError('BAD_CONFIG', `moe_layer_freq ${cfg.moe_layer_freq}: llama.cpp's deepseek2 has every layer after the dense ones MoE`);
  }
  if (cfg.n_shared_experts === 0 && cfg.first_k_dense_replace < cfg.num_hidden_layers) {
    throw new DsError('BAD_CONFIG', `n_shared_experts 0: llama.cpp's deepseek2 requires the shared expert tensors`);
  }
  const block = cfg.quantization_config?.weight_block_size ?? [128, 128];
  const notes: string[] = [];
  const ckpt = Checkpoint.open(srcDir);
  try {
    const src: Source = { ckpt, cfg };
    const plan: PlanEntry[] = [];
    const f32 = (name: string) => readF32(ckpt, name, block);
    const check = (name: string, shape: number[]) => {
      const e = ckpt.entry(name);
      if (e.shape.length !== shape.length || e.shape.some((v, i) => v !== shape[i])) {
        throw new DsError('BAD_SHAPE', `${e.file}: tensor "${name}" has shape [${e.shape}], the config implies [${shape}]`);
      }
      if (!isDType(e.dtype)) throw new DsError('BAD_DTYPE', `${e.file}: tensor "${name}" has dtype ${e.dtype}`);
    };
    const tied = !(ckpt.has('lm_head.weight') || !cfg.tie_word_embeddings);
    const encode = (x: Float32Array, type: GgmlTypeName, cols: number) =>
      opts.quantize && isBlockType(type) ? opts.quantize(x, type, cols) : encodeTensor(x, type);
    const info = (name: string, shape: number[]): MatrixInfo => ({ name, shape, layers: cfg.num_hidden_layers, experts: cfg.n_routed_experts, tied });
    const vector = (hf: string, n: number) => {
      check(hf, [n]);
      plan.push({ spec: { name: ggufName(hf), shape: [n], type: 'F32' }, produce: () => encode(f32(hf), 'F32', n) });
    };
    const matrix = (hf: string, rows: number, cols: number, forceF32 = false) => {
      check(hf, [rows, cols]);
      const gguf = ggufName(hf);
      const stored = dtypeOf(src, hf);
      const type = forceF32 ? 'F32' : matrixType(out, [stored], info(gguf, [rows, cols]), notes);
      const raw = stored === type && (type === 'F32' || type === 'BF16' || type === 'F16');
      plan.push({
        spec: { name: gguf, shape: [rows, cols], type },
        produce: () => (raw ? ckpt.read(hf).data : encode(f32(hf), type, cols)),
      });
    };

    const D = cfg.hidden_size;
    const V = cfg.vocab_size;
    const H = cfg.num_attention_heads;
    const nope = cfg.qk_nope_head_dim;
    const dv = cfg.v_head_dim;
    const C = cfg.kv_lora_rank;
    const dQk = nope + cfg.qk_rope_head_dim;

    matrix('model.embed_tokens.weight', V, D);
    for (let i = 0; i < cfg.num_hidden_layers; i++) {
      const p = `model.layers.${i}`;
      vector(`${p}.input_layernorm.weight`, D);
      if (cfg.q_lora_rank > 0) {
        matrix(`${p}.self_attn.q_a_proj.weight`, cfg.q_lora_rank, D);
        vector(`${p}.self_attn.q_a_layernorm.weight`, cfg.q_lora_rank);
        matrix(`${p}.self_attn.q_b_proj.weight`, H * dQk, cfg.q_lora_rank);
      } else {
        matrix(`${p}.self_attn.q_proj.weight`, H * dQk, D);
      }
      matrix(`${p}.self_attn.kv_a_proj_with_mqa.weight`, C + cfg.qk_rope_head_dim, D);
      vector(`${p}.self_attn.kv_a_layernorm.weight`, C);

      // kv_b_proj [H·(nope+v), C], per head the key rows then the value rows.
      const kvb = `${p}.self_attn.kv_b_proj.weight`;
      check(kvb, [H * (nope + dv), C]);
      const kbName = ggufName(`${p}.self_attn.k_b_proj.weight`);
      const kvbType = matrixType(out, [dtypeOf(src, kvb)], info(kbName, [H, C, nope]), notes);
      plan.push({
        spec: { name: kbName, shape: [H, C, nope], type: kvbType },
        produce: () => {
          const w = f32(kvb);
          const kb = new Float32Array(H * C * nope);
          for (let h = 0; h < H; h++) {
            for (let n = 0; n < nope; n++) {
              const row = (h * (nope + dv) + n) * C;
              for (let c = 0; c < C; c++) kb[(h * C + c) * nope + n] = w[row + c];
            }
          }
          return encode(kb, kvbType, nope);
        },
      });
      const vbName = ggufName(`${p}.self_attn.v_b_proj.weight`);
      const vbType = matrixType(out, [dtypeOf(src, kvb)], info(vbName, [H, dv, C]), notes);
      plan.push({
        spec: { name: vbName, shape: [H, dv, C], type: vbType },
        produce: () => {
          const w = f32(kvb);
          const vb = new Float32Array(H * dv * C);
          for (let h = 0; h < H; h++) vb.set(w.subarray((h * (nope + dv) + nope) * C, (h * (nope + dv) + nope + dv) * C), h * dv * C);
          return encode(vb, vbType, C);
        },
      });
      matrix(`${p}.self_attn.o_proj.weight`, D, H * dv);
      vector(`${p}.post_attention_layernorm.weight`, D);

      if (i < cfg.first_k_dense_replace) {
        const I = cfg.intermediate_size;
        matrix(`${p}.mlp.gate_proj.weight`, I, D);
        matrix(`${p}.mlp.down_proj.weight`, D, I);
        matrix(`${p}.mlp.up_proj.weight`, I, D);
      } else {
        const E = cfg.n_routed_experts;
        const F = cfg.moe_intermediate_size;
        matrix(`${p}.mlp.gate.weight`, E, D, true);
        if (cfg.topk_method === 'noaux_tc') vector(`${p}.mlp.gate.e_score_correction_bias`, E);
        for (const [proj, rows, cols] of [
          ['gate_proj', F, D],
          ['down_proj', D, F],
          ['up_proj', F, D],
        ] as const) {
          const gguf = ggufExpertsName(i, proj);
          const names = Array.from({ length: E }, (_, e) => `${p}.mlp.experts.${e}.${proj}.weight`);
          for (const n of names) check(n, [rows, cols]);
          const type = matrixType(out, names.map((n) => dtypeOf(src, n)), info(gguf, [E, rows, cols]), notes);
          plan.push({
            spec: { name: gguf, shape: [E, rows, cols], type },
            produce: function* () {
              for (const n of names) {
                yield dtypeOf(src, n) === type ? ckpt.read(n).data : encode(f32(n), type, cols);
              }
            },
          });
        }
        const S = cfg.n_shared_experts * F;
        matrix(`${p}.mlp.shared_experts.gate_proj.weight`, S, D);
        matrix(`${p}.mlp.shared_experts.down_proj.weight`, D, S);
        matrix(`${p}.mlp.shared_experts.up_proj.weight`, S, D);
      }
    }
    vector('model.norm.weight', D);
    if (!tied) matrix('lm_head.weight', V, D);
    if (cfg.num_nextn_predict_layers > 0) {
      notes.push(
        `${cfg.num_nextn_predict_layers} MTP module(s) (layer ${cfg.num_hidden_layers}…) not exported: ` +
          "convert_hf_to_gguf's deepseek2 converter skips them (skip_mtp)",
      );
    }

    // general.file_type: the type most weight bytes are in.
    const byType = new Map<GgmlTypeName, number>();
    for (const e of plan) {
      if (e.spec.shape.length < 2 || e.spec.name.endsWith('ffn_gate_inp.weight')) continue;
      const n = e.spec.shape.reduce((x, y) => x * y, 1);
      byType.set(e.spec.type, (byType.get(e.spec.type) ?? 0) + n);
    }
    const fileType = [...byType.entries()].sort((x, y) => y[1] - x[1])[0]?.[0] ?? 'F32';
    const name = opts.name ?? srcDir.replace(/[\\/]+$/, '').split(/[\\/]/).pop() ?? 'model';

    const metadata: GgufKV[] = [
      kv.str('general.architecture', ARCH),
      kv.str('general.type', 'model'),
      kv.str('general.name', name),
      ...modelMetadata(cfg, notes),
      kv.u32('general.file_type', RECIPE_FILE_TYPE[out] ?? FILE_TYPE[fileType] ?? 0),
      kv.u32('general.quantization_version', 2),
      ...(existsSync(join(srcDir, 'tokenizer.json')) ? tokenizerMetadata(srcDir, V, cfg) : minimalVocab(V)),
    ];

    let done = 0;
    const byName = new Map(plan.map((e) => [e.spec.name, e]));
    writeGguf(
      outFile,
      metadata,
      plan.map((e) => e.spec),
      (n) => {
        const r = byName.get(n)!.produce();
        opts.onTensor?.(n, ++done, plan.length);
        return r;
      },
    );
    return { tensors: plan.length, bytes: statSync(outFile).size, fileType, notes };
  } finally {
    ckpt.close();
  }
}
