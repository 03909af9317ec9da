import { it } from 'node:test';
import assert from 'node:assert/strict';
import { evalWindows, evaluate } from './eval.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { randomCheckpoint } from '../../test/helpers/fixtures.ts';

it('windows predict every token after the first exactly once', () => {
  const ids = Array.from({ length: 23 }, (_, i) => i);
  const w = evalWindows(ids, 8);
  assert.equal(w.reduce((n, x) => n + x.length - 1, 0), 22);
  assert.deepEqual(w[1][0], w[0][7]);
});

it('cross-entropy equals −log softmax computed independently, and batching does not change it', () => {
  const model = DeepseekV3.load(randomCheckpoint({}, { seed: 5 }), { kernels: refKernels });
  const V = model.cfg.vocab_size;
  const ids = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43];
  const windows = evalWindows(ids, 5);
  const a = evaluate(model, windows, 1);
  const b = evaluate(model, windows, 3);
  assert.equal(a.tokens, ids.length - 1);
  assert.ok(Math.abs(a.nll - b.nll) < 1e-9);
  let want = 0;
  for (const w of windows) {
    const r = model.forward([{ ids: w, cache: model.newCache() }], { logits: 'all' });
    for (let t = 0; t + 1 < w.length; t++) {
      const row = Array.from(r.logits.subarray(t * V, (t + 1) * V));
      const lse = Math.log(row.reduce((s, x) => s + Math.exp(x), 0));
      want += lse - row[w[t + 1]];
    }
  }
  assert.ok(Math.abs(a.nll - want) < 1e-6 * want);
});
