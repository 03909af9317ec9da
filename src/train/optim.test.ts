import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW, decays, learningRate } from './optim.ts';

describe('AdamW', () => {
  it('matches a hand-computed first and second step', () => {
    const p = new Map([['w', Float32Array.from([1, -2])]]);
    const opt = new AdamW({ lr: 0.1, weightDecay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8 });
    opt.update(p, new Map([['w', Float32Array.from([0.5, -1])]]));
    // Step 1: m̂ = g, v̂ = g², so the Adam step is lr·sign(g); decay shrinks by (1 − lr·wd).
    assert.ok(Math.abs(p.get('w')![0] - (1 * 0.99 - 0.1)) < 1e-6);
    assert.ok(Math.abs(p.get('w')![1] - (-2 * 0.99 + 0.1)) < 1e-6);
    const before = p.get('w')![0];
    opt.update(p, new Map([['w', Float32Array.from([0.5, -1])]]));
    // Same gradient again: m̂ = g, v̂ = g² still, so again a step of lr·sign(g).
    assert.ok(Math.abs(p.get('w')![0] - (before * 0.99 - 0.1)) < 1e-6);
  });

  it('clips the global gradient norm', () => {
    const p = new Map([['a', new Float32Array(2)], ['b', new Float32Array(1)]]);
    const opt = new AdamW({ lr: 1, weightDecay: 0, clip: 1 });
    const g = new Map([['a', Float32Array.from([3, 0])], ['b', Float32Array.from([4])]]);
    assert.equal(opt.update(p, g), 5);
    // After clipping g = (0.6, 0, 0.8): m = 0.1·g, v = 0.05·g², bias-corrected → sign(g).
    assert.ok(Math.abs(p.get('a')![0] + 1) < 1e-5);
    assert.equal(p.get('a')![1], 0);
    assert.ok(Math.abs(p.get('b')![0] + 1) < 1e-5);
  });

  it('decays matrices but not norms or biases', () => {
    assert.equal(decays('model.layers.0.mlp.up_proj.weight', [4, 4]), true);
    assert.equal(decays('model.norm.weight', [4]), false);
    assert.equal(decays('model.layers.1.mlp.gate.e_score_correction_bias', [8]), false);
    const p = new Map([['n', Float32Array.from([2])]]);
    new AdamW({ lr: 0.5, weightDecay: 1 }).update(p, new Map([['n', Float32Array.from([0])]]), { decay: () => false });
    assert.equal(p.get('n')![0], 2);
  });

  it('reduces a quadratic loss', () => {
    const p = new Map([['x', Float32Array.from([5, -3, 2])]]);
    const opt = new AdamW({ lr: 0.1, weightDecay: 0 });
    for (let i = 0; i < 300; i++) {
      const x = p.get('x')!;
      opt.update(p, new Map([['x', x.map((v) => 2 * v)]]));
    }
    assert.ok(p.get('x')!.every((v) => Math.abs(v) < 0.05));
  });
});

describe('learning-rate schedule', () => {
  it('warms up linearly, peaks, then decays by cosine to the floor', () => {
    const o = { lr: 1, warmup: 10, total: 110, minRatio: 0.1 };
    assert.ok(Math.abs(learningRate(0, o) - 0.1) < 1e-12);
    assert.ok(Math.abs(learningRate(9, o) - 1) < 1e-12);
    assert.ok(Math.abs(learningRate(10, o) - 1) < 1e-12);
    assert.ok(Math.abs(learningRate(60, o) - 0.55) < 1e-12);
    assert.ok(Math.abs(learningRate(110, o) - 0.1) < 1e-12);
    for (let s = 10; s < 110; s++) assert.ok(learningRate(s + 1, o) <= learningRate(s, o));
  });
});
