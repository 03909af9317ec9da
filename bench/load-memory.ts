// Resident memory of loading a BF16 checkpoint, against its size on disk. Weights stay in
// their stored dtype, so RSS should grow by about the file size, not twice it.
// Run: node --expose-gc --import tsx bench/load-memory.ts [--json]

import { existsSync, statSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { tinyConfig, writeRandomCheckpoint } from '../src/model/init.ts';
import { refKernels } from '../src/kernels/ref/index.ts';

const dir = join('.cache', 'bench-load-bf16');
if (!existsSync(join(dir, 'config.json'))) {
  // ~190 MB of BF16: hidden 1024, 4 layers, 32 experts of width 512.
  const cfg = tinyConfig({
    vocab_size: 16384,
    hidden_size: 1024,
    intermediate_size: 2816,
    moe_intermediate_size: 512,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    n_routed_experts: 32,
    n_group: 4,
    topk_group: 2,
    num_experts_per_tok: 4,
    q_lora_rank: 384,
    kv_lora_rank: 256,
    qk_nope_head_dim: 64,
    qk_rope_head_dim: 32,
    v_head_dim: 64,
    max_position_embeddings: 4096,
    num_nextn_predict_layers: 0,
  });
  writeRandomCheckpoint(dir, cfg, { dtype: 'BF16', seed: 7 });
}
const fileBytes = readdirSync(dir)
  .filter((f) => f.endsWith('.safetensors'))
  .reduce((n, f) => n + statSync(join(dir, f)).size, 0);

const gc = (globalThis as { gc?: () => void }).gc;
gc?.();
const before = process.memoryUsage().rss;
const model = DeepseekV3.load(dir, { kernels: refKernels });
gc?.();
const after = process.memoryUsage().rss;
const mb = (b: number) => b / 2 ** 20;
const result = {
  file_mb: +mb(fileBytes).toFixed(1),
  rss_growth_mb: +mb(after - before).toFixed(1),
  ratio: +((after - before) / fileBytes).toFixed(3),
};
if (process.argv.includes('--json')) console.log(JSON.stringify(result));
else {
  console.log(`BF16 checkpoint on disk: ${result.file_mb} MB`);
  console.log(`RSS growth after load:   ${result.rss_growth_mb} MB (${result.ratio}× the file size)`);
}
void model;
