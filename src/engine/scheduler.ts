// Continuous batching in token ids. Requests join a bounded queue; every step runs ONE
// forward pass over all active sequences (running ones with their last token, new ones
// with the next chunk of their prompt), then each sequence whose prompt is in picks its
// next token. Prompts are fed at most `prefillChunk` tokens per step (all new sequences
// together), so a long prompt does not stall the others' decoding, and a step (the time
// the event loop waits) stays bounded. Finished and cancelled sequences leave between
// steps and their latent caches are dropped at once; queued ones take their places.
// Steps yield to the event loop so I/O (HTTP, cancellation) interleaves. A sequence whose
// consumer is behind (a client not reading its stream) can be paused: it keeps its cache but
// leaves the steps and its batch slot until resumed.
//
// With `speculative`, a running sequence feeds [next, d1 … dk] instead of one token: the
// drafts come from the MTP module (one batched MTP pass for all sequences per draft
// position), the verify pass is the same single forward, and rejected positions are cut
// from the latent caches (see speculative.ts). How many tokens to draft is decided step by
// step from measured pass times and acceptance (draft-policy.ts), so drafting happens where it
// pays and plain decoding where it does not. Sequences not drafting keep the MTP rows they
// owe (pending) and compute them in one batched cache-only pass when they next draft, or when
// they owe more than PENDING_CAP; one with no draft planned within PENDING_CAP steps and no
// prefix cache to keep them for stops keeping them (it never drafts again). A step with no
// drafts to verify is the plain decode step, which only records the rows owed by sequences that
// keep them: a batch that keeps none decodes exactly as without speculation.

import { DsError } from '../errors.ts';
import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { SequenceCache } from '../model/cache.ts';
import { PrefixCache, type PrefixPin } from './prefix-cache.ts';
import type { AttnImpl } from '../model/mla.ts';
import { acceptDrafts, acceptGreedy, draftVocabulary, SpecStats, type SpecSampler } from './speculative.ts';
import { DraftPolicy } from './draft-policy.ts';
import { noPick } from './sampler.ts';
import type { IdLogprob, SampleResult } from '../kernels/kernels.ts';

/** A token's logprob and its best alternatives (SeqRequest.logprobs). */
export interface TokenLogprobs {
  logprob: number;
  top: IdLogprob[];
}

/** Most MTP rows a sequence that is not drafting keeps owing (see the header). */
const PENDING_CAP = 64;

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
  onToken?: (id: number, logits: Float32Array, lp?: TokenLogprobs) => boolean | void;
  /**
   * Give onToken the token's logprob and this many alternatives (the raw logits' log-softmax,
   * computed with the pick where the sampler makes batch rows; otherwise lp is undefined).
   */
  logprobs?: number;
  onDone: (r: SeqResult) => void;
}

