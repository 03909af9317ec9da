// Continuous batching: sequences that join at different times and share forward passes
// produce exactly what each produces alone; cancellation frees the slot at once; a full
// queue refuses instead of growing.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Scheduler, type SeqHandle, type SeqResult } from './scheduler.ts';
import { Sampler } from './sampler.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { DsError } from '../errors.ts';
import { randomCheckpoint } from '../../test/helpers/fixtures.ts';
import { greedyDecode } from '../../test/helpers/greedy.ts';

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
/** What a prompt gets alone: greedy, in a scheduler of its own. */
const alone = async (prompt: number[], maxNewTokens: number) => (await greedyDecode(model, [prompt], { maxNewTokens }))[0];

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
    for (const [i, p] of prompts.entries()) {
      assert.deepEqual(out[i].ids, await alone(p, 5 + i), `request ${i}`);
      assert.equal(out[i].r.finish, 'length');
      assert.equal(out[i].r.completionTokens, 5 + i);
      assert.equal(out[i].r.promptTokens, p.length);
    }
    assert.ok(s.stepRows / s.steps > 1.5, `mean batch ${s.stepRows / s.steps}`);
    assert.deepEqual(s.load, { active: 0, queued: 0 });
  });

  it('stops at a stop id or when onToken says so', async () => {
    const s = new Scheduler(model);
    const free = await alone([1, 2, 3], 6);
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
    assert.deepEqual(o.ids, await alone([5, 6], 30));
    // Cancelling a finished sequence is a no-op: onDone is not called twice.
    let calls = 0;
    const h2 = s.submit({ prompt: [1], maxNewTokens: 1, sampler: greedy(), onDone: () => void calls++ });
    while (calls === 0) await tick();
    h2.cancel();
    h.cancel();
    assert.equal(calls, 1);
  });

  it('pauses a sequence: no tokens and no batch slot until resumed, then the same output', async () => {
    const s = new Scheduler(model, { maxBatch: 1 });
    const ids: number[] = [];
    let h: SeqHandle | null = null;
    let pausedAt = -1;
    const done = new Promise<SeqResult>((resolve) => {
      h = s.submit({
        prompt: [3, 4],
        maxNewTokens: 12,
        sampler: greedy(),
        onToken: (id) => {
          ids.push(id);
          if (ids.length === 3) {
            h!.pause(); // as a stream whose reader is behind would, between two tokens
            pausedAt = s.steps;
          }
        },
        onDone: resolve,
      });
    });
    while (pausedAt < 0) await tick();
    assert.equal(s.paused, 1);
    assert.deepEqual(s.load, { active: 1, queued: 0 }, 'it keeps its cache');
    // With one batch slot, another request runs to its end meanwhile; the paused one is in
    // none of its steps.
    const rows0 = s.stepRows;
    const o = await run(s, [5, 6], 6);
    assert.deepEqual(o.ids, await alone([5, 6], 6));
    assert.equal(s.stepRows - rows0, s.steps - pausedAt, 'every step since the pause carried one sequence');
    assert.equal(ids.length, 3, 'no token while paused');
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(ids.length, 3);
    h!.resume();
    const r = await done;
    assert.equal(r.finish, 'length');
    assert.deepEqual(ids, await alone([3, 4], 12), 'resumed where it stopped');
    assert.equal(s.paused, 0);
    assert.deepEqual(s.load, { active: 0, queued: 0 });
    // A paused sequence can be cancelled (its cache is freed); pausing or resuming a finished one does nothing.
    let result: SeqResult | null = null;
    const h2 = s.submit({ prompt: [1, 2], maxNewTokens: 50, sampler: greedy(), onDone: (x) => void (result = x) });
    h2.pause();
    await tick();
    assert.equal(s.paused, 1);
    h2.cancel();
    assert.equal(result!.finish, 'cancelled');
    assert.deepEqual(s.load, { active: 0, queued: 0 });
    h2.resume();
    h!.pause();
    assert.equal(s.paused, 0);
  });

  it('prefills long prompts in chunks: same output, and running sequences keep decoding meanwhile', async () => {
    const chunk = 4;
    const s = new Scheduler(model, { maxBatch: 2, prefillChunk: chunk });
    // Count the tokens of every forward pass.
    const fed: number[] = [];
    const m = s.model as unknown as { forward: DeepseekV3['forward'] };
    const forward = m.forward.bind(s.model);
    m.forward = (b, o) => (fed.push(b.reduce((n, x) => n + x.ids.length, 0)), forward(b, o));
    const longPrompt = Array.from({ length: 17 }, (_, i) => (i * 37 + 5) % model.cfg.vocab_size);
    const aSteps: number[] = [];
    let bFirst = -1;
    let bSubmitted = -1;
    const b: { p: Promise<{ ids: number[]; r: SeqResult }> | null } = { p: null };
    const aIds: number[] = [];
    const a = new Promise<SeqResult>((resolve) => {
      s.submit({
        prompt: [1, 2, 3],
        maxNewTokens: 14,
        sampler: greedy(),
        onToken: (id) => {
          aIds.push(id);
          aSteps.push(s.steps);
          if (aIds.length === 2) {
            // A long prompt arrives while A is decoding.
            bSubmitted = s.steps;
            const ids: number[] = [];
            b.p = new Promise((done) => s.submit({
              prompt: longPrompt, maxNewTokens: 3, sampler: greedy(),
              onToken: (t) => { if (ids.push(t) === 1) bFirst = s.steps; },
              onDone: (r) => done({ ids, r }),
            }));
          }
        },
        onDone: resolve,
      });
    });
    const aRes = await a;
    assert.equal(aRes.error?.stack, undefined);
    const bOut = await b.p!;
    m.forward = forward;
    assert.deepEqual(aIds, await alone([1, 2, 3], 14));
    assert.deepEqual(bOut.ids, await alone(longPrompt, 3));
    // 17 prompt tokens in chunks of 4: the first token comes on the fifth step of B's prefill.
    assert.equal(bFirst - bSubmitted, Math.ceil(longPrompt.length / chunk));
    const during = aSteps.filter((st) => st > bSubmitted && st < bFirst).length;
    assert.equal(during, bFirst - bSubmitted - 1, 'A emitted a token on every step of B\'s prefill');
    assert.ok(Math.max(...fed) <= chunk + 1, `no step fed more than a chunk plus A's token: ${fed}`);
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
