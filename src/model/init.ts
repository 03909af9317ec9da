// Random initialisation of a DeepSeek-V3 checkpoint for any config: test fixtures, bench
// checkpoints and the starting point of training. Writes a Hugging Face folder
// (config.json + safetensors) in F32, BF16, or the released FP8 layout (e4m3 linears with
// 128×128 block scales; embeddings, norms, router and heads in BF16; bias in F32).
// Tensors are generated and written one at a time, so memory stays bounded.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { configToJson, parseConfig, type DeepseekConfig } from '../io/config.ts';
import { writeCheckpoint, type TensorSpec } from '../io/safetensors.ts';
import { f32ToBf16, f32ToE4m3, type DType } from '../tensor/dtypes.ts';
import { Rng } from '../tensor/random.ts';
import { scaleName, tensorTable, type TensorSlot } from './weights.ts';

export type InitDType = 'F32' | 'BF16' | 'FP8';

export interface InitOptions {
  dtype?: InitDType;
  seed?: number;
  /** Split into shards of at most this many bytes (default: one file). */
  maxShardBytes?: number;
}

/** Defaults for a tiny V3 model; override any config.json key. */
export function tinyConfig(overrides: Record<string, unknown> = {}): DeepseekConfig {
  return parseConfig({
    model_type: 'deepseek_v3',
    vocab_size: 128,
    hidden_size: 64,
    intermediate_size: 96,
    moe_intermediate_size: 32,
    num_hidden_layers: 2,
    first_k_dense_replace: 1,
    num_attention_heads: 2,
    n_routed_experts: 8,
    n_shared_experts: 1,
    num_experts_per_tok: 2,
    n_group: 2,
    topk_group: 1,
    topk_method: 'noaux_tc',
    scoring_func: 'sigmoid',
    routed_scaling_factor: 2.5,
    norm_topk_prob: true,
    q_lora_rank: 48,
    kv_lora_rank: 32,
    qk_nope_head_dim: 16,
    qk_rope_head_dim: 8,
    v_head_dim: 16,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    rope_scaling: {
      type: 'yarn',
      factor: 4,
      original_max_position_embeddings: 32,
      beta_fast: 32,
      beta_slow: 1,
      mscale: 1,
      mscale_all_dim: 1,
    },
    max_position_embeddings: 128,
    num_nextn_predict_layers: 1,
    torch_dtype: 'float32',
    ...overrides,
  });
}

/** Is this matrix stored as FP8 in the released checkpoint's layout? */
function isQuantised(slot: TensorSlot): boolean {
  const n = slot.name;
  if (slot.kind !== 'matrix' || n.endsWith('.mlp.gate.weight')) return false;
  return n.includes('.self_attn.') || n.includes('.mlp.');
}

/** Values of one tensor: matrices ~ N(0, 1/cols), norms ≈ 1, router bias small. */
function initValues(slot: TensorSlot, rng: Rng): Float32Array {
  const n = slot.shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  if (slot.kind === 'matrix') {
    const std = slot.name.endsWith('embed_tokens.weight') ? 1 : 1 / Math.sqrt(slot.shape[1]);
    for (let i = 0; i < n; i++) v[i] = rng.normal() * std;
  } else if (slot.name.endsWith('e_score_correction_bias')) {
    for (let i = 0; i < n; i++) v[i] = (rng.uniform() - 0.5) * 0.1;
  } else {
    for (let i = 0; i < n; i++) v[i] = 1 + (rng.uniform() - 0.5) * 0.2;
  }
  return v;
}

/** Quantise a [rows, cols] matrix to e4m3 codes with per-block scales amax / 448. */
export function quantiseFp8(
  w: Float32Array,
  rows: number,
  cols: number,
  block: [number, number] = [128, 128],
): { codes: Uint8Array; scale: Float32Array } {
  const [bR, bC] = block;
  const sR = Math.ceil(rows / bR);
  const sC = Math.ceil(cols / bC);
  const scale = new Float32Array(sR * sC);
  const codes = new Uint8Array(rows * cols);
  for (let br = 0; br < sR; br++) {
    for (let bc = 0; bc < sC; bc++) {
      let amax = 0;
      for (let i = br * bR; i < Math.min(rows, (br + 1) * bR); i++) {
        for (let j = bc * bC; j < Math.min(cols, (bc + 1) * bC); j++) amax = Math.max(amax, Math.abs(w[i * cols + j]));
      }
      const s = amax > 0 ? Math.fround(amax / 448) : 1;
      scale[br * sC + bc] = s;
      for (let i = br * bR; i < Math.min(rows, (br + 1) * bR); i++) {
        for (let j = bc * bC; j < Math.min(cols, (bc + 1) * bC); j++) codes[i * cols + j] = f32ToE4m3(w[i * cols + j] / s);
      }
    }
  }
  return { codes, scale };
}

function bf16Bytes(v: Float32Array): Uint8Array {
  const u = new Uint16Array(v.length);
  for (let i = 0; i < v.length; i++) u[i] = f32ToBf16(v[i]);
  return new Uint8Array(u.buffer);
}

/** Write a randomly initialised checkpoint of `cfg` (with its MTP modules) to `dir`. */
export function writeRandomCheckpoint(dir: string, cfg: DeepseekConfig, opts: InitOptions = {}): void {
  const dtype = opts.dtype ?? 'F32';
  const seed = opts.seed ?? 0;
  const block: [number, number] = [128, 128];
  const outCfg: DeepseekConfig = {
    ...cfg,
    torch_dtype: dtype === 'F32' ? 'float32' : 'bfloat16',
    quantization_config:
      dtype === 'FP8'
        ? { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: block }
        : null,
  };
  const slots = tensorTable(outCfg, { mtp: true });
  const specs: TensorSpec[] = [];
  // What to write under each name: a tensor in some dtype, or the block scales of one.
  const plan = new Map<string, { slot: TensorSlot; index: number; as: DType | 'SCALE' }>();
  slots.forEach((slot, index) => {
    const bias = slot.name.endsWith('e_score_correction_bias');
    let as: DType = dtype === 'F32' || bias ? 'F32' : 'BF16';
    if (dtype === 'FP8' && isQuantised(slot)) {
      as = 'F8_E4M3';
      const sShape = [Math.ceil(slot.shape[0] / block[0]), Math.ceil(slot.shape[1] / block[1])];
      specs.push({ name: scaleName(slot.name), dtype: 'F32', shape: sShape });
      plan.set(scaleName(slot.name), { slot, index, as: 'SCALE' });
    }
    specs.push({ name: slot.name, dtype: as, shape: slot.shape });
    plan.set(slot.name, { slot, index, as });
  });

  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configToJson(outCfg), null, 2) + '\n');
  // Each tensor draws from its own stream (seed, position in the table), so a seed gives
  // the same values in every dtype and any tensor can be regenerated on its own.
  writeCheckpoint(
    dir,
    specs,
    (name) => {
      const { slot, index, as } = plan.get(name)!;
      const v = initValues(slot, new Rng(seed * 0x10001 + index));
      if (as === 'SCALE' || as === 'F8_E4M3') {
        const q = quantiseFp8(v, slot.shape[0], slot.shape[1], block);
        return as === 'SCALE' ? new Uint8Array(q.scale.buffer) : q.codes;
      }
      if (as === 'BF16') return bf16Bytes(v);
      return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    },
    { maxShardBytes: opts.maxShardBytes },
  );
}
