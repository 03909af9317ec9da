// Grammars for constrained decoding, with xgrammar as the engine. xgrammar lives in a worker
// thread (worker.js): compiling a grammar over a 129k-token vocabulary takes from tens of
// milliseconds to seconds, which must not stop the decode loop or the server; and each
// sequence's next mask is computed there while the main thread runs the next forward pass.
// Masks come back through shared memory: accept() posts the token, mask() waits (Atomics)
// for the mask it implies, usually already written. Compiled grammars are cached by their
// spec; each sequence gets its own matcher. With a byte-level vocabulary each mask is also
// ANDed with the UTF-8 guard's (utf8.ts), so strings come out as valid UTF-8.

import { Worker } from 'node:worker_threads';
import { DsError } from '../errors.ts';
import type { TokenConstraint } from '../engine/constrained.ts';
import type { Tokenizer } from '../text/tokenizer.ts';
import { UTF8_START, Utf8Guard, type Utf8State } from './utf8.ts';
import { withIntRanges } from './int-range.ts';

/** What to constrain output to. */
export type GrammarSpec =
  /** JSON valid against `schema` (checked first by json-schema.ts), on one line. */
  | { kind: 'json_schema'; schema: unknown; strict: boolean }
  /**
   * `begin`, then calls separated by `separator` (one call when `single`), then `end`; a call
   * is one of `calls`: its begin, JSON arguments valid against its schema, its end.
   */
  | {
    kind: 'tool_calls';
    begin: string;
    end: string;
    separator: string;
    single: boolean;
    calls: { begin: string; schema: unknown; end: string }[];
  };

/** The vocabulary as xgrammar takes it: each id's vocabulary string, and how to read them. */
export interface GrammarVocab {
  tokens: string[];
  /** byte_level (GPT-2 style, DeepSeek's), byte_fallback (SentencePiece style) or raw. */
  type: 'byte_level' | 'byte_fallback' | 'raw';
  /** The model's logits length (embedding rows; ids past `tokens` are never allowed). */
  size: number;
  /** Ids that end a sequence: allowed exactly when the grammar is complete. */
  stopIds: number[];
}

/**
 * A tokenizer's vocabulary for xgrammar. Special tokens other than EOS become "" (never
 * allowed: the detokenizer drops them, so they could not stand for grammar text); other added
 * tokens (DeepSeek's tool-call markers) stand for their text, as the detokenizer writes them.
 */
export function grammarVocab(tok: Tokenizer, size: number): GrammarVocab {
  const tokens: string[] = [];
  let byteLevel = 0;
  let sentencePiece = 0;
  let byteFallback = false;
  for (let id = 0; id < tok.vocabSize; id++) {
    const t = id !== tok.eosId && tok.isSpecial(id) ? '' : tok.idToToken(id) ?? '';
    tokens.push(t);
    if (t.startsWith('\u0120')) byteLevel++;
    else if (t.startsWith('\u2581')) sentencePiece++;
    else if (/^<0x[0-9A-F]{2}>$/.test(t)) byteFallback = true;
  }
  const type = byteLevel >= sentencePiece ? (byteLevel > 0 ? 'byte_level' : 'raw') : byteFallback ? 'byte_fallback' : 'raw';
  return { tokens, type, size: Math.max(size, tok.vocabSize), stopIds: [tok.eosId] };
}

const WAIT_MS = 30_000;
const CACHE = 32;

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
}

/** The grammar worker of one vocabulary. Start it with GrammarEngine.start (or forTokenizer). */
export class GrammarEngine {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private dead: Error | null = null;
  private readonly ready: Promise<void>;
  private readonly cache = new Map<string, Promise<number>>();
  /** Mask words per matcher. */
  readonly words: number;
  /** Keeps byte-level output valid UTF-8 (null for other vocabularies). */
  readonly utf8: Utf8Guard | null;

