// POST /v1/chat/completions: messages through the model's chat template, the completions
// parsed into content, reasoning_content and tool_calls (parsers.ts), answered whole or as
// server-sent chunks in OpenAI's chat.completion.chunk format.

import { randomBytes } from 'node:crypto';
import type { CompletionResult, TextDelta, TokenLogprob } from '../../pipeline/completion.ts';
import { renderChatParts, type ChatMessage } from '../../text/chat-template.ts';
import type { TextPart } from '../../text/tokenizer.ts';
import { DsError } from '../../errors.ts';
import { toApiError, ApiError } from '../errors.ts';
import {
  encodePrompt, finishedChoices, onShutdown, shuttingDown, startChoices, streamFlow, usage, type ServerContext,
} from '../generation.ts';
import { chatLogprobs } from '../logprobs.ts';
import { OutputParser, collectEvents, type OutputEvent, type ParsedOutput } from '../parsers.ts';
import type { ChatRequest, ToolDef } from '../request.ts';
import { sseResponse, type SseSink } from '../sse.ts';
import type { RequestRecord } from '../log.ts';

/**
 * DeepSeek-V3's template ignores `tools`, so the definitions go into the system prompt, in
 * the shape DeepSeek's earlier chat templates used; the model answers in its tool-call tokens.
 */
export function toolsSystemPrompt(tools: ToolDef[]): string {
  const lines = ['## Tools', '', '### Function', '', 'You have the following functions available:', ''];
  for (const t of tools) lines.push(`- \`${t.function.name}\`:`, '```json', JSON.stringify(t.function), '```');
  return lines.join('\n');
}

/**
 * The prompt for a chat request, with tools shown to the model, as parts to tokenize: the
 * template's tokens, and the messages as plain text (renderChatParts).
 */
export function renderPrompt(ctx: ServerContext, req: ChatRequest): TextPart[] {
  const template = ctx.tokenizer.chatTemplate;
  if (!template) {
    throw new ApiError(400, 'this model has no chat template; use /v1/completions', 'invalid_request_error', 'messages');
  }
  let messages: ChatMessage[] = req.messages;
  if (req.tools && !/\btools\b/.test(template)) {
    messages = [...messages, { role: 'system', content: toolsSystemPrompt(req.tools) }];
  }
  try {
    return renderChatParts(template, messages, {
      addGenerationPrompt: true,
      bosToken: ctx.tokenizer.bosToken,
      eosToken: ctx.tokenizer.eosToken,
      tools: req.tools,
    }, ctx.tokenizer);
  } catch (e) {
    if (e instanceof DsError) throw toApiError(e, 'messages');
    throw e;
  }
}

function finishReason(r: CompletionResult, hasCalls: boolean): string | null {
  if (r.finish === 'length') return 'length';
  if (r.finish === 'stop') return hasCalls ? 'tool_calls' : 'stop';
  return null;
}

/** The chunk delta for one parsed event, in OpenAI's shape. */
export function eventDelta(e: OutputEvent): Record<string, unknown> {
  switch (e.type) {
    case 'content':
      return { content: e.text };
    case 'reasoning':
      return { reasoning_content: e.text };
    case 'tool_call':
      return {
        tool_calls: [{ index: e.index, id: e.id, type: 'function', function: { name: e.name, arguments: '' } }],
      };
    case 'tool_args':
      return { tool_calls: [{ index: e.index, function: { arguments: e.text } }] };
  }
}

/** The assistant message of a whole answer, in OpenAI's shape. */
export function assistantMessage(parsed: ParsedOutput): Record<string, unknown> {
  const message: Record<string, unknown> = { role: 'assistant', content: parsed.content };
  if (parsed.reasoning !== null) message.reasoning_content = parsed.reasoning;
  if (parsed.toolCalls.length) {
    message.tool_calls = parsed.toolCalls.map((c) => ({
      id: c.id,
      type: 'function',
      function: { name: c.name, arguments: c.arguments },
    }));
    if (!parsed.content) message.content = null;
  }
  return message;
}

