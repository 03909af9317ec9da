// Starting the completions of one request: each prompt × n choices becomes its own sequence in
// the scheduler's batch, with its own seed (seed + choice index, so n choices differ but a seed
// still reproduces them). A request is all or nothing: if the queue refuses one sequence, the
// ones already queued are cancelled and the request gets 429. Cancelling (client gone) frees
// every sequence's cache at once. Prompts are tokenized here too, a slice at a time and no
// further than the context allows, and open streams are ended here when the server shuts down.

import type { DeepseekV3 } from '../model/deepseek-v3.ts';
import type { Scheduler } from '../engine/scheduler.ts';
import type { TextPart, Tokenizer } from '../text/tokenizer.ts';
import {
  startCompletion,
  type Completion,
  type CompletionResult,
  type TextDelta,
} from '../pipeline/completion.ts';
import { GrammarEngine, type GrammarMatcher } from '../grammar/engine.ts';
import { ApiError, toApiError } from './errors.ts';
import type { RequestRecord } from './log.ts';
import type { GenerationRequest } from './request.ts';
import type { SseFlow } from './sse.ts';
import { grammarSpec } from './structured.ts';

/** What every route needs: the model and its parts, under the name clients use. */
export interface ServerContext {
  model: DeepseekV3;
  tokenizer: Tokenizer;
  scheduler: Scheduler;
  /** The name responses carry when the request names none. */
  modelName: string;
  /** Every name the model answers to (modelName first). */
  modelNames: string[];
  /** Aborted when the server shuts down. */
  shutdown?: AbortSignal;
  /** The open streams, each by what ends it when the server shuts down. */
  streams: Set<() => void>;
  /** How long a streaming client may read nothing before it is cut off (0: forever). */
  writeTimeoutMs?: number;
}

/** The running choices of one request, in index order. */
export interface Choices {
  /** The prompt length of each choice. */
  promptTokens: number[];
  /** Stops every choice still running; their results come back as 'cancelled'. */
  cancel(): void;
  /** Stops decoding every choice until resume() (the client is not reading). */
  pause(): void;
  resume(): void;
  /** Each choice's result, and all of them. */
  each: Promise<CompletionResult>[];
  done: Promise<CompletionResult[]>;
}

// startCompletion submits synchronously, so a refused submit has already rejected `done` by the
// time it returns: racing it against a resolved promise tells us without waiting for a step.
async function refused(c: Completion): Promise<unknown> {
  try {
    await Promise.race([c.done, Promise.resolve()]);
    return null;
  } catch (e) {
    return e ?? new Error('submit failed');
  }
}

/**
 * Rejects a prompt (or prompt + max_tokens) the context cannot hold, as OpenAI does. With
 * `atLeast`, `promptTokens` is a lower bound (the prompt was not tokenized to its end).
 */
export function checkContext(
  ctx: ServerContext,
  promptTokens: number,
  maxTokens: number | undefined,
  param: string,
  atLeast = false,
): void {
  const max = ctx.model.cfg.max_position_embeddings;
  const want = promptTokens + (maxTokens ?? 1);
  if (promptTokens < max && want <= max) return;
  const n = atLeast ? 'at least ' : '';
  const what = maxTokens === undefined
    ? `the prompt has ${n}${promptTokens} tokens`
    : `you requested ${n}${want} tokens (${n}${promptTokens} in the prompt, ${maxTokens} in the completion)`;
  throw new ApiError(
    400,
    `This model's maximum context length is ${max} tokens. However, ${what}. ` +
      'Please reduce the length of the prompt or of the completion.',
    'invalid_request_error',
    param,
    'context_length_exceeded',
  );
}

/**
 * A prompt's token ids, or a 400 as soon as it is known not to fit the context: first from its
 * length in characters alone (a token stands for at most tokenizer.maxTokenChars of them),
 * then while tokenizing, which stops once past the context. It tokenizes a slice at a time,
 * so the other streams and /health keep going while a long prompt is read.
 */
export async function encodePrompt(
  ctx: ServerContext,
  parts: TextPart[],
  req: GenerationRequest,
  param: string,
  addSpecialTokens = false,
): Promise<number[]> {
  const max = ctx.model.cfg.max_position_embeddings;
  const least = Math.ceil(parts.reduce((n, p) => n + p.text.length, 0) / ctx.tokenizer.maxTokenChars);
  if (least >= max) checkContext(ctx, least, req.maxTokens, param, true);
  const ids = await ctx.tokenizer.encodePartsAsync(parts, { addSpecialTokens, limit: max - 1 });
  checkContext(ctx, ids.length, req.maxTokens, param, ids.length >= max);
  return ids;
}

/** The error an open stream ends with when the server shuts down. */
export const shuttingDown = () =>
  new ApiError(503, 'the server is shutting down; the response is incomplete', 'server_error', null, 'server_shutdown');

/**
 * Registers `end` to run if the server shuts down while a stream is open (at once if it
 * already has); returns what unregisters it.
 */
export function onShutdown(ctx: ServerContext, end: () => void): () => void {
  if (ctx.shutdown?.aborted) {
    end();
    return () => {};
  }
  ctx.streams.add(end);
  return () => ctx.streams.delete(end);
}

