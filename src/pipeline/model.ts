// The library's front door. `await load(path)` reads a checkpoint folder or a GGUF file into a
// Model: the network (DeepseekV3), its tokenizer and chat template, and one Scheduler that
// every generation on it shares (continuous batching). `model.generate(prompt)` and
// `model.chat(messages)` stream text as async iterables through startCompletion, the same
// pipeline as the CLI and the server; `complete` and `completeChat` collect it. Loading pauses
// between tensors and generation between decode steps, so timers and I/O keep running, and
// every call takes an AbortSignal.

import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DsError } from '../errors.ts';
import { isGgufPath, readGgufHeader } from '../io/gguf.ts';
import type { QuantRecipe } from '../io/gguf-recipes.ts';
import { loadKernels, type Kernels } from '../kernels/index.ts';
import { DeepseekV3 } from '../model/deepseek-v3.ts';
import { Scheduler, type SchedulerOptions } from '../engine/scheduler.ts';
import type { SamplingParams } from '../engine/sampler.ts';
import { renderChatParts, validateMessages, type ChatMessage } from '../text/chat-template.ts';
import { Tokenizer, type TextPart } from '../text/tokenizer.ts';
import { startCompletion, type Completion, type CompletionResult } from './completion.ts';

/** The small model that ships with dsv3 (models/default). */
export const DEFAULT_MODEL = resolve(dirname(fileURLToPath(import.meta.url)), '../../models/default');

/** Sampling when a call sets none: DeepSeek's recommended temperature 0.6 and top-p 0.95. */
export const DEFAULT_SAMPLING = { temperature: 0.6, topP: 0.95 } as const satisfies SamplingParams;

/** The tokenizer of a checkpoint folder (tokenizer.json) or of a GGUF file (its metadata). */
export function loadTokenizer(path: string): Tokenizer {
  if (isGgufPath(path)) return Tokenizer.fromGguf(readGgufHeader(path).metadata, path);
  if (!existsSync(resolve(path, 'tokenizer.json'))) {
    throw new DsError('MISSING_FILE', `${resolve(path, 'tokenizer.json')}: not found (the model folder has no tokenizer)`);
  }
  return Tokenizer.fromDir(path);
}

/**
 * The model's vocabulary against its tokenizer's: a tokenizer id the embedding lacks is an
 * error; embedding rows past the tokenizer (padding: DeepSeek-V3 has 129,280 rows for 128,815
 * tokens) are never sampled (the pipeline limits its samplers), and the note returned says so.
 */
export function checkVocab(model: DeepseekV3, tok: Tokenizer): string | null {
  const rows = model.cfg.vocab_size;
  if (tok.vocabSize > rows) {
    throw new DsError('BAD_CONFIG', `the tokenizer has ${tok.vocabSize} tokens but the model's embedding only ${rows} rows`);
  }
  if (tok.vocabSize < rows) {
    return `the model has ${rows} token rows, the tokenizer ${tok.vocabSize} tokens: ids from ${tok.vocabSize} on are padding and are never sampled`;
  }
  return null;
}

/**
 * A conversation through the tokenizer's chat template, as parts for Tokenizer.encodeParts:
 * the template's own tokens, and the messages as plain text (special-token text a user types
 * is not a control token).
 */
export function chatParts(tok: Tokenizer, messages: unknown, addGenerationPrompt: boolean): TextPart[] {
  validateMessages(messages);
  if (!tok.chatTemplate) throw new DsError('BAD_CONFIG', 'the tokenizer has no chat_template');
  return renderChatParts(tok.chatTemplate, messages, {
    addGenerationPrompt,
    bosToken: tok.bosToken,
    eosToken: tok.eosToken,
  }, tok);
}

