// MTP speculative decoding: greedy output identical to plain decoding (on the golden model
// with MTP weights and on random checkpoints where most drafts are rejected, so rollback is
// exercised hard), in batches too; and the acceptance rule preserves the target
// distribution (chi-square on a fixed small distribution).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { acceptDrafts, acceptGreedy, draftVocabulary, type SpecSampler, type SpecStats } from './speculative.ts';
import { Scheduler, type SeqResult } from './scheduler.ts';
import { Sampler } from './sampler.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { backends } from '../../test/helpers/backends.ts';
import { Rng } from '../tensor/random.ts';
import { GOLDEN_MISSING, goldenModelDir } from '../../test/helpers/golden.ts';
import { DEFAULT_MODEL_DIR, randomCheckpoint } from '../../test/helpers/fixtures.ts';
import { greedyDecode } from '../../test/helpers/greedy.ts';

function run(s: Scheduler, prompt: number[], maxNewTokens: number) {
  const ids: number[] = [];
  return new Promise<{ ids: number[]; r: SeqResult }>((resolve) => {
    s.submit({
      prompt,
      maxNewTokens,
      sampler: new Sampler({ temperature: 0 }),
      onToken: (id) => void ids.push(id),
      onDone: (r) => resolve({ ids, r }),
    });
  });
}

async function sameAsPlain(
  model: DeepseekV3,
  prompts: number[][],
  n: number,
  k: number,
  prefillChunk?: number,
  draftVocab?: number,
) {
  const s = new Scheduler(model, { speculative: { draftTokens: k, draftVocab, policy: 'fixed' }, maxBatch: prompts.length, prefillChunk });
  const out = await Promise.all(prompts.map((p) => run(s, p, n)));
  for (const [i, p] of prompts.entries()) {
    assert.deepEqual(out[i].ids, (await greedyDecode(model, [p], { maxNewTokens: n }))[0], `k=${k}, prompt ${i}`);
    assert.equal(out[i].ids.length, n);
  }
  return out.map((o) => o.r.spec!);
}

