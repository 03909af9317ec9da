// Constrained decoding: before each pick, the tokens a constraint (a grammar's matcher) forbids
// get logit -Infinity, so the sampler can only choose among the allowed ones; penalties,
// temperature and top-k / top-p / min-p then act on what is left, as usual. Only sequences
// that have a constraint pay for it. Token ids and bitmasks only: what the constraint is
// (grammar/engine.ts) is not known here.

import type { Kernels, SampleResult, SampleRow } from '../kernels/kernels.ts';
import type { Sampler } from './sampler.ts';
import type { SpecSampler } from './speculative.ts';

/** What constrained decoding needs from a grammar matcher, one per sequence. */
export interface TokenConstraint {
  /**
   * The tokens allowed next, after every token accepted so far: bit (id & 31) of word
   * (id >> 5) is 1 when `id` is allowed. Ids past the mask are not allowed.
   */
  mask(): Int32Array;
  /** The sequence emitted `id` (always an allowed one). */
  accept(id: number): void;
  /** The sequence has ended: free the matcher. Called once. */
  release(): void;
}

/**
 * `logits` with every token the mask forbids set to -Infinity, written into `out` (same
 * length) and returned.
 */
export function applyMask(logits: Float32Array, mask: Int32Array, out: Float32Array): Float32Array {
  const n = logits.length;
  const words = Math.min(mask.length, Math.ceil(n / 32));
  // Start from whichever is closer (all allowed, or none) and write only the other kind: inside
  // a JSON string most words are all ones, between tokens of structure most are zero.
  let full = 0;
  let empty = 0;
  for (let w = 0; w < words; w++) {
    if (mask[w] === -1) full++;
    else if (mask[w] === 0) empty++;
  }
  // Only the exceptions are visited, one set bit at a time (x & -x is the lowest).
  if (full >= empty) {
    out.set(logits);
    for (let w = 0; w < words; w++) {
      let off = ~mask[w]!;
      const base = w << 5;
      while (off !== 0) {
        const i = base + 31 - Math.clz32(off & -off);
        if (i < n) out[i] = -Infinity;
        off &= off - 1;
      }
    }
    if (words * 32 < n) out.fill(-Infinity, words * 32);
  } else {
    out.fill(-Infinity);
    for (let w = 0; w < words; w++) {
      let on = mask[w]!;
      const base = w << 5;
      while (on !== 0) {
        const i = base + 31 - Math.clz32(on & -on);
        if (i < n) out[i] = logits[i]!;
        on &= on - 1;
      }
    }
  }
  return out;
}

/**
 * A Sampler that only picks what `constraint` allows. The constraint must be told every
 * emitted token (the pipeline does it from onToken), so the mask it gives is for the next
 * position. It never drafts (`speculate` is false): drafts would need the matcher to follow
 * tokens that may be rolled back.
 */
export class ConstrainedSampler implements SpecSampler {
  readonly speculate = false;
  private scratch: Float32Array | null = null;

  constructor(
    private readonly inner: Sampler,
    readonly constraint: TokenConstraint,
  ) {}

  get greedy(): boolean {
    return this.inner.greedy;
  }

  private masked(logits: Float32Array): Float32Array {
    if (this.scratch?.length !== logits.length) this.scratch = new Float32Array(logits.length);
    return applyMask(logits, this.constraint.mask(), this.scratch);
  }

  sample(logits: Float32Array, history: ArrayLike<number> = []): number {
    return this.inner.sample(this.masked(logits), history);
  }

  distribution(logits: Float32Array, history: ArrayLike<number> = []): Float64Array {
    return this.inner.distribution(this.masked(logits), history);
  }

  uniform(): number {
    return this.inner.uniform();
  }

  useKernels(K: Kernels): void {
    this.inner.useKernels(K);
  }

  /** The inner sampler's batch row with the mask on it (Kernels.sampleBatch applies it natively). */
  batchRow(history: ArrayLike<number>, logprobs = -1): Omit<SampleRow, 'row'> {
    return { ...this.inner.batchRow(history, logprobs), mask: this.constraint.mask() };
  }

  settle(result: SampleResult): number {
    return this.inner.settle(result);
  }
}
