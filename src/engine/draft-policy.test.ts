// The draft policy on simulated machines: it decodes plain where drafting costs more than it
// gains (compute-bound, or drafts never accepted), drafts as far as pays where it gains
// (memory-bound, good drafts), follows a change of regime, shrugs off stalled steps, and
// explores little. The simulation feeds it what the scheduler measures (pass times, with
// noise, and acceptance) and counts the tokens and time that its choices would give.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DraftPolicy, PATIENCE } from './draft-policy.ts';
import { Rng } from '../tensor/random.ts';

interface Machine {
  /** A plain decode step at batch b (ms). */
  plain: number;
  /** What each draft adds to the verify pass, per sequence (ms). */
  row: number;
  /** One MTP pass for the batch (ms); drafting k tokens takes k of them. */
  pass: number;
  /** Probability that draft j stands given the ones before it did. */
  accept: number[];
  /** A plain step right after a drafting step takes this much longer (a fraction). */
  cold?: number;
}

interface Sim {
  /** Tokens per ms, and the same for plain decoding. */
  rate: number;
  plainRate: number;
  /** Steps by draft length, and how many explored. */
  decided: number[];
  explored: number;
  /** The draft length of every step. */
  ks: number[];
}

function simulate(
  policy: DraftPolicy,
  machine: (step: number) => Machine,
  steps: number,
  b: number,
  opts: { seed?: number; noise?: number; stalls?: number } = {},
): Sim {
  const rng = new Rng(opts.seed ?? 1);
  const noisy = (ms: number) => {
    let x = ms * (1 + (opts.noise ?? 0.1) * (2 * rng.uniform() - 1));
    if (rng.uniform() < (opts.stalls ?? 0)) x *= 5; // lost the CPU for a while
    return x;
  };
  const before = [...policy.decided];
  const explored0 = policy.explored;
  let k = 0;
  let prevK = 0;
  const ks: number[] = [];
  let n = b; // sequences drafting (one when the policy probes)
  let tokens = 0;
  let time = 0;
  let plainTime = 0;
  for (let i = 0; i < steps; i++) {
    const m = machine(i);
    plainTime += m.plain / b;
    // The verify pass of this step, with the k drafts chosen last step.
    const verify = m.plain * (k === 0 && prevK > 0 ? 1 + (m.cold ?? 0) : 1) + (k > 0 ? n * k * m.row : 0);
    prevK = k;
    const ms = noisy(verify);
    time += verify;
    if (k === 0) {
      policy.plainStep(b, ms);
      tokens += b;
    } else {
      policy.verifyStep(b, n, k, ms);
      for (let s = 0; s < n; s++) {
        let a = 0;
        while (a < k && rng.uniform() < m.accept[a]) a++;
        policy.accepted(k, a);
        tokens += a + 1;
      }
      tokens += b - n;
    }
    k = policy.choose(b, b);
    ks.push(k);
    n = policy.probe ? 1 : b;
    if (k > 0) {
      time += k * m.pass;
      policy.draftPass(n, k, noisy(k * m.pass));
    }
  }
  return {
    rate: tokens / time,
    plainRate: (steps * b) / (plainTime * b),
    decided: policy.decided.map((d, j) => d - before[j]),
    explored: policy.explored - explored0,
    ks,
  };
}

// Shaped on the shipped model on this machine (compute-bound: each verify row costs most of
// a plain step; a draft a third of one; 88% / 75% acceptance), and on a memory-bound model
// where rows are nearly free (DeepSeek-V3 at batch 1).
const COMPUTE: Machine = { plain: 0.26, row: 0.2, pass: 0.07, accept: [0.88, 0.75, 0.65] };
const MEMORY: Machine = { plain: 10, row: 0.4, pass: 1.2, accept: [0.88, 0.75, 0.65] };
const ratio = (s: Sim) => s.rate / s.plainRate;
const share = (s: Sim, k: number) => s.decided[k] / s.decided.reduce((a, x) => a + x, 0);

/** The draft length that decodes fastest on a machine at batch b, and its speed over plain decoding's. */
function best(m: Machine, b: number, maxDraft: number): { k: number; ratio: number } {
  let top = { k: 0, ratio: 1 };
  let e = 1;
  let a = 1;
  for (let k = 1; k <= maxDraft; k++) {
    a *= m.accept[k - 1];
    e += a;
    const r = (b * e) / (m.plain + b * k * m.row + k * m.pass) / (b / m.plain);
    if (r > top.ratio) top = { k, ratio: r };
  }
  return top;
}

