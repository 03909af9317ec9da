// Greedy decoding of token-id prompts for the tests, through the one decode loop (the
// Scheduler) with greedy sampling: argmax, the first index winning ties, as torch.argmax. All
// prompts run as one batch and are fed whole in the first step, as the golden files' greedy
// sequences were made (one prompt alone is "what it gets alone" for the batching tests).

import { Scheduler } from '../../src/engine/scheduler.ts';
import { Sampler } from '../../src/engine/sampler.ts';
import type { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import type { AttnImpl } from '../../src/model/mla.ts';

export interface GreedyOptions {
  maxNewTokens: number;
  attn?: AttnImpl;
  /** Every generated token of prompt `seq`, with the logits it was picked from. */
  onToken?: (seq: number, id: number, logits: Float32Array) => void;
}

/** The generated ids of each prompt (prompt not included). */
export async function greedyDecode(model: DeepseekV3, prompts: number[][], opts: GreedyOptions): Promise<number[][]> {
  const n = prompts.length;
  const sched = new Scheduler(model, {
    maxBatch: n,
    maxQueue: n,
    prefillChunk: prompts.reduce((t, p) => t + p.length, 0),
    attn: opts.attn,
  });
  return Promise.all(
    prompts.map((prompt, seq) => new Promise<number[]>((resolve, reject) => {
      const ids: number[] = [];
      sched.submit({
        prompt,
        maxNewTokens: opts.maxNewTokens,
        sampler: new Sampler({ temperature: 0 }),
        onToken: (id, logits) => {
          ids.push(id);
          opts.onToken?.(seq, id, logits);
        },
        onDone: (r) => (r.error ? reject(r.error) : resolve(ids)),
      });
    })),
  );
}
