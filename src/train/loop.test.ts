// The training loop on a tiny model and a small corpus: the loss falls, a resumed run is
// bit-identical to an uninterrupted one, a stop (Ctrl-C) saves a loadable checkpoint, the
// balancing bias moves toward balance, and simulated FP8 stays close to full precision.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { RECIPE, checkMemory, train, updateBias, type TrainOptions } from './loop.ts';
import { tokenizerConfig, trainBpe } from '../text/bpe-trainer.ts';
import { tinyConfig } from '../model/init.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { DsError } from '../errors.ts';
import { tempDir } from '../../test/helpers/fixtures.ts';

const TEXT = Array.from({ length: 120 }, (_, i) =>
  [
    `The jury said the case number ${i % 17} was closed after a long day.`,
    `A quick brown fox jumps over the lazy dog ${i % 5} times.`,
    `Results of test ${i % 11} were good and the team was happy.`,
  ][i % 3],
).join('\n\n');

const root = tempDir('dsv3-train-');
const corpus = join(root, 'corpus.txt');
writeFileSync(corpus, TEXT);
const tokDir = join(root, 'tok');
{
  const { mkdirSync } = await import('node:fs');
  mkdirSync(tokDir, { recursive: true });
  writeFileSync(join(tokDir, 'tokenizer.json'), JSON.stringify(trainBpe(TEXT.split('\n\n'), { vocabSize: 320 })));
  writeFileSync(join(tokDir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig({ modelMaxLength: 128 })));
}

function opts(out: string, over: Partial<TrainOptions> = {}): TrainOptions {
  return {
    out,
    config: tinyConfig({ vocab_size: 320, hidden_size: 48, moe_intermediate_size: 24, intermediate_size: 64, max_position_embeddings: 64 }),
    tokenizerDir: tokDir,
    sources: [{ kind: 'text', path: corpus, split: 'paragraph' }],
    kernels: refKernels,
    steps: 24,
    batch: 4,
    seqLen: 24,
    lr: 1e-2,
    warmup: 4,
    ...RECIPE,
    fp8: false,
    seed: 3,
    valFraction: 0.05,
    evalEvery: 8,
    evalWindows: 4,
    saveEvery: 12,
    log: () => {},
    ...over,
  };
}

function weightsOf(dir: string): Buffer {
  return readFileSync(join(dir, 'checkpoint', 'model.safetensors'));
}

describe('training loop', () => {
  it('lowers the loss and writes a loadable checkpoint with a loss curve', async () => {
    const out = join(root, 'a');
    const r = await train(opts(out));
    const first = r.history.slice(0, 3).reduce((a, h) => a + h.loss, 0) / 3;
    const last = r.history.slice(-3).reduce((a, h) => a + h.loss, 0) / 3;
    assert.ok(last < first * 0.7, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`);
    assert.ok(r.valLoss !== null && r.valLoss < r.history[0].loss);
    assert.ok(existsSync(join(out, 'loss.svg')));
    const m = DeepseekV3.load(join(out, 'checkpoint'), { kernels: refKernels });
    assert.ok(m.hasMtp, 'the MTP module is saved as layer num_hidden_layers');
    for (const s of Object.values(r.expertLoad)) assert.ok(s.max >= s.mean && s.max < 1);
  });

  it('resumes exactly: 12 + 12 steps equal 24 uninterrupted steps', async () => {
    const straight = join(root, 'b');
    await train(opts(straight));
    const split = join(root, 'c');
    let n = 0;
    const stopped = await train(opts(split, { shouldStop: () => ++n >= 12 }));
    assert.equal(stopped.stopped, true);
    const st = JSON.parse(readFileSync(join(split, 'checkpoint', 'trainer_state.json'), 'utf8'));
    assert.equal(st.step, 12);
    const rest = await train(opts(split, { resume: true, config: undefined }));
    assert.equal(rest.steps, 24);
    assert.equal(rest.stopped, false);
    assert.ok(weightsOf(straight).equals(weightsOf(split)), 'identical weights after resume');
  });

  it('refuses to resume a folder without a training checkpoint', async () => {
    await assert.rejects(
      () => train(opts(join(root, 'empty'), { resume: true })),
      (e: unknown) => e instanceof DsError && e.code === 'MISSING_FILE',
    );
  });

  it('simulated FP8 training stays within a few percent of full precision', async () => {
    const a = await train(opts(join(root, 'f32'), { steps: 16, evalEvery: 16 }));
    const b = await train(opts(join(root, 'fp8'), { steps: 16, evalEvery: 16, fp8: true }));
    const rel = Math.abs(b.history.at(-1)!.loss - a.history.at(-1)!.loss) / a.history.at(-1)!.loss;
    assert.ok(rel < 0.05, `relative loss difference ${rel}`);
    assert.notEqual(b.history.at(-1)!.loss, a.history.at(-1)!.loss, 'FP8 rounding changed something');
  });
});

describe('memory check', () => {
  it('refuses a config that does not fit in memory, before allocating it', () => {
    const huge = tinyConfig({ vocab_size: 129280, hidden_size: 7168, num_hidden_layers: 61, n_routed_experts: 256,
      moe_intermediate_size: 2048, intermediate_size: 18432, n_group: 8, topk_group: 4, num_experts_per_tok: 8,
      num_attention_heads: 128, q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_head_dim: 128, qk_rope_head_dim: 64,
      v_head_dim: 128, max_position_embeddings: 4096 });
    assert.throws(
      () => checkMemory(huge, 4096, 24 * 2 ** 30),
      (e: unknown) => e instanceof DsError && e.code === 'BAD_CONFIG' && /needs about \d+/.test(e.message),
    );
    checkMemory(tinyConfig(), 1024, 24 * 2 ** 30);
  });
});

describe('auxiliary-loss-free bias update', () => {
  it('lowers overloaded experts and raises underloaded ones by γ', () => {
    const bias = Float32Array.from([0, 0, 0, 0]);
    updateBias(bias, Float64Array.from([8, 2, 5, 5]), 0.01);
    assert.deepEqual(Array.from(bias, (x) => +x.toFixed(4)), [-0.01, 0.01, 0, 0]);
  });
});