describe('draft policy', () => {
  it('decodes plain on a compute-bound model: within 2% of plain decoding', () => {
    for (const b of [1, 8]) {
      const s = simulate(new DraftPolicy(3), () => COMPUTE, 3000, b);
      assert.ok(share(s, 0) > 0.97, `batch ${b}: ${s.decided}`);
      assert.ok(ratio(s) > 0.98, `batch ${b}: ${ratio(s)}`);
      assert.ok(s.explored < 60, `batch ${b}: explored ${s.explored} times`);
    }
  });

  it('drafts where it pays (memory-bound, good drafts), as far as pays', () => {
    // Batch 1: all three drafts pay, E_3 = 1 + .88 + .66 + .43 = 2.97 tokens for
    // 10 + 3·0.4 + 3·1.2 = 14.8 ms, twice plain decoding's speed. Batch 8: two, 1.35 times
    // plain's (the third draft's 8 verify rows, 3.2 ms, bring 8 · .43 tokens, 3.4; what the
    // step makes on average is 20.3 tokens in 18.8 ms).
    // (After the policy's first PATIENCE steps, which never look at drafting.)
    for (const [b, k] of [[1, 3], [8, 2]] as const) {
      const top = best(MEMORY, b, 3);
      assert.equal(top.k, k);
      const p = new DraftPolicy(3);
      simulate(p, () => MEMORY, PATIENCE, b);
      const s = simulate(p, () => MEMORY, 3000, b);
      assert.ok(share(s, 0) < 0.03, `batch ${b}: ${s.decided}`);
      assert.ok(share(s, k) > 0.9, `batch ${b}: ${k} drafts pay (${s.decided})`);
      assert.ok(ratio(s) > 0.97 * top.ratio, `batch ${b}: ${ratio(s)} against ${top.ratio}`);
    }
    // Drafts that cost much (4 ms a pass) and seldom stand after the first: one, not three.
    const m = { ...MEMORY, pass: 4, accept: [0.88, 0.4, 0.3] };
    assert.equal(best(m, 1, 3).k, 1);
    const p = new DraftPolicy(3);
    simulate(p, () => m, PATIENCE, 1);
    const s = simulate(p, () => m, 3000, 1);
    assert.ok(share(s, 1) > 0.9, `${s.decided}`);
  });

  it('stops drafting when it stops paying, though plain steps right after drafting run slower', () => {
    // Drafting pays while 90% of drafts stand (1.9 tokens for 0.41 ms against 0.26 ms a token),
    // and loses 8% once 45% do. A plain step right after a drafting step takes 30% longer: while
    // drafting is chosen, every look at plain decoding is one, and timing them had plain decoding
    // look 30% slower than it is, so that drafting seemed to win by 20% and never stopped.
    const pays: Machine = { plain: 0.26, row: 0.1, pass: 0.05, accept: [0.9], cold: 0.3 };
    const loses: Machine = { ...pays, accept: [0.45] };
    const p = new DraftPolicy(1);
    simulate(p, () => pays, PATIENCE, 1);
    const a = simulate(p, () => pays, 1500, 1);
    assert.ok(share(a, 1) > 0.9, `drafts while it pays: ${a.decided}`);
    const s = simulate(p, () => loses, 3000, 1);
    assert.ok(share(s, 0) > 0.8, `then decodes plain: ${s.decided}`);
    assert.ok(ratio(s) > 0.97, `${ratio(s)}`);
  });

  it('looks at drafting in steps that bring 4 verdicts: 4 in a row at batch 1, one at batch 8', () => {
    // One draft, always accepted, half a percent faster than plain decoding, timed without
    // noise: not enough to switch to, too close to rule out, so it is looked at again and again.
    const tie = (b: number): Machine => ({ plain: 0.26, row: ((2 * 0.26) / 1.005 - 0.26 - 0.06) / b, pass: 0.06, accept: [1] });
    for (const [b, len] of [[1, 4], [8, 1]] as const) {
      const p = new DraftPolicy(1);
      simulate(p, () => tie(b), PATIENCE, b, { noise: 0 });
      const s = simulate(p, () => tie(b), 2000, b, { noise: 0 });
      // Runs of drafting steps, after the first (which measures the option: the warm-up, then as
      // many as it takes), that are looks (not the option chosen for a while).
      const runs = s.ks.join('').split(/0+/).filter((r) => r.length > 0).map((r) => r.length);
      const looks = runs.slice(1).filter((r) => r < 8);
      assert.ok(looks.length >= 3 && looks.every((r) => r === len), `batch ${b}: runs ${runs}`);
    }
  });

  it('stops drafting when drafts are never accepted, and explores little', () => {
    const s = simulate(new DraftPolicy(2), () => ({ ...MEMORY, accept: [0, 0] }), 3000, 1);
    assert.ok(share(s, 0) > 0.99, `${s.decided}`);
    assert.ok(ratio(s) > 0.99, `${ratio(s)}`);
    assert.ok(s.explored < 15, `explored ${s.explored} times`);
  });

  it('does not look at drafting in its first PATIENCE steps, and keeps MTP rows only for sequences that outlast them', () => {
    // A short generation on a new process must not pay for looking: some 4 plain steps at
    // batch 8 on the shipped model, 4% of a 100-token generation. Even where drafting pays.
    for (const b of [1, 8]) {
      const p = new DraftPolicy(2);
      assert.equal(p.keepsMtp(b, 64, 100), false, 'a 100-token sequence ends before any look');
      assert.equal(p.keepsMtp(b, 64, 400), true, 'a 400-token one may draft after');
      const s = simulate(p, () => MEMORY, PATIENCE, b);
      assert.deepEqual(s.decided.slice(1), [0, 0], `batch ${b}: ${s.decided}`);
      assert.equal(p.keepsMtp(b, 64, 100), true, 'a look is near');
      const t = simulate(p, () => MEMORY, 200, b);
      assert.ok(t.decided[2] > 150, `batch ${b}: then drafts (${t.decided})`);
    }
  });

  it('rules out drafts that are never accepted within 3 drafting steps', () => {
    // Bench-s (random weights), once the first PATIENCE steps are past: what exploring costs
    // must not show in 100 steps. A warm-up drafting for one sequence, then two timings whose
    // least is 1.6 plain steps.
    for (const b of [1, 8]) {
      const m = { ...COMPUTE, row: (0.6 * COMPUTE.plain) / b, pass: 0.1 * COMPUTE.plain, accept: [0, 0] };
      const p = new DraftPolicy(2);
      simulate(p, () => m, PATIENCE, b);
      const s = simulate(p, () => m, 100, b);
      assert.ok(s.decided[1] >= 1 && s.decided[1] <= 3 && s.decided[2] === 0, `batch ${b}: ${s.decided}`);
      assert.ok(ratio(s) > 0.97, `batch ${b}: ${ratio(s)}`);
    }
  });

  it('does not try longer drafts where one draft loses even with good drafts', () => {
    // Compute-bound, 88% of first drafts accepted, and one draft costs 1.6 plain steps more
    // (27% slower at batch 1): each further one costs as much again and brings fewer tokens,
    // so none is tried, though at their best (every draft accepted) two would look faster.
    const m = { ...COMPUTE, row: 0.35 };
    for (const b of [1, 8]) {
      const s = simulate(new DraftPolicy(3), () => m, 300, b);
      assert.ok(s.decided[1] <= 3 && s.decided[2] === 0 && s.decided[3] === 0, `batch ${b}: ${s.decided}`);
    }
  });

  it('keeps to the better option when steps stall at random (5% of them 5× longer)', () => {
    // Over 8 machines' noise (one seed's run may take a while to tell 8% apart under ±30%
    // noise: some tenth of them keep one draft for a few hundred steps).
    const seeds = [1, 2, 3, 4, 5, 6, 7, 8];
    const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    const runs = (m: Machine) => seeds.map((seed) => simulate(new DraftPolicy(3), () => m, 3000, 1, { seed, noise: 0.3, stalls: 0.05 }));
    // Compute-bound: plain decoding (one draft is 8% slower).
    const c = mean(runs(COMPUTE).map((s) => share(s, 0)));
    assert.ok(c > 0.9, `plain in ${c} of the steps`);
    // Memory-bound: two or three drafts (three are 4.5% faster than two, closer than ±30%
    // noise on every step lets a few thousand steps tell apart), near the best speed.
    const sims = runs(MEMORY);
    const m = mean(sims.map((s) => share(s, 2) + share(s, 3)));
    assert.ok(m > 0.9, `two or three drafts in ${m} of the steps`);
    const r = mean(sims.map(ratio));
    assert.ok(r > 0.95 * best(MEMORY, 1, 3).ratio, `${r}`);
  });

  it('compares drafting with the plain steps around it, not with how fast the machine was when each was timed', () => {
    // The machine's speed swings by ±40% over a few thousand steps (this VM's memory bandwidth
    // does, minute to minute; a small model's steps take a fraction of a millisecond). Drafting
    // timed when the machine was fast must not look cheap against plain steps timed now, when
    // it is slow: on a compute-bound model the policy keeps to plain decoding, bar its looks.
    // (Estimates kept in milliseconds drafted several times as often here.)
    for (const b of [1, 8]) {
      const swing = (i: number): Machine => {
        const f = 1 + 0.4 * Math.sin((2 * Math.PI * i) / 3000);
        return { ...COMPUTE, plain: f * COMPUTE.plain, row: (f * COMPUTE.row) / b, pass: f * COMPUTE.pass };
      };
      assert.equal(best(swing(0), b, 3).k, 0);
      const s = simulate(new DraftPolicy(3), swing, 6000, b, { seed: 2 });
      assert.ok(share(s, 0) > 0.995, `batch ${b}: ${s.decided}`);
      assert.ok(ratio(s) > 0.998, `batch ${b}: ${ratio(s)}`);
    }
  });

  it('takes a burst of stalled steps for a stall, not for a change of regime', () => {
    // Every 300 steps, 12 steps in a row take three times as long (the VM lost the CPU for
    // three milliseconds): drafting is not measured anew each time, and once plain decoding
    // has long been chosen, no MTP rows are kept for a look at drafting.
    const p = new DraftPolicy(3);
    const burst = (i: number): Machine => (i % 300 < 12 ? { ...COMPUTE, plain: 3 * COMPUTE.plain, row: 3 * COMPUTE.row } : COMPUTE);
    const s = simulate(p, burst, 3000, 1, { noise: 0.05 });
    assert.ok(share(s, 0) > 0.98, `${s.decided}`);
    assert.ok(s.explored < 40, `explored ${s.explored} times`);
    assert.equal(p.keepsMtp(1, 64), false, 'drafting is not to be looked at soon: no MTP rows kept');
  });

  it('follows a change of regime both ways', () => {
    const p = new DraftPolicy(2);
    const a = simulate(p, () => COMPUTE, 2000, 1);
    assert.ok(share(a, 0) > 0.97);
    assert.equal(p.keepsMtp(1, 64), false, 'plain for long: no need to keep MTP rows');
    // The machine turns memory-bound (another model's worth of weights on the bus, say): the
    // plain steps' times jump, a change of regime, and drafting is measured anew.
    const b = simulate(p, (i) => (i < 100 ? COMPUTE : MEMORY), 6000, 1);
    assert.ok(share(b, 2) > 0.3, `${b.decided}`);
    const c = simulate(p, () => MEMORY, 1000, 1);
    assert.ok(share(c, 2) > 0.95, `${c.decided}`);
    assert.equal(p.keepsMtp(1, 64), true);
    // And back: the verify passes take less than half what they did, and plain decoding is
    // measured anew.
    const d = simulate(p, () => COMPUTE, 1000, 1);
    assert.ok(share(d, 0) > 0.8, `${d.decided}`);
  });

  it('measures at a new batch size anew what it cannot rule out; the fixed policy always drafts k', () => {
    const p = new DraftPolicy(2);
    simulate(p, () => MEMORY, 500, 1);
    const s = simulate(p, () => MEMORY, 40, 4);
    assert.ok(s.decided[1] >= 2 && s.decided[2] >= 2, `batch 4 measured anew: ${s.decided}`);
    assert.ok(p.cost(4, 4, 0)! > 0 && p.cost(4, 4, 2)! > p.cost(4, 4, 0)!);
    // Compute-bound at batch 8: one draft is timed, and it costs so much that it is ruled out
    // before it counts as measured, and two, which could not win even were every draft
    // accepted, are never tried.
    const c = simulate(p, () => COMPUTE, 40, 8);
    assert.ok(c.decided[1] >= 2 && c.decided[1] <= 3 && c.decided[2] === 0, `batch 8: ${c.decided}`);
    assert.equal(p.choose(4, 0), 0, 'nothing to draft for');
    const f = new DraftPolicy(2, false);
    assert.ok(Array.from({ length: 20 }, () => f.choose(1, 1)).every((k) => k === 2));
    assert.equal(f.keepsMtp(1, 64), true);
    assert.deepEqual(f.stats, { decided: [0, 0, 20], explored: 0 });
  });

  it('expects 1 + Σ a_j tokens per verify pass from the acceptance counts', () => {
    const p = new DraftPolicy(2);
    assert.equal(p.expected(0), 1);
    assert.equal(p.expected(2), 2, 'no data: each a_j is 1/2');
    assert.equal(p.expected(2, true), 3, 'optimistic: all stand');
    for (let i = 0; i < 400; i++) p.accepted(2, i % 4 === 0 ? 0 : i % 4 === 1 ? 1 : 2);
    // a_0 = 3/4 (the first stood), a_1 = 1/2 (both stood), up to the prior and the decay
    assert.ok(Math.abs(p.expected(2) - 2.25) < 0.02, `${p.expected(2)}`);
  });
});