describe('MTP speculative decoding', () => {
  it('greedy output equals plain decoding on the golden model, k = 1, 2, 3', { skip: GOLDEN_MISSING }, async () => {
    for (const K of backends()) {
    const model = DeepseekV3.load(goldenModelDir('v3-tiny'), { kernels: K });
    for (const k of [1, 2, 3]) {
      const stats = await sameAsPlain(model, [[284, 488, 6, 120, 412]], 40, k);
      assert.equal(stats[0].proposed.length, k);
      assert.ok(stats[0].steps < 40, 'drafts were accepted at least sometimes');
    }
    }
  });

  it('greedy output equals plain decoding on the shipped default model, k = 1, 2', async () => {
    for (const K of backends()) {
      const model = DeepseekV3.load(DEFAULT_MODEL_DIR, { kernels: K });
      for (const k of [1, 2]) {
        const stats = await sameAsPlain(model, [[0, 671, 3353, 1083], [0, 2100]], 60, k);
        assert.ok(stats.every((st) => st.acceptance > 0.3), 'the trained MTP head drafts well');
      }
    }
  });

  it('drafts come from the draft vocabulary; output stays that of plain decoding', async () => {
    assert.equal(draftVocabulary(8192), 1024);
    assert.equal(draftVocabulary(129280), 16160);
    assert.equal(draftVocabulary(500), 500, 'small vocabularies draft from all of it');
    const model = DeepseekV3.load(DEFAULT_MODEL_DIR, { kernels: backends()[0] });
    const prompts = [[0, 671, 3353, 1083], [0, 2100]];
    // A draft vocabulary too small for this text: most drafts miss, nothing changes.
    const tiny = await sameAsPlain(model, prompts, 40, 2, undefined, 300);
    const full = await sameAsPlain(model, prompts, 40, 2, undefined, 8192);
    const dflt = await sameAsPlain(model, prompts, 40, 2);
    const acc = (st: SpecStats[]) => st.reduce((a, x) => a + x.acceptance, 0) / st.length;
    assert.ok(acc(tiny) < acc(full) - 0.05, `300 ids draft worse (${acc(tiny)} against ${acc(full)})`);
    assert.ok(acc(dflt) > acc(full) - 0.05, `the default 1024 ids draft about as well (${acc(dflt)} against ${acc(full)})`);
    // Sampled drafts (with a penalty on history ids past the draft vocabulary) have q = 0
    // past it; the acceptance rule then keeps the output distribution (chi-square below).
    const s = new Scheduler(model, { speculative: { draftTokens: 2, draftVocab: 300, policy: 'fixed' } });
    const sampler = new Sampler({ temperature: 0.8, repetitionPenalty: 1.2, seed: 5 });
    const dist = sampler.distribution.bind(sampler);
    let drafts = 0;
    sampler.distribution = (logits, history) => {
      const q = dist(logits, history);
      if (logits[8191] === -Infinity) {
        drafts++;
        assert.ok(q.subarray(300).every((x) => x === 0), 'a draft distribution past the draft vocabulary');
      }
      return q;
    };
    const r = await new Promise<SeqResult>((done) => s.submit({ prompt: [0, 2100], maxNewTokens: 30, sampler, onDone: done }));
    assert.equal(r.completionTokens, 30);
    assert.ok(drafts > 0);
    for (const b of [0, 8193, 1.5]) {
      assert.throws(() => new Scheduler(model, { speculative: { draftTokens: 1, draftVocab: b } }), /draftVocab/);
    }
  });

  it('long runs with many rejections and several sequences stay identical (cache rollback)', async () => {
    const dir = randomCheckpoint({ max_position_embeddings: 256 }, { seed: 21 });
    for (const K of backends()) {
      const model = DeepseekV3.load(dir, { kernels: K });
      const stats = await sameAsPlain(model, [[1, 2, 3], [50, 60, 70, 80, 90, 100, 110], [7]], 90, 3);
      for (const st of stats) {
        assert.ok(st.acceptance < 0.9, `a random MTP head is mostly wrong (${st.acceptance})`);
        assert.ok(st.perPosition.every((a) => a >= 0 && a <= 1));
      }
    }
  });

  it('where the policy plans no draft, sequences stop keeping MTP rows and decode as without speculation', async () => {
    const model = DeepseekV3.load(randomCheckpoint({ max_position_embeddings: 256 }, { seed: 21 }), { kernels: backends()[0] });
    const s = new Scheduler(model, { speculative: { draftTokens: 2 }, maxBatch: 2 });
    const pol = s.draftPolicy!;
    pol.keepsMtp = () => false; // (as when drafting is ruled out at this batch size)
    let mtpPasses = 0;
    const mtp = model.mtp.bind(model);
    model.mtp = (...a: Parameters<typeof mtp>) => (mtpPasses++, mtp(...a));
    const prompts = [[1, 2, 3], [50, 60, 70, 80]];
    const n = 40;
    const out = await Promise.all(prompts.map((p) => run(s, p, n)));
    for (const [i, p] of prompts.entries()) {
      assert.deepEqual(out[i].ids, (await greedyDecode(model, [p], { maxNewTokens: n }))[0]);
      assert.deepEqual(out[i].r.spec!.lengths, [n - 1], 'every decode step plain');
    }
    assert.equal(mtpPasses, 0, 'no MTP pass: the rows owed for the prompts were dropped, none added');
    // The policy still counts every step (its looks at drafting are scheduled in steps).
    assert.deepEqual(pol.stats.decided, [n, 0, 0]);
  });

  it('plain steps between drafting steps keep the MTP rows for the next draft; output stays that of plain decoding', async () => {
    const model = DeepseekV3.load(randomCheckpoint({ max_position_embeddings: 256 }, { seed: 21 }), { kernels: backends()[0] });
    const s = new Scheduler(model, { speculative: { draftTokens: 2 }, maxBatch: 2 });
    const pol = s.draftPolicy!;
    let step = 0;
    pol.choose = () => (step++ % 3 === 2 ? 2 : 0); // two plain steps, then two drafts
    pol.keepsMtp = () => true;
    const rows: number[] = [];
    const mtp = model.mtp.bind(model);
    model.mtp = (...a: Parameters<typeof mtp>) => (rows.push(a[0].reduce((n, b) => n + b.ids.length, 0)), mtp(...a));
    const prompts = [[1, 2, 3], [50, 60, 70, 80]];
    const n = 40;
    const out = await Promise.all(prompts.map((p) => run(s, p, n)));
    for (const [i, p] of prompts.entries()) {
      assert.deepEqual(out[i].ids, (await greedyDecode(model, [p], { maxNewTokens: n }))[0]);
      const [plain, , two] = out[i].r.spec!.lengths;
      assert.ok(plain > 10 && two > 5, `plain and drafted steps both ran: ${out[i].r.spec!.lengths}`);
    }
    // The rows owed over plain steps (the prompts', then one per sequence and step) are paid in
    // a pass of their own before a draft: passes of more than one row per sequence.
    assert.ok(rows.some((r) => r > 2 * prompts.length), `${rows}`);
  });

  it('a sequence paused and resumed mid-stream keeps greedy output identical, while another runs in its slot', async () => {
    const model = DeepseekV3.load(randomCheckpoint({ max_position_embeddings: 256 }, { seed: 21 }), { kernels: backends()[0] });
    const s = new Scheduler(model, { speculative: { draftTokens: 2, policy: 'fixed' }, maxBatch: 1 });
    const ids: number[] = [];
    let resume: (() => void) | null = null;
    const done = new Promise<SeqResult>((resolve) => {
      const h = s.submit({
        prompt: [1, 2, 3],
        maxNewTokens: 40,
        sampler: new Sampler({ temperature: 0 }),
        onToken: (id) => {
          ids.push(id);
          if (ids.length % 7 === 0) {
            h.pause(); // possibly between two tokens of one verify pass
            resume = () => h.resume();
          }
        },
        onDone: resolve,
      });
    });
    let finished = false;
    void done.then(() => (finished = true));
    let rounds = 0;
    for (; !finished; rounds++) {
      while (!resume && !finished) await new Promise((r) => setTimeout(r, 2));
      if (finished) break;
      const other = await run(s, [50 + rounds, 60], 5);
      assert.deepEqual(other.ids, (await greedyDecode(model, [[50 + rounds, 60]], { maxNewTokens: 5 }))[0]);
      const r = resume as unknown as () => void;
      resume = null;
      r();
    }
    assert.equal(rounds, 5, 'paused after tokens 7, 14, 21, 28 and 35');
    assert.deepEqual(ids, (await greedyDecode(model, [[1, 2, 3]], { maxNewTokens: 40 }))[0]);
  });

  it('chunked prefill keeps greedy output identical (the MTP cache is filled chunk by chunk)', async () => {
    for (const K of backends()) {
      const model = DeepseekV3.load(DEFAULT_MODEL_DIR, { kernels: K });
      const long = Array.from({ length: 23 }, (_, i) => (i * 131 + 7) % 8000);
      for (const k of [1, 2]) {
        const stats = await sameAsPlain(model, [long, [0, 2100], long.slice(3, 14)], 30, k, 5);
        assert.ok(stats.every((st) => st.acceptance > 0.2), 'drafts still land after a chunked prefill');
      }
    }
  });

  it('greedy acceptance keeps drafts while they are the pick, then adds the pick or the bonus', () => {
    const picks = [5, 6, 9, 4];
    const seen: number[][] = [];
    const pick = (j: number, h: readonly number[]) => (seen.push([...h]), picks[j]);
    assert.deepEqual(acceptGreedy([5, 6, 7], pick, [1]), [5, 6, 9]);
    assert.deepEqual(seen, [[1], [1, 5], [1, 5, 6]], 'each pick sees the history with the accepted drafts');
    assert.deepEqual(acceptGreedy([5, 6, 9], (j) => picks[j], []), [5, 6, 9, 4], 'all accepted: the bonus token');
    assert.deepEqual(acceptGreedy([8], (j) => picks[j], []), [5], 'first draft rejected');
    assert.deepEqual(acceptGreedy([], (j) => picks[j], []), [5], 'no drafts');
  });

  it('the acceptance rule keeps the target distribution (chi-square)', () => {
    const p = Float64Array.from([0.4, 0.25, 0.15, 0.12, 0.08]);
    const q = Float64Array.from([0.1, 0.3, 0.3, 0.2, 0.1]);
    const rng = new Rng(123);
    const s: SpecSampler = {
      greedy: false,
      distribution: () => p,
      sample: () => 0,
      uniform: () => rng.uniform(),
    };
    const drawQ = () => {
      let u = rng.uniform();
      for (let i = 0; i < q.length; i++) if ((u -= q[i]) < 0) return i;
      return q.length - 1;
    };
    // Produce a stream of tokens the way decoding does: k = 2 drafts per step.
    const stream: number[] = [];
    while (stream.length < 40000) {
      const drafts = [drawQ(), drawQ()];
      stream.push(...acceptDrafts(drafts, [q, q], () => p, [], s));
    }
    check(stream, p);
    // A draft vocabulary of the first 3 ids: q is zero on the others, p is still the output.
    q.set([0.5, 0.3, 0.2, 0, 0]);
    stream.length = 0;
    while (stream.length < 40000) stream.push(...acceptDrafts([drawQ(), drawQ()], [q, q], () => p, [], s));
    check(stream, p);
  });
});

/** Chi-square checks that a stream of tokens is independent draws from p (p = 0.001). */
function check(stream: number[], p: ArrayLike<number>): void {
  const n = stream.length;
  const counts = new Array(5).fill(0);
  const pairs = new Array(25).fill(0);
  for (let i = 0; i < n; i++) {
    counts[stream[i]]++;
    if (i % 2 === 1) pairs[stream[i - 1] * 5 + stream[i]]++;
  }
  const chi = (obs: number[], exp: number[]) => obs.reduce((c, o, i) => c + (o - exp[i]) ** 2 / exp[i], 0);
  // Critical values: df 4 → 18.47, df 24 → 51.18.
  assert.ok(chi(counts, Array.from(p, (x) => x * n)) < 18.47, 'unigram distribution is p');
  const m = Math.floor(n / 2);
  const expPairs = Array.from({ length: 25 }, (_, i) => p[Math.floor(i / 5)] * p[i % 5] * m);
  assert.ok(chi(pairs, expPairs) < 51.18, 'consecutive tokens are independent draws from p');
}
