// config.json of a Hugging Face DeepSeek-V3 / V2 checkpoint, read and validated.
// Keys are spelled exactly as in config.json (mlx-lm style), so nothing needs translating.
// This file only parses and checks; what the numbers mean lives in model/.

import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { DsError } from '../errors.ts';

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

function int(c: Json, file: string, key: string, opts: { min?: number; def?: number } = {}): number {
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
  return v;
}

function num(c: Json, file: string, key: string, def?: number): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (def !== undefined) return def;
    fail(file, `missing required field "${key}"`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    fail(file, `field "${key}" must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
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
  const mscale = num(r, file, 'mscale', 1);
  return {
    type,
    factor: num(r, file, 'factor'),
    original_max_position_embeddings: int(r, file, 'original_max_position_embeddings'),
    beta_fast: num(r, file, 'beta_fast', 32),
    beta_slow: num(r, file, 'beta_slow', 1),
    mscale,
    mscale_all_dim: num(r, file, 'mscale_all_dim', mscale),
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
  const n_routed_experts = int(c, file, 'n_routed_experts');
  const n_group = int(c, file, 'n_group', { def: 1 });
  const topk_method = oneOf(
    c,
    file,
    'topk_method',
    ['noaux_tc', 'greedy', 'group_limited_greedy'],
    model_type === 'deepseek_v3' ? 'noaux_tc' : 'greedy',
  );
  const cfg: DeepseekConfig = {
    model_type,
    vocab_size: int(c, file, 'vocab_size'),
    hidden_size: int(c, file, 'hidden_size'),
    intermediate_size: int(c, file, 'intermediate_size'),
    moe_intermediate_size: int(c, file, 'moe_intermediate_size'),
    num_hidden_layers: int(c, file, 'num_hidden_layers'),
    first_k_dense_replace: int(c, file, 'first_k_dense_replace', { min: 0, def: 0 }),
    moe_layer_freq: int(c, file, 'moe_layer_freq', { def: 1 }),
    num_attention_heads: int(c, file, 'num_attention_heads'),
    n_routed_experts,
    n_shared_experts: int(c, file, 'n_shared_experts', { min: 0, def: 0 }),
    num_experts_per_tok: int(c, file, 'num_experts_per_tok'),
    n_group,
    topk_group: int(c, file, 'topk_group', { def: 1 }),
    topk_method,
    scoring_func: oneOf(c, file, 'scoring_func', ['sigmoid', 'softmax'], 'softmax'),
    routed_scaling_factor: num(c, file, 'routed_scaling_factor', 1),
    norm_topk_prob: Boolean(c.norm_topk_prob ?? false),
    q_lora_rank: c.q_lora_rank === null ? 0 : int(c, file, 'q_lora_rank', { min: 0, def: 0 }),
    kv_lora_rank: int(c, file, 'kv_lora_rank'),
    qk_nope_head_dim: int(c, file, 'qk_nope_head_dim'),
    qk_rope_head_dim: int(c, file, 'qk_rope_head_dim'),
    v_head_dim: int(c, file, 'v_head_dim'),
    rms_norm_eps: num(c, file, 'rms_norm_eps', 1e-6),
    rope_theta: num(c, file, 'rope_theta', 10000),
    rope_scaling: parseRopeScaling(c.rope_scaling, file),
    max_position_embeddings: int(c, file, 'max_position_embeddings'),
    tie_word_embeddings: Boolean(c.tie_word_embeddings ?? false),
    num_nextn_predict_layers: int(c, file, 'num_nextn_predict_layers', { min: 0, def: 0 }),
    quantization_config: parseQuant(c.quantization_config, file),
    torch_dtype: String(c.torch_dtype ?? 'bfloat16'),
    bos_token_id: typeof c.bos_token_id === 'number' ? c.bos_token_id : null,
    eos_token_id: (c.eos_token_id as number | number[] | undefined) ?? null,
  };
  if (cfg.qk_rope_head_dim % 2 !== 0) fail(file, 'qk_rope_head_dim must be even');
  if (cfg.n_routed_experts % cfg.n_group !== 0) {
    fail(file, `n_routed_experts (${cfg.n_routed_experts}) must divide into n_group (${cfg.n_group})`);
  }
  if (cfg.topk_group > cfg.n_group) fail(file, 'topk_group must not exceed n_group');
  if (cfg.num_experts_per_tok > cfg.n_routed_experts) {
    fail(file, 'num_experts_per_tok must not exceed n_routed_experts');
  }
  const perGroup = cfg.n_routed_experts / cfg.n_group;
  if (cfg.num_experts_per_tok > cfg.topk_group * perGroup) {
    fail(file, 'num_experts_per_tok exceeds the experts left by topk_group');
  }
  if (cfg.n_group > 1 && topk_method === 'noaux_tc' && perGroup < 2) {
    fail(file, 'noaux_tc group scores need at least 2 experts per group');
  }
  if (cfg.first_k_dense_replace > cfg.num_hidden_layers) {
    fail(file, 'first_k_dense_replace exceeds num_hidden_layers');
  }
  return cfg;
}

/** `dir/config.json` parsed as JSON but not validated, with its path for messages. */
export function readConfigJson(dir: string): { raw: unknown; file: string } {
  const file = join(dir, 'config.json');
  if (!existsSync(file)) throw new DsError('MISSING_FILE', `${file}: not found`);
  try {
    return { raw: JSON.parse(readFileSync(file, 'utf8')), file };
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
    num_hidden_layers: req('block_count'),
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