export interface LoadOptions {
  /** A kernel backend, or which to pick (default 'auto': native when it is built). */
  kernels?: Kernels | 'auto' | 'native' | 'ref';
  /** Threads of the native kernels (default: all cores). */
  threads?: number;
  /** Quantise every matrix at load with llama-quantize's recipe of that name. */
  quantize?: QuantRecipe;
  /** MTP speculative decoding for every generation (loads the MTP module). */
  speculative?: SchedulerOptions['speculative'];
  /** Load the MTP module (default: only with `speculative`). */
  mtp?: boolean;
  /** Most sequences decoded together (default 8), waiting (default 64), prompt tokens per step (256). */
  maxBatch?: number;
  maxQueue?: number;
  prefillChunk?: number;
  /**
   * Prefix cache budget in bytes (default 1 GiB; 0: off): the latent KV rows of earlier
   * generations are kept, so a prompt that starts like one of them (the next turn of a chat)
   * skips that part.
   */
  prefixCacheBytes?: number;
  /** Tensors read ('load') and matrices quantised ('quantize'), each out of `total`. */
  onProgress?: (stage: 'load' | 'quantize', done: number, total: number) => void;
  /** Notes on the load: quantisation fallbacks, padding ids in the vocabulary. */
  onNote?: (note: string) => void;
  /** Stops the load; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Options of one generation: sampling (defaults: DEFAULT_SAMPLING), length, stops, abort. */
export interface GenerateOptions extends SamplingParams {
  /** Most tokens to generate (default: as many as the context has room for). */
  maxTokens?: number;
  /** Text ends before the first stop string (which is not included). EOS always ends it. */
  stop?: string | readonly string[];
  /** Aborting stops the generation at once; the stream and `result` reject with the reason. */
  signal?: AbortSignal;
}

/** A finished generation. `finish` is 'cancelled' when the caller stopped iterating early. */
export type GenerationResult = Omit<CompletionResult, 'error' | 'logprobs'>;

/**
 * Text as it is generated (never a broken UTF-8 character), for `for await`. Leaving the loop
 * early (break, return, a throw) stops the generation and frees its sequence. `result` settles
 * when the generation ends, with the whole text and its counts, or rejects as the iteration does
 * (an abort, an error); it can be awaited without iterating.
 */
export interface TextStream extends AsyncIterableIterator<string> {
  readonly result: Promise<GenerationResult>;
}

const SAMPLING_KEYS = [
  'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'frequencyPenalty', 'presencePenalty', 'seed',
] as const satisfies readonly (keyof SamplingParams)[];

/** A loaded model: the network, its tokenizer and chat template, and the scheduler that runs it. */
export class Model {
  constructor(
    /** The network. */
    readonly network: DeepseekV3,
    readonly tokenizer: Tokenizer,
    /** The one decode loop: every generation on this model is a sequence in it. */
    readonly scheduler: Scheduler,
  ) {}

  /** The tokenizer's Jinja chat template (null when the checkpoint has none). */
  get chatTemplate(): string | null {
    return this.tokenizer.chatTemplate;
  }

  /** Most tokens a sequence can hold, prompt and generated text together. */
  get contextLength(): number {
    return this.network.cfg.max_position_embeddings;
  }

  /**
   * Continue a text prompt (BOS is added as the tokenizer does), or a prompt of token ids
   * given as they are.
   */
  generate(prompt: string | readonly number[], opts: GenerateOptions = {}): TextStream {
    return this.stream(opts, async () => {
      if (typeof prompt !== 'string') return [...prompt];
      return this.encode([{ text: prompt }], true);
    });
  }

  /** Answer a conversation: the messages go through the chat template, ending with the assistant's turn. */
  chat(messages: readonly ChatMessage[], opts: GenerateOptions = {}): TextStream {
    return this.stream(opts, async () => this.encode(chatParts(this.tokenizer, messages, true), false));
  }

  /** generate, collected: resolves with the whole text. */
  complete(prompt: string | readonly number[], opts: GenerateOptions = {}): Promise<GenerationResult> {
    return this.generate(prompt, opts).result;
  }

  /** chat, collected: resolves with the whole answer. */
  completeChat(messages: readonly ChatMessage[], opts: GenerateOptions = {}): Promise<GenerationResult> {
    return this.chat(messages, opts).result;
  }

  // Tokenized a slice at a time (the event loop runs in between), and no further than the
  // context holds.
  private async encode(parts: TextPart[], addSpecialTokens: boolean): Promise<number[]> {
    const max = this.contextLength;
    const ids = await this.tokenizer.encodePartsAsync(parts, { addSpecialTokens, limit: max - 1 });
    if (ids.length >= max) {
      throw new DsError('CONTEXT_OVERFLOW', `the prompt has at least ${ids.length} tokens; this model's context is ${max} tokens`);
    }
    return ids;
  }

