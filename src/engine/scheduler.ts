// Continuous batching in token ids. Requests join a bounded queue; every step runs ONE
// forward pass over all active sequences (running ones with their last token, new ones
// with the next chunk of their prompt), then each sequence whose prompt is in picks its
// next token. Prompts are fed at most `prefillChunk` tokens per step (all new sequences
// together), so a long prompt does not stall the others' decoding, and a step (the time
// the event loop waits) stays bounded. Finished and cancelled sequences leave between
// steps and their latent caches are dropped at once; queued ones take their places.
// Steps yield to the event loop so I/O (HTTP, cancellation) interleaves.
//
// With `speculative`, a running sequence feeds [next, d1 … dk] instead of one token: the
// drafts come from the MTP module (one batched MTP pass for all sequences per draft
// position), the verify pass is the same single forward, and rejected positions are cut
// from the latent caches (see speculative.ts).

import { DsError } from '../errors.ts';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { SequenceCache } from '../model/cache.ts';
import { PrefixCache, type PrefixPin } from './prefix-cache.ts';
import type { AttnImpl } from '../model/mla.ts';
import { acceptDrafts, acceptGreedy, draftVocabulary, SpecStats, type SpecSampler } from './speculative.ts';

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

export interface SeqResult {
  finish: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Milliseconds from submission to the first token, and to the end. */
  ttftMs: number;
  totalMs: number;
  error?: Error;
  /** Draft statistics, when the scheduler speculates. */
  spec?: SpecStats;
  /** Prompt tokens whose latent rows came from the prefix cache instead of a forward pass (absent: none). */
  cachedTokens?: number;
}

export interface SeqRequest {
  prompt: readonly number[];
  maxNewTokens: number;
  /** Picks the next token from this sequence's logits (and gives its distribution). */
  sampler: SpecSampler;
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
  /**
   * Draft this many tokens per step with the model's MTP module (needs MTP weights), from
   * a draft vocabulary of the first `draftVocab` token ids (default: draftVocabulary()).
   */
  speculative?: { draftTokens: number; draftVocab?: number };
  /** Most prompt tokens fed per step, over all sequences (default 256). */
  prefillChunk?: number;
  /** Attention path of every forward pass (default: the model's, absorbed). */
  attn?: AttnImpl;
  /**
   * Prefix caching: keep the latent rows of finished and running sequences, up to this many
   * bytes (LRU), and start each new prompt after its longest cached prefix (see
   * prefix-cache.ts). 0 or absent: off.
   */
  prefixCacheBytes?: number;
}

interface Seq {
  id: number;
  req: SeqRequest;
  cache: SequenceCache | null;
  history: number[];
  generated: number;
  /** Tokens to feed (the prompt first, in chunks, then one token at a time). */
  feed: number[];
  /** Prompt tokens already in the cache. */
  prefilled: number;
  /** Speculation: drafts after feed[0], their distributions, and MTP rows to catch up. */
  drafts: number[];
  draftDists: Float64Array[];
  mtpIds: number[];
  mtpHidden: Float32Array | null;
  spec: SpecStats | null;
  t0: number;
  ttft: number;
  cancelled: boolean;
  /** onDone has been called. */
  done: boolean;
  /** Prompt tokens restored from the prefix cache, and the entry they came from. */
  cached?: number;
  pin?: PrefixPin | null;
  /** Held out of the steps (its reader is behind): keeps its cache, gives up its batch slot. */
  paused?: boolean;
}

export interface SeqHandle {
  id: number;
  cancel(): void;
  /**
   * Stops decoding this sequence until resume() (its consumer cannot keep up): it keeps its
   * cache and its place, but leaves the steps and frees its batch slot for another sequence.
   */
  pause(): void;
  resume(): void;
}

export class Scheduler {
  private readonly queue: Seq[] = [];
  private readonly active: Seq[] = [];
  private running = false;
  private nextId = 1;
  private readonly maxBatch: number;
  private readonly maxQueue: number;
  private readonly draftTokens: number;
  private readonly draftVocab: number;
  private readonly prefillChunk: number;
  private readonly attn: AttnImpl | undefined;
  /** Forward passes run so far and the sequences they carried (for tests and metrics). */
  steps = 0;
  stepRows = 0;
  /** Latent rows of earlier sequences, for prompts that start the same way (null: off). */
  readonly prefixCache: PrefixCache | null;

