// Chunked prefill: how long a decoding stream waits between two tokens while another
// request's long prompt is prefilled, with the prompt fed whole or in chunks. Random
// bench-s-sized checkpoint (written once into .cache/bench/), native kernels, greedy.
//   node --import tsx bench/chunked-prefill.ts [--prompt 2000] [--chunks 100000,512,128]

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DeepseekV3 } from '../src/model/deepseek-v3.ts';
import { loadKernels } from '../src/kernels/index.ts';
import { Scheduler } from '../src/engine/scheduler.ts';
import { Sampler } from '../src/engine/sampler.ts';
import { tinyConfig, writeRandomCheckpoint } from '../src/model/init.ts';

const { values } = parseArgs({
  options: { prompt: { type: 'string', default: '2000' }, chunks: { type: 'string', default: '100000,512,128' } },
});
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
const model = DeepseekV3.load(dir, { kernels: loadKernels(), mtp: false });
const long = Array.from({ length: Number(values.prompt) }, (_, i) => (i * 131 + 7) % 8000);

async function run(prefillChunk: number) {
  const s = new Scheduler(model, { maxBatch: 2, prefillChunk });
  const times: number[] = [];
  let longTtft = 0;
  await new Promise<void>((done) => {
    s.submit({
      prompt: [1, 2, 3],
      maxNewTokens: 100000,
      sampler: new Sampler({ temperature: 0 }),
      onToken: () => {
        times.push(performance.now());
        if (times.length === 20) {
          const t0 = performance.now();
          s.submit({
            prompt: long, maxNewTokens: 1, sampler: new Sampler({ temperature: 0 }),
            onToken: () => void (longTtft = performance.now() - t0), onDone: () => {},
          });
        }
        // Stop 20 tokens after the long prompt's first token.
        return !(longTtft && times.length > 20 && times[times.length - 1] - times[19] > longTtft + 1 &&
          times.filter((t) => t > times[19] + longTtft).length >= 20);
      },
      onDone: () => done(),
    });
  });
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  const steady = gaps.slice(5, 19).sort((a, b) => a - b)[7];
  return { prefillChunk, worst: Math.max(...gaps.slice(19)), steady, longTtft };
}

await run(512); // warm-up
console.log(`bench-s, a decoding stream while a ${long.length}-token prompt arrives (ms):`);
console.log('prefill chunk | longest wait between two tokens | usual wait | long prompt first token');
for (const c of values.chunks!.split(',').map(Number)) {
  const r = await run(c);
  console.log(`${String(c >= long.length ? 'whole' : c).padStart(13)} | ${r.worst.toFixed(0).padStart(31)} | ${r.steady.toFixed(1).padStart(10)} | ${r.longTtft.toFixed(0).padStart(23)}`);
}
