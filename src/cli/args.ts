// Shared option handling for the CLI commands: parsing, number and id-list options, and
// loading a model with progress on stderr (stdout stays clean for --json output).

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { loadKernels } from '../kernels/index.ts';
import type { AttnImpl } from '../model/mla.ts';
import { QUANT_RECIPES, type QuantRecipe } from '../io/gguf-recipes.ts';

/** A mistake in the command line itself (exit code 2). */
export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Options every model-running command accepts. */
export const MODEL_OPTIONS = {
  model: { type: 'string' },
  threads: { type: 'string' },
  kernels: { type: 'string' },
  quantize: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies Options;

export function parse<O extends Options>(argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function intOption(v: string | undefined, name: string, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got "${v}"`);
  return n;
}

export function floatOption(v: string | undefined, name: string, def: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got "${v}"`);
  return n;
}

/** "1,2,3" → [1, 2, 3]. */
export function idsOption(v: string, name = 'ids'): number[] {
  const parts = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const ids = parts.map(Number);
  if (ids.length === 0 || ids.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new UsageError(`--${name} must be a comma-separated list of token ids, got "${v}"`);
  }
  return ids;
}

export function attnOption(v: string | undefined): AttnImpl {
  if (v === undefined || v === 'absorb' || v === 'naive') return v ?? 'absorb';
  throw new UsageError(`--attn must be "absorb" or "naive", got "${v}"`);
}

export function requireModel(v: string | undefined): string {
  if (!v) throw new UsageError('--model DIR is required');
  return v;
}

/** --quantize: one of llama-quantize's recipes, or undefined. */
export function quantizeOption(v: string | undefined): QuantRecipe | undefined {
  if (v === undefined) return undefined;
  if (!(QUANT_RECIPES as readonly string[]).includes(v)) {
    throw new UsageError(`--quantize must be one of ${QUANT_RECIPES.join(', ')}, got "${v}"`);
  }
  return v as QuantRecipe;
}

/** Load a checkpoint folder or GGUF file, reporting on stderr how long it took. */
export function loadModel(
  dir: string,
  opts: { threads?: string; kernels?: string; mtp?: boolean; quantize?: string },
): DeepseekV3 {
  const backend = opts.kernels ?? 'auto';
  if (backend !== 'auto' && backend !== 'native' && backend !== 'ref') {
    throw new UsageError(`--kernels must be auto, native or ref, got "${backend}"`);
  }
  const quantize = quantizeOption(opts.quantize);
  const kernels = loadKernels({ backend, threads: intOption(opts.threads, 'threads', 0, 0) || undefined });
  const t0 = performance.now();
  const head = `dsv3: loading ${dir} … `;
  process.stderr.write(head);
  let model: DeepseekV3;
  const notes: string[] = [];
  // Progress on one line (rewritten at most every 200 ms; only slow loads get to show any).
  let shown = 0;
  let line = '';
  const status = (s: string) => {
    process.stderr.write(`\r${head}${s}${' '.repeat(Math.max(0, line.length - s.length))}`);
    line = s;
  };
  try {
    model = DeepseekV3.load(dir, {
      kernels,
      mtp: opts.mtp,
      quantize,
      onNote: (n) => notes.push(n),
      onProgress: (stage, done, total) => {
        const now = performance.now();
        if (now - shown < 200 || now - t0 < 200) return;
        shown = now;
        status(`${stage === 'load' ? 'reading' : `quantizing to ${quantize}`} ${Math.round((100 * done) / total)}%`);
      },
    });
  } catch (e) {
    if (line) status('');
    process.stderr.write('failed\n');
    throw e;
  }
  if (line) status('');
  process.stderr.write(`done in ${((performance.now() - t0) / 1e3).toFixed(2)} s (${kernels.name} kernels${quantize ? `, quantized to ${quantize}` : ''})\n`);
  for (const n of notes) process.stderr.write(`dsv3: ${n}\n`);
  return model;
}
