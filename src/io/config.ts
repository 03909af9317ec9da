// config.json of a Hugging Face DeepSeek-V3 / V2 checkpoint, read and validated.
// Keys are spelled exactly as in config.json (mlx-lm style), so nothing needs translating.
// This file only parses and checks; what the numbers mean lives in model/.

import { statSync } from 'node:fs';
import { join } from 'node:path';
import { DsError } from '../errors.ts';
import { readRegularText } from './files.ts';
import { isGgufPath } from './gguf.ts';

export interface RopeScaling {
  type: string;
  factor: number;
  original_max_position_embeddings: number;
  beta_fast: number;
  beta_slow: number;
  mscale: number;
  mscale_all_dim: number;
}

export interface QuantizationConfig {
  quant_method: 'fp8';
  fmt: string;
  activation_scheme: string;
  weight_block_size: [number, number];
}

export interface DeepseekConfig {
  model_type: 'deepseek_v3' | 'deepseek_v2';
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  moe_intermediate_size: number;
  num_hidden_layers: number;
  first_k_dense_replace: number;
  moe_layer_freq: number;
  num_attention_heads: number;
  n_routed_experts: number;
  n_shared_experts: number;
  num_experts_per_tok: number;
  n_group: number;
  topk_group: number;
  topk_method: 'noaux_tc' | 'greedy' | 'group_limited_greedy';
  scoring_func: 'sigmoid' | 'softmax';
  routed_scaling_factor: number;
  norm_topk_prob: boolean;
  /** 0 when config.json says null: a plain q_proj. */
  q_lora_rank: number;
  kv_lora_rank: number;
  qk_nope_head_dim: number;
  qk_rope_head_dim: number;
  v_head_dim: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScaling | null;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  /** Number of MTP modules; absent (V2) reads as 0. */
  num_nextn_predict_layers: number;
  quantization_config: QuantizationConfig | null;
  torch_dtype: string;
  bos_token_id: number | null;
  eos_token_id: number | number[] | null;
}

type Json = Record<string, unknown>;

function fail(file: string, msg: string): never {
  throw new DsError('BAD_CONFIG', `${file}: ${msg}`);
}

// Upper bounds on sizes and counts: far above any real DeepSeek model (61 layers, 256 experts,
// 128 heads, 7168 wide, a 163840-token context), low enough that no loop over layers or
// experts, and no buffer sized from the config, runs away before the checkpoint is read.
const MAX_DIM = 1 << 20;
const MAX_LAYERS = 4096;
const MAX_EXPERTS = 1 << 16;
const MAX_HEADS = 1 << 16;
const MAX_VOCAB = 1 << 22;
const MAX_CONTEXT = 1 << 26;

function int(c: Json, file: string, key: string, opts: { min?: number; max?: number; def?: number } = {}): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (opts.def !== undefined) return opts.def;
    fail(file, `missing required field "${key}"`);
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    fail(file, `field "${key}" must be an integer, got ${JSON.stringify(v)}`);
  }
  const min = opts.min ?? 1;
  if (v < min) fail(file, `field "${key}" must be >= ${min}, got ${v}`);
  if (opts.max !== undefined && v > opts.max) fail(file, `field "${key}" must be <= ${opts.max}, got ${v}`);
  return v;
}

/** A finite number; `above` (exclusive) or `atLeast` (inclusive) bound it from below. */
function num(c: Json, file: string, key: string, def?: number, range: { above?: number; atLeast?: number } = {}): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (def !== undefined) return def;
    fail(file, `missing required field "${key}"`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    fail(file, `field "${key}" must be a number, got ${JSON.stringify(v)}`);
  }
  if (range.above !== undefined && !(v > range.above)) fail(file, `field "${key}" must be > ${range.above}, got ${v}`);
  if (range.atLeast !== undefined && !(v >= range.atLeast)) fail(file, `field "${key}" must be >= ${range.atLeast}, got ${v}`);
  return v;
}