  private constructor(readonly vocab: GrammarVocab) {
    this.words = Math.ceil(vocab.size / 32);
    // Stop tokens write no text (the detokenizer drops them): the guard lets them through.
    const text = vocab.tokens.map((t, id) => (vocab.stopIds.includes(id) ? '' : t));
    this.utf8 = vocab.type === 'byte_level' ? new Utf8Guard(text, vocab.size) : null;
    this.utf8?.prepare();
    this.worker = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { vocab: vocab.tokens, vocabType: vocab.type, vocabSize: vocab.size, stopIds: vocab.stopIds },
    });
    this.ready = new Promise((resolve, reject) => {
      this.worker.once('message', (m: { type?: string }) => (m.type === 'ready' ? resolve() : reject(new Error('bad start'))));
      this.worker.once('error', reject);
    });
    // The worker keeps the process alive only while it starts or a request waits for it.
    this.ready.then(() => this.pending.size === 0 && this.worker.unref(), () => {}); // errors: through requests
    this.worker.on('message', (m: { id?: number; type?: string; message?: string }) => {
      if (m.type === 'error') return this.fail(new Error(`grammar worker: ${m.message}`));
      const p = m.id !== undefined ? this.pending.get(m.id) : undefined;
      if (!p) return;
      this.pending.delete(m.id!);
      if (this.pending.size === 0) this.worker.unref();
      p.resolve(m as Record<string, unknown>);
    });
    this.worker.on('error', (e) => this.fail(e));
    this.worker.on('exit', (code) => this.fail(new Error(`grammar worker exited (code ${code})`)));
  }

  private static readonly engines = new WeakMap<Tokenizer, Map<number, GrammarEngine>>();

  /** The engine of a tokenizer's vocabulary over `size` logits (one per pair, started lazily). */
  static forTokenizer(tok: Tokenizer, size: number): GrammarEngine {
    let bySize = GrammarEngine.engines.get(tok);
    if (!bySize) GrammarEngine.engines.set(tok, (bySize = new Map()));
    let e = bySize.get(size);
    if (!e || e.dead) bySize.set(size, (e = new GrammarEngine(grammarVocab(tok, size))));
    return e;
  }

  /** An engine for an explicit vocabulary. */
  static start(vocab: GrammarVocab): GrammarEngine {
    return new GrammarEngine(vocab);
  }

  private fail(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private async request(msg: Record<string, unknown>): Promise<Record<string, unknown>> {
    await this.ready;
    if (this.dead) throw this.dead;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ ...msg, id });
    });
  }

  /** Posts a message that has no answer (dropped once the worker is gone). */
  post(msg: Record<string, unknown>): void {
    if (!this.dead) this.worker.postMessage(msg);
  }

  /**
   * Compiles `spec` (or takes it from the cache). Rejects with BAD_INPUT, naming the cause, when
   * the engine refuses it.
   */
  private compile(spec: GrammarSpec): Promise<number> {
    const key = JSON.stringify(spec);
    let g = this.cache.get(key);
    if (g) {
      this.cache.delete(key); // most recent last
      this.cache.set(key, g);
      return g;
    }
    g = this.request({ op: 'compile', spec: forWorker(spec) }).then((r) => {
      if (!r.ok) throw new DsError('BAD_INPUT', `the grammar engine cannot compile this: ${r.message}`);
      return r.grammar as number;
    });
    this.cache.set(key, g);
    g.catch(() => this.cache.get(key) === g && this.cache.delete(key));
    while (this.cache.size > CACHE) {
      const [oldKey, old] = this.cache.entries().next().value as [string, Promise<number>];
      this.cache.delete(oldKey);
      old.then((grammar) => this.post({ op: 'drop', grammar }), () => {});
    }
    return g;
  }

  /** Compiles `spec` ahead of use (what matcher() would do first). */
  async prepare(spec: GrammarSpec): Promise<void> {
    await this.compile(spec);
  }

  /** A fresh matcher for `spec`, at its start, with its first mask ready. */
  async matcher(spec: GrammarSpec): Promise<GrammarMatcher> {
    for (let attempt = 0; ; attempt++) {
      const grammar = await this.compile(spec);
      const shared = new Int32Array(new SharedArrayBuffer(4 * (2 + this.words)));
      const r = await this.request({ op: 'matcher', grammar, shared });
      if (r.ok) return new GrammarMatcher(this, r.matcher as number, shared);
      // The grammar left the cache in between (and was dropped): compile it again, once.
      if (attempt > 0) throw new DsError('BAD_INPUT', `the grammar engine cannot start a matcher: ${r.message}`);
      this.cache.delete(JSON.stringify(spec));
    }
  }

  /** Stops the worker; matchers stop working. */
  async close(): Promise<void> {
    this.fail(new Error('the grammar engine was closed'));
    await this.worker.terminate();
  }
}

/** `spec` as the worker takes it: bounded integers as placeholders and their rules (int-range.ts). */
function forWorker(spec: GrammarSpec): Record<string, unknown> {
  if (spec.kind === 'json_schema') return { ...spec, ...withIntRanges(spec.schema) };
  return { ...spec, calls: spec.calls.map((c) => ({ ...c, ...withIntRanges(c.schema) })) };
}

/** One sequence's grammar state: the masks it allows, token after token. */
export class GrammarMatcher implements TokenConstraint {
  private accepted = 0;
  private released = false;
  private readonly bits: Int32Array;
  private utf8: Utf8State = UTF8_START;
  private readonly both: Int32Array;

  /** @internal */
  constructor(
    private readonly engine: GrammarEngine,
    private readonly id: number,
    private readonly shared: Int32Array,
  ) {
    this.bits = shared.subarray(2);
    this.both = new Int32Array(this.bits.length);
  }

  /**
   * The tokens allowed after every accepted token: the grammar's mask, ANDed with the UTF-8
   * guard's (when that leaves nothing, which a grammar's own rules should never cause, the
   * grammar's alone).
   */
  mask(): Int32Array {
    const bits = this.grammarMask();
    const guard = this.engine.utf8;
    if (!guard) return bits;
    const g = guard.mask(this.utf8);
    let any = 0;
    for (let w = 0; w < bits.length; w++) any |= this.both[w] = bits[w]! & g[w]!;
    return any !== 0 ? this.both : bits;
  }

  /** The grammar's mask after every accepted token; waits for the worker if it has not written it yet. */
  grammarMask(): Int32Array {
    const want = this.accepted + 1;
    let seen = Atomics.load(this.shared, 0);
    if (seen < want) {
      const deadline = performance.now() + WAIT_MS;
      while ((seen = Atomics.load(this.shared, 0)) < want) {
        const left = deadline - performance.now();
        if (left <= 0) throw new Error(`the grammar worker gave no mask in ${WAIT_MS / 1000} s`);
        Atomics.wait(this.shared, 0, seen, left);
      }
    }
    return this.bits;
  }

  /** True once the matcher refused a token (the mask then allows only the stop tokens). */
  get refused(): boolean {
    return Atomics.load(this.shared, 1) === 1;
  }

  accept(id: number): void {
    if (this.released) return;
    this.accepted++;
    if (this.engine.utf8) this.utf8 = this.engine.utf8.advance(this.utf8, id);
    this.engine.post({ op: 'accept', matcher: this.id, token: id });
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.engine.post({ op: 'free', matcher: this.id });
  }
}