  private stream(opts: GenerateOptions, prompt: () => Promise<number[]>): TextStream {
    const { signal } = opts;
    const chunks: string[] = [];
    let waiting: { resolve: (r: IteratorResult<string>) => void; reject: (e: unknown) => void } | null = null;
    let ended = false;
    let failure: { error: unknown } | null = null;
    let completion: Completion | null = null;
    let stopped = false; // the caller left the loop

    const wake = () => {
      if (!waiting) return;
      const w = waiting;
      if (failure) w.reject(failure.error);
      else if (chunks.length > 0) w.resolve({ value: chunks.shift()!, done: false });
      else if (ended) w.resolve({ value: undefined, done: true });
      else return;
      waiting = null;
    };

    const run = async (): Promise<GenerationResult> => {
      signal?.throwIfAborted();
      const ids = await abortable(prompt(), signal);
      const max = this.contextLength;
      const sampling: SamplingParams = { ...DEFAULT_SAMPLING };
      for (const k of SAMPLING_KEYS) if (opts[k] !== undefined) sampling[k] = opts[k];
      if (stopped) return { text: '', ids: [], finish: 'cancelled', promptTokens: ids.length, completionTokens: 0, ttftMs: 0, totalMs: 0 };
      const c = startCompletion(this.scheduler, this.tokenizer, ids, {
        maxTokens: opts.maxTokens ?? Math.max(0, max - ids.length),
        sampling,
        stop: typeof opts.stop === 'string' ? [opts.stop] : opts.stop && [...opts.stop],
        onDelta: (d) => {
          if (!d.text || stopped) return;
          chunks.push(d.text);
          wake();
        },
      });
      completion = c;
      const onAbort = () => c.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
      let r: CompletionResult;
      try {
        r = await c.done;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
      if (r.finish === 'cancelled' && signal?.aborted) throw signal.reason;
      if (r.error) throw r.error;
      const { error: _e, logprobs: _l, ...result } = r;
      return result;
    };

    const result = run();
    result.then(
      () => { ended = true; wake(); },
      (error: unknown) => { failure = { error }; wake(); },
    );
    const it: TextStream = {
      result,
      next: () => new Promise<IteratorResult<string>>((resolve, reject) => {
        if (waiting) throw new Error('TextStream: next() called before the previous call settled');
        waiting = { resolve, reject };
        wake();
      }),
      return: async (): Promise<IteratorResult<string>> => {
        if (!ended && !failure) {
          stopped = true;
          completion?.cancel();
        }
        chunks.length = 0;
        ended = true;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }
}

/** `p`, or a rejection with the signal's reason as soon as it aborts. */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * Load a model: a Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json) or
 * a llama.cpp `deepseek2` GGUF file (tokenizer and chat template from its metadata). The event
 * loop keeps running while it loads; `signal` stops it.
 */
export async function load(path: string, opts: LoadOptions = {}): Promise<Model> {
  const { signal } = opts;
  signal?.throwIfAborted();
  const backend = opts.kernels ?? 'auto';
  if (typeof backend === 'string' && backend !== 'auto' && backend !== 'native' && backend !== 'ref') {
    throw new DsError('BAD_INPUT', `kernels must be a Kernels object, "auto", "native" or "ref" (got ${JSON.stringify(backend)})`);
  }
  const kernels = typeof backend === 'string' ? loadKernels({ backend, threads: opts.threads }) : backend;
  const tokenizer = loadTokenizer(path);
  const network = await DeepseekV3.loadAsync(path, {
    kernels,
    mtp: opts.mtp ?? opts.speculative !== undefined,
    quantize: opts.quantize,
    onProgress: opts.onProgress,
    onNote: opts.onNote,
    signal,
  });
  const note = checkVocab(network, tokenizer);
  if (note) opts.onNote?.(note);
  const scheduler = new Scheduler(network, {
    maxBatch: opts.maxBatch,
    maxQueue: opts.maxQueue,
    prefillChunk: opts.prefillChunk,
    speculative: opts.speculative,
    prefixCacheBytes: opts.prefixCacheBytes ?? 2 ** 30,
  });
  return new Model(network, tokenizer, scheduler);
}
