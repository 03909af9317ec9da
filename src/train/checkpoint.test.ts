// The crash-safe checkpoint swap: every state a crash can leave on disk (built here file by
// file) recovers to a whole checkpoint, the newest committed one; and a process killed with
// SIGKILL while it saves over and over leaves a checkpoint whose files agree with each other.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { trainedTensors } from '../model/weights.ts';
import { refKernels } from '../kernels/ref/index.ts';
import { randomCheckpoint, tempDir } from '../../test/helpers/fixtures.ts';
import { REPO_ROOT } from '../../test/helpers/golden.ts';
import { loadOptimizer, saveCheckpoint } from './checkpoint.ts';
import { readRunState } from './loop.ts';
import { AdamW } from './optim.ts';
import { writeFileAtomic } from './atomic.ts';

const root = tempDir('dsv3-ckpt-');
const init = randomCheckpoint({ vocab_size: 64, hidden_size: 32, max_position_embeddings: 32 });
const model = () => DeepseekV3.load(init, { kernels: refKernels, mtp: true }).forTraining();

/** A training checkpoint whose weights carry its step (model.norm.weight[0] = step). */
function snapshot(step: number): string {
  const m = model();
  trainedTensors(m.cfg, m.weights).get('model.norm.weight')![0] = step;
  const opt = new AdamW({ lr: 1e-3 });
  opt.step = step;
  const dir = join(root, `snap${step}`);
  saveCheckpoint(dir, m, { optimizer: opt, state: { step, sampler: null, history: [], run: { steps: 10 } } });
  return dir;
}
const snaps = new Map([1, 2].map((s) => [s, snapshot(s)]));

/** What a crash in the middle of writing leaves: some files, one of them cut short. */
function partial(dir: string): void {
  mkdirSync(dir, { recursive: true });
  cpSync(join(snaps.get(2)!, 'config.json'), join(dir, 'config.json'));
  writeFileSync(join(dir, 'model.safetensors'), readFileSync(join(snaps.get(2)!, 'model.safetensors')).subarray(0, 100));
}

/** The step the recovered run folder holds, checked to agree across its files. */
function recovered(out: string): number | null {
  const st = readRunState(out);
  assert.deepEqual(readdirSync(out).sort(), st ? ['checkpoint'] : [], 'no leftovers');
  if (!st) return null;
  const dir = join(out, 'checkpoint');
  const m = DeepseekV3.load(dir, { kernels: refKernels, mtp: true }).forTraining();
  assert.equal(trainedTensors(m.cfg, m.weights).get('model.norm.weight')![0], st.step, 'model.safetensors');
  const opt = new AdamW({ lr: 1e-3 });
  const fresh = model();
  loadOptimizer(dir, fresh, opt);
  assert.equal(trainedTensors(fresh.cfg, fresh.weights).get('model.norm.weight')![0], st.step, 'optimizer/');
  assert.equal(opt.step, st.step);
  return st.step;
}

