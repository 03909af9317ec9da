// The bench-s-sized checkpoint with an MTP module (random BF16 weights), written once into
// .cache/bench/ and shared by the speculation and chunked-prefill benchmarks.

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tinyConfig, writeRandomCheckpoint } from '../src/model/init.ts';

/** The checkpoint folder, written on first use. */
export function benchSMtpDir(): string {
  const dir = join(resolve(import.meta.dirname, '..'), '.cache', 'bench', 'bench-s-mtp');
  if (!existsSync(join(dir, 'config.json'))) {
    writeRandomCheckpoint(dir, tinyConfig({
      vocab_size: 8192, hidden_size: 512, intermediate_size: 1536, moe_intermediate_size: 256,
      num_hidden_layers: 8, first_k_dense_replace: 1, num_attention_heads: 8, n_routed_experts: 32,
      n_shared_experts: 1, num_experts_per_tok: 4, n_group: 4, topk_group: 2, q_lora_rank: 256,
      kv_lora_rank: 128, qk_nope_head_dim: 64, qk_rope_head_dim: 32, v_head_dim: 64,
      max_position_embeddings: 4096, num_nextn_predict_layers: 1,
    }), { dtype: 'BF16', seed: 1 });
  }
  return dir;
}