/**
 * One grammar matcher per choice when the request constrains its output (compiled by the
 * grammar worker, cached), or none; a grammar the engine refuses is a 400.
 */
async function matchers(ctx: ServerContext, req: GenerationRequest, count: number): Promise<GrammarMatcher[]> {
  const c = req.constraint;
  if (!c) return [];
  const engine = GrammarEngine.forTokenizer(ctx.tokenizer, ctx.model.cfg.vocab_size);
  const spec = grammarSpec(c);
  const made = await Promise.allSettled(Array.from({ length: count }, () => engine.matcher(spec)));
  const failed = made.find((m) => m.status === 'rejected');
  if (!failed) return made.map((m) => (m as PromiseFulfilledResult<GrammarMatcher>).value);
  for (const m of made) if (m.status === 'fulfilled') m.value.release();
  throw toApiError(failed.reason, c.param);
}

/**
 * Queues `n` choices per prompt. `onDelta(index, delta)` streams each choice's text; choice
 * `index` = prompt × n + k. Throws ApiError (nothing left queued) when refused. A constrained
 * request (response_format, tool_choice) gets a grammar matcher per choice.
 */
export async function startChoices(
  ctx: ServerContext,
  prompts: number[][],
  req: GenerationRequest,
  param: string,
  onDelta?: (index: number, d: TextDelta) => void,
): Promise<Choices> {
  const max = ctx.model.cfg.max_position_embeddings;
  for (const p of prompts) checkContext(ctx, p.length, req.maxTokens, param);
  const constraints = await matchers(ctx, req, prompts.length * req.n);
  // Matchers of choices never started (a refused one stops the rest) are released here.
  const unused = () => constraints.slice(running.length + 1).forEach((m) => m.release());
  const running: Completion[] = [];
  const promptTokens: number[] = [];
  const finished = new Set<number>();
  const cancel = () => running.forEach((c, i) => finished.has(i) || c.cancel());
  for (const prompt of prompts) {
    for (let k = 0; k < req.n; k++) {
      const index = running.length;
      const seed = req.sampling.seed;
      let c: Completion;
      try {
        c = startCompletion(ctx.scheduler, ctx.tokenizer, prompt, {
          maxTokens: req.maxTokens ?? max - prompt.length,
          sampling: { ...req.sampling, seed: seed === undefined ? undefined : seed + k },
          stop: req.stop,
          topLogprobs: req.topLogprobs,
          onDelta: onDelta && ((d) => onDelta(index, d)),
          constraint: constraints[index],
        });
      } catch (e) {
        cancel(); // the sampler refused its parameters
        unused();
        throw toApiError(e, param);
      }
      const err = await refused(c);
      if (err) {
        cancel();
        unused();
        throw toApiError(err, param);
      }
      // Cancelling a finished sequence would report it twice: remember which are done.
      void c.done.then(() => finished.add(index), () => finished.add(index));
      running.push(c);
      promptTokens.push(prompt.length);
    }
  }
  const each = running.map((c) => c.done);
  return {
    promptTokens,
    cancel,
    pause: () => running.forEach((c) => c.pause()),
    resume: () => running.forEach((c) => c.resume()),
    each,
    done: Promise.all(each),
  };
}

/**
 * A streamed request's flow control: its choices stop decoding while the client is not
 * reading, and a client that reads nothing for the write timeout is cut off (logged) and its
 * choices cancelled, which frees their caches.
 */
export function streamFlow(ctx: ServerContext, choices: Choices, rec: RequestRecord): SseFlow {
  const ms = ctx.writeTimeoutMs ?? 0;
  return {
    pause: choices.pause,
    resume: choices.resume,
    writeTimeoutMs: ms,
    onWriteTimeout: () => {
      rec.note = 'write_timeout';
      rec.event(`write timeout: the client read nothing for ${ms} ms; disconnected, generation cancelled`);
      choices.cancel();
      if (!rec.disconnect) return false;
      rec.disconnect();
      return true;
    },
  };
}

/**
 * The results of a non-streaming request's choices: cancelled if the client goes away
 * first, recorded in the request log; a failed choice becomes the request's error.
 */
export async function finishedChoices(
  choices: Choices,
  signal: AbortSignal,
  rec: RequestRecord,
): Promise<CompletionResult[]> {
  const onAbort = () => choices.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  const results = await choices.done.finally(() => signal.removeEventListener('abort', onAbort));
  rec.done(results, choices.promptTokens);
  const failed = results.find((r) => r.finish === 'error');
  if (failed) throw toApiError(failed.error ?? new Error('generation failed'));
  return results;
}

/**
 * OpenAI's usage block; each prompt counts once however many choices it has (its cached
 * tokens are those of its first choice).
 */
export function usage(promptTokens: number[], results: CompletionResult[], n: number) {
  const first = (_: unknown, i: number) => i % n === 0;
  const prompt = promptTokens.filter(first).reduce((a, b) => a + b, 0);
  const cached = results.filter(first).reduce((a, r) => a + (r.cachedTokens ?? 0), 0);
  const completion = results.reduce((a, r) => a + r.completionTokens, 0);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}
