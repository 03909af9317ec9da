// Shared option handling for the CLI commands: parsing, number and id-list options, and
// loading a model with progress on stderr (stdout stays clean for --json output).

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { loadKernels } from '../kernels/index.ts';
import type { AttnImpl } from '../model/mla.ts';
import { QUANT_RECIPES, type QuantRecipe } from '../io/gguf-recipes.ts';
import { modelPathKind } from '../io/config.ts';

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

/** Checks an option's value (the string given), throwing a UsageError naming the flag. */
export type ValueCheck = (value: string, flag: string) => void;

/** The closest of `candidates` to `word` when it is a plausible typo of it, else undefined. */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  // Edit distance, a swap of two neighbouring letters counting as one edit.
  const dist = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
    for (let i = 1; i <= a.length; i++) {
      for (let j = 1; j <= b.length; j++) {
        d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
        if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
    return d[a.length][b.length];
  };
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = c.startsWith(word) || word.startsWith(c) ? Math.min(dist(word, c), 1) : dist(word, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  return bestD <= Math.max(1, Math.min(2, Math.floor(word.length / 3))) ? best : undefined;
}

/** node:util's parse errors as one line, with a did-you-mean for an unknown option. */
function usageMessage(e: Error & { code?: string }, options: Options): string {
  const first = e.message.split(/(?<=\.)\s+(?=To specify|Did you forget)/)[0].replace(/\s+/g, ' ').trim();
  const flag = /'(-[^' ]*)/.exec(e.message)?.[1] ?? '';
  if (/argument is ambiguous|argument missing/.test(e.message)) {
    return `${flag} needs a value${/ambiguous/.test(e.message) ? ` (one that starts with a dash is written ${flag}=-…)` : ''}`;
  }
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const name = flag.replace(/^-+/, '').split('=')[0];
    const guess = didYouMean(name, Object.keys(options));
    return `unknown option ${flag}${guess ? ` (did you mean --${guess}?)` : ''}; --help lists the options`;
  }
  return first;
}

/** What parse() returns (named, so that the .d.ts build can write it). */
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: boolean; strict: true }>>;

export function parse<O extends Options>(argv: string[], options: O, allowPositionals = false, checks: Record<string, ValueCheck> = {}): Parsed<O> {
  const parsed = (() => {
    try {
      return parseArgs({ args: argv, options, allowPositionals, strict: true });
    } catch (e) {
      throw new UsageError(usageMessage(e as Error, options));
    }
  })();
  // Every value is checked now, before the command loads a model or does anything slow.
  for (const [name, value] of Object.entries(parsed.values)) {
    const check = checks[name] ?? VALUE_CHECKS[name];
    if (!check || typeof value === 'boolean' || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) if (typeof v === 'string') check(v, `--${name}`);
  }
  return parsed;
}

/** A number, written as one (not empty or blank, which Number() reads as 0). */
function numberOf(v: string, flag: string, what: string): number {
  const n = v.trim() === '' ? NaN : Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`${flag} must be ${what}, got "${v}"`);
  return n;
}

/** Value checks of options: an integer of at least `min` (at most `max`). */
export const intCheck = (min: number, max = Number.MAX_SAFE_INTEGER): ValueCheck => (v, flag) => {
  const what = `an integer >= ${min}${max < Number.MAX_SAFE_INTEGER ? ` and <= ${max}` : ''}`;
  const n = numberOf(v, flag, what);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag} must be ${what}, got "${v}"`);
};

/** A number in a range: at least `min`, greater than `above`, at most `max` (each optional). */
export const numCheck = (r: { min?: number; above?: number; max?: number } = {}): ValueCheck => (v, flag) => {
  const parts = [r.min !== undefined && `>= ${r.min}`, r.above !== undefined && `> ${r.above}`, r.max !== undefined && `<= ${r.max}`].filter(Boolean);
  const what = `a number${parts.length ? ` ${parts.join(' and ')}` : ''}`;
  const n = numberOf(v, flag, what);
  if ((r.min !== undefined && n < r.min) || (r.above !== undefined && n <= r.above) || (r.max !== undefined && n > r.max)) {
    throw new UsageError(`${flag} must be ${what}, got "${v}"`);
  }
};

/** One of a list of words. */
export const oneOfCheck = (allowed: readonly string[]): ValueCheck => (v, flag) => {
  if (!allowed.includes(v)) {
    const guess = didYouMean(v, allowed);
    throw new UsageError(`${flag} must be ${allowed.length === 1 ? `"${allowed[0]}"` : `one of ${allowed.join(', ')}`}, got "${v}"${guess ? ` (did you mean ${guess}?)` : ''}`);
  }
};

/**
 * Checks of the options that mean the same in every command, by name (a command passes its
 * own to parse() for the others). Ranges are the sampler's and the scheduler's.
 */
const VALUE_CHECKS: Record<string, ValueCheck> = {
  threads: intCheck(0, 4096),
  kernels: oneOfCheck(['auto', 'native', 'ref']),
  quantize: oneOfCheck(QUANT_RECIPES),
  attn: oneOfCheck(['absorb', 'naive']),
  ids: (v, flag) => void idsOption(v, flag.slice(2)),
  temperature: numCheck({ min: 0 }),
  'top-p': numCheck({ above: 0, max: 1 }),
  'top-k': intCheck(0),
  'min-p': numCheck({ min: 0, max: 1 }),
  'repetition-penalty': numCheck({ above: 0 }),
  'frequency-penalty': numCheck(),
  'presence-penalty': numCheck(),
  seed: intCheck(0),
  'max-new-tokens': intCheck(1),
  speculative: oneOfCheck(['mtp']),
  'draft-tokens': intCheck(1),
  'draft-vocab': intCheck(1),
  'draft-policy': oneOfCheck(['adaptive', 'fixed']),
};

export function intOption(v: string | undefined, name: string, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = v.trim() === '' ? NaN : Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got "${v}"`);
  return n;
}

export function floatOption(v: string | undefined, name: string, def: number): number {
  if (v === undefined) return def;
  const n = v.trim() === '' ? NaN : Number(v);
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
  modelPathKind(v);
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
  opts: { threads?: string; kernels?: string; mtp?: boolean; quantize?: string; attn?: string },
): DeepseekV3 {
  const attn = attnOption(opts.attn);
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
  model.attn = attn; // --attn: the path every forward pass of this model takes
  process.stderr.write(`done in ${((performance.now() - t0) / 1e3).toFixed(2)} s (${kernels.name} kernels${quantize ? `, quantized to ${quantize}` : ''}${attn === 'naive' ? ', naive attention' : ''})\n`);
  for (const n of notes) process.stderr.write(`dsv3: ${n}\n`);
  return model;
}