function bool(c: Json, file: string, key: string): boolean {
  const v = c[key] ?? false;
  if (typeof v !== 'boolean') fail(file, `field "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** bos_token_id / eos_token_id: absent, null, or token ids inside the vocabulary. */
function tokenIds(c: Json, file: string, key: string, vocab: number, list: boolean): number | number[] | null {
  const v = c[key];
  if (v === undefined || v === null) return null;
  const ids = list && Array.isArray(v) ? v : [v];
  for (const id of ids) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocab) {
      fail(file, `field "${key}" must be ${list ? 'token ids' : 'a token id'} in [0, vocab_size ${vocab}), got ${JSON.stringify(v)}`);
    }
  }
  return v as number | number[];
}

function oneOf<T extends string>(c: Json, file: string, key: string, allowed: T[], def?: T): T {
  const v = c[key] ?? def;
  if (v === undefined) fail(file, `missing required field "${key}"`);
  if (!allowed.includes(v as T)) {
    fail(file, `field "${key}" must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

function parseRopeScaling(v: unknown, file: string): RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object') fail(file, 'field "rope_scaling" must be an object or null');
  const r = v as Json;
  const type = String(r.type ?? r.rope_type ?? '');
  if (type !== 'yarn') fail(file, `rope_scaling type "${type}" is not supported (only "yarn")`);
  // Fields are named as rope_scaling.<field> in messages.
  const f = `${file}: rope_scaling`;
  const mscale = num(r, f, 'mscale', 1);
  return {
    type,
    factor: num(r, f, 'factor', undefined, { above: 0 }),
    original_max_position_embeddings: int(r, f, 'original_max_position_embeddings', { max: MAX_CONTEXT }),
    beta_fast: num(r, f, 'beta_fast', 32, { above: 0 }),
    beta_slow: num(r, f, 'beta_slow', 1, { above: 0 }),
    mscale,
    mscale_all_dim: num(r, f, 'mscale_all_dim', mscale),
  };
}

function parseQuant(v: unknown, file: string): QuantizationConfig | null {
  if (v === undefined || v === null) return null;
  const q = v as Json;
  if (q.quant_method !== 'fp8') {
    fail(file, `quantization_config.quant_method ${JSON.stringify(q.quant_method)} is not supported`);
  }
  if (q.fmt !== undefined && q.fmt !== 'e4m3') {
    fail(file, `quantization_config.fmt ${JSON.stringify(q.fmt)} is not supported (only e4m3)`);
  }
  const bs = q.weight_block_size;
  if (!Array.isArray(bs) || bs.length !== 2 || !bs.every((x) => Number.isInteger(x) && x > 0)) {
    fail(file, 'quantization_config.weight_block_size must be two positive integers');
  }
  return {
    quant_method: 'fp8',
    fmt: 'e4m3',
    activation_scheme: String(q.activation_scheme ?? 'dynamic'),
    weight_block_size: [bs[0], bs[1]],
  };
}

/** Validate a parsed config.json object. `file` names the source in error messages. */
export function parseConfig(raw: unknown, file = 'config.json'): DeepseekConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    fail(file, 'must hold a JSON object');
  }
  const c = raw as Json;
  const model_type = oneOf(c, file, 'model_type', ['deepseek_v3', 'deepseek_v2']);
  const n_routed_experts = int(c, file, 'n_routed_experts', { max: MAX_EXPERTS });
  const n_group = int(c, file, 'n_group', { def: 1, max: MAX_EXPERTS });
  const vocab_size = int(c, file, 'vocab_size', { max: MAX_VOCAB });
  const topk_method = oneOf(
    c,
    file,
    'topk_method',
    ['noaux_tc', 'greedy', 'group_limited_greedy'],
    model_type === 'deepseek_v3' ? 'noaux_tc' : 'greedy',
  );
  const cfg: DeepseekConfig = {
    model_type,
    vocab_size,
    hidden_size: int(c, file, 'hidden_size', { max: MAX_DIM }),
    intermediate_size: int(c, file, 'intermediate_size', { max: MAX_DIM }),
    moe_intermediate_size: int(c, file, 'moe_intermediate_size', { max: MAX_DIM }),
    num_hidden_layers: int(c, file, 'num_hidden_layers', { max: MAX_LAYERS }),
    first_k_dense_replace: int(c, file, 'first_k_dense_replace', { min: 0, def: 0, max: MAX_LAYERS }),
    moe_layer_freq: int(c, file, 'moe_layer_freq', { def: 1, max: MAX_LAYERS }),
    num_attention_heads: int(c, file, 'num_attention_heads', { max: MAX_HEADS }),
    n_routed_experts,
    n_shared_experts: int(c, file, 'n_shared_experts', { min: 0, def: 0, max: MAX_EXPERTS }),
    num_experts_per_tok: int(c, file, 'num_experts_per_tok', { max: MAX_EXPERTS }),
    n_group,
    topk_group: int(c, file, 'topk_group', { def: 1, max: MAX_EXPERTS }),
    topk_method,
    scoring_func: oneOf(c, file, 'scoring_func', ['sigmoid', 'softmax'], 'softmax'),
    routed_scaling_factor: num(c, file, 'routed_scaling_factor', 1, { above: 0 }),
    norm_topk_prob: bool(c, file, 'norm_topk_prob'),
    q_lora_rank: c.q_lora_rank === null ? 0 : int(c, file, 'q_lora_rank', { min: 0, def: 0, max: MAX_DIM }),
    kv_lora_rank: int(c, file, 'kv_lora_rank', { max: MAX_DIM }),
    qk_nope_head_dim: int(c, file, 'qk_nope_head_dim', { max: MAX_DIM }),
    qk_rope_head_dim: int(c, file, 'qk_rope_head_dim', { max: MAX_DIM }),
    v_head_dim: int(c, file, 'v_head_dim', { max: MAX_DIM }),
    rms_norm_eps: num(c, file, 'rms_norm_eps', 1e-6, { atLeast: 0 }),
    rope_theta: num(c, file, 'rope_theta', 10000, { above: 0 }),
    rope_scaling: parseRopeScaling(c.rope_scaling, file),
    max_position_embeddings: int(c, file, 'max_position_embeddings', { max: MAX_CONTEXT }),
    tie_word_embeddings: bool(c, file, 'tie_word_embeddings'),
    num_nextn_predict_layers: int(c, file, 'num_nextn_predict_layers', { min: 0, def: 0, max: MAX_LAYERS }),
    quantization_config: parseQuant(c.quantization_config, file),
    torch_dtype: String(c.torch_dtype ?? 'bfloat16'),
    bos_token_id: tokenIds(c, file, 'bos_token_id', vocab_size, false) as number | null,
    eos_token_id: tokenIds(c, file, 'eos_token_id', vocab_size, true),
  };
  if (cfg.qk_rope_head_dim % 2 !== 0) fail(file, `qk_rope_head_dim must be even, got ${cfg.qk_rope_head_dim}`);
  if (cfg.rope_scaling && cfg.rope_theta <= 1) {
    fail(file, `rope_theta must be > 1 with YaRN rope_scaling (its correction range divides by log(rope_theta)), got ${cfg.rope_theta}`);
  }
  if (cfg.n_routed_experts % cfg.n_group !== 0) {
    fail(file, `n_group (${cfg.n_group}) must divide n_routed_experts (${cfg.n_routed_experts})`);
  }
  if (cfg.topk_group > cfg.n_group) fail(file, `topk_group (${cfg.topk_group}) must not exceed n_group (${cfg.n_group})`);
  if (cfg.num_experts_per_tok > cfg.n_routed_experts) {
    fail(file, `num_experts_per_tok (${cfg.num_experts_per_tok}) must not exceed n_routed_experts (${cfg.n_routed_experts})`);
  }
  const perGroup = cfg.n_routed_experts / cfg.n_group;
  if (cfg.num_experts_per_tok > cfg.topk_group * perGroup) {
    fail(file, 'num_experts_per_tok exceeds the experts left by topk_group');
  }
  if (cfg.n_group > 1 && topk_method === 'noaux_tc' && perGroup < 2) {
    fail(file, 'noaux_tc group scores need at least 2 experts per group');
  }
  if (cfg.first_k_dense_replace > cfg.num_hidden_layers) {
    fail(file, `first_k_dense_replace (${cfg.first_k_dense_replace}) exceeds num_hidden_layers (${cfg.num_hidden_layers})`);
  }
  return cfg;
}