  constructor(
    readonly model: DeepseekV3,
    opts: SchedulerOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? 8;
    this.maxQueue = opts.maxQueue ?? 64;
    this.draftTokens = opts.speculative?.draftTokens ?? 0;
    const V = model.cfg.vocab_size;
    this.draftVocab = opts.speculative?.draftVocab ?? draftVocabulary(V);
    if (!(Number.isInteger(this.draftVocab) && this.draftVocab >= 1 && this.draftVocab <= V)) {
      throw new DsError('BAD_INPUT', `draftVocab must be an integer in 1 … ${V} (got ${opts.speculative?.draftVocab})`);
    }
    this.prefillChunk = opts.prefillChunk ?? 256;
    this.attn = opts.attn;
    if (!(Number.isInteger(this.prefillChunk) && this.prefillChunk >= 1)) {
      throw new DsError('BAD_INPUT', `prefillChunk must be a positive integer (got ${opts.prefillChunk})`);
    }
    if (this.draftTokens > 0 && !model.hasMtp) {
      throw new DsError('BAD_INPUT', 'speculative decoding with MTP needs a checkpoint with MTP weights');
    }
    const cacheBytes = opts.prefixCacheBytes ?? 0;
    if (!(Number.isFinite(cacheBytes) && cacheBytes >= 0)) {
      throw new DsError('BAD_INPUT', `prefixCacheBytes must be a number >= 0 (got ${opts.prefixCacheBytes})`);
    }
    const c = model.cfg;
    this.prefixCache = cacheBytes > 0
      ? new PrefixCache({
        bytes: cacheBytes, layers: c.num_hidden_layers, C: c.kv_lora_rank, R: c.qk_rope_head_dim, mtp: this.draftTokens > 0,
      })
      : null;
  }

  get load(): { active: number; queued: number } {
    return { active: this.active.length, queued: this.queue.length };
  }

  /** Active sequences that are paused (counted in load.active; they take no batch slot). */
  get paused(): number {
    return this.active.reduce((n, s) => n + (s.paused ? 1 : 0), 0);
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
    req.sampler.useKernels?.(this.model.K);
    const s: Seq = {
      id: this.nextId++,
      req,
      cache: null,
      history: [...req.prompt],
      generated: 0,
      feed: [...req.prompt],
      prefilled: 0,
      drafts: [],
      draftDists: [],
      mtpIds: [],
      mtpHidden: null,
      spec: this.draftTokens > 0 ? new SpecStats() : null,
      t0: performance.now(),
      ttft: 0,
      cancelled: false,
      done: false,
    };
    this.queue.push(s);
    this.kick();
    return { id: s.id, cancel: () => this.cancel(s), pause: () => this.pause(s), resume: () => this.resume(s) };
  }

  private pause(s: Seq): void {
    if (!s.cancelled && !s.done) s.paused = true;
  }

  private resume(s: Seq): void {
    if (!s.paused) return;
    s.paused = false;
    if (!s.cancelled && !s.done) this.kick();
  }

  private cancel(s: Seq): void {
    if (s.cancelled || s.done) return;
    s.cancelled = true;
    const qi = this.queue.indexOf(s);
    if (qi >= 0) this.queue.splice(qi, 1);
    const ai = this.active.indexOf(s);
    if (ai >= 0) this.active.splice(ai, 1);
    this.finish(s, 'cancelled');
  }

  private finish(s: Seq, reason: FinishReason, error?: Error): void {
    s.done = true;
    this.keepPrefix(s, reason);
    s.cache = null; // the latent cache is freed with the sequence
    const now = performance.now();
    s.req.onDone({
      finish: reason,
      promptTokens: s.req.prompt.length,
      completionTokens: s.generated,
      ttftMs: s.ttft ? s.ttft - s.t0 : now - s.t0,
      totalMs: now - s.t0,
      error,
      spec: s.spec ?? undefined,
      cachedTokens: s.cached ?? 0,
    });
  }

  /** A new sequence starts after the longest prefix of its prompt that is cached. */
  private restorePrefix(s: Seq): void {
    if (!this.prefixCache) return;
    const running = this.active.map((a) => ({ tokens: a.history, cache: a.cache! }));
    const hit = this.prefixCache.restore(s.req.prompt, s.cache!, running);
    s.cached = hit.tokens;
    s.pin = hit.pin;
    s.feed = s.req.prompt.slice(hit.tokens);
    s.prefilled = hit.tokens;
  }

