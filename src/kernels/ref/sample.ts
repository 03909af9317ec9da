// Kernels.sampleBatch, the reference: the numbers engine/sampler.ts's Sampler picks with
// (penalties, grammar mask, temperature, top-k / top-p / min-p, the draw), in float64 and in
// index order, and the raw logits' log-softmax for logprobs. native/sample.cc repeats every
// operation (with V8's Math.exp, Math.log and Math.log2 ported bit for bit, native/js_math.h),
// so both backends pick the same ids and give the same logprob bits.

import { DsError } from '../../errors.ts';
import type { IdLogprob, SampleResult, SampleRow } from '../kernels.ts';

/** What a pick depends on besides the logits, the history, the mask and the draw. */
export type PickParams = Pick<SampleRow,
  'temperature' | 'topK' | 'topP' | 'minP' | 'repetitionPenalty' | 'frequencyPenalty' | 'presencePenalty' | 'vocab'>;

/** Whether the history changes anything (penalties on). */
export function penalizes(q: PickParams): boolean {
  return q.repetitionPenalty !== 1 || q.frequencyPenalty !== 0 || q.presencePenalty !== 0;
}

function bad(message: string): never {
  throw new DsError('BAD_INPUT', message);
}

// The lowest index of the largest value; NaN never wins; -1 when nothing exceeds -Infinity.
function argmax(x: ArrayLike<number>, n = x.length): number {
  let best = -1;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    if (v > max) {
      max = v;
      best = i;
    }
  }
  return best;
}

/** Log-softmax of logits (natural log), computed in float64; -Infinity stays -Infinity. */
export function logSoftmax(logits: Float32Array): Float32Array {
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

/** The k ids below `vocab` with the largest lp, best first (ties: lower id first). */
export function topLogprobs(lp: Float32Array, k: number, vocab: number): IdLogprob[] {
  const idx: number[] = [];
  const n = Math.min(lp.length, vocab);
  for (let i = 0; i < n; i++) {
    if (idx.length < k || lp[i]! > lp[idx[idx.length - 1]!]!) {
      idx.push(i);
      idx.sort((a, b) => lp[b]! - lp[a]! || a - b);
      if (idx.length > k) idx.pop();
    }
  }
  return idx.map((id) => ({ id, logprob: lp[id]! }));
}

/** Whether the mask allows `id` (bit id & 31 of word id >> 5; ids past the mask are not allowed). */
function allowed(mask: Int32Array | Uint32Array, id: number): boolean {
  const w = id >> 5;
  return w < mask.length && ((mask[w]! >>> (id & 31)) & 1) === 1;
}

/** A float64 copy of the logits with NaN, masked ids and ids past vocab at -Infinity, penalties applied. */
export function penalized(
  logits: Float32Array,
  q: PickParams,
  history: ArrayLike<number>,
  mask: Int32Array | Uint32Array | null,
): Float64Array {
  const n = logits.length;
  const x = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = logits[i]!;
    x[i] = Number.isNaN(v) || i >= q.vocab ? -Infinity : v;
  }
  if (mask) for (let i = 0; i < n; i++) if (!allowed(mask, i)) x[i] = -Infinity;
  if (!penalizes(q)) return x;
  const counts = new Map<number, number>();
  for (let j = 0; j < history.length; j++) {
    const id = history[j]!;
    if (!Number.isInteger(id) || id < 0 || id >= n) {
      bad(`history[${j}] = ${id} is not a token id below ${n}`);
    }
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  const rep = q.repetitionPenalty;
  for (const [id, c] of counts) {
    let v = x[id]!;
    if (rep !== 1) v = v > 0 ? v / rep : v * rep;
    v -= c * q.frequencyPenalty + q.presencePenalty;
    x[id] = v;
  }
  return x;
}

/**
 * Unnormalised kept probabilities (the largest is 1), their sum and the argmax; total 0 means
 * "take best" (greedy, or a +Infinity logit); best -1: nothing can be picked.
 */
export function weights(
  logits: Float32Array,
  q: PickParams,
  history: ArrayLike<number>,
  mask: Int32Array | Uint32Array | null,
): { p: Float64Array; total: number; best: number } {
  const n = logits.length;
  const x = penalized(logits, q, history, mask);
  const best = argmax(x);
  if (best < 0) return { p: x, total: 0, best };
  const max = x[best]!;
  if (q.temperature === 0 || max === Infinity) return { p: x, total: 0, best };

  const p = x; // reuse the buffer: each p[i] is written after x[i] is read
  const invT = 1 / q.temperature;
  let total = 0;
  for (let i = 0; i < n; i++) {
    p[i] = Math.exp((x[i]! - max) * invT); // -Infinity gives 0
    total += p[i]!;
  }
  if (q.topK > 0 && q.topK < n) total = keepTopK(p, q.topK);
  if (q.topP < 1) total = keepTopP(p, total, q.topP);
  if (q.minP > 0) {
    // The most likely token is always kept, so the cut relative to it is minP itself.
    total = 0;
    for (let i = 0; i < n; i++) {
      if (p[i]! < q.minP) p[i] = 0;
      total += p[i]!;
    }
  }
  return { p, total, best };
}

/**
 * The pick from one row of logits; -1 when nothing can be picked. `draw` (a uniform number in
 * [0, 1)) is called once when the pick samples, never when it is an argmax.
 */
export function pickRow(
  logits: Float32Array,
  q: PickParams,
  history: ArrayLike<number>,
  mask: Int32Array | Uint32Array | null,
  draw: () => number,
): number {
  if (q.temperature === 0 && !penalizes(q) && !mask) return argmax(logits, Math.min(logits.length, q.vocab));
  const { p, total, best } = weights(logits, q, history, mask);
  if (best < 0 || total === 0) return best;
  let u = draw() * total;
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

/** Kernels.sampleBatch. */
export function sampleBatch(logits: Float32Array, V: number, rows: readonly SampleRow[]): SampleResult[] {
  if (!Number.isInteger(V) || V < 1) throw new RangeError(`sampleBatch: V must be a positive integer, got ${V}`);
  return rows.map((r) => {
    if (!Number.isInteger(r.row) || r.row < 0 || (r.row + 1) * V > logits.length) {
      throw new RangeError(`sampleBatch: row ${r.row} is outside logits of ${logits.length / V} rows`);
    }
    const x = logits.subarray(r.row * V, (r.row + 1) * V);
    let drew = false;
    const id = pickRow(x, r, r.history ?? [], r.mask, () => {
      drew = true;
      return r.u;
    });
    const res: SampleResult = { id, drew };
    if (r.logprobs >= 0) {
      const lp = logSoftmax(x);
      res.logprob = id >= 0 ? lp[id]! : Number.NaN;
      res.top = topLogprobs(lp, r.logprobs, r.vocab);
    }
    return res;
  });
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
