// A deepseek2 GGUF file of random weights, written straight in its quantized formats: for
// benchmarking real-size shapes (bench-l, DeepSeek-V2-Lite's 15.7B parameters) without making
// and quantizing a 31 GB BF16 checkpoint first. Block bytes come from the OS's random source
// (crypto.randomFillSync, native speed, in 64 MiB chunks); only each block's f16 scale fields
// are then set, to values that keep activations in a sane range. The tensor list, names, types
// (llama-quantize's recipe) and metadata are those `dsv3 convert --to gguf` writes.
//   node --import tsx bench/random-gguf.ts OUT.gguf q8_0|q6_k|q4_k_m [bench-l]

import { randomFillSync } from 'node:crypto';
import { parseConfig, type DeepseekConfig } from '../src/io/config.ts';
import { minimalVocab, modelMetadata, ARCH } from '../src/io/convert-gguf.ts';
import { encodeTensor, kv, writeGguf, ggmlTensorBytes, type GgmlTypeName, type GgufTensorSpec } from '../src/io/gguf.ts';
import { ggufLocation } from '../src/io/gguf-names.ts';
import { recipeType, type QuantRecipe } from '../src/io/gguf-recipes.ts';
import { tensorTable } from '../src/model/weights.ts';
import { FORMATS, f32ToF16 } from '../src/tensor/dtypes.ts';

const CHUNK = 64 << 20;

/** Where each block's f16 scales sit, and values that give weights of roughly ±0.02. */
const SCALES: Partial<Record<GgmlTypeName, { at: number; value: number }[]>> = {
  Q8_0: [{ at: 0, value: 2.5e-4 }],
  Q4_0: [{ at: 0, value: 4e-3 }],
  Q5_0: [{ at: 0, value: 2e-3 }],
  Q4_K: [{ at: 0, value: 2e-5 }, { at: 2, value: 1.5e-4 }],
  Q5_K: [{ at: 0, value: 1e-5 }, { at: 2, value: 1.5e-4 }],
  Q6_K: [{ at: 208, value: 1.5e-5 }],
};

/** `bytes` bytes of random `type` data, in chunks of whole blocks (whole rows for F32). */
function* randomData(type: GgmlTypeName, bytes: number): Generator<Uint8Array> {
  const { blockBytes } = FORMATS[type];
  const chunk = Math.floor(CHUNK / blockBytes) * blockBytes;
  const scales = SCALES[type] ?? [];
  const bits = scales.map((s) => f32ToF16(s.value));
  for (let done = 0; done < bytes; done += chunk) {
    const n = Math.min(chunk, bytes - done);
    const b = new Uint8Array(n);
    if (type === 'F32' || type === 'F16' || type === 'BF16') {
      // Float matrices (router, norms, fallbacks): uniform in ±0.05.
      const u = new Uint32Array(n / FORMATS[type].blockBytes);
      randomFillSync(u);
      const f = new Float32Array(u.length);
      for (let i = 0; i < f.length; i++) f[i] = (u[i] / 4294967296 - 0.5) * 0.1;
      b.set(encodeTensor(f, type));
    } else {
      randomFillSync(b);
      for (let o = 0; o < n; o += blockBytes) {
        for (let j = 0; j < scales.length; j++) {
          b[o + scales[j].at] = bits[j] & 0xff;
          b[o + scales[j].at + 1] = bits[j] >> 8;
        }
      }
    }
    yield b;
  }
}

/** Write a random-weight deepseek2 GGUF of `cfg` with llama-quantize's `recipe` mixture. */
export function writeRandomGguf(path: string, cfg: DeepseekConfig, recipe: QuantRecipe, name = 'random'): void {
  const notes: string[] = [];
  const tied = cfg.tie_word_embeddings;
  const H = cfg.num_attention_heads;
  const C = cfg.kv_lora_rank;
  const specs: GgufTensorSpec[] = [];
  const seen = new Set<string>();
  const matrix = (gguf: string, shape: number[], force?: GgmlTypeName) => {
    const type = force ?? recipeType(recipe, { name: gguf, shape, layers: cfg.num_hidden_layers, experts: cfg.n_routed_experts, tied }, notes);
    specs.push({ name: gguf, shape, type });
  };
  for (const slot of tensorTable(cfg, { mtp: false })) {
    const loc = ggufLocation(slot.name)!;
    if (slot.kind === 'vector') {
      specs.push({ name: loc.name, shape: slot.shape, type: 'F32' });
    } else if (loc.expert !== undefined) {
      if (seen.has(loc.name)) continue;
      seen.add(loc.name);
      matrix(loc.name, [cfg.n_routed_experts, ...slot.shape]);
    } else if (slot.name.endsWith('.kv_b_proj.weight')) {
      // llama.cpp's split layout: attn_k_b [H, C, nope], attn_v_b [H, v, C].
      const p = loc.name.replace(/attn_kv_b\.weight$/, '');
      matrix(`${p}attn_k_b.weight`, [H, C, cfg.qk_nope_head_dim]);
      matrix(`${p}attn_v_b.weight`, [H, cfg.v_head_dim, C]);
    } else {
      matrix(loc.name, slot.shape, slot.name.endsWith('.mlp.gate.weight') ? 'F32' : undefined);
    }
  }
  const metadata = [
    kv.str('general.architecture', ARCH),
    kv.str('general.type', 'model'),
    kv.str('general.name', name),
    ...modelMetadata(cfg, notes),
    kv.u32('general.file_type', { q8_0: 7, q6_k: 18, q4_k_m: 15 }[recipe]),
    kv.u32('general.quantization_version', 2),
    ...minimalVocab(cfg.vocab_size),
  ];
  const byName = new Map(specs.map((s) => [s.name, s]));
  writeGguf(path, metadata, specs, (n) => {
    const s = byName.get(n)!;
    return randomData(s.type, ggmlTensorBytes(s.type, s.shape));
  });
}

/** DeepSeek-V2-Lite's shape (config.json of deepseek-ai/DeepSeek-V2-Lite): 15.7B parameters. */
export function benchLConfig(): DeepseekConfig {
  return parseConfig({
    model_type: 'deepseek_v2', vocab_size: 102400, hidden_size: 2048, intermediate_size: 10944,
    moe_intermediate_size: 1408, num_hidden_layers: 27, first_k_dense_replace: 1, moe_layer_freq: 1,
    num_attention_heads: 16, n_routed_experts: 64, n_shared_experts: 2, num_experts_per_tok: 6,
    n_group: 1, topk_group: 1, topk_method: 'greedy', scoring_func: 'softmax', routed_scaling_factor: 1.0,
    norm_topk_prob: false, q_lora_rank: null, kv_lora_rank: 512, qk_nope_head_dim: 128, qk_rope_head_dim: 64,
    v_head_dim: 128, rms_norm_eps: 1e-6, rope_theta: 10000, max_position_embeddings: 163840,
    rope_scaling: { type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 },
    tie_word_embeddings: false, torch_dtype: 'bfloat16',
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [out, recipe] = process.argv.slice(2);
  const t0 = performance.now();
  writeRandomGguf(out, benchLConfig(), recipe as QuantRecipe, 'bench-l');
  process.stderr.write(`${out}: written in ${((performance.now() - t0) / 1e3).toFixed(1)} s\n`);
}
