// The Scheduler picks every decoding sequence's token in one Kernels.sampleBatch call (plain
// and grammar-constrained samplers, with their logprobs): the same ids and logprobs as each
// sampler picking alone with sample() and the pipeline's log-softmax, on every kernel backend.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, type TokenLogprobs } from './scheduler.ts';
import { Sampler, logprobs as logSoftmax, type SamplingParams } from './sampler.ts';
import { ConstrainedSampler, type TokenConstraint } from './constrained.ts';
import type { SpecSampler } from './speculative.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { topLogprobs } from '../kernels/ref/sample.ts';
import { randomCheckpoint } from '../../test/helpers/fixtures.ts';
import { backends } from '../../test/helpers/backends.ts';

/** A sampler that only has sample(): the scheduler must pick for it one row at a time. */
function alone(s: SpecSampler): SpecSampler {
  return {
    get greedy() { return s.greedy; },
    sample: (l, h) => s.sample(l, h),
    distribution: (l, h) => s.distribution(l, h),
    uniform: () => s.uniform(),
  };
}

/** Allows only even ids (a stand-in for a grammar's matcher). */
function evens(V: number): TokenConstraint {
  const m = new Int32Array(Math.ceil(V / 32)).fill(0x55555555);
  return { mask: () => m, accept: () => {}, release: () => {} };
}

const PARAMS: SamplingParams[] = [
  { seed: 1, temperature: 0.9, topP: 0.9 },
  { seed: 2, topK: 5 },
  { seed: 3, temperature: 0 },
  { seed: 4, frequencyPenalty: 0.5, presencePenalty: 0.2, minP: 0.05 },
  { seed: 5, temperature: 1.5, repetitionPenalty: 1.3 },
  { seed: 6, temperature: 0.7, topK: 40, topP: 0.95 },
];

describe('batch-wide sampling in the scheduler', () => {
  for (const K of backends()) {
    it(`${K.name}: the same tokens and logprobs as one sampler at a time`, async () => {
      const model = DeepseekV3.load(randomCheckpoint({}, { seed: 11 }), { kernels: K });
      const V = model.cfg.vocab_size;
      const run = async (batched: boolean) => {
        const s = new Scheduler(model, { maxBatch: 8 });
        const jobs = PARAMS.map((p, i) => new Promise<{ ids: number[]; lps: TokenLogprobs[] }>((resolve) => {
          const plain = new Sampler(p);
          plain.limitVocab(V - 5);
          const sampler = i % 3 === 2 ? new ConstrainedSampler(plain, evens(V)) : plain;
          const ids: number[] = [];
          const lps: TokenLogprobs[] = [];
          s.submit({
            prompt: [1 + i, 2, 3 + 2 * i],
            maxNewTokens: 12,
            sampler: batched ? sampler : alone(sampler),
            logprobs: 3,
            onToken: (id, logits, lp) => {
              ids.push(id);
              if (batched) assert.ok(lp, 'the batch gives the logprobs');
              const lsm = logSoftmax(logits);
              lps.push(lp ?? { logprob: lsm[id]!, top: topLogprobs(lsm, 3, V - 5) });
            },
            onDone: () => resolve({ ids, lps }),
          });
        }));
        return Promise.all(jobs);
      };
      const batched = await run(true);
      const single = await run(false);
      assert.deepStrictEqual(batched, single);
      for (const [i, r] of batched.entries()) {
        assert.equal(r.ids.length, 12);
        assert.ok(r.ids.every((id) => id < V - 5), 'ids past limitVocab are never picked');
        if (i % 3 === 2) assert.ok(r.ids.every((id) => id % 2 === 0), 'the mask holds');
      }
    });
  }
});
