// Gradients of trainStep against central differences of its own total loss, on tiny random
// checkpoints: every parameter kind (embeddings, norms, MLA in both query forms, router,
// routed and shared experts, dense MLP, the MTP module, lm_head), with the MTP and balance
// losses switched on. The forward is float32, so each difference carries ~5e-5 of rounding
// noise; the tolerance is relative to the tensor's largest gradient, and a check is only
// valid if no expert choice flips under the step, which is asserted. The float64 checks of
// each backward kernel are in src/kernels/train.test.ts; the reference numbers in
// test/golden/train.test.ts.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { decodeRow } from '../kernels/ref/index.ts';
import { tensorTable, trainedTensors } from '../model/weights.ts';
import { Rng } from '../tensor/random.ts';
import { V2_STYLE, randomCheckpoint } from '../../test/helpers/fixtures.ts';
import { trainStep, type TrainStepOptions } from './step.ts';
import { BALANCE_ALPHA } from './loss.ts';

function tokens(lengths: number[], vocab: number): number[][] {
  return lengths.map((n, b) => Array.from({ length: n }, (_, i) => (i * 13 + b * 29 + 3) % vocab));
}

function maxAbs(a: Float32Array): number {
  return a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
}

function argmaxAbs(a: Float32Array): number {
  let k = 0;
  for (let i = 1; i < a.length; i++) if (Math.abs(a[i]) > Math.abs(a[k])) k = i;
  return k;
}

/**
 * Central differences (step h) of the total loss at a few entries of each named tensor:
 * the largest-gradient entry and a random one.
 */
function checkAgainstDifferences(
  model: DeepseekV3,
  batch: number[][],
  opts: TrainStepOptions,
  names: string[],
  h = 1e-3,
) {
  const base = trainStep(model, batch, opts);
  const params = trainedTensors(model.cfg, model.weights);
  const routing = (o: TrainStepOptions) => {
    const idx: Int32Array[] = [];
    const loss = trainStep(model, batch, { ...o, backward: false, onRoute: (_l, r) => void idx.push(r.idx.slice()) });
    return { total: loss.loss.total, idx };
  };
  const base0 = routing(opts);
  assert.equal(base0.total, base.loss.total, 'the tape changes nothing in the forward pass');
  const rng = new Rng(11);
  for (const name of names) {
    const g = base.grads.get(name);
    const p = params.get(name);
    assert.ok(g && p, `${name}: a gradient and a parameter`);
    const scale = maxAbs(g);
    assert.ok(scale > 0, `${name}: the gradient is not all zero`);
    for (const i of [argmaxAbs(g), rng.int(g.length)]) {
      const old = p[i];
      p[i] = old + h;
      const plus = routing(opts);
      p[i] = old - h;
      const minus = routing(opts);
      p[i] = old;
      assert.deepEqual(plus.idx, base0.idx, `${name}[${i}]: routing flipped under +h`);
      assert.deepEqual(minus.idx, base0.idx, `${name}[${i}]: routing flipped under -h`);
      const fd = (plus.total - minus.total) / (2 * h);
      assert.ok(
        Math.abs(fd - g[i]) <= 2e-3 * scale + 2e-5,
        `${name}[${i}]: backward ${g[i]}, differences ${fd} (max |grad| ${scale})`,
      );
    }
  }
  return base;
}

/** Every trained tensor, but of the routed experts only the one with the largest gradient per layer. */
function namesToCheck(grads: Map<string, Float32Array>): string[] {
  const best = new Map<string, { e: string; m: number }>();
  for (const [name, g] of grads) {
    const m = /^(.*\.experts)\.(\d+)\./.exec(name);
    if (!m) continue;
    const b = best.get(m[1]);
    if (!b || maxAbs(g) > b.m) best.set(m[1], { e: m[2], m: maxAbs(g) });
  }
  return [...grads.keys()].filter((name) => {
    const m = /^(.*\.experts)\.(\d+)\./.exec(name);
    return !m || best.get(m[1])!.e === m[2];
  });
}

