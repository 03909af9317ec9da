// Next-token sampling from logits: penalties, temperature, top-k / top-p / min-p, and a seeded
// PRNG (tensor/random.ts), plus log-softmax for logprobs. Works on token ids and logits only; it
// knows nothing of text, tokenizers or the model.

import { argmax } from '../kernels/ref/index.ts';
import type { Kernels } from '../kernels/kernels.ts';
import { Rng } from '../tensor/random.ts';
import { DsError } from '../errors.ts';

/** How to pick the next token. Every field is optional; defaults make plain sampling at T=1. */
export interface SamplingParams {
  /** Softmax temperature, >= 0. 0 is greedy (argmax, lowest id on ties). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (ties at the k-th value kept). 0 or unset: off. */
  topK?: number;
  /** Keep the smallest most-likely set with probability mass >= topP, in (0, 1]. Default 1. */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one, in [0, 1]. Default 0. */
  minP?: number;
  /** HF-style: logits of tokens seen in history are divided (>0) or multiplied (<0). Default 1. */
  repetitionPenalty?: number;
  /** OpenAI-style: logit -= count * frequencyPenalty for tokens in history. Default 0. */
  frequencyPenalty?: number;
  /** OpenAI-style: logit -= presencePenalty for tokens in history. Default 0. */
  presencePenalty?: number;
  /** Seed for the PRNG (a safe integer); unset: seeded from crypto randomness. */
  seed?: number;
}

function bad(message: string): never {
  throw new DsError('BAD_INPUT', message);
}

function checkParams(p: SamplingParams): void {
  const num = (k: keyof SamplingParams, ok: (v: number) => boolean, what: string) => {
    const v = p[k];
    if (v === undefined) return;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) {
      bad(`${k}: must be ${what}, got ${v}`);
    }
  };
  num('temperature', (v) => v >= 0, 'a number >= 0');
  num('topK', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0');
  num('topP', (v) => v > 0 && v <= 1, 'in (0, 1]');
  num('minP', (v) => v >= 0 && v <= 1, 'in [0, 1]');
  num('repetitionPenalty', (v) => v > 0, 'a number > 0');
  num('frequencyPenalty', () => true, 'a finite number');
  num('presencePenalty', () => true, 'a finite number');
  num('seed', (v) => Number.isSafeInteger(v), 'a safe integer');
}

/** Log-softmax of logits (natural log), computed in float64; -Infinity stays -Infinity. */
export function logprobs(logits: Float32Array): Float32Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  const out = new Float32Array(logits.length);
  if (max === -Infinity || Number.isNaN(max)) return out.fill(Number.NaN);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

/** Picks next tokens from logits under fixed {@link SamplingParams}, with its own PRNG. */
export class Sampler {
  /** The parameters, as given. */
  readonly params: Readonly<SamplingParams>;
  private readonly rng: Rng;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private readonly minP: number;
  private readonly rep: number;
  private readonly freq: number;
  private readonly pres: number;
  /** Greedy decoding's argmax: the reference loop until useKernels gives a backend's. */
  private pick: (x: Float32Array) => number = argmax;

  constructor(params: SamplingParams = {}) {
    checkParams(params);
    this.params = { ...params };
    this.temperature = params.temperature ?? 1;
    this.topK = params.topK ?? 0;
    this.topP = params.topP ?? 1;
    this.minP = params.minP ?? 0;
    this.rep = params.repetitionPenalty ?? 1;
    this.freq = params.frequencyPenalty ?? 0;
    this.pres = params.presencePenalty ?? 0;
    this.rng = new Rng(params.seed);
  }

  /** Ids from here on are never picked (limitVocab). */
  private vocab = Infinity;

  /**
   * Never pick an id at or past `n`: a model's embedding often has more rows than its
   * tokenizer has tokens (DeepSeek-V3: 129,280 against 128,815; GGUF files pad the vocabulary
   * too), and a padding id has no text.
   */
  limitVocab(n: number): void {
    if (!Number.isInteger(n) || n < 1) bad(`limitVocab: ${n} is not a vocabulary size`);
    this.vocab = n;
  }

  /** Take greedy decoding's argmax from a kernel backend (the same index, faster). */
  useKernels(K: Kernels): void {
    this.pick = K.argmax;
  }

