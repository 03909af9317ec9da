// Continuous batching in token ids. Requests join a bounded queue; every step runs ONE
// forward pass over all active sequences (new ones with their whole prompt, running ones
// with their last token), then each sequence picks its next token. Finished and cancelled
// sequences leave between steps and their latent caches are dropped at once; queued ones
// take their places. Steps yield to the event loop so I/O (HTTP, cancellation) interleaves.

import { DsError } from '../errors.ts';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { SequenceCache } from '../model/cache.ts';

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

export interface SeqResult {
  finish: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Milliseconds from submission to the first token, and to the end. */
  ttftMs: number;
  totalMs: number;
  error?: Error;
}

export interface SeqRequest {
  prompt: readonly number[];
  maxNewTokens: number;
  /** Picks the next token from this sequence's logits. */
  pick: (logits: Float32Array, history: readonly number[]) => number;
  /** Ids that end the sequence (emitted, then finish 'stop'). */
  stopIds?: readonly number[];
  /** Each generated token; returning false ends the sequence with 'stop'. */
  onToken?: (id: number, logits: Float32Array) => boolean | void;
  onDone: (r: SeqResult) => void;
}

export interface SchedulerOptions {
  /** Most sequences decoded together (default 8). */
  maxBatch?: number;
  /** Most requests waiting for a slot before submit() refuses (default 64). */
  maxQueue?: number;
}

interface Seq {
  id: number;
  req: SeqRequest;
  cache: SequenceCache | null;
  history: number[];
  generated: number;
  /** Tokens to feed at the next step (the prompt first, then one token at a time). */
  feed: number[];
  t0: number;
  ttft: number;
  cancelled: boolean;
}

export interface SeqHandle {
  id: number;
  cancel(): void;
}

export class Scheduler {
  private readonly queue: Seq[] = [];
  private readonly active: Seq[] = [];
  private running = false;
  private nextId = 1;
  private readonly maxBatch: number;
  private readonly maxQueue: number;
  /** Forward passes run so far and the sequences they carried (for tests and metrics). */
  steps = 0;
  stepRows = 0;

  constructor(
    readonly model: DeepseekV3,
    opts: SchedulerOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? 8;
    this.maxQueue = opts.maxQueue ?? 64;
  }

  get load(): { active: number; queued: number } {
    return { active: this.active.length, queued: this.queue.length };
  }

  /** Queue a request. Throws QUEUE_FULL when the queue is at its bound. */
  submit(req: SeqRequest): SeqHandle {
    const max = this.model.cfg.max_position_embeddings;
    if (req.prompt.length === 0) throw new DsError('BAD_INPUT', 'the prompt is empty');
    if (req.prompt.length >= max) {
      throw new DsError(
        'CONTEXT_OVERFLOW',
        `the prompt has ${req.prompt.length} tokens; this model's context is ${max} tokens`,
      );
    }
    if (this.queue.length >= this.maxQueue) {
      throw new DsError('QUEUE_FULL', `${this.queue.length} requests are already waiting`);
    }
    const s: Seq = {
      id: this.nextId++,
      req,
      cache: null,
      history: [...req.prompt],
      generated: 0,
      feed: [...req.prompt],
      t0: performance.now(),
      ttft: 0,
      cancelled: false,
    };
    this.queue.push(s);
    this.kick();
    return { id: s.id, cancel: () => this.cancel(s) };
  }

  private cancel(s: Seq): void {
    if (s.cancelled) return;
    s.cancelled = true;
    const qi = this.queue.indexOf(s);
    if (qi >= 0) this.queue.splice(qi, 1);
    const ai = this.active.indexOf(s);
    if (ai >= 0) this.active.splice(ai, 1);
    this.finish(s, 'cancelled');
  }

  private finish(s: Seq, reason: FinishReason, error?: Error): void {
    s.cache = null; // the latent cache is freed with the sequence
    const now = performance.now();
    s.req.onDone({
      finish: reason,
      promptTokens: s.req.prompt.length,
      completionTokens: s.generated,
      ttftMs: s.ttft ? s.ttft - s.t0 : now - s.t0,
      totalMs: now - s.t0,
      error,
    });
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => this.step());
  }

  private step(): void {
    while (this.active.length < this.maxBatch && this.queue.length > 0) {
      const s = this.queue.shift()!;
      if (req0(s)) this.finish(s, 'length');
      else {
        s.cache = this.model.newCache();
        this.active.push(s);
      }
    }
    if (this.active.length === 0) {
      this.running = false;
      return;
    }
    const batch = [...this.active];
    const V = this.model.cfg.vocab_size;
    try {
      const r = this.model.forward(
        batch.map((s) => ({ ids: s.feed, cache: s.cache! })),
        { logits: 'last' },
      );
      this.steps++;
      this.stepRows += batch.length;
      batch.forEach((s, j) => this.advance(s, r.logits.subarray(j * V, (j + 1) * V)));
    } catch (e) {
      for (const s of batch) this.drop(s, 'error', e as Error);
    }
    setImmediate(() => this.step());
  }

  /** Take one token for a sequence and decide whether it goes on. */
  private advance(s: Seq, logits: Float32Array): void {
    if (s.cancelled) return;
    const max = this.model.cfg.max_position_embeddings;
    let reason: FinishReason | null = null;
    try {
      const id = s.req.pick(logits, s.history);
      s.history.push(id);
      s.generated++;
      if (s.generated === 1) s.ttft = performance.now();
      const keep = s.req.onToken?.(id, logits) !== false;
      if (!keep || s.req.stopIds?.includes(id)) reason = 'stop';
      else if (s.generated >= s.req.maxNewTokens || s.history.length >= max) reason = 'length';
      s.feed = [id];
    } catch (e) {
      this.drop(s, 'error', e as Error);
      return;
    }
    if (reason) this.drop(s, reason);
  }

  private drop(s: Seq, reason: FinishReason, error?: Error): void {
    const i = this.active.indexOf(s);
    if (i >= 0) this.active.splice(i, 1);
    if (!s.cancelled) this.finish(s, reason, error);
  }
}

/** A request that may generate nothing finishes without running. */
function req0(s: Seq): boolean {
  return s.req.maxNewTokens <= 0;
}