describe('trainStep gradients: V3 (q_lora, sigmoid + bias, 2 groups, MTP)', () => {
  const dir = randomCheckpoint({ vocab_size: 64 }, { seed: 5 });
  const model = DeepseekV3.load(dir, { kernels: refKernels }).forTraining();
  const batch = tokens([12, 9], 64);
  const opts: TrainStepOptions = { mtpWeight: 0.3, seqAux: 0.05 };

  it('match central differences of the total loss for every parameter kind', () => {
    const all = trainStep(model, batch, opts).grads;
    const names = namesToCheck(all);
    for (const kind of [
      'model.embed_tokens.weight',
      'lm_head.weight',
      'model.norm.weight',
      'model.layers.0.mlp.gate_proj.weight',
      'model.layers.1.self_attn.q_a_layernorm.weight',
      'model.layers.1.self_attn.kv_b_proj.weight',
      'model.layers.1.mlp.gate.weight',
      'model.layers.1.mlp.shared_experts.down_proj.weight',
      'model.layers.2.eh_proj.weight',
      'model.layers.2.enorm.weight',
      'model.layers.2.hnorm.weight',
      'model.layers.2.shared_head.norm.weight',
    ]) {
      assert.ok(names.includes(kind), kind);
    }
    assert.ok(names.some((n) => /layers\.1\.mlp\.experts\.\d+\.up_proj/.test(n)));
    checkAgainstDifferences(model, batch, opts, names);
  });

  it('absorbed and naive attention give the same gradients', () => {
    const a = trainStep(model, batch, opts);
    const b = trainStep(model, batch, { ...opts, attn: 'naive' });
    assert.ok(Math.abs(a.loss.total - b.loss.total) < 1e-5);
    for (const [name, g] of a.grads) {
      const h = b.grads.get(name)!;
      let d = 0;
      for (let i = 0; i < g.length; i++) d = Math.max(d, Math.abs(g[i] - h[i]));
      assert.ok(d <= 1e-5 * maxAbs(g) + 1e-9, `${name}: max |Δ| ${d}`);
    }
  });

  it('names every trained tensor; the MTP embedding/head are tied, the bias untrained', () => {
    const grads = trainStep(model, batch, opts).grads;
    const expected = tensorTable(model.cfg)
      .map((s) => s.name)
      .filter((n) => !/^model\.layers\.2\.(embed_tokens|shared_head\.head)\.weight$/.test(n))
      .filter((n) => !n.endsWith('e_score_correction_bias'));
    assert.deepEqual([...grads.keys()], expected);
    for (const s of tensorTable(model.cfg)) {
      if (grads.has(s.name)) assert.equal(grads.get(s.name)!.length, s.shape.reduce((a, b) => a * b, 1));
    }
  });

  it('the balance loss: reported with α = 1e-4, added to the total with seqAux', () => {
    const off = trainStep(model, batch, { ...opts, seqAux: 0, backward: false });
    const on = trainStep(model, batch, { ...opts, seqAux: 0.05, backward: false });
    assert.deepEqual(on.balance_loss, off.balance_loss);
    assert.deepEqual(Object.keys(on.balance_loss), ['model.layers.1', 'model.layers.2']);
    const sum = Object.values(on.balance_loss).reduce((a, v) => a + v, 0);
    assert.ok(Math.abs(on.loss.total - off.loss.total - (0.05 / BALANCE_ALPHA) * sum) < 1e-9);
    // Balanced routing gives Σ f_i P_i ≈ 1.
    for (const v of Object.values(on.balance_loss)) assert.ok(v > 0.5 * BALANCE_ALPHA && v < 3 * BALANCE_ALPHA);
    const raw = trainStep(model, batch, { ...opts, balanceTopk: 'raw', backward: false });
    assert.notDeepEqual(raw.balance_loss, on.balance_loss);
    assert.equal(raw.loss.main_ce, on.loss.main_ce);
  });

  it('the raw-top-k balance variant has the right gradient too', () => {
    const o: TrainStepOptions = { mtpWeight: 0, seqAux: 0.2, balanceTopk: 'raw' };
    checkAgainstDifferences(model, batch, o, ['model.layers.1.mlp.gate.weight', 'model.layers.2.mlp.gate.weight']);
  });
});

describe('trainStep gradients: V2-style (softmax router, q_proj, no bias, one group, no MTP)', () => {
  const dir = randomCheckpoint(
    { ...V2_STYLE, vocab_size: 64 },
    { seed: 6 },
  );
  const model = DeepseekV3.load(dir, { kernels: refKernels }).forTraining();
  const batch = tokens([10, 7], 64);

  it('match central differences', () => {
    const opts: TrainStepOptions = { seqAux: 0.05 };
    const r = checkAgainstDifferences(model, batch, opts, [
      'model.embed_tokens.weight',
      'model.layers.1.self_attn.q_proj.weight',
      'model.layers.1.self_attn.kv_b_proj.weight',
      'model.layers.1.mlp.gate.weight',
      'model.layers.1.mlp.shared_experts.gate_proj.weight',
      'lm_head.weight',
    ]);
    assert.equal(r.loss.mtp_ce, null);
  });
});

describe('training a BF16 checkpoint', () => {
  const dir = randomCheckpoint({ vocab_size: 64 }, { dtype: 'BF16', seed: 7 });
  const model = DeepseekV3.load(dir, { kernels: refKernels });

  it('widens each matrix exactly to float32 and ties the MTP embedding and head', () => {
    const t = model.forTraining();
    assert.equal(t.forTraining(), t);
    const src = model.weights.layers[1].self_attn.kv_b_proj!;
    const dst = t.weights.layers[1].self_attn.kv_b_proj!;
    assert.equal(src.dtype, 'BF16');
    assert.equal(dst.dtype, 'F32');
    const row = new Float32Array(src.cols);
    decodeRow(src, 3, row);
    assert.deepEqual(dst.data.subarray(3 * src.cols, 4 * src.cols), row);
    assert.equal(t.weights.mtp[0].embed_tokens, t.weights.embed_tokens);
    assert.equal(t.weights.mtp[0].head, t.weights.lm_head);
    const a = trainStep(model, tokens([6], 64));
    const b = trainStep(t, tokens([6], 64));
    assert.deepEqual(a.loss, b.loss);
  });
});