/**
 * What a model path names: a checkpoint folder or a GGUF file. Anything else (nothing there,
 * another kind of file, a FIFO) is a DsError saying so.
 */
export function modelPathKind(path: string): 'dir' | 'gguf' {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new DsError('MISSING_FILE', `${path}: no such model folder or GGUF file`);
  }
  if (st.isDirectory()) return 'dir';
  if (st.isFile() && isGgufPath(path)) return 'gguf';
  const what = st.isFile() ? 'a file but not a GGUF file (no GGUF magic)' : 'neither a folder nor a regular file';
  throw new DsError('BAD_INPUT', `${path}: is ${what}; a model is a checkpoint folder (config.json, *.safetensors) or a .gguf file`);
}

/** `dir/config.json` parsed as JSON but not validated, with its path for messages. */
export function readConfigJson(dir: string): { raw: unknown; file: string } {
  modelPathKind(dir);
  const file = join(dir, 'config.json');
  const text = readRegularText(file, (why, missing) => {
    throw new DsError(missing ? 'MISSING_FILE' : 'BAD_CONFIG', missing ? `${file}: not found` : `${file}: ${why}`);
  });
  try {
    return { raw: JSON.parse(text), file };
  } catch (e) {
    throw new DsError('BAD_CONFIG', `${file}: invalid JSON (${(e as Error).message})`);
  }
}

