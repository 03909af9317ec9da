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
import { ApiError, toApiError } from './errors.ts';
import type { RequestRecord } from './log.ts';
import type { GenerationRequest } from './request.ts';

/** What every route needs: the model and its parts, under the name clients use. */
export interface ServerContext {
  model: DeepseekV3;
  tokenizer: Tokenizer;
  scheduler: Scheduler;
  modelName: string;
  /** Aborted when the server shuts down. */
  shutdown?: AbortSignal;
  /** The open streams, each by what ends it when the server shuts down. */
  streams: Set<() => void>;
}

/** The running choices of one request, in index order. */
export interface Choices {
  /** The prompt length of each choice. */
  promptTokens: number[];
  /** Stops every choice still running; their results come back as 'cancelled'. */
  cancel(): void;
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
 * Queues `n` choices per prompt. `onDelta(index, delta)` streams each choice's text; choice
 * `index` = prompt × n + k. Throws ApiError (nothing left queued) when refused.
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
        });
      } catch (e) {
        cancel(); // the sampler refused its parameters
        throw toApiError(e, param);
      }
      const err = await refused(c);
      if (err) {
        cancel();
        throw toApiError(err, param);
      }
      // Cancelling a finished sequence would report it twice: remember which are done.
      void c.done.then(() => finished.add(index), () => finished.add(index));
      running.push(c);
      promptTokens.push(prompt.length);
    }
  }
  const each = running.map((c) => c.done);
  return { promptTokens, cancel, each, done: Promise.all(each) };
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

/** OpenAI's usage block; each prompt counts once however many choices it has. */
export function usage(promptTokens: number[], results: CompletionResult[], n: number) {
  const prompt = promptTokens.filter((_, i) => i % n === 0).reduce((a, b) => a + b, 0);
  const completion = results.reduce((a, r) => a + r.completionTokens, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
