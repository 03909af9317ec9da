// OpenAI request bodies -> checked, typed requests. Every field is checked for type and range
// here, and a mistake is a 400 naming the field; null counts as absent, as in OpenAI's API.
// Fields the server does not use (user, metadata, store, …) are ignored; fields it cannot
// honour (echo, suffix, best_of > 1, images) are refused rather than silently dropped.

import type { SamplingParams } from '../engine/sampler.ts';
import { schemaProblems } from '../grammar/json-schema.ts';
import type { ChatMessage } from '../text/chat-template.ts';
import { ApiError, badField } from './errors.ts';

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

const badJson = (message: string) => new ApiError(400, message, 'invalid_request_error', null, 'invalid_json');

/** Parses a request body as a JSON object (400 when it is not). */
export function parseJsonBody(text: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw badJson(`the body is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(v)) throw badJson('the body must be a JSON object');
  return v;
}

// Typed, range-checked access to the fields of a body.
class Fields {
  constructor(private readonly body: Json) {}

  has(k: string): boolean {
    return this.body[k] !== undefined && this.body[k] !== null;
  }

  raw(k: string): unknown {
    return this.has(k) ? this.body[k] : undefined;
  }

  num(k: string, min: number, max: number): number | undefined {
    const v = this.raw(k);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      throw badField(k, `must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  int(k: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    const v = this.raw(k);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
      throw badField(k, `must be an integer ${range}, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  bool(k: string): boolean | undefined {
    const v = this.raw(k);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw badField(k, `must be a boolean, got ${JSON.stringify(v)}`);
    return v;
  }

  str(k: string): string | undefined {
    const v = this.raw(k);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw badField(k, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }
}

/** What both endpoints share. */
export interface GenerationRequest {
  model: string | undefined;
  stream: boolean;
  includeUsage: boolean;
  n: number;
  /** undefined: as many as the context allows. */
  maxTokens: number | undefined;
  stop: string[];
  sampling: SamplingParams;
  /** Alternatives per token when logprobs are asked for; undefined: no logprobs. */
  topLogprobs: number | undefined;
  /** What the output must be (response_format, tool_choice); undefined: free text. */
  constraint?: OutputConstraint;
}

/**
 * Output constrained by grammar (structured.ts turns it into one): JSON valid against a
 * schema (response_format json_schema; json_object is any JSON object), or tool calls
 * (tool_choice "required" or a named function) whose arguments match the function's
 * parameters schema. `param` is the request field to name in errors. With `declaredOnly`, an
 * object gets only the properties its schema declares (unless additionalProperties says more):
 * valid either way, and a model cannot wander off into made-up keys.
 */
export type OutputConstraint =
  | { type: 'json'; schema: unknown; declaredOnly: boolean; param: string }
  | { type: 'tool_calls'; tools: ToolDef[]; single: boolean; param: string };

export interface ChatRequest extends GenerationRequest {
  messages: ChatMessage[];
  /** Tool definitions to show the model; undefined when none (or tool_choice "none"). */
  tools: ToolDef[] | undefined;
}

export interface CompletionRequest extends GenerationRequest {
  /** Each prompt, as text or as token ids. */
  prompts: (string | number[])[];
}

/** A JSON Schema the grammar cannot enforce exactly: 400 naming every problem. */
function checkSchema(schema: unknown, param: string, where: string): void {
  const problems = schemaProblems(schema);
  if (problems.length) {
    throw badField(param, `${where} uses JSON Schema features that cannot be enforced: ${problems.join('; ')}`);
  }
}

/** response_format: text (undefined), json_object, or json_schema. */
function responseFormat(f: Fields): OutputConstraint | undefined {
  const rf = f.raw('response_format');
  if (rf === undefined) return undefined;
  const param = 'response_format';
  if (!isObject(rf)) throw badField(param, 'must be an object such as {"type": "json_object"}');
  if (rf.type === 'text') return undefined;
  if (rf.type === 'json_object') return { type: 'json', schema: { type: 'object' }, declaredOnly: false, param };
  if (rf.type !== 'json_schema') {
    throw badField(param, `type must be "text", "json_object" or "json_schema", got ${JSON.stringify(rf.type)}`);
  }
  const js = rf.json_schema;
  if (!isObject(js)) throw badField(param, 'json_schema must be an object: {"name", "schema", "strict"}');
  if (typeof js.name !== 'string' || js.name === '') throw badField(param, 'json_schema.name must be a non-empty string');
  if (js.strict !== undefined && js.strict !== null && typeof js.strict !== 'boolean') {
    throw badField(param, 'json_schema.strict must be a boolean');
  }
  const schema = js.schema ?? { type: 'object' };
  if (!isObject(schema) && typeof schema !== 'boolean') throw badField(param, 'json_schema.schema must be a JSON Schema object');
  checkSchema(schema, param, 'json_schema.schema');
  return { type: 'json', schema, declaredOnly: true, param };
}

/**
 * tool_choice "required" or {"type": "function", "function": {"name"}}: a constraint to tool
 * calls (one when parallel_tool_calls is false or a function is named); undefined for
 * "auto" and "none" (the model decides; "none" hides the tools).
 */
function toolChoice(f: Fields, tools: ToolDef[] | undefined): OutputConstraint | undefined {
  const choice = f.raw('tool_choice');
  const parallel = f.bool('parallel_tool_calls') ?? true;
  if (choice === undefined || choice === 'auto' || choice === 'none') return undefined;
  const param = 'tool_choice';
  let chosen: ToolDef[];
  if (choice === 'required') {
    if (!tools?.length) throw badField(param, '"required" needs tools');
    chosen = tools;
  } else if (typeof choice === 'string') {
    throw badField(param, `must be "none", "auto", "required" or {"type": "function", "function": {"name": …}}, got ${JSON.stringify(choice)}`);
  } else {
    const c = choice as Json;
    const fn = c.function;
    if (c.type !== 'function' || !isObject(fn) || typeof fn.name !== 'string') {
      throw badField(param, 'must be {"type": "function", "function": {"name": …}}');
    }
    const t = tools?.find((x) => x.function.name === fn.name);
    if (!t) throw badField(param, `function ${JSON.stringify(fn.name)} is not among the tools`);
    chosen = [t];
  }
  for (const t of chosen) {
    const params = t.function.parameters ?? { type: 'object', properties: {} };
    const p = params as Json;
    if (p.type !== 'object' && !(p.type === undefined && (isObject(p.properties) || p.$ref !== undefined))) {
      throw badField('tools', `function ${JSON.stringify(t.function.name)}: parameters must be a schema of "type": "object"`);
    }
    checkSchema(params, 'tools', `function ${JSON.stringify(t.function.name)}'s parameters`);
  }
  return { type: 'tool_calls', tools: chosen, single: !parallel || choice !== 'required', param };
}

export interface ToolDef {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

/** The most choices one request may ask for (each is a sequence in the batch). */
export const MAX_N = 16;
const MAX_STOPS = 16;

function positive(f: Fields, k: string, max: number): number | undefined {
  const v = f.num(k, 0, max);
  if (v === 0) throw badField(k, `must be above 0 (and at most ${max})`);
  return v;
}

function common(f: Fields, defaultMax: number | undefined): GenerationRequest {
  const model = f.str('model');
  const stream = f.bool('stream') ?? false;
  let includeUsage = false;
  const so = f.raw('stream_options');
  if (so !== undefined) {
    if (!isObject(so)) throw badField('stream_options', 'must be an object');
    const iu = so.include_usage;
    if (iu !== undefined && iu !== null && typeof iu !== 'boolean') {
      throw badField('stream_options.include_usage', 'must be a boolean');
    }
    includeUsage = iu === true;
  }
  const maxTokens = f.int('max_completion_tokens', 1) ?? f.int('max_tokens', 1) ?? defaultMax;
  const stopRaw = f.raw('stop');
  let stop: string[] = [];
  if (typeof stopRaw === 'string') stop = [stopRaw];
  else if (Array.isArray(stopRaw)) stop = stopRaw as string[];
  else if (stopRaw !== undefined) throw badField('stop', 'must be a string or an array of strings');
  if (stop.length > MAX_STOPS) throw badField('stop', `at most ${MAX_STOPS} stop strings`);
  stop.forEach((s, i) => {
    if (typeof s !== 'string' || s === '') throw badField('stop', `stop[${i}] must be a non-empty string`);
  });
  const sampling: SamplingParams = {
    temperature: f.num('temperature', 0, 2),
    topP: positive(f, 'top_p', 1),
    topK: f.int('top_k', 0),
    minP: f.num('min_p', 0, 1),
    presencePenalty: f.num('presence_penalty', -2, 2),
    frequencyPenalty: f.num('frequency_penalty', -2, 2),
    repetitionPenalty: positive(f, 'repetition_penalty', 10),
    seed: f.int('seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER - MAX_N), // + choice index
  };
  for (const k of Object.keys(sampling) as (keyof SamplingParams)[]) {
    if (sampling[k] === undefined) delete sampling[k];
  }
  return {
    model,
    stream,
    includeUsage,
    n: f.int('n', 1, MAX_N) ?? 1,
    maxTokens,
    stop,
    sampling,
    topLogprobs: undefined,
  };
}

// OpenAI content may be a list of parts; text parts are joined, anything else is refused.
function messageContent(c: unknown, at: string): unknown {
  if (!Array.isArray(c)) return c;
  return c
    .map((p, j) => {
      if (!isObject(p) || p.type !== 'text' || typeof p.text !== 'string') {
        throw badField('messages', `${at}.content[${j}]: only text parts are supported`);
      }
      return p.text;
    })
    .join('');
}

function chatMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw badField('messages', 'must be a non-empty array');
  // Shape checks beyond this (roles, content types, tool calls) are validateMessages' job.
  return v.map((m, i) => {
    if (!isObject(m)) return m as ChatMessage;
    const role = m.role === 'developer' ? 'system' : m.role;
    return { ...m, role, content: messageContent(m.content, `messages[${i}]`) } as ChatMessage;
  });
}

function toolDefs(v: unknown): ToolDef[] {
  if (!Array.isArray(v)) throw badField('tools', 'must be an array');
  return v.map((t, i) => {
    const fn = isObject(t) ? t.function : undefined;
    if (!isObject(t) || t.type !== 'function' || !isObject(fn)) {
      throw badField('tools', `tools[${i}] must be {"type": "function", "function": {...}}`);
    }
    if (typeof fn.name !== 'string' || fn.name === '') {
      throw badField('tools', `tools[${i}].function.name must be a non-empty string`);
    }
    if (fn.description !== undefined && typeof fn.description !== 'string') {
      throw badField('tools', `tools[${i}].function.description must be a string`);
    }
    if (fn.parameters !== undefined && !isObject(fn.parameters)) {
      throw badField('tools', `tools[${i}].function.parameters must be a JSON Schema object`);
    }
    return t as unknown as ToolDef;
  });
}

/** A /v1/chat/completions body. */
export function parseChatRequest(body: Json): ChatRequest {
  const f = new Fields(body);
  const req = common(f, undefined);
  if (!f.has('messages')) throw badField('messages', 'is required');
  const messages = chatMessages(body.messages);
  const logprobs = f.bool('logprobs') ?? false;
  const top = f.int('top_logprobs', 0, 20);
  if (top !== undefined && !logprobs) throw badField('top_logprobs', 'needs "logprobs": true');
  req.topLogprobs = logprobs ? top ?? 0 : undefined;
  let tools = f.has('tools') ? toolDefs(body.tools) : undefined;
  const choice = f.raw('tool_choice');
  if (choice !== undefined && !(typeof choice === 'string' || isObject(choice))) {
    throw badField('tool_choice', 'must be "none", "auto", "required" or an object');
  }
  if (choice === 'none' || tools?.length === 0) tools = undefined;
  // A forced tool call is the whole output: it takes precedence over response_format.
  const format = responseFormat(f);
  const constraint = toolChoice(f, tools) ?? format;
  return { ...req, messages, tools, constraint };
}

/** A /v1/completions body; `vocab` bounds prompt token ids. */
export function parseCompletionRequest(body: Json, vocab: number): CompletionRequest {
  const f = new Fields(body);
  const req = common(f, 16); // OpenAI's default for the legacy endpoint
  if (!f.has('prompt')) throw badField('prompt', 'is required');
  const p = body.prompt;
  const isIds = (v: unknown): v is number[] =>
    Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number');
  let prompts: (string | number[])[];
  if (typeof p === 'string') prompts = [p];
  else if (isIds(p)) prompts = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || isIds(x))) {
    prompts = p as (string | number[])[];
  } else {
    throw badField('prompt', 'must be a string, an array of token ids, or an array of those');
  }
  if (prompts.length * req.n > MAX_N) {
    throw badField('prompt', `prompts × n must be at most ${MAX_N}, got ${prompts.length * req.n}`);
  }
  for (const [i, q] of prompts.entries()) {
    if (typeof q === 'string') continue;
    const bad = q.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad >= 0) {
      throw badField('prompt', `prompt ${i}, position ${bad}: ${q[bad]} is not a token id below ${vocab}`);
    }
  }
  const lp = f.int('logprobs', 0, 20);
  req.topLogprobs = lp;
  if (f.bool('echo')) throw badField('echo', 'is not supported');
  if (f.has('suffix')) throw badField('suffix', 'is not supported');
  if ((f.int('best_of', 1) ?? 1) > 1) throw badField('best_of', 'values above 1 are not supported');
  return { ...req, prompts, constraint: responseFormat(f) };
}