  /** True when sample() is argmax (temperature 0). */
  get greedy(): boolean {
    return this.temperature === 0;
  }

  /**
   * Picks one token id. `history` (prompt and generated ids) drives the penalties; `logits` is
   * not modified. NaN logits count as -Infinity.
   */
  sample(logits: Float32Array, history: ArrayLike<number> = []): number {
    if (this.temperature === 0 && this.rep === 1 && this.freq === 0 && this.pres === 0) {
      // plain greedy: no copy of the logits needed
      return picked(this.pick(logits.length > this.vocab ? logits.subarray(0, this.vocab) : logits), logits);
    }
    const { p, total, best } = this.weights(logits, history);
    if (total === 0) return best;
    let u = this.rng.uniform() * total;
    let last = best;
    for (let i = 0; i < p.length; i++) {
      const v = p[i]!;
      if (v === 0) continue;
      last = i;
      u -= v;
      if (u < 0) return i;
    }
    return last; // rounding left u >= 0: the last kept token
  }

  /** A uniform draw in [0, 1) from this sampler's stream (speculative acceptance uses it). */
  uniform(): number {
    return this.rng.uniform();
  }

  /**
   * The distribution sample() draws from: probabilities after penalties, temperature and
   * top-k / top-p / min-p, summing to 1 (one-hot at the argmax when greedy).
   */
  distribution(logits: Float32Array, history: ArrayLike<number> = []): Float64Array {
    const { p, total, best } = this.weights(logits, history);
    if (total === 0) {
      p.fill(0);
      p[best] = 1;
      return p;
    }
    for (let i = 0; i < p.length; i++) p[i]! /= total;
    return p;
  }

  // Unnormalised kept probabilities (the largest is 1) and their sum; total 0 means "take
  // best" (greedy, or a +Infinity logit).
  private weights(
    logits: Float32Array,
    history: ArrayLike<number>,
  ): { p: Float64Array; total: number; best: number } {
    const n = logits.length;
    if (n === 0) bad('logits: empty');
    const x = this.penalized(logits, history);
    const best = picked(argmax(x), x);
    const max = x[best]!;
    if (this.temperature === 0 || max === Infinity) return { p: x, total: 0, best };

    const p = x; // reuse the buffer: each p[i] is written after x[i] is read
    const invT = 1 / this.temperature;
    let total = 0;
    for (let i = 0; i < n; i++) {
      p[i] = Math.exp((x[i]! - max) * invT); // -Infinity gives 0
      total += p[i]!;
    }
    if (this.topK > 0 && this.topK < n) total = keepTopK(p, this.topK);
    if (this.topP < 1) total = keepTopP(p, total, this.topP);
    if (this.minP > 0) {
      // The most likely token is always kept, so the cut relative to it is minP itself.
      total = 0;
      for (let i = 0; i < n; i++) {
        if (p[i]! < this.minP) p[i] = 0;
        total += p[i]!;
      }
    }
    return { p, total, best };
  }

  // A float64 copy of the logits with NaN -> -Infinity and the penalties applied.
  private penalized(logits: Float32Array, history: ArrayLike<number>): Float64Array {
    const n = logits.length;
    const x = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const v = logits[i]!;
      x[i] = Number.isNaN(v) || i >= this.vocab ? -Infinity : v;
    }
    if (this.rep === 1 && this.freq === 0 && this.pres === 0) return x;
    const counts = new Map<number, number>();
    for (let j = 0; j < history.length; j++) {
      const id = history[j]!;
      if (!Number.isInteger(id) || id < 0 || id >= n) {
        bad(`history[${j}] = ${id} is not a token id below ${n}`);
      }
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    for (const [id, c] of counts) {
      let v = x[id]!;
      if (this.rep !== 1) v = v > 0 ? v / this.rep : v * this.rep;
      v -= c * this.freq + this.pres;
      x[id] = v;
    }
    return x;
  }
}

/** An argmax's index, or the error that says why there is none (-1). */
function picked(best: number, logits: ArrayLike<number>): number {
  if (best === -1) {
    if (logits.length === 0) bad('logits: empty');
    bad('logits: all -Infinity or NaN, nothing to sample');
  }
  return best;
}