  /** A leaving sequence's rows go to the prefix cache (not after an error: they may be half written). */
  private keepPrefix(s: Seq, reason: FinishReason): void {
    if (!this.prefixCache) return;
    if (s.cache && reason !== 'error') this.prefixCache.store(s.history, s.cache);
    this.prefixCache.release(s.pin ?? null);
    s.pin = null;
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => this.step());
  }

  private step(): void {
    // Paused sequences hold no batch slot (a stalled reader does not keep others out).
    while (this.active.length - this.paused < this.maxBatch && this.queue.length > 0) {
      const s = this.queue.shift()!;
      if (s.req.maxNewTokens <= 0) this.finish(s, 'length');
      else {
        s.cache = this.model.newCache();
        this.restorePrefix(s);
        this.active.push(s);
      }
    }
    // Resumed sequences can outnumber the slots for a while: the earliest go first.
    const batch = this.active.filter((s) => !s.paused).slice(0, this.maxBatch);
    if (batch.length === 0) {
      this.running = false; // resume() or submit() starts the steps again
      return;
    }
    try {
      if (this.draftTokens > 0) this.speculativeStep(batch);
      else this.plainStep(batch);
    } catch (e) {
      for (const s of batch) this.drop(s, 'error', e as Error);
    }
    setImmediate(() => this.step());
  }

  /**
   * What each sequence feeds this step: running ones their token (and drafts), new ones the
   * next chunk of their prompt within the step's prompt budget, in order of arrival. A
   * sequence left out (budget spent) waits for the next step. `whole`: the prompt is in
   * after this step, so the sequence picks a token.
   */
  private plan(batch: Seq[]): { s: Seq; ids: number[]; whole: boolean }[] {
    let budget = this.prefillChunk;
    const out: { s: Seq; ids: number[]; whole: boolean }[] = [];
    for (const s of batch) {
      if (s.generated > 0) {
        out.push({ s, ids: [...s.feed, ...s.drafts], whole: true });
        continue;
      }
      const n = Math.min(budget, s.feed.length);
      if (n === 0) continue;
      budget -= n;
      out.push({ s, ids: s.feed.slice(0, n), whole: n === s.feed.length });
    }
    return out;
  }

  /** After a prefill chunk: the rest of the prompt stays in feed. */
  private fed(s: Seq, ids: number[]): void {
    if (s.generated > 0) return;
    s.feed = s.feed.slice(ids.length);
    s.prefilled += ids.length;
  }

  private plainStep(batch: Seq[]): void {
    const V = this.model.cfg.vocab_size;
    const plan = this.plan(batch);
    const r = this.model.forward(
      plan.map((p) => ({ ids: p.ids, cache: p.s.cache! })),
      { logits: 'last', attn: this.attn },
    );
    this.steps++;
    this.stepRows += plan.length;
    plan.forEach(({ s, ids, whole }, j) => {
      this.fed(s, ids);
      if (s.cancelled || !whole) return;
      const logits = r.logits.subarray(j * V, (j + 1) * V);
      const id = s.req.sampler.sample(logits, s.history);
      if (this.emit(s, id, logits)) s.feed = [id];
    });
  }

  /** Record one generated token; false when the sequence has finished. */
  private emit(s: Seq, id: number, logits: Float32Array): boolean {
    const max = this.model.cfg.max_position_embeddings;
    s.history.push(id);
    s.generated++;
    if (s.generated === 1) s.ttft = performance.now();
    const keep = s.req.onToken?.(id, logits) !== false;
    let reason: FinishReason | null = null;
    if (!keep || s.req.stopIds?.includes(id)) reason = 'stop';
    else if (s.generated >= s.req.maxNewTokens || s.history.length >= max) reason = 'length';
    if (reason) this.drop(s, reason);
    return reason === null && !s.cancelled;
  }

  /** One verify pass for every sequence, then one batched MTP pass per draft position. */
  private speculativeStep(batch: Seq[]): void {
    const m = this.model;
    const V = m.cfg.vocab_size;
    const D = m.cfg.hidden_size;
    const L = m.cfg.num_hidden_layers;
    const plan = this.plan(batch);
    const r = m.forward(
      plan.map((p) => ({ ids: p.ids, cache: p.s.cache! })),
      { logits: 'none', attn: this.attn },
    );
    this.steps++;
    this.stepRows += plan.length;

    const drafting: Seq[] = [];
    const catchUp = new Set<Seq>();
    plan.forEach(({ s, ids, whole }, j) => {
      const prefill = s.generated === 0;
      const p0 = s.prefilled;
      this.fed(s, ids);
      if (s.cancelled) return;
      const slice = r.seqs[j];
      if (!whole) {
        // A prompt chunk with more to come: nothing to pick, but the MTP module's rows for
        // these positions pair each hidden state with the next prompt token.
        s.mtpIds = s.req.prompt.slice(p0 + 1, p0 + 1 + slice.len);
        s.mtpHidden = r.hidden.subarray(slice.row * D, (slice.row + slice.len) * D);
        drafting.push(s);
        catchUp.add(s);
        return;
      }
      // Logits only for the rows that are read: the prompt's last, or next + every draft.
      const nRows = prefill ? 1 : slice.len;
      const first = slice.row + slice.len - nRows;
      const hidden = r.hidden.subarray(first * D, (first + nRows) * D);
      const logits = new Float32Array(nRows * V);
      m.K.matmul(logits, hidden, nRows, m.weights.lm_head);
      const row = (i: number) => logits.subarray(i * V, (i + 1) * V);

      let tokens: number[];
      if (prefill) tokens = [s.req.sampler.sample(row(0), s.history)];
      else {
        const sampler = s.req.sampler;
        tokens = sampler.greedy
          ? acceptGreedy(s.drafts, (i, h) => sampler.sample(row(i), h), s.history)
          : acceptDrafts(s.drafts, s.draftDists, (i, h) => sampler.distribution(row(i), h), s.history, sampler);
        s.spec!.record(s.drafts.length, tokens.length - 1, tokens.length);
        // Positions past the last accepted draft hold rejected tokens: cut them off.
        for (const c of s.cache!.layers.slice(0, L)) c.length = slice.p0 + tokens.length;
      }
      // MTP rows to (re)compute from the true hidden states: row i pairs h_i with token i+1.
      const mtpFrom = slice.p0;
      s.cache!.layers[L].length = Math.min(s.cache!.layers[L].length, mtpFrom);
      s.mtpIds = prefill ? [...s.req.prompt.slice(p0 + 1), tokens[0]] : tokens;
      const hRows = prefill ? slice.len : tokens.length;
      s.mtpHidden = r.hidden.subarray(slice.row * D, (slice.row + hRows) * D);

      let alive = true;
      for (const [i, id] of tokens.entries()) {
        alive = this.emit(s, id, row(prefill ? 0 : i));
        if (!alive) break;
      }
      if (alive) {
        s.feed = [tokens[tokens.length - 1]];
        drafting.push(s);
      }
    });
    this.draft(drafting, catchUp);
  }

  /**
   * Draft up to k tokens for each sequence with the MTP module, batched across sequences;
   * sequences in `catchUp` (mid-prompt) only get their MTP rows computed.
   */
  private draft(seqs: Seq[], catchUp: Set<Seq>): void {
    const m = this.model;
    const V = m.cfg.vocab_size;
    const D = m.cfg.hidden_size;
    const max = m.cfg.max_position_embeddings;
    const want = seqs.map((s) => {
      if (catchUp.has(s) || s.req.sampler.speculate === false) return 0; // constrained: no drafts
      const budget = s.req.maxNewTokens - s.generated - 1;
      const room = max - 1 - s.history.length;
      return Math.max(0, Math.min(this.draftTokens, budget, room));
    });
    for (const s of seqs) {
      s.drafts = [];
      s.draftDists = [];
    }
    const N = this.draftVocab;
    // Draft logits over the whole vocabulary: ids past the draft vocabulary stay -Infinity,
    // so a draft's distribution q is exactly the one it was drawn from.
    const logits = new Float32Array(V).fill(-Infinity);
    let cur = seqs.map((s) => ({ s, ids: s.mtpIds, hidden: s.mtpHidden! }));
    for (let j = 0; cur.length > 0; j++) {
      const out = m.mtp(
        cur.map((c) => ({ ids: c.ids, hidden: c.hidden, cache: c.s.cache! })),
        { logits: 'last', vocab: N, attn: this.attn },
      );
      const next: typeof cur = [];
      for (const [i, c] of cur.entries()) {
        const s = c.s;
        if (s.drafts.length >= want[seqs.indexOf(s)]) continue;
        logits.set(out.logits.subarray(i * N, (i + 1) * N));
        const h = [...s.history, ...s.drafts];
        const d = s.req.sampler.sample(logits, h);
        if (!s.req.sampler.greedy) s.draftDists.push(s.req.sampler.distribution(logits, h));
        s.drafts.push(d);
        if (s.drafts.length < want[seqs.indexOf(s)]) {
          next.push({ s, ids: [d], hidden: out.block.subarray(i * D, (i + 1) * D) });
        }
      }
      cur = next;
    }
  }

  private drop(s: Seq, reason: FinishReason, error?: Error): void {
    const i = this.active.indexOf(s);
    if (i >= 0) this.active.splice(i, 1);
    if (!s.cancelled) this.finish(s, reason, error);
  }
}
