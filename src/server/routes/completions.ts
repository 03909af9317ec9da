// POST /v1/completions: the legacy text endpoint. Prompts are text (encoded with BOS, as the
// tokenizer's add_special_tokens does) or token ids taken as they are; the output is raw text,
// with no chat parsing.

import type { CompletionResult, TextDelta, TokenLogprob } from '../../pipeline/completion.ts';
import { toApiError } from '../errors.ts';
import {
  encodePrompt, finishedChoices, onShutdown, shuttingDown, startChoices, streamFlow, usage, type ServerContext,
} from '../generation.ts';
import type { RequestRecord } from '../log.ts';
import { completionLogprobs } from '../logprobs.ts';
import type { CompletionRequest } from '../request.ts';
import { sseResponse } from '../sse.ts';

const finishReason = (r: CompletionResult) =>
  r.finish === 'length' || r.finish === 'stop' ? r.finish : null;

/** Handles a checked completions request; `signal` aborts when the client goes away. */
export async function textCompletion(
  ctx: ServerContext,
  req: CompletionRequest,
  rec: RequestRecord,
  signal: AbortSignal,
): Promise<Response> {
  const prompts: number[][] = [];
  for (const p of req.prompts) {
    prompts.push(typeof p === 'string' ? await encodePrompt(ctx, [{ text: p }], req, 'prompt', true) : p);
  }
  const created = Math.floor(Date.now() / 1000);
  const base = { id: `cmpl-${rec.id}`, object: 'text_completion', created, model: req.model ?? ctx.modelName };
  const total = prompts.length * req.n;

  if (!req.stream) {
    const choices = await startChoices(ctx, prompts, req, 'prompt');
    const results = await finishedChoices(choices, signal, rec);
    return Response.json({
      ...base,
      choices: results.map((r, index) => ({
        index,
        text: r.text,
        logprobs: r.logprobs ? completionLogprobs(r.logprobs) : null,
        finish_reason: finishReason(r),
      })),
      usage: usage(choices.promptTokens, results, req.n),
    }, { headers: { 'x-request-id': rec.id } });
  }

  const extra = req.includeUsage ? { usage: null } : {};
  const offsets: number[] = new Array(total).fill(0);
  let send: ((data: unknown) => void) | null = null;
  const chunk = (index: number, text: string, lps: TokenLogprob[] | undefined, finish: string | null) => {
    const logprobs = lps ? completionLogprobs(lps, offsets[index]) : null;
    offsets[index] += text.length;
    send?.({ ...base, choices: [{ index, text, logprobs, finish_reason: finish }], ...extra });
  };
  const onDelta = (index: number, d: TextDelta) => chunk(index, d.text, d.logprobs, null);
  const choices = await startChoices(ctx, prompts, req, 'prompt', onDelta);
  const onAbort = () => choices.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  rec.stream = true;
  let release = () => {};
  return sseResponse((s) => {
    send = s.send;
    const fail = (e: unknown) => {
      release();
      choices.cancel();
      s.send(toApiError(e));
      s.done();
    };
    release = onShutdown(ctx, () => fail(shuttingDown()));
    let left = total;
    choices.each.forEach((p, index) => void p.then((r) => {
      if (r.finish === 'error') s.send(toApiError(r.error ?? new Error('generation failed')));
      else if (r.finish !== 'cancelled') {
        chunk(index, '', req.topLogprobs === undefined ? undefined : [], finishReason(r));
      }
      if (--left > 0) return;
      void choices.done.then((results) => {
        release();
        signal.removeEventListener('abort', onAbort);
        rec.done(results, choices.promptTokens);
        if (req.includeUsage) s.send({ ...base, choices: [], usage: usage(choices.promptTokens, results, req.n) });
        s.done();
      }).catch(fail);
    }).catch(fail));
  }, () => {
    release();
    onAbort();
  }, { 'x-request-id': rec.id }, streamFlow(ctx, choices, rec));
}