// Zeroes all but the k largest (ties with the k-th largest kept, as transformers); new total.
function keepTopK(p: Float64Array, k: number): number {
  const kth = kthLargest(p, k);
  let total = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i]! < kth) p[i] = 0;
    total += p[i]!;
  }
  return total;
}

// The k-th largest value of p (0 when p has k or fewer non-zero values).
function kthLargest(p: Float64Array, k: number): number {
  if (k <= 256) {
    // A min-heap of the k largest seen so far; most values fail the first comparison.
    const heap = new Float64Array(k);
    let size = 0;
    for (let i = 0; i < p.length; i++) {
      const v = p[i]!;
      if (v === 0) continue;
      if (size < k) {
        let j = size++;
        while (j > 0) {
          const up = (j - 1) >> 1;
          if (heap[up]! <= v) break;
          heap[j] = heap[up]!;
          j = up;
        }
        heap[j] = v;
      } else if (v > heap[0]!) {
        let j = 0;
        for (;;) {
          const l = 2 * j + 1;
          if (l >= k) break;
          const c = l + 1 < k && heap[l + 1]! < heap[l]! ? l + 1 : l;
          if (heap[c]! >= v) break;
          heap[j] = heap[c]!;
          j = c;
        }
        heap[j] = v;
      }
    }
    return size < k ? 0 : heap[0]!;
  }
  // Large k: find the log2 bucket that holds the k-th largest and sort only that bucket.
  const { bucket, count } = bucketize(p);
  let b = 0;
  let above = 0;
  while (b < NBUCKETS && above + count[b]! < k) above += count[b++]!;
  if (b === NBUCKETS) return 0;
  const vals: number[] = [];
  for (let i = 0; i < p.length; i++) if (bucket[i] === b && p[i]! > 0) vals.push(p[i]!);
  const sorted = Float64Array.from(vals).sort();
  return sorted[sorted.length - (k - above)]!;
}

// Buckets of the non-zero values by -log2(v) (v <= 1), BUCKETS_PER_OCTAVE per halving: bucket
// 0 holds the largest values. Zero values get bucket 0 too; callers skip them.
const BUCKETS_PER_OCTAVE = 8;
const NBUCKETS = 1024;

interface Buckets { bucket: Uint16Array; count: Uint32Array; mass: Float64Array }

function bucketize(p: Float64Array): Buckets {
  const bucket = new Uint16Array(p.length);
  const count = new Uint32Array(NBUCKETS);
  const mass = new Float64Array(NBUCKETS);
  for (let i = 0; i < p.length; i++) {
    const v = p[i]!;
    if (v === 0) continue;
    const b = Math.min(NBUCKETS - 1, Math.floor(-Math.log2(v) * BUCKETS_PER_OCTAVE));
    bucket[i] = b;
    count[b]!++;
    mass[b]! += v;
  }
  return { bucket, count, mass };
}

// Nucleus filter: in descending order (ties by id) keep each token whose preceding mass is
// < topP of the total, i.e. the smallest set reaching topP and at least one token; returns
// the new total. Only the log2 bucket where the nucleus closes needs sorting.
function keepTopP(p: Float64Array, total: number, topP: number): number {
  const need = topP * total;
  const n = p.length;
  const { bucket, mass } = bucketize(p);
  let closing = 0;
  let before = 0;
  while (closing < NBUCKETS - 1 && before + mass[closing]! < need) before += mass[closing++]!;
  const vals: number[] = [];
  for (let i = 0; i < n; i++) if (bucket[i] === closing && p[i]! > 0) vals.push(p[i]!);
  const sorted = Float64Array.from(vals).sort(); // ascending: walk from the end
  let cutValue = 0;
  let tiesKept = 0;
  for (let j = sorted.length - 1; j >= 0 && before < need; j--) {
    const v = sorted[j]!;
    if (v !== cutValue) { cutValue = v; tiesKept = 0; }
    tiesKept++;
    before += v;
  }
  let kept = 0;
  for (let i = 0; i < n; i++) {
    const v = p[i]!;
    if (v === 0) continue;
    const b = bucket[i]!;
    const keep = b < closing ||
      (b === closing && (v > cutValue || (v === cutValue && tiesKept-- > 0)));
    if (keep) kept += v;
    else p[i] = 0;
  }
  return kept;
}