/** Handles a checked chat request; `signal` aborts when the client goes away. */
export async function chatCompletion(
  ctx: ServerContext,
  req: ChatRequest,
  rec: RequestRecord,
  signal: AbortSignal,
): Promise<Response> {
  // The body (up to 4 MB) was just parsed: let other work run before rendering it.
  await new Promise<void>((resolve) => setImmediate(resolve));
  const prompt = await encodePrompt(ctx, renderPrompt(ctx, req), req, 'messages'); // the template writes BOS
  const id = `chatcmpl-${rec.id}`;
  const created = Math.floor(Date.now() / 1000);
  const model = req.model ?? ctx.modelName; // the name the client used, when it gave one
  const head = (object: string) => ({ id, object, created, model, system_fingerprint: null });
  const callId = () => `call_${randomBytes(8).toString('hex')}`;
  const parsers = Array.from({ length: req.n }, () =>
    // Constrained output is all JSON or all calls: no <think> spans, and JSON strings are not calls.
    new OutputParser({ tools: !!req.tools && req.constraint?.type !== 'json', reasoning: !req.constraint, makeId: callId }));

  if (!req.stream) {
    const choices = await startChoices(ctx, [prompt], req, 'messages');
    const results = await finishedChoices(choices, signal, rec);
    const body = {
      ...head('chat.completion'),
      choices: results.map((r, index) => {
        const parsed = collectEvents([...parsers[index].push(r.text), ...parsers[index].flush()]);
        const message = assistantMessage(parsed);
        return {
          index,
          message,
          logprobs: r.logprobs ? { content: chatLogprobs(ctx.tokenizer, r.logprobs), refusal: null } : null,
          finish_reason: finishReason(r, parsed.toolCalls.length > 0),
        };
      }),
      usage: usage(choices.promptTokens, results, req.n),
    };
    return Response.json(body, { headers: { 'x-request-id': rec.id } });
  }

  // Streaming: every chunk carries usage: null when the client asked for a final usage chunk.
  const extra = req.includeUsage ? { usage: null } : {};
  const pendingLps: TokenLogprob[][] = parsers.map(() => []);
  const hasCalls = parsers.map(() => false);
  let sink: SseSink | null = null;
  const chunk = (index: number, delta: Record<string, unknown>, finish: string | null = null) => {
    const lps = pendingLps[index];
    pendingLps[index] = [];
    sink?.send({
      ...head('chat.completion.chunk'),
      choices: [{
        index,
        delta,
        logprobs: req.topLogprobs === undefined
          ? null
          : { content: chatLogprobs(ctx.tokenizer, lps), refusal: null },
        finish_reason: finish,
      }],
      ...extra,
    });
  };
  const emit = (index: number, events: OutputEvent[]) => {
    for (const e of events) {
      if (e.type === 'tool_call') hasCalls[index] = true;
      chunk(index, eventDelta(e));
    }
  };
  const onDelta = (index: number, d: TextDelta) => {
    if (d.logprobs) pendingLps[index].push(...d.logprobs);
    emit(index, parsers[index].push(d.text));
  };
  const choices = await startChoices(ctx, [prompt], req, 'messages', onDelta);
  const onAbort = () => choices.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  rec.stream = true;
  let release = () => {};
  return sseResponse((s) => {
    sink = s;
    for (let i = 0; i < req.n; i++) chunk(i, { role: 'assistant', content: '' });
    // Each choice finishes on its own; the usage chunk and [DONE] follow the last one. A
    // failure, or the server shutting down, ends the stream with an error event rather than
    // leaving it open.
    const fail = (e: unknown) => {
      release();
      choices.cancel();
      s.send(toApiError(e));
      s.done();
    };
    release = onShutdown(ctx, () => fail(shuttingDown()));
    let left = req.n;
    choices.each.forEach((p, index) => void p.then((r) => {
      emit(index, parsers[index].flush());
      if (r.finish === 'error') s.send(toApiError(r.error ?? new Error('generation failed')));
      else if (r.finish !== 'cancelled') chunk(index, {}, finishReason(r, hasCalls[index]));
      if (--left > 0) return;
      void choices.done.then((results) => {
        release();
        signal.removeEventListener('abort', onAbort);
        rec.done(results, choices.promptTokens);
        if (req.includeUsage) {
          const u = usage(choices.promptTokens, results, req.n);
          s.send({ ...head('chat.completion.chunk'), choices: [], usage: u });
        }
        s.done();
      }).catch(fail);
    }).catch(fail));
  }, () => {
    release();
    onAbort();
  }, { 'x-request-id': rec.id }, streamFlow(ctx, choices, rec));
}
