// Temporary random checkpoints for tests: any config, any storage dtype, optional shards.

import { copyFileSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { tinyConfig, writeRandomCheckpoint, type InitOptions } from '../../src/model/init.ts';
import { DEEPSEEK_TOKENIZER_DIR, REPO_ROOT } from './golden.ts';
import { Checkpoint, writeSafetensors, type TensorSpec } from '../../src/io/safetensors.ts';

/**
 * Rewrite dir/model.safetensors through `edit`, which may add, drop or change tensors (the data
 * are copies: the old file, possibly mapped, is gone before the new one is written).
 */
export function rewriteCheckpoint(dir: string, edit: (specs: TensorSpec[], data: Map<string, Uint8Array>) => void): void {
  const file = join(dir, 'model.safetensors');
  const ck = Checkpoint.open(dir);
  const specs: TensorSpec[] = [];
  const data = new Map<string, Uint8Array>();
  for (const n of ck.names()) {
    const t = ck.read(n);
    specs.push({ name: n, dtype: t.dtype, shape: t.shape });
    data.set(n, t.data.slice());
  }
  ck.close();
  edit(specs, data);
  unlinkSync(file);
  writeSafetensors(file, specs, (n) => data.get(n)!);
}

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * Config overrides for a DeepSeek-V2(-Lite)-style model: softmax routing without a selection
 * bias, no renormalisation or scaling, one expert group, a plain q_proj, no MTP module.
 */
export const V2_STYLE = {
  model_type: 'deepseek_v2',
  topk_method: 'greedy',
  scoring_func: 'softmax',
  norm_topk_prob: false,
  routed_scaling_factor: 1,
  n_group: 1,
  topk_group: 1,
  q_lora_rank: null,
  num_nextn_predict_layers: 0,
} as const;

/** A fresh temp folder, removed when the test file ends. */
export function tempDir(prefix = 'dsv3-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** Write a random checkpoint of tinyConfig(overrides) and return its folder. */
export function randomCheckpoint(overrides: Record<string, unknown> = {}, opts: InitOptions = {}): string {
  const dir = tempDir();
  writeRandomCheckpoint(dir, tinyConfig(overrides), opts);
  return dir;
}

/**
 * A random model that speaks DeepSeek-V3's vocabulary: a tiny BF16 checkpoint whose vocab
 * covers the real tokenizer, with tokenizer.json and tokenizer_config.json beside it.
 * Its text is gibberish, but every text path (encode, chat template, streaming decode,
 * stop strings) runs for real.
 */
export function textCheckpoint(overrides: Record<string, unknown> = {}, opts: InitOptions = {}): string {
  const dir = tempDir('dsv3-text-');
  writeRandomCheckpoint(
    dir,
    tinyConfig({ vocab_size: 128815, hidden_size: 32, num_nextn_predict_layers: 0, max_position_embeddings: 512, ...overrides }),
    { dtype: 'BF16', ...opts },
  );
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
    copyFileSync(join(DEEPSEEK_TOKENIZER_DIR, f), join(dir, f));
  }
  return dir;
}

/** The model dsv3 ships (trained by `dsv3 train`, see the README). */
export const DEFAULT_MODEL_DIR = join(REPO_ROOT, 'models/default');
