// Continuous batching: sequences that join at different times and share forward passes
// produce exactly what each produces alone; cancellation frees the slot at once; a full
// queue refuses instead of growing.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, type SeqHandle, type SeqResult } from './scheduler.ts';
import { generate } from './generate.ts';
import { Sampler } from './sampler.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { DsError } from '../errors.ts';
import { randomCheckpoint } from '../../test/helpers/fixtures.ts';

const model = DeepseekV3.load(randomCheckpoint({}, { seed: 11 }), { kernels: refKernels });

function run(s: Scheduler, prompt: number[], maxNewTokens: number) {
  const ids: number[] = [];
  const done = new Promise<SeqResult>((resolve) => {
    s.submit({ prompt, maxNewTokens, sampler: greedy(), onToken: (id) => void ids.push(id), onDone: resolve });
  });
  return done.then((r) => ({ ids, r }));
}

const greedy = () => new Sampler({ temperature: 0 });
const tick = () => new Promise((r) => setTimeout(r, 5));

describe('scheduler', () => {
  it('gives every request what it gets alone, while sharing forward passes', async () => {
    const s = new Scheduler(model, { maxBatch: 4 });
    const prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4], [42], [5, 5, 5, 5], [100, 3], [7, 77]];
    const jobs: Promise<{ ids: number[]; r: SeqResult }>[] = [];
    for (const [i, p] of prompts.entries()) {
      jobs.push(run(s, p, 5 + i));
      if (i % 2 === 1) await tick(); // later requests join a batch already decoding
    }
    const out = await Promise.all(jobs);
    prompts.forEach((p, i) => {
      assert.deepEqual(out[i].ids, generate(model, [p], { maxNewTokens: 5 + i }).ids[0], `request ${i}`);
      assert.equal(out[i].r.finish, 'length');
      assert.equal(out[i].r.completionTokens, 5 + i);
      assert.equal(out[i].r.promptTokens, p.length);
    });
    assert.ok(s.stepRows / s.steps > 1.5, `mean batch ${s.stepRows / s.steps}`);
    assert.deepEqual(s.load, { active: 0, queued: 0 });
  });

  it('stops at a stop id or when onToken says so', async () => {
    const s = new Scheduler(model);
    const free = generate(model, [[1, 2, 3]], { maxNewTokens: 6 }).ids[0];
    const stopAt = free[2];
    const r = await new Promise<SeqResult & { ids: number[] }>((resolve) => {
      const ids: number[] = [];
      s.submit({
        prompt: [1, 2, 3],
        maxNewTokens: 6,
        sampler: greedy(),
        stopIds: [stopAt],
        onToken: (id) => void ids.push(id),
        onDone: (res) => resolve({ ...res, ids }),
      });
    });
    assert.equal(r.finish, 'stop');
    assert.deepEqual(r.ids, free.slice(0, free.indexOf(stopAt) + 1));
  });

  it('cancels a running sequence, frees its slot, and keeps the others going', async () => {
    const s = new Scheduler(model, { maxBatch: 2 });
    let tokens = 0;
    let result: SeqResult | null = null;
    let activeAfterCancel = -1;
    const h: SeqHandle = s.submit({
      prompt: [3, 4],
      maxNewTokens: 100,
      sampler: greedy(),
      onToken: () => {
        if (++tokens === 2) {
          h.cancel(); // as a client disconnect would, between two tokens
          activeAfterCancel = s.load.active;
        }
      },
      onDone: (r) => void (result = r),
    });
    const other = run(s, [5, 6], 30);
    const o = await other;
    assert.equal(result!.finish, 'cancelled');
    assert.equal(activeAfterCancel, 1, 'the cancelled sequence left the batch at once');
    assert.equal(tokens, 2, 'no token after cancel');
    assert.equal(o.r.finish, 'length');
    assert.deepEqual(o.ids, generate(model, [[5, 6]], { maxNewTokens: 30 }).ids[0]);
    // Cancelling a finished sequence is a no-op: onDone is not called twice.
    let calls = 0;
    const h2 = s.submit({ prompt: [1], maxNewTokens: 1, sampler: greedy(), onDone: () => void calls++ });
    while (calls === 0) await tick();
    h2.cancel();
    h.cancel();
    assert.equal(calls, 1);
  });

  it('refuses when the queue is full and when the prompt does not fit', () => {
    const s = new Scheduler(model, { maxBatch: 1, maxQueue: 2 });
    const req = { prompt: [1], maxNewTokens: 1, sampler: greedy(), onDone: () => {} };
    const handles = [s.submit(req), s.submit(req)];
    assert.throws(() => s.submit(req), (e: unknown) => e instanceof DsError && e.code === 'QUEUE_FULL');
    handles.forEach((h) => h.cancel());
    const long = Array.from({ length: model.cfg.max_position_embeddings }, () => 1);
    assert.throws(
      () => s.submit({ ...req, prompt: long }),
      (e: unknown) => e instanceof DsError && e.code === 'CONTEXT_OVERFLOW',
    );
  });
});
