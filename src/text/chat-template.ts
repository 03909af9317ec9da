// Chat messages -> prompt text, by rendering tokenizer_config.json's Jinja chat_template the way
// transformers' apply_chat_template does (trim_blocks, lstrip_blocks, raise_exception, tojson
// with ensure_ascii=False), via @huggingface/jinja. It validates messages first; it does not
// tokenize the result (tokenizer.ts) nor parse tool calls out of model output. renderChatParts
// renders for Tokenizer.encodeParts, keeping the messages' text plain text.

import { Template } from '@huggingface/jinja';
import { DsError } from '../errors.ts';
import type { TextPart } from './tokenizer.ts';

/** A role the DeepSeek-V3 template understands. */
export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

/** One tool call made by an assistant turn; `arguments` is JSON text held in a string. */
export interface ToolCall {
  type: 'function';
  id?: string;
  function: { name: string; arguments: string };
}

/** One chat message, OpenAI-style. `content` may be null only on an assistant tool-call turn. */
export interface ChatMessage {
  role: ChatRole;
  content: string | null;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
}

/** Options for {@link renderChat}. */
export interface RenderChatOptions {
  /** End with the assistant prefix so the model answers next. Default false. */
  addGenerationPrompt?: boolean;
  bosToken: string;
  eosToken: string;
  /** Tool definitions, passed to the template as `tools` (DeepSeek-V3's template ignores it). */
  tools?: unknown[];
}

const ROLES: ReadonlySet<string> = new Set(['system', 'user', 'assistant', 'tool']);

function bad(message: string): never {
  throw new DsError('BAD_INPUT', message);
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v);

function validateToolCalls(calls: unknown, at: string): void {
  if (!Array.isArray(calls)) bad(`${at}: must be an array`);
  if (calls.length === 0) bad(`${at}: must not be empty`);
  calls.forEach((c: unknown, j) => {
    const here = `${at}[${j}]`;
    if (!isObject(c)) bad(`${here}: must be an object`);
    if (c.type !== 'function') bad(`${here}.type: must be "function"`);
    if (c.id !== undefined && typeof c.id !== 'string') bad(`${here}.id: must be a string`);
    const f = c.function;
    if (!isObject(f)) bad(`${here}.function: must be an object with name and arguments`);
    if (typeof f.name !== 'string' || f.name === '') {
      bad(`${here}.function.name: must be a non-empty string`);
    }
    if (typeof f.arguments !== 'string') {
      bad(`${here}.function.arguments: must be a string holding JSON text`);
    }
  });
}

/** Throws DsError BAD_INPUT naming the message index and field when `messages` is malformed. */
export function validateMessages(messages: unknown): asserts messages is ChatMessage[] {
  if (!Array.isArray(messages)) bad('messages: must be an array');
  messages.forEach((m: unknown, i) => {
    const at = `messages[${i}]`;
    if (!isObject(m)) bad(`${at}: must be an object`);
    if (typeof m.role !== 'string' || !ROLES.has(m.role)) {
      bad(`${at}.role: unknown role ${JSON.stringify(m.role)} ` +
        '(expected system, user, assistant or tool)');
    }
    const hasCalls = m.tool_calls !== undefined && m.tool_calls !== null;
    if (hasCalls) {
      if (m.role !== 'assistant') bad(`${at}.tool_calls: only assistant messages make tool calls`);
      validateToolCalls(m.tool_calls, `${at}.tool_calls`);
    }
    if (m.content === undefined) bad(`${at}.content: missing`);
    if (m.content === null) {
      if (m.role !== 'assistant' || !hasCalls) {
        bad(`${at}.content: may be null only on an assistant message with tool_calls`);
      }
    } else if (typeof m.content !== 'string') {
      bad(`${at}.content: must be a string`);
    }
    if (m.tool_call_id !== undefined && typeof m.tool_call_id !== 'string') {
      bad(`${at}.tool_call_id: must be a string`);
    }
  });
}

let cached: { source: string; template: Template } | null = null;

function compile(source: string): Template {
  if (cached?.source === source) return cached.template;
  let template: Template;
  try {
    template = new Template(source);
  } catch (e) {
    throw new DsError('BAD_CONFIG', `chat_template does not parse: ${(e as Error).message}`);
  }
  cached = { source, template };
  return template;
}

