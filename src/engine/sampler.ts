// Next-token sampling from logits: penalties, temperature, top-k / top-p / min-p, and a seeded
// PRNG (tensor/random.ts), plus log-softmax for logprobs. Works on token ids and logits only; it
// knows nothing of text, tokenizers or the model. The numbers are Kernels.sampleBatch's
// (kernels/ref/sample.ts): one sequence at a time here, or a whole batch through the kernel
// backend with batchRow() and settle() (the Scheduler does), with the same ids either way.

import { argmax } from '../kernels/ref/index.ts';
import { penalizes, pickRow, weights, type PickParams } from '../kernels/ref/sample.ts';
import type { Kernels, SampleResult, SampleRow } from '../kernels/kernels.ts';
import { Rng } from '../tensor/random.ts';
import { DsError } from '../errors.ts';

export { logSoftmax as logprobs } from '../kernels/ref/sample.ts';

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

/** Picks next tokens from logits under fixed {@link SamplingParams}, with its own PRNG. */
export class Sampler {
  /** The parameters, as given. */
  readonly params: Readonly<SamplingParams>;
  private readonly rng: Rng;
  /** The parameters resolved, as Kernels.sampleBatch takes them (vocab set by limitVocab). */
  private readonly q: PickParams;
  /** Greedy decoding's argmax: the reference loop until useKernels gives a backend's. */
  private pick: (x: Float32Array) => number = argmax;
  /** The PRNG state before the draw of the last batchRow (null: it drew nothing). */
  private beforeDraw: number[] | null = null;

  constructor(params: SamplingParams = {}) {
    checkParams(params);
    this.params = { ...params };
    this.q = {
      temperature: params.temperature ?? 1,
      topK: params.topK ?? 0,
      topP: params.topP ?? 1,
      minP: params.minP ?? 0,
      repetitionPenalty: params.repetitionPenalty ?? 1,
      frequencyPenalty: params.frequencyPenalty ?? 0,
      presencePenalty: params.presencePenalty ?? 0,
      vocab: Infinity,
    };
    this.rng = new Rng(params.seed);
  }

  /**
   * Never pick an id at or past `n`: a model's embedding often has more rows than its
   * tokenizer has tokens (DeepSeek-V3: 129,280 against 128,815; GGUF files pad the vocabulary
   * too), and a padding id has no text.
   */
  limitVocab(n: number): void {
    if (!Number.isInteger(n) || n < 1) bad(`limitVocab: ${n} is not a vocabulary size`);
    this.q.vocab = n;
  }

  /** Take greedy decoding's argmax from a kernel backend (the same index, faster). */
  useKernels(K: Kernels): void {
    this.pick = K.argmax;
  }

  /** True when the PRNG was seeded (params.seed): the output is meant to be reproducible. */
  get seeded(): boolean {
    return this.params.seed !== undefined;
  }

  /** True when sample() is argmax (temperature 0). */
  get greedy(): boolean {
    return this.q.temperature === 0;
  }

  /**
   * Picks one token id. `history` (prompt and generated ids) drives the penalties; `logits` is
   * not modified. NaN logits count as -Infinity.
   */
  sample(logits: Float32Array, history: ArrayLike<number> = []): number {
    if (logits.length === 0) bad('logits: empty');
    if (this.q.temperature === 0 && !penalizes(this.q)) {
      // plain greedy: no copy of the logits needed
      const v = this.q.vocab;
      return picked(this.pick(logits.length > v ? logits.subarray(0, v) : logits), logits);
    }
    return picked(pickRow(logits, this.q, history, null, () => this.rng.uniform()), logits);
  }

  /**
   * This sampler's next pick as a row of Kernels.sampleBatch (its `row` and `mask` left to the
   * caller): sampleBatch then settle() give what sample() would, from the same PRNG stream.
   * `logprobs`: the alternatives to report (-1: none).
   */
  batchRow(history: ArrayLike<number>, logprobs = -1): Omit<SampleRow, 'row'> {
    // The draw is taken now and given back in settle() if the pick turns out to be an argmax
    // (a +Infinity logit), as sample() only draws when it samples.
    this.beforeDraw = this.greedy ? null : this.rng.state;
    const u = this.greedy ? 0 : this.rng.uniform();
    return { ...this.q, u, history: penalizes(this.q) ? history : null, mask: null, logprobs };
  }

  /** The id of a batchRow's result (-1: nothing to pick, see noPick()); rewinds an unused draw. */
  settle(r: SampleResult): number {
    if (this.beforeDraw && !r.drew) this.rng.state = this.beforeDraw;
    this.beforeDraw = null;
    return r.id;
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
    if (logits.length === 0) bad('logits: empty');
    const { p, total, best } = weights(logits, this.q, history, null);
    picked(best, logits);
    if (total === 0) {
      p.fill(0);
      p[best] = 1;
      return p;
    }
    for (let i = 0; i < p.length; i++) p[i]! /= total;
    return p;
  }
}

/** The error of a pick with nothing to pick from (Kernels.sampleBatch's id -1). */
export function noPick(): DsError {
  return new DsError('BAD_INPUT', 'logits: all -Infinity or NaN, nothing to sample');
}

/** An argmax's index, or the error that says why there is none (-1). */
function picked(best: number, logits: ArrayLike<number>): number {
  if (best === -1) {
    if (logits.length === 0) bad('logits: empty');
    throw noPick();
  }
  return best;
}