describe('checkpoint swap: recovery from each crash point', () => {
  // D = checkpoint, as saveCheckpoint leaves it after a crash at each point of its protocol.
  const cases: [string, (out: string) => void, number | null][] = [
    ['while writing D.saving (first save)', (o) => partial(join(o, 'checkpoint.saving')), null],
    ['while writing D.saving', (o) => {
      cpSync(snaps.get(1)!, join(o, 'checkpoint'), { recursive: true });
      partial(join(o, 'checkpoint.saving'));
    }, 1],
    ['after committing D.new, before D → D.old', (o) => {
      cpSync(snaps.get(1)!, join(o, 'checkpoint'), { recursive: true });
      cpSync(snaps.get(2)!, join(o, 'checkpoint.new'), { recursive: true });
    }, 2],
    ['between the renames D → D.old and D.new → D', (o) => {
      cpSync(snaps.get(1)!, join(o, 'checkpoint.old'), { recursive: true });
      cpSync(snaps.get(2)!, join(o, 'checkpoint.new'), { recursive: true });
    }, 2],
    ['while removing D.old', (o) => {
      cpSync(snaps.get(2)!, join(o, 'checkpoint'), { recursive: true });
      partial(join(o, 'checkpoint.old'));
    }, 2],
    ['between the renames of the older protocol (D.old and D.saving, no D)', (o) => {
      cpSync(snaps.get(1)!, join(o, 'checkpoint.old'), { recursive: true });
      cpSync(snaps.get(2)!, join(o, 'checkpoint.saving'), { recursive: true });
    }, 1],
  ];
  for (const [name, make, step] of cases) {
    it(`a crash ${name} recovers to ${step === null ? 'no checkpoint' : `step ${step}`}`, () => {
      const out = tempDir('dsv3-crash-');
      make(out);
      assert.equal(recovered(out), step);
      assert.equal(recovered(out), step, 'recovery is idempotent');
    });
  }

  it('a save after a crash replaces the recovered checkpoint', () => {
    const out = tempDir('dsv3-crash-');
    cpSync(snaps.get(1)!, join(out, 'checkpoint.old'), { recursive: true });
    cpSync(snaps.get(2)!, join(out, 'checkpoint.new'), { recursive: true });
    const m = model();
    trainedTensors(m.cfg, m.weights).get('model.norm.weight')![0] = 3;
    const opt = new AdamW({ lr: 1e-3 });
    opt.step = 3;
    saveCheckpoint(join(out, 'checkpoint'), m, { optimizer: opt, state: { step: 3, sampler: null, history: [], run: {} } });
    assert.equal(recovered(out), 3);
  });

  it('a process killed (SIGKILL) while saving leaves a consistent checkpoint', async () => {
    const out = tempDir('dsv3-kill-');
    const script = join(out, 'saver.ts');
    writeFileSync(script, `
      import { DeepseekV3 } from ${JSON.stringify(join(REPO_ROOT, 'src/model/deepseek-v3.ts'))};
      import { trainedTensors } from ${JSON.stringify(join(REPO_ROOT, 'src/model/weights.ts'))};
      import { refKernels } from ${JSON.stringify(join(REPO_ROOT, 'src/kernels/ref/index.ts'))};
      import { saveCheckpoint } from ${JSON.stringify(join(REPO_ROOT, 'src/train/checkpoint.ts'))};
      import { AdamW } from ${JSON.stringify(join(REPO_ROOT, 'src/train/optim.ts'))};
      const m = DeepseekV3.load(${JSON.stringify(init)}, { kernels: refKernels, mtp: true }).forTraining();
      const norm = trainedTensors(m.cfg, m.weights).get('model.norm.weight')!;
      const opt = new AdamW({ lr: 1e-3 });
      for (let step = 1; ; step++) {
        norm[0] = step;
        opt.step = step;
        saveCheckpoint(${JSON.stringify(join(out, 'run', 'checkpoint'))}, m, { optimizer: opt, state: { step, sampler: null, history: [], run: {} } });
        process.stdout.write('saved ' + step + '\\n');
      }
    `);
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let saved = 0;
    await new Promise<void>((resolve) => {
      child.stdout.on('data', (d) => {
        saved = Number(String(d).trim().split('\n').at(-1)!.split(' ')[1]);
        if (saved >= 3) {
          // A few milliseconds into the next save.
          setTimeout(() => child.kill('SIGKILL'), Math.random() * 20);
          resolve();
        }
      });
    });
    await new Promise((r) => child.on('exit', r));
    const step = recovered(join(out, 'run'));
    assert.ok(step !== null && step >= saved, `recovered step ${step}, last reported ${saved}`);
  });
});

describe('writeFileAtomic', () => {
  it('replaces a file whole and leaves no temp file', () => {
    const dir = tempDir('dsv3-atomic-');
    const f = join(dir, 'a.json');
    writeFileAtomic(f, 'old');
    writeFileAtomic(f, new Uint8Array([110, 101, 119]));
    assert.equal(readFileSync(f, 'utf8'), 'new');
    assert.deepEqual(readdirSync(dir), ['a.json']);
  });
});