/** Renders a chat template over validated messages, as transformers' apply_chat_template. */
export function renderChat(
  template: string,
  messages: ChatMessage[],
  opts: RenderChatOptions,
): string {
  validateMessages(messages);
  if (opts.tools !== undefined && !Array.isArray(opts.tools)) bad('tools: must be an array');
  const t = compile(template);
  try {
    return t.render({
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: opts.bosToken,
      eos_token: opts.eosToken,
      tools: opts.tools ?? null,
      documents: null,
    });
  } catch (e) {
    // The messages are valid and the template parsed, so a failure here is the template
    // refusing them, mostly through raise_exception (which @huggingface/jinja does not let
    // us replace): report it as bad input, with the template's own words.
    throw new DsError('BAD_INPUT', `chat template rejected the messages: ${(e as Error).message}`);
  }
}

/** What renderChatParts needs of the tokenizer: where its added tokens are in a text. */
export interface AddedTokenMatcher {
  replaceAddedTokens(text: string, fn: (token: string) => string): string;
}

// Private-use characters stand in for added-token text while the template renders.
const PRIVATE_USE = /[\uE000-\uF8FF]/g;

// Every string in a JSON-like value, keys aside, through `fn`.
function mapStrings(v: unknown, fn: (s: string) => string): unknown {
  if (typeof v === 'string') return fn(v);
  if (Array.isArray(v)) return v.map((x) => mapStrings(x, fn));
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, mapStrings(x, fn)]));
  return v;
}

// The message strings a user writes: contents, and tool calls' names and arguments.
function mapMessageText(messages: ChatMessage[], fn: (s: string) => string): ChatMessage[] {
  return messages.map((m) => {
    const out: ChatMessage = { ...m, content: m.content === null ? null : fn(m.content) };
    if (m.tool_calls) {
      out.tool_calls = m.tool_calls.map((c) => ({
        ...c,
        function: { ...c.function, name: fn(c.function.name), arguments: fn(c.function.arguments) },
      }));
    }
    return out;
  });
}

/**
 * renderChat's text as parts for Tokenizer.encodeParts, so that added-token text inside the
 * messages (a user writing `<｜end▁of▁sentence｜>` or `<｜User｜>`) is encoded as the
 * characters it is, while the template's own tokens stay tokens: a message cannot end the
 * sequence or forge a turn. Such text is swapped for private-use characters while the template
 * renders and comes back as plain parts. Without any, the one part is renderChat's text.
 */
export function renderChatParts(
  template: string,
  messages: ChatMessage[],
  opts: RenderChatOptions,
  tok: AddedTokenMatcher,
): TextPart[] {
  validateMessages(messages);
  const found = new Set<string>();
  const strings: string[] = [];
  const scan = (s: string) => {
    strings.push(s);
    tok.replaceAddedTokens(s, (t) => (found.add(t), t));
    return s;
  };
  mapMessageText(messages, scan);
  mapStrings(opts.tools, scan);
  if (found.size === 0) return [{ text: renderChat(template, messages, opts) }];

  const used = new Set<string>();
  for (const s of [template, ...strings, ...found]) for (const c of s.match(PRIVATE_USE) ?? []) used.add(c);
  const marker = new Map<string, string>();
  const back = new Map<string, string>();
  let code = 0xe000;
  for (const t of found) {
    while (used.has(String.fromCharCode(code))) code++;
    if (code > 0xf8ff) bad('messages: too many distinct special-token texts');
    const c = String.fromCharCode(code++);
    marker.set(t, c);
    back.set(c, t);
  }
  const escape = (s: string) => tok.replaceAddedTokens(s, (t) => marker.get(t) ?? t);
  const text = renderChat(template, mapMessageText(messages, escape), {
    ...opts,
    tools: opts.tools === undefined ? undefined : mapStrings(opts.tools, escape) as unknown[],
  });
  const parts: TextPart[] = [];
  let at = 0;
  for (const m of text.matchAll(new RegExp(`[${[...back.keys()].join('')}]`, 'g'))) {
    if (m.index > at) parts.push({ text: text.slice(at, m.index) });
    parts.push({ text: back.get(m[0])!, plain: true });
    at = m.index + 1;
  }
  if (at < text.length) parts.push({ text: text.slice(at) });
  return parts;
}
