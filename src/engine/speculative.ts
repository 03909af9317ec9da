// Speculative decoding with DeepSeek-V3's MTP module as the drafter. Each step the MTP head
// drafts k tokens (chaining the single module on its own output), the main model verifies
// [next, d1 … dk] in one forward pass over the latent cache, and the standard speculative
// sampling rule (Leviathan et al. 2023; Chen et al. 2023) decides how many drafts stand:
// draft d_j is kept with probability min(1, p_j(d_j) / q_j(d_j)); the first rejection is
// replaced by a draw from max(0, p_j − q_j), and if all stand a bonus token comes from p_k+1.
// With greedy settings p and q are one-hot, so this reduces to "keep while the argmax
// agrees", and the output is token for token the output of plain greedy decoding.

import type { Kernels, SampleResult, SampleRow } from '../kernels/kernels.ts';

/**
 * The default draft vocabulary: the first max(1024, vocab/8) token ids. The MTP head is the
 * costliest matrix of a draft (on the shipped model, a 8192×256 head beside one small layer),
 * and drafting only needs the tokens a draft is likely to be. Byte-level BPE vocabularies
 * number tokens in merge order, so low ids are the frequent ones (DeepSeek-V3's: " the" is
 * 270, " function" 2019, " algorithm" 10159), which is the frequency-ranked draft vocabulary
 * of FR-Spec (Zhao et al. 2025) without a frequency table. Verification still runs the
 * main model's full head, so output does not change; only acceptance can. Measured on the
 * shipped model (greedy, k = 2): 94.5% / 63.0% accepted with 1024 ids, 94.7% / 63.1% with
 * all 8192, 71% / 44% with 512.
 */
export function draftVocabulary(vocab: number): number {
  return Math.min(vocab, Math.max(1024, Math.ceil(vocab / 8)));
}

/** What the acceptance rule needs from a sampler (engine/sampler.ts's Sampler has it). */
export interface SpecSampler {
  /** sample() is an argmax: p and q are one-hot (acceptGreedy applies). */
  readonly greedy: boolean;
  /** The exact distribution the sampler draws from, given the history. */
  distribution(logits: Float32Array, history: ArrayLike<number>): Float64Array;
  sample(logits: Float32Array, history: ArrayLike<number>): number;
  uniform(): number;
  /** Optional: compute with the model's kernel backend where it can (the same numbers). */
  useKernels?(K: Kernels): void;
  /**
   * Optional, with settle: the next pick as a row of Kernels.sampleBatch (without its `row`),
   * so that a step picks for the whole batch in one call; settle(result) then gives the id
   * (-1: nothing to pick). The same id as sample(), from the same random stream.
   */
  batchRow?(history: ArrayLike<number>, logprobs: number): Omit<SampleRow, 'row'>;
  settle?(result: SampleResult): number;
  /** Optional: false when this sequence must not be drafted for (constrained decoding). */
  readonly speculate?: boolean;
  /**
   * Optional: whether the draws come from a seeded stream (their output is to be
   * reproducible). The adaptive draft policy drafts for a sampled (non-greedy) sequence only
   * when this is false: how many drafts a step verifies depends on timings, and the
   * acceptance rule's draws on that.
   */
  readonly seeded?: boolean;
}

/** Draw an index from non-negative weights (need not sum to 1); null if all are zero. */
function drawFrom(w: Float64Array, u: number): number | null {
  let total = 0;
  for (let i = 0; i < w.length; i++) total += w[i];
  if (total <= 0) return null;
  let x = u * total;
  let last = -1;
  for (let i = 0; i < w.length; i++) {
    if (w[i] === 0) continue;
    last = i;
    x -= w[i];
    if (x < 0) return i;
  }
  return last;
}

/**
 * Decide which drafts stand. `drafts[j]` was drawn from `q[j]`; `target(j, history)` gives
 * the main model's distribution p_j after history (j = 0 … drafts.length). Returns the
 * tokens to emit: the accepted drafts, then one corrected or bonus token.
 */
export function acceptDrafts(
  drafts: readonly number[],
  q: readonly Float64Array[],
  target: (j: number, history: readonly number[]) => Float64Array,
  history: readonly number[],
  s: SpecSampler,
): number[] {
  const out: number[] = [];
  const h = [...history];
  for (let j = 0; j < drafts.length; j++) {
    const p = target(j, h);
    const d = drafts[j];
    const ratio = q[j][d] > 0 ? p[d] / q[j][d] : 0;
    if (ratio >= 1 || s.uniform() < ratio) {
      out.push(d);
      h.push(d);
      continue;
    }
    // Rejected: draw from the part of p that q under-covers.
    const resid = new Float64Array(p.length);
    for (let i = 0; i < p.length; i++) resid[i] = Math.max(0, p[i] - q[j][i]);
    out.push(drawFrom(resid, s.uniform()) ?? drawFrom(p, s.uniform())!);
    return out;
  }
  const p = target(drafts.length, h);
  out.push(drawFrom(p, s.uniform())!);
  return out;
}

/**
 * acceptDrafts for a greedy sampler, where p and q are one-hot: keep drafts while they are
 * what the sampler picks, then add its pick at the first mismatch (or the bonus token).
 * `pick(j, history)` is the sampler's choice from the main model's row j. No distribution
 * is computed, so a step costs a handful of argmaxes.
 */
export function acceptGreedy(
  drafts: readonly number[],
  pick: (j: number, history: readonly number[]) => number,
  history: readonly number[],
): number[] {
  const out: number[] = [];
  const h = [...history];
  for (let j = 0; ; j++) {
    const t = pick(j, h);
    out.push(t);
    if (j === drafts.length || t !== drafts[j]) return out;
    h.push(t);
  }
}

/** Per-request speculation counters: drafts proposed and accepted at each draft position. */
export class SpecStats {
  readonly proposed: number[] = [];
  readonly accepted: number[] = [];
  /** Verify passes with drafts, and tokens they emitted. */
  steps = 0;
  emitted = 0;
  /** Decode steps without drafts (the draft policy chose plain decoding, or none could be made). */
  plainSteps = 0;
  /** Decode steps by the number of drafts they verified: lengths[k] (lengths[0] = plainSteps). */
  readonly lengths: number[] = [0];

  record(nDrafts: number, nAccepted: number, nEmitted: number): void {
    for (let j = 0; j < nDrafts; j++) {
      this.proposed[j] = (this.proposed[j] ?? 0) + 1;
      this.accepted[j] = (this.accepted[j] ?? 0) + (j < nAccepted ? 1 : 0);
    }
    for (let j = this.lengths.length; j <= nDrafts; j++) this.lengths[j] = 0;
    this.lengths[nDrafts]++;
    if (nDrafts === 0) {
      this.plainSteps++;
      return;
    }
    this.steps++;
    this.emitted += nEmitted;
  }

  /** Accepted drafts over proposed drafts, all positions together. */
  get acceptance(): number {
    const p = this.proposed.reduce((a, b) => a + b, 0);
    return p ? this.accepted.reduce((a, b) => a + b, 0) / p : 0;
  }

  /** Acceptance at each draft position. */
  get perPosition(): number[] {
    return this.proposed.map((p, j) => (p ? this.accepted[j] / p : 0));
  }

  /** Mean tokens emitted per verify pass with drafts. */
  get acceptedPerStep(): number {
    return this.steps ? this.emitted / this.steps : 0;
  }
}
