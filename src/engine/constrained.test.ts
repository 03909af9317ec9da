// Constrained sampling: the mask decides what may be picked, whatever the sampling settings.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConstrainedSampler, applyMask, type TokenConstraint } from './constrained.ts';
import { Sampler } from './sampler.ts';
import { Rng } from '../tensor/random.ts';

/** A constraint over a fixed set of ids, with a record of what it was told. */
class SetConstraint implements TokenConstraint {
  readonly accepted: number[] = [];
  released = 0;
  private readonly bits: Int32Array;
  constructor(vocab: number, readonly ids: number[]) {
    this.bits = new Int32Array(Math.ceil(vocab / 32));
    for (const id of ids) this.bits[id >> 5]! |= 1 << (id & 31);
  }
  mask(): Int32Array {
    return this.bits;
  }
  accept(id: number): void {
    this.accepted.push(id);
  }
  release(): void {
    this.released++;
  }
}

function randomLogits(n: number, rng: Rng): Float32Array {
  return Float32Array.from({ length: n }, () => rng.uniform() * 8 - 4);
}

describe('applyMask', () => {
  it('keeps exactly the allowed logits, for sparse, dense and random masks and odd lengths', () => {
    const rng = new Rng(1);
    for (const n of [1, 31, 32, 33, 1000, 129_280]) {
      const logits = randomLogits(n, rng);
      const words = Math.ceil(n / 32);
      const masks = [
        new Int32Array(words).fill(-1),
        new Int32Array(words),
        Int32Array.from({ length: words }, () => (rng.uniform() * 2 ** 32) | 0),
        Int32Array.from({ length: words }, () => (rng.uniform() < 0.05 ? (rng.uniform() * 2 ** 32) | 0 : 0)),
        Int32Array.from({ length: words }, () => (rng.uniform() < 0.05 ? (rng.uniform() * 2 ** 32) | 0 : -1)),
        new Int32Array(Math.max(0, words - 1)).fill(-1), // a short mask: ids past it are not allowed
      ];
      for (const mask of masks) {
        const out = applyMask(logits, mask, new Float32Array(n));
        for (let i = 0; i < n; i++) {
          const ok = (i >> 5) < mask.length && ((mask[i >> 5]! >>> (i & 31)) & 1) === 1;
          assert.equal(out[i], ok ? logits[i] : -Infinity, `n=${n} id=${i}`);
        }
      }
    }
  });
});

describe('ConstrainedSampler', () => {
  const V = 5000;

  it('only ever picks allowed ids, greedy or sampled, with penalties and filters', () => {
    const rng = new Rng(7);
    const allowedIds = [3, 64, 65, 1999, 4095];
    const settings = [
      { temperature: 0 },
      { temperature: 1, seed: 1 },
      { temperature: 1.5, topK: 3, seed: 2 },
      { temperature: 0.7, topP: 0.5, minP: 0.1, seed: 3 },
      { temperature: 1, repetitionPenalty: 1.3, presencePenalty: 1, seed: 4 },
    ];
    for (const p of settings) {
      const c = new SetConstraint(V, allowedIds);
      const s = new ConstrainedSampler(new Sampler(p), c);
      for (let k = 0; k < 200; k++) {
        const logits = randomLogits(V, rng);
        logits[0] = 100; // the unconstrained favourite is forbidden
        const id = s.sample(logits, [64, 64, 3]);
        assert.ok(allowedIds.includes(id), `${JSON.stringify(p)}: ${id}`);
      }
      // Greedy: the best allowed logit.
      if (p.temperature === 0) {
        const logits = new Float32Array(V).fill(0);
        logits[1999] = 5;
        logits[7] = 9;
        assert.equal(s.sample(logits), 1999);
      }
    }
  });

  it('gives a distribution that is zero outside the mask and sums to 1', () => {
    const c = new SetConstraint(V, [10, 20, 30]);
    const s = new ConstrainedSampler(new Sampler({ temperature: 1 }), c);
    const logits = randomLogits(V, new Rng(3));
    const d = s.distribution(logits);
    let sum = 0;
    d.forEach((p, i) => {
      if (![10, 20, 30].includes(i)) assert.equal(p, 0);
      sum += p;
    });
    assert.ok(Math.abs(sum - 1) < 1e-12);
    // Relative odds among the allowed ones are the model's.
    assert.ok(Math.abs(d[10]! / d[20]! - Math.exp(logits[10]! - logits[20]!)) < 1e-9);
  });

  it('never drafts, and leaves the logits it is given untouched', () => {
    const c = new SetConstraint(V, [1]);
    const s = new ConstrainedSampler(new Sampler({ temperature: 0 }), c);
    assert.equal(s.speculate, false);
    assert.equal(s.greedy, true);
    const logits = randomLogits(V, new Rng(5));
    const copy = logits.slice();
    assert.equal(s.sample(logits), 1);
    assert.deepEqual(logits, copy);
  });
});
