// Text in, streamed text out: the pipeline that the CLI and the server share. It samples
// each sequence with its own seeded Sampler on top of the token-id Scheduler, turns ids into
// text with a StreamingDetokenizer (never a broken UTF-8 character), and cuts the stream at
// stop strings (StopMatcher) or at EOS. It sits above engine/ and text/ and below cli/ and
// server/, which only add their input and output formats.

import type { Scheduler, FinishReason, SeqHandle, TokenLogprobs } from '../engine/scheduler.ts';
import type { SpecStats } from '../engine/speculative.ts';
import { Sampler, logprobs as logSoftmax, type SamplingParams } from '../engine/sampler.ts';
import { topLogprobs } from '../kernels/ref/sample.ts';
import { ConstrainedSampler, type TokenConstraint } from '../engine/constrained.ts';
import { StreamingDetokenizer } from '../text/detokenizer.ts';
import { StopMatcher } from '../text/stop.ts';
import type { Tokenizer } from '../text/tokenizer.ts';

export interface TopLogprob {
  id: number;
  token: string;
  logprob: number;
}

export interface TokenLogprob extends TopLogprob {
  /** The most likely alternatives, best first. */
  top: TopLogprob[];
}

export interface TextDelta {
  text: string;
  /** Ids generated since the last delta (text may lag ids by a partial character). */
  ids: number[];
  logprobs?: TokenLogprob[];
}

export interface CompletionOptions {
  maxTokens: number;
  sampling?: SamplingParams;
  stop?: string[];
  /** Report each chosen token's logprob and this many alternatives (undefined: none). */
  topLogprobs?: number;
  /** Called as text becomes safe to show. */
  onDelta?: (d: TextDelta) => void;
  /**
   * Only tokens this allows are sampled (grammar-constrained decoding); it is told every
   * emitted token and released when the completion ends, however it ends.
   */
  constraint?: TokenConstraint;
}

export interface CompletionResult {
  text: string;
  ids: number[];
  finish: FinishReason;
  promptTokens: number;
  completionTokens: number;
  ttftMs: number;
  totalMs: number;
  logprobs?: TokenLogprob[];
  error?: Error;
  /** Draft statistics when the scheduler speculates. */
  spec?: SpecStats;
  /** Prompt tokens that came from the scheduler's prefix cache (absent: none). */
  cachedTokens?: number;
}

export interface Completion {
  cancel(): void;
  /** Stops decoding until resume() (the reader is behind); the sequence keeps its cache. */
  pause(): void;
  resume(): void;
  done: Promise<CompletionResult>;
}

/** The raw logits' log-softmax at `id` and the k best ids below `vocab` (Kernels.sampleBatch's numbers). */
function tokenLogprobs(logits: Float32Array, id: number, k: number, vocab: number): TokenLogprobs {
  const lp = logSoftmax(logits);
  return { logprob: lp[id]!, top: topLogprobs(lp, k, vocab) };
}

/** Submit a prompt (token ids) and stream its completion as text. */
export function startCompletion(
  sched: Scheduler,
  tok: Tokenizer,
  promptIds: number[],
  opts: CompletionOptions,
): Completion {
  const constraint = opts.constraint;
  let sampler: Sampler | ConstrainedSampler;
  try {
    const plain = new Sampler(opts.sampling ?? {});
    plain.limitVocab(tok.vocabSize);
    sampler = constraint ? new ConstrainedSampler(plain, constraint) : plain;
  } catch (e) {
    constraint?.release();
    throw e;
  }
  const detok = new StreamingDetokenizer(tok, { skipSpecialTokens: true });
  const stops = new StopMatcher(opts.stop ?? []);
  const ids: number[] = [];
  const lps: TokenLogprob[] = [];
  let text = '';
  let pendingIds: number[] = [];
  let pendingLps: TokenLogprob[] = [];

  const emit = (chunk: string) => {
    if (!chunk && pendingIds.length === 0) return;
    text += chunk;
    const d: TextDelta = { text: chunk, ids: pendingIds };
    if (opts.topLogprobs !== undefined) d.logprobs = pendingLps;
    pendingIds = [];
    pendingLps = [];
    if (chunk || d.ids.length) opts.onDelta?.(d);
  };

  let handle: SeqHandle | null = null;
  const done = new Promise<CompletionResult>((resolve) => {
    handle = sched.submit({
      prompt: promptIds,
      maxNewTokens: opts.maxTokens,
      sampler,
      stopIds: [tok.eosId],
      logprobs: opts.topLogprobs,
      onToken: (id, logits, given) => {
        constraint?.accept(id);
        ids.push(id);
        pendingIds.push(id);
        if (opts.topLogprobs !== undefined) {
          // Computed with the pick (batch-wide, by the kernels) when the scheduler could; the
          // same numbers here otherwise (speculative steps).
          const r = given ?? tokenLogprobs(logits, id, opts.topLogprobs, tok.vocabSize);
          const top = r.top.map((t) => ({ id: t.id, token: tok.decode([t.id]), logprob: t.logprob }));
          const entry = { id, token: tok.decode([id]), logprob: r.logprob, top };
          lps.push(entry);
          pendingLps.push(entry);
        }
        const r = stops.push(detok.push(id));
        emit(r.emit);
        return !r.stopped;
      },
      onDone: (r) => {
        constraint?.release();
        if (!stops.stopped) emit(stops.push(detok.flush()).emit + (stops.stopped ? '' : stops.flush()));
        else emit('');
        resolve({
          text,
          ids,
          finish: r.finish,
          promptTokens: r.promptTokens,
          completionTokens: r.completionTokens,
          ttftMs: r.ttftMs,
          totalMs: r.totalMs,
          logprobs: opts.topLogprobs !== undefined ? lps : undefined,
          error: r.error,
          spec: r.spec,
          cachedTokens: r.cachedTokens,
        });
      },
    });
  });
  // A refused submit rejects `done` and never reaches onDone: release the constraint there.
  done.catch(() => constraint?.release());
  return { cancel: () => handle?.cancel(), pause: () => handle?.pause(), resume: () => handle?.resume(), done };
}
