// Model configurations for `dsv3 train --preset`. `default` is the model dsv3 ships (about
// 9M parameters with its MTP module: ≤ 20 MB in BF16); `tiny` is for smoke tests.

import type { DeepseekConfig } from '../io/config.ts';
import { tinyConfig } from '../model/init.ts';

export const PRESETS: Record<string, (vocab: number) => DeepseekConfig> = {
  default: (vocab) =>
    tinyConfig({
      vocab_size: vocab,
      hidden_size: 256,
      intermediate_size: 512,
      moe_intermediate_size: 96,
      num_hidden_layers: 3,
      first_k_dense_replace: 1,
      num_attention_heads: 4,
      n_routed_experts: 16,
      n_shared_experts: 1,
      num_experts_per_tok: 4,
      n_group: 4,
      topk_group: 2,
      q_lora_rank: 128,
      kv_lora_rank: 64,
      qk_nope_head_dim: 32,
      qk_rope_head_dim: 16,
      v_head_dim: 32,
      rope_scaling: {
        type: 'yarn',
        factor: 4,
        original_max_position_embeddings: 256,
        beta_fast: 32,
        beta_slow: 1,
        mscale: 1,
        mscale_all_dim: 1,
      },
      max_position_embeddings: 1024,
      num_nextn_predict_layers: 1,
    }),
  tiny: (vocab) => tinyConfig({ vocab_size: vocab, max_position_embeddings: 256 }),
};
