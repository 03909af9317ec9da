// Training against the official reference: ../shared/golden/models/v3-tiny/train.json holds
// the losses, the sequence-wise balance losses and float32 autograd gradients of
// DeepSeek-V3's inference/model.py (with vLLM's MTP glue) on a batch of two sequences.
// Checked in both attention paths, in-process and through `dsv3 train-step --json`, with
// the golden README's tolerances: losses within 1e-5, each gradient within
// 1e-4 · max|grad| of its tensor, balance losses within 1e-5 relative.

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeepseekV3 } from '../../src/model/deepseek-v3.ts';
import { refKernels } from '../../src/kernels/ref/index.ts';
import { trainStep, type TrainStepResult } from '../../src/train/step.ts';
import { tempDir } from '../helpers/fixtures.ts';
import { GOLDEN_MISSING, REPO_ROOT, goldenModelDir, maxAbsDiff, readJson } from '../helpers/golden.ts';
import { DSV3_BIN } from '../helpers/cli.ts';

interface BalanceLayer {
  per_sequence: number[];
  mean: number;
  per_sequence_raw_topk: number[];
  mean_raw_topk: number;
}

interface TrainGolden {
  tokens: number[][];
  loss: { main_ce: number; mtp_ce: number; mtp_weight: number; total: number };
  balance_loss: { alpha: number; layers: Record<string, BalanceLayer> };
  grads: Record<string, { shape: number[]; max_abs: number; values: number[][] | number[] }>;
}

const dir = GOLDEN_MISSING ? '' : goldenModelDir('v3-tiny');
const skip = GOLDEN_MISSING || (!existsSync(join(dir, 'train.json')) && `no train.json in ${dir}`);

function relClose(a: number, b: number, rel: number): boolean {
  return Math.abs(a - b) <= rel * Math.abs(b);
}

function checkLosses(g: TrainGolden, loss: { main_ce: number; mtp_ce: number | null; total: number }) {
  assert.ok(Math.abs(loss.main_ce - g.loss.main_ce) <= 1e-5, `main_ce ${loss.main_ce} vs ${g.loss.main_ce}`);
  assert.ok(Math.abs(loss.mtp_ce! - g.loss.mtp_ce) <= 1e-5, `mtp_ce ${loss.mtp_ce} vs ${g.loss.mtp_ce}`);
  assert.ok(Math.abs(loss.total - g.loss.total) <= 1e-5, `total ${loss.total} vs ${g.loss.total}`);
}

function checkGrad(g: TrainGolden, name: string, got: ArrayLike<number>) {
  const want = g.grads[name];
  const d = maxAbsDiff(got, want.values);
  assert.ok(d <= 1e-4 * want.max_abs, `${name}: max |Δ| ${d} > 1e-4 · ${want.max_abs}`);
}

describe('training step against train.json (v3-tiny)', { skip }, () => {
  let g: TrainGolden;
  let model: DeepseekV3;
  const results = new Map<string, TrainStepResult>();
  before(() => {
    g = readJson<TrainGolden>(join(dir, 'train.json'));
    model = DeepseekV3.load(dir, { kernels: refKernels });
  });

  for (const attn of ['absorb', 'naive'] as const) {
    it(`losses, balance losses and gradients match (${attn})`, () => {
      const r = trainStep(model, g.tokens, { mtpWeight: g.loss.mtp_weight, seqAux: 0, attn });
      results.set(attn, r);
      checkLosses(g, r.loss);
      assert.deepEqual(Object.keys(r.balance_loss), Object.keys(g.balance_loss.layers));
      for (const [layer, want] of Object.entries(g.balance_loss.layers)) {
        assert.ok(relClose(r.balance_loss[layer], want.mean, 1e-5), `${layer}: ${r.balance_loss[layer]} vs ${want.mean}`);
        want.per_sequence.forEach((v, b) => assert.ok(relClose(r.balance_per_sequence[layer][b], v, 1e-5)));
      }
      for (const name of Object.keys(g.grads)) checkGrad(g, name, r.grads.get(name)!);
    });
  }

  it('the raw-top-k balance variant matches', () => {
    const r = trainStep(model, g.tokens, { mtpWeight: g.loss.mtp_weight, balanceTopk: 'raw', backward: false });
    for (const [layer, want] of Object.entries(g.balance_loss.layers)) {
      assert.ok(relClose(r.balance_loss[layer], want.mean_raw_topk, 1e-5), `${layer}: ${r.balance_loss[layer]}`);
      want.per_sequence_raw_topk.forEach((v, b) => assert.ok(relClose(r.balance_per_sequence[layer][b], v, 1e-5)));
    }
  });

  it('dsv3 train-step --json prints the same numbers', () => {
    const tokens = join(tempDir(), 'tokens.json');
    writeFileSync(tokens, JSON.stringify(g.tokens));
    const names = Object.keys(g.grads);
    const p = spawnSync(
      process.execPath,
      [DSV3_BIN, 'train-step', '--model', dir, '--tokens', tokens, '--grads', names.join(','),
        '--kernels', 'ref', '--json'],
      { encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    assert.equal(p.status, 0, p.stderr);
    const out = JSON.parse(p.stdout);
    assert.deepEqual(Object.keys(out).sort(), ['balance_loss', 'grads', 'loss']);
    checkLosses(g, out.loss);
    for (const [layer, want] of Object.entries(g.balance_loss.layers)) {
      assert.ok(relClose(out.balance_loss[layer], want.mean, 1e-5), layer);
    }
    assert.deepEqual(Object.keys(out.grads), names);
    for (const name of names) {
      assert.deepEqual(
        [out.grads[name].length, out.grads[name][0].length ?? 0],
        [g.grads[name].shape[0], g.grads[name].shape[1] ?? 0],
      );
      checkGrad(g, name, out.grads[name].flat());
    }
    // The same computation as in-process, so the same numbers exactly.
    const inProcess = results.get('absorb');
    if (inProcess) {
      assert.deepEqual(out.loss, inProcess.loss);
      assert.deepEqual(out.balance_loss, inProcess.balance_loss);
    }
  });
});