export interface SchedulerOptions {
  /** Most sequences decoded together (default 8). */
  maxBatch?: number;
  /** Most requests waiting for a slot before submit() refuses (default 64). */
  maxQueue?: number;
  /**
   * Draft up to this many tokens per step with the model's MTP module (needs MTP weights),
   * from a draft vocabulary of the first `draftVocab` token ids (default: draftVocabulary()).
   * `policy` 'adaptive' (default) picks 0 … draftTokens each step, whichever is expected to
   * decode fastest (measured; see draft-policy.ts), and never drafts for a seeded sampled
   * sequence (its output then is plain decoding's); 'fixed' drafts draftTokens every step.
   */
  speculative?: { draftTokens: number; draftVocab?: number; policy?: 'adaptive' | 'fixed' };
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
  /** MTP rows owed (row i: main hidden state mtpHidden[i], next token mtpIds[i]), oldest first. */
  mtpIds: number[];
  mtpHidden: Float32Array | null;
  /** Of those, how many were owed before this step's. */
  mtpOld?: number;
  /** The MTP rows are no longer kept: this sequence does not draft again. */
  mtpOff?: boolean;
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

/** What each sequence feeds a step (see Scheduler.plan). */
type Plan = { s: Seq; ids: number[]; whole: boolean }[];

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
  /** How far each step drafts, and what it decided so far (null: no speculation). */
  readonly draftPolicy: DraftPolicy | null;
  /** When the last step ended (0: the steps had stopped), for the time between steps. */
  private stepEnd = 0;
  /** The MTP passes' logits over the whole vocabulary (past the draft vocabulary: -Infinity). */
  private draftLogits: Float32Array | null = null;

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
    const policy = opts.speculative?.policy ?? 'adaptive';
    if (policy !== 'adaptive' && policy !== 'fixed') {
      throw new DsError('BAD_INPUT', `speculative.policy must be 'adaptive' or 'fixed' (got ${String(policy)})`);
    }
    this.draftPolicy = this.draftTokens > 0 ? new DraftPolicy(this.draftTokens, policy === 'adaptive') : null;
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
      mtpOld: 0,
      mtpOff: false,
      spec: this.draftTokens > 0 ? new SpecStats() : null,
      t0: performance.now(),
      ttft: 0,
      cancelled: false,
      done: false,
      // (Every field from the start: sequences of one shape keep the step's code monomorphic.)
      cached: undefined,
      pin: undefined,
      paused: false,
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
    this.catchUp(this.active); // running sequences' MTP rows, so their rows can be shared whole
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
    if (s.cache && reason !== 'error') {
      this.catchUp([s]); // the MTP rows it owes, so the cache keeps all of it
      this.prefixCache.store(s.history, s.cache);
    }
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
      this.stepEnd = 0;
      return;
    }
    try {
      const t0 = performance.now();
      const plan = this.plan(batch);
      // Drafts to verify, or a prompt chunk with more to come (whose MTP rows are paid now):
      // the speculative step; otherwise a plain one (that keeps MTP rows where they are kept).
      if (this.draftTokens > 0 && plan.some((p) => p.s.drafts.length > 0 || !p.whole)) this.speculativeStep(plan, t0);
      else this.plainStep(plan, t0);
    } catch (e) {
      for (const s of batch) this.drop(s, 'error', e as Error);
    }
    this.stepEnd = performance.now();
    setImmediate(() => this.step());
  }

  /**
   * What each sequence feeds this step: running ones their token (and drafts), new ones the
   * next chunk of their prompt within the step's prompt budget, in order of arrival. A
   * sequence left out (budget spent) waits for the next step. `whole`: the prompt is in
   * after this step, so the sequence picks a token.
   */
  private plan(batch: Seq[]): Plan {
    let budget = this.prefillChunk;
    const out: Plan = [];
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

  /**
   * A step without drafts: every sequence picks from the head batched over the batch. With
   * speculation, the sequences that keep MTP rows owe this step's, and draft() then chooses
   * the next step's draft length (or, where none keeps them, the policy just counts the step).
   */
  private plainStep(plan: Plan, t0: number): void {
    const V = this.model.cfg.vocab_size;
    const D = this.model.cfg.hidden_size;
    const r = this.model.forward(
      plan.map((p) => ({ ids: p.ids, cache: p.s.cache! })),
      { logits: 'last', attn: this.attn, reuse: true },
    );
    this.steps++;
    this.stepRows += plan.length;
    const picks: { s: Seq; j: number; p0: number }[] = [];
    plan.forEach(({ s, ids, whole }, j) => {
      const p0 = s.prefilled;
      this.fed(s, ids);
      if (!s.cancelled && whole) picks.push({ s, j, p0 });
    });
    const results = this.sampleRows(r.logits, picks);
    const prompts = plan.some((p) => p.s.generated === 0);
    const alive: Seq[] = [];
    let keeps = false;
    let emitMs = 0;
    for (const { s, j, p0 } of picks) {
      const logits = r.logits.subarray(j * V, (j + 1) * V);
      const got = this.pick(s, logits, results.get(s));
      if (!got) continue;
      if (s.generated > 0) s.spec?.record(0, 0, 1);
      if (this.draftTokens > 0 && !s.mtpOff) {
        // Row i pairs hidden state h_i with token i+1 (after a prompt: each prompt row's).
        const { row, len } = r.seqs[j];
        const ids = s.generated === 0 ? [...s.req.prompt.slice(p0 + 1), got.id] : [got.id];
        this.owe(s, ids, r.hidden.subarray(row * D, (row + len) * D));
        keeps = true;
      }
      const te = performance.now();
      if (this.emit(s, got.id, logits, got.lp)) {
        s.feed = [got.id];
        alive.push(s);
      }
      emitMs += performance.now() - te;
    }
    const pol = this.draftPolicy;
    if (!pol) return;
    // (The policy times steps without prompt rows; it counts every step, since its schedule of
    // looks at drafting is in steps.)
    if (!prompts) pol.plainStep(plan.length, this.stepMs(t0, emitMs));
    if (keeps) this.draft(alive, new Set(), !prompts);
    else if (!prompts) pol.choose(plan.length, 0);
  }

  /**
   * A decode step's time for the draft policy: from `t0` on, less the time spent emitting
   * (the same per token however they come), plus the wait since the last step (the event
   * loop's turn, the batch set up: the same per step whatever k is, so what drafting saves on
   * it counts), at most the step's own time.
   */
  private stepMs(t0: number, emitMs: number): number {
    const gap = this.stepEnd > 0 ? t0 - this.stepEnd : 0;
    const ms = performance.now() - t0 - emitMs;
    return ms + Math.min(gap, ms);
  }

  /**
   * One Kernels.sampleBatch call for every pick (sequence s, row j of `logits`) whose sampler
   * makes batch rows: the native backend samples all rows at once, in parallel.
   */
  private sampleRows(logits: Float32Array, picks: readonly { s: Seq; j: number }[]): Map<Seq, SampleResult> {
    const rows = picks.filter(({ s }) => s.req.sampler.batchRow && s.req.sampler.settle);
    const results = new Map<Seq, SampleResult>();
    if (rows.length > 0) {
      const got = this.model.K.sampleBatch(logits, this.model.cfg.vocab_size, rows.map(({ s, j }) =>
        ({ ...s.req.sampler.batchRow!(s.history, s.req.logprobs ?? -1), row: j })));
      rows.forEach(({ s }, i) => results.set(s, got[i]!));
    }
    return results;
  }

  /**
   * A sequence's next token from its sampleRows result, or else its sampler's own sample().
   * Null: it was cancelled (by an earlier sequence's onToken), or nothing was allowed (all
   * -Infinity, NaN or masked), which ends this sequence only, with an error.
   */
  private pick(s: Seq, logits: Float32Array, res: SampleResult | undefined): { id: number; lp?: TokenLogprobs } | null {
    const id = res ? s.req.sampler.settle!(res) : s.cancelled ? -1 : s.req.sampler.sample(logits, s.history);
    if (s.cancelled) return null;
    if (id < 0) {
      this.drop(s, 'error', noPick());
      return null;
    }
    return { id, lp: res?.logprob !== undefined ? { logprob: res.logprob, top: res.top! } : undefined };
  }

  /** Record one generated token; false when the sequence has finished. */
  private emit(s: Seq, id: number, logits: Float32Array, lp?: TokenLogprobs): boolean {
    const max = this.model.cfg.max_position_embeddings;
    s.history.push(id);
    s.generated++;
    if (s.generated === 1) s.ttft = performance.now();
    const keep = s.req.onToken?.(id, logits, lp) !== false;
    let reason: FinishReason | null = null;
    if (!keep || s.req.stopIds?.includes(id)) reason = 'stop';
    else if (s.generated >= s.req.maxNewTokens || s.history.length >= max) reason = 'length';
    if (reason) this.drop(s, reason);
    return reason === null && !s.cancelled;
  }

  /**
   * A step with drafts to verify or a prompt chunk with more to come: one verify pass for
   * every sequence, the head over the rows that are read, then one batched MTP pass per draft
   * position.
   */
  private speculativeStep(plan: Plan, t0: number): void {
    const m = this.model;
    const V = m.cfg.vocab_size;
    const D = m.cfg.hidden_size;
    const L = m.cfg.num_hidden_layers;
    // Sequences verifying drafts, and their common draft length (-1: they differ).
    const withDrafts = plan.filter((p) => p.s.generated > 0 && p.s.drafts.length > 0);
    const kStep = withDrafts.every((p) => p.s.drafts.length === withDrafts[0].s.drafts.length) ? withDrafts[0]?.s.drafts.length ?? 0 : -1;
    const prompts = plan.some((p) => p.s.generated === 0);
    // Logits only for the rows that are read, in one head matmul: a prompt's last row, or a
    // running sequence's next token and every draft.
    const reads = plan.map((p) => (!p.whole ? 0 : p.s.generated === 0 ? 1 : p.ids.length));
    const r = m.forward(plan.map((p) => ({ ids: p.ids, cache: p.s.cache! })), { logits: reads, attn: this.attn, reuse: true });
    this.steps++;
    this.stepRows += plan.length;
    let emitMs = 0;

    const drafting: Seq[] = [];
    const catchUp = new Set<Seq>();
    let read = 0; // logits rows of the sequences before
    plan.forEach(({ s, ids, whole }, j) => {
      const first = read;
      read += reads[j];
      const prefill = s.generated === 0;
      const p0 = s.prefilled;
      this.fed(s, ids);
      if (s.cancelled) return;
      const slice = r.seqs[j];
      if (!whole) {
        // A prompt chunk with more to come: nothing to pick, but the MTP module's rows for
        // these positions pair each hidden state with the next prompt token.
        this.owe(s, s.req.prompt.slice(p0 + 1, p0 + 1 + slice.len), r.hidden.subarray(slice.row * D, (slice.row + slice.len) * D));
        drafting.push(s);
        catchUp.add(s);
        return;
      }
      const row = (i: number) => r.logits.subarray((first + i) * V, (first + i + 1) * V);

      let tokens: number[];
      let lp: TokenLogprobs | undefined;
      const sampler = s.req.sampler;
      if (prefill || s.drafts.length === 0) {
        // Nothing to verify: the token is picked exactly as plain decoding picks it.
        const got = this.pick(s, row(0), undefined);
        if (!got) return;
        tokens = [got.id];
        lp = got.lp;
      } else {
        tokens = sampler.greedy
          ? acceptGreedy(s.drafts, (i, h) => sampler.sample(row(i), h), s.history)
          : acceptDrafts(s.drafts, s.draftDists, (i, h) => sampler.distribution(row(i), h), s.history, sampler);
        this.draftPolicy!.accepted(s.drafts.length, tokens.length - 1);
      }
      if (!prefill) {
        s.spec!.record(s.drafts.length, tokens.length - 1, tokens.length);
        // Positions past the last accepted draft hold rejected tokens: cut them off.
        for (const c of s.cache!.layers.slice(0, L)) c.length = slice.p0 + tokens.length;
      }
      // MTP rows to (re)compute from the true hidden states: row i pairs h_i with token i+1.
      const mtpFrom = slice.p0;
      s.cache!.layers[L].length = Math.min(s.cache!.layers[L].length, mtpFrom);
      const hRows = prefill ? slice.len : tokens.length;
      this.owe(s, prefill ? [...s.req.prompt.slice(p0 + 1), tokens[0]] : tokens, r.hidden.subarray(slice.row * D, (slice.row + hRows) * D));

      // (Emitting is left out of the step's time: it is the same per token however they come.)
      const te = performance.now();
      let alive = true;
      for (const [i, id] of tokens.entries()) {
        alive = this.emit(s, id, row(prefill ? 0 : i), lp);
        if (!alive) break;
      }
      emitMs += performance.now() - te;
      if (alive) {
        s.feed = [tokens[tokens.length - 1]];
        drafting.push(s);
      }
    });
    if (!prompts && kStep > 0) this.draftPolicy!.verifyStep(plan.length, withDrafts.length, kStep, this.stepMs(t0, emitMs));
    this.draft(drafting, catchUp, !prompts);
  }

  /** Queue MTP rows a sequence owes (unless it keeps none): ids[i] pairs with hidden row i. */
  private owe(s: Seq, ids: readonly number[], hidden: Float32Array): void {
    s.mtpOld = s.mtpIds.length;
    if (s.mtpOff) return;
    const D = this.model.cfg.hidden_size;
    const n = s.mtpIds.length;
    const need = (n + ids.length) * D;
    if (!s.mtpHidden || s.mtpHidden.length < need) {
      const grown = new Float32Array(Math.max(need, 2 * (s.mtpHidden?.length ?? 0)));
      if (s.mtpHidden) grown.set(s.mtpHidden.subarray(0, n * D));
      s.mtpHidden = grown;
    }
    s.mtpHidden.set(hidden.subarray(0, ids.length * D), n * D);
    for (const id of ids) s.mtpIds.push(id);
  }

  /** Compute the first `n` MTP rows each sequence owes, cache entries only, in one pass. */
  private payRows(owed: readonly { s: Seq; n: number }[]): void {
    if (owed.length === 0) return;
    const D = this.model.cfg.hidden_size;
    this.model.mtp(
      owed.map(({ s, n }) => ({ ids: s.mtpIds.slice(0, n), hidden: s.mtpHidden!.subarray(0, n * D), cache: s.cache! })),
      { logits: 'none', attn: this.attn },
    );
    for (const { s, n } of owed) {
      s.mtpHidden!.copyWithin(0, n * D, s.mtpIds.length * D);
      s.mtpIds.splice(0, n);
      s.mtpOld = Math.max(0, (s.mtpOld ?? 0) - n);
    }
  }

  /** Every MTP row these sequences owe, computed now (the prefix cache keeps only whole rows). */
  private catchUp(seqs: readonly Seq[]): void {
    if (!this.draftPolicy) return;
    try {
      this.payRows(seqs.filter((s) => s.cache && !s.mtpOff && s.mtpIds.length > 0).map((s) => ({ s, n: s.mtpIds.length })));
    } catch {
      // Nothing lost but cache entries: the prefix cache then keeps what is whole.
    }
  }

  /** This sequence keeps no MTP rows from now on, and drafts no more. */
  private stopMtp(s: Seq): void {
    s.mtpOff = true;
    s.mtpIds = [];
    s.mtpHidden = null;
  }

  /** Whether a sequence may be drafted for at all (constrained ones never; see SchedulerOptions). */
  private mayDraft(sampler: SpecSampler): boolean {
    if (sampler.speculate === false) return false;
    return !this.draftPolicy!.adaptive || sampler.greedy || sampler.seeded === false;
  }

  /**
   * Choose this step's draft length (draftPolicy), then draft up to that many tokens for each
   * sequence that may with the MTP module, batched across sequences; the others (sequences in
   * `catchUp` are mid-prompt) keep owing their MTP rows, pay them, or stop keeping them.
   * `clean`: the step had no prompt rows, so the drafting pass is timed for the policy.
   */
  private draft(seqs: Seq[], catchUp: Set<Seq>, clean: boolean): void {
    const m = this.model;
    const V = m.cfg.vocab_size;
    const D = m.cfg.hidden_size;
    const max = m.cfg.max_position_embeddings;
    const pol = this.draftPolicy!;
    seqs = seqs.filter((s) => !s.done); // (one may have been cancelled from another's onToken)
    const room = seqs.map((s) => {
      if (catchUp.has(s) || s.mtpOff || !this.mayDraft(s.req.sampler)) return 0;
      const budget = s.req.maxNewTokens - s.generated - 1;
      const room = max - 1 - s.history.length;
      return Math.max(0, Math.min(this.draftTokens, budget, room));
    });
    const b = seqs.filter((s) => !catchUp.has(s)).length;
    const k = b > 0 ? pol.choose(b, room.filter((x) => x > 0).length) : 0;
    const want = room.map((x) => Math.min(x, k));
    // (A warm-up timing, left out by the policy: one sequence drafts, the cheapest such step.)
    if (pol.probe) want.fill(0, want.findIndex((w) => w > 0) + 1);
    for (const s of seqs) {
      if (s.drafts.length > 0) s.drafts = [];
      if (s.draftDists.length > 0) s.draftDists = [];
    }
    // Rows owed from before this step are paid in a pass of their own, so the drafting pass
    // below costs what it does in steady drafting; a sequence not drafting keeps owing up to
    // PENDING_CAP rows while a draft is planned within as many steps (or, in the policy's
    // first steps, while it may outlast them), and stops keeping them otherwise (with the
    // fixed policy it pays every step).
    const owed: { s: Seq; n: number }[] = [];
    for (const [i, s] of seqs.entries()) {
      if (s.mtpOff || s.mtpIds.length === 0) continue;
      if (want[i] > 0) {
        if (s.mtpOld) owed.push({ s, n: s.mtpOld });
      } else if (!pol.adaptive) owed.push({ s, n: s.mtpIds.length });
      else {
        const keep = this.prefixCache !== null || pol.keepsMtp(b, PENDING_CAP, s.req.maxNewTokens - s.generated);
        if (!keep) this.stopMtp(s);
        else if (s.mtpIds.length > PENDING_CAP) owed.push({ s, n: s.mtpIds.length });
      }
    }
    this.payRows(owed);
    if (want.every((w) => w === 0)) return;

    const t0 = performance.now();
    const N = this.draftVocab;
    let cur = seqs.flatMap((s, i) => {
      if (want[i] === 0) return [];
      const c = { s, want: want[i], ids: s.mtpIds, hidden: s.mtpHidden!.subarray(0, s.mtpIds.length * D) };
      s.mtpIds = []; // paid by the first pass (the buffer is only written again next step)
      return [c];
    });
    const drafters = cur.length;
    // Draft logits over the whole vocabulary: ids past the draft vocabulary stay -Infinity,
    // so a draft's distribution q is exactly the one it was drawn from.
    const logits = (this.draftLogits ??= new Float32Array(V).fill(-Infinity));
    for (let j = 0; cur.length > 0; j++) {
      const out = m.mtp(
        cur.map((c) => ({ ids: c.ids, hidden: c.hidden, cache: c.s.cache! })),
        { logits: 'last', vocab: N, attn: this.attn, reuse: true },
      );
      const next: typeof cur = [];
      for (const [i, c] of cur.entries()) {
        const s = c.s;
        logits.set(out.logits.subarray(i * N, (i + 1) * N));
        const h = s.drafts.length > 0 ? [...s.history, ...s.drafts] : s.history;
        const d = s.req.sampler.sample(logits, h);
        if (!s.req.sampler.greedy) s.draftDists.push(s.req.sampler.distribution(logits, h));
        s.drafts.push(d);
        if (s.drafts.length < c.want) next.push({ s, want: c.want, ids: [d], hidden: out.block.subarray(i * D, (i + 1) * D) });
      }
      cur = next;
    }
    if (clean && want.every((w) => w === 0 || w === k)) pol.draftPass(drafters, k, performance.now() - t0);
  }

  private drop(s: Seq, reason: FinishReason, error?: Error): void {
    const i = this.active.indexOf(s);
    if (i >= 0) this.active.splice(i, 1);
    if (!s.cancelled) this.finish(s, reason, error);
  }
}