/** Read and validate `dir/config.json`. */
export function loadConfig(dir: string): DeepseekConfig {
  const { raw, file } = readConfigJson(dir);
  return parseConfig(raw, file);
}

/** The config.json object for a config, in Hugging Face's spelling (q_lora_rank 0 → null). */
export function configToJson(cfg: DeepseekConfig): Record<string, unknown> {
  const arch = cfg.model_type === 'deepseek_v3' ? 'DeepseekV3ForCausalLM' : 'DeepseekV2ForCausalLM';
  const out: Record<string, unknown> = { architectures: [arch], ...cfg };
  out.q_lora_rank = cfg.q_lora_rank === 0 ? null : cfg.q_lora_rank;
  out.num_key_value_heads = cfg.num_attention_heads;
  out.hidden_act = 'silu';
  out.attention_bias = false;
  if (cfg.quantization_config === null) delete out.quantization_config;
  if (cfg.bos_token_id === null) delete out.bos_token_id;
  if (cfg.eos_token_id === null) delete out.eos_token_id;
  return out;
}

/**
 * GGUF stores floats as float32: 1e-6 comes back as 9.99999997e-7. The shortest decimal that
 * rounds to the same float32 is the number the writer meant.
 */
function shortestF32(v: number): number {
  for (let p = 1; p <= 9; p++) {
    const d = Number(v.toPrecision(p));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

/**
 * The config of a llama.cpp `deepseek2` GGUF file, from its metadata (the keys
 * convert_hf_to_gguf writes, and `dsv3 convert --to gguf`), as the config.json it came from
 * would say it, validated like one. `has` tells which tensors the file holds (the router
 * bias and a separate output matrix have no metadata key of their own); `vocab` is the
 * embedding's row count.
 */
export function configFromGguf(meta: ReadonlyMap<string, unknown>, has: (tensor: string) => boolean, vocab: number, file: string): DeepseekConfig {
  const arch = meta.get('general.architecture');
  if (arch !== 'deepseek2') {
    throw new DsError('BAD_CONFIG', `${file}: general.architecture is ${JSON.stringify(arch)}, dsv3 runs "deepseek2" (DeepSeek-V2/V3/R1)`);
  }
  const get = (k: string) => {
    const v = meta.get(`deepseek2.${k}`);
    return typeof v === 'bigint' ? Number(v) : v;
  };
  const n = (k: string, def?: number): number | undefined => {
    const v = get(k);
    if (v === undefined) return def;
    if (typeof v !== 'number') throw new DsError('BAD_CONFIG', `${file}: deepseek2.${k} must be a number, got ${JSON.stringify(String(v))}`);
    return Number.isInteger(v) ? v : shortestF32(v);
  };
  const req = (k: string): number => {
    const v = n(k);
    if (v === undefined) throw new DsError('BAD_CONFIG', `${file}: missing metadata deepseek2.${k}`);
    return v;
  };
  // Blocks past num_hidden_layers are MTP (NextN) blocks, which dsv3 does not run from GGUF
  // (the loader names them when it skips them).
  const nextn = n('nextn_predict_layers', 0) ?? 0;
  const rope = req('rope.dimension_count');
  const heads = req('attention.head_count');
  // key_length_mla / value_length_mla are the per-head sizes in files written after llama.cpp
  // moved MLA onto the latent (key_length then is kv_lora + rope); older files have them in
  // key_length / value_length.
  const keyLen = n('attention.key_length_mla') ?? req('attention.key_length');
  const valLen = n('attention.value_length_mla') ?? req('attention.value_length');
  const bias = has('blk.' + (n('leading_dense_block_count', 0) ?? 0) + '.exp_probs_b.bias');
  const gating = n('expert_gating_func');
  const scoring = gating === 2 ? 'sigmoid' : gating === undefined || gating === 1 ? 'softmax' : undefined;
  if (!scoring) throw new DsError('BAD_CONFIG', `${file}: deepseek2.expert_gating_func ${gating} is not sigmoid (2) or softmax (1)`);
  const groups = n('expert_group_count', 1)!;
  const raw: Record<string, unknown> = {
    model_type: bias || scoring === 'sigmoid' ? 'deepseek_v3' : 'deepseek_v2',
    vocab_size: vocab,
    hidden_size: req('embedding_length'),
    intermediate_size: req('feed_forward_length'),
    moe_intermediate_size: req('expert_feed_forward_length'),
    num_hidden_layers: req('block_count') - nextn,
    first_k_dense_replace: n('leading_dense_block_count', 0),
    num_attention_heads: heads,
    n_routed_experts: req('expert_count'),
    n_shared_experts: n('expert_shared_count', 0),
    num_experts_per_tok: req('expert_used_count'),
    n_group: groups,
    topk_group: n('expert_group_used_count', 1),
    topk_method: bias ? 'noaux_tc' : groups > 1 ? 'group_limited_greedy' : 'greedy',
    scoring_func: scoring,
    routed_scaling_factor: n('expert_weights_scale', 1),
    norm_topk_prob: get('expert_weights_norm') === true,
    q_lora_rank: n('attention.q_lora_rank', 0) || null,
    kv_lora_rank: req('attention.kv_lora_rank'),
    qk_nope_head_dim: keyLen - rope,
    qk_rope_head_dim: rope,
    v_head_dim: valLen,
    rms_norm_eps: req('attention.layer_norm_rms_epsilon'),
    rope_theta: n('rope.freq_base', 10000),
    max_position_embeddings: req('context_length'),
    tie_word_embeddings: !has('output.weight'),
    num_nextn_predict_layers: 0,
    torch_dtype: 'bfloat16',
  };
  const bos = meta.get('tokenizer.ggml.bos_token_id');
  const eos = meta.get('tokenizer.ggml.eos_token_id');
  if (typeof bos === 'number') raw.bos_token_id = bos;
  if (typeof eos === 'number') raw.eos_token_id = eos;
  const scaling = get('rope.scaling.type');
  if (scaling !== undefined && scaling !== 'none') {
    if (scaling !== 'yarn') throw new DsError('BAD_CONFIG', `${file}: deepseek2.rope.scaling.type "${String(scaling)}" is not supported (only yarn)`);
    // yarn_log_multiplier is 0.1 · mscale_all_dim (convert_hf_to_gguf's spelling).
    const mscaleAll = (n('rope.scaling.yarn_log_multiplier', 0.1) ?? 0.1) / 0.1;
    raw.rope_scaling = {
      type: 'yarn',
      factor: req('rope.scaling.factor'),
      original_max_position_embeddings: req('rope.scaling.original_context_length'),
      beta_fast: n('rope.scaling.yarn_beta_fast', 32),
      beta_slow: n('rope.scaling.yarn_beta_slow', 1),
      mscale: mscaleAll,
      mscale_all_dim: mscaleAll,
    };
  }
  return parseConfig(raw, file);
}
