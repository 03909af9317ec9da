// The DeepSeek-V3 tokenizer: Hugging Face tokenizer.json + tokenizer_config.json, text <-> ids.
// A thin wrapper over @huggingface/tokenizers that fixes what it gets wrong against the Rust
// reference (BOS handling of LlamaTokenizerFast configs, lone surrogates, empty input) or does
// slowly (its byte-level decoder scans all 818 added tokens per token, so byte-level decoding
// is done here). It does not render chat templates (chat-template.ts) or stream
// (detokenizer.ts), and imports nothing from model/ or engine/. Besides `encode` (the library's,
// as the golden data checks), `encodeParts` encodes pieces of which some are plain text (their
// added-token text, `<｜User｜>` or EOS in a user's message, is not matched), and its async form
// works a slice at a time, yielding to the event loop, and stops once past a token limit.

import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { DsError } from '../errors.ts';
import { readRegularText } from '../io/files.ts';

type Json = Record<string, unknown>;

/** Options for {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Add BOS/EOS as transformers would with `add_special_tokens=True`. Default false. */
  addSpecialTokens?: boolean;
}

/** A piece of text for {@link Tokenizer.encodeParts}. */
export interface TextPart {
  text: string;
  /** Encode as ordinary characters: added-token text in it (`<｜User｜>`, EOS, …) is not matched. */
  plain?: boolean;
}

/** Options for {@link Tokenizer.encodeParts}. */
export interface EncodePartsOptions extends EncodeOptions {
  /** Stop as soon as there are more than this many ids (the ids are then a prefix of the whole). */
  limit?: number;
  /** Characters per slice of a long text (default 2048, about 2 ms of work); for tests. */
  sliceChars?: number;
}

/** Options for {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, pad, placeholders, `<|EOT|>`). Default false. */
  skipSpecialTokens?: boolean;
}

function readJson(path: string): Json {
  const text = readRegularText(path, (why, missing) => {
    throw new DsError(missing ? 'MISSING_FILE' : 'BAD_CONFIG', missing ? `tokenizer file not found: ${path}` : `${path}: ${why}`);
  });
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new DsError('BAD_CONFIG', `${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new DsError('BAD_CONFIG', `${path} does not hold a JSON object`);
  }
  return v as Json;
}

/** Token ids above this are refused: 16× the largest real vocabularies (262k), and id-sized tables stay small. */
const MAX_TOKEN_ID = (1 << 22) - 1;

// Every id of tokenizer.json (model.vocab, added_tokens) must be an integer in
// [0, MAX_TOKEN_ID]: the library sizes tables by the largest id, so an absurd one (2^31) would
// stall for minutes or exhaust memory instead of failing.
function checkTokenIds(tj: Json, where: string): void {
  const check = (id: unknown, what: string) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > MAX_TOKEN_ID) {
      throw new DsError('BAD_CONFIG', `${where}: tokenizer.json ${what} has id ${JSON.stringify(id)}, not an integer in [0, ${MAX_TOKEN_ID}]`);
    }
  };
  const vocab = (tj.model as Json | undefined)?.vocab;
  if (vocab && typeof vocab === 'object' && !Array.isArray(vocab)) {
    for (const [tok, id] of Object.entries(vocab)) check(id, `token ${JSON.stringify(tok)}`);
  }
  const added = tj.added_tokens;
  if (added !== undefined && !Array.isArray(added)) throw new DsError('BAD_CONFIG', `${where}: tokenizer.json added_tokens is not a list`);
  for (const [i, t] of (added ?? []).entries()) {
    if (!t || typeof t !== 'object') throw new DsError('BAD_CONFIG', `${where}: tokenizer.json added_tokens[${i}] is not an object`);
    check((t as Json).id, `added_tokens[${i}] (${JSON.stringify((t as Json).content)})`);
  }
}

// bos_token / eos_token are either a plain string or an AddedToken dict {content, ...}.
function tokenContent(cfg: Json, key: string): string | null {
  const v = cfg[key];
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') {
    return (v as Json).content as string;
  }
  return null;
}

// chat_template is a string, or a list of {name, template} of which 'default' is used.
function pickChatTemplate(cfg: Json): string | null {
  const v = cfg.chat_template;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    for (const t of v) {
      if (t && typeof t === 'object' && (t as Json).name === 'default') {
        const s = (t as Json).template;
        if (typeof s === 'string') return s;
      }
    }
  }
  return null;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
type MaybeWellFormed = { isWellFormed?: () => boolean; toWellFormed?: () => string };

// The Rust reference sees a lone surrogate as U+FFFD before any splitting.
function toWellFormed(text: string): string {
  const s = text as unknown as MaybeWellFormed;
  if (typeof s.isWellFormed === 'function' && typeof s.toWellFormed === 'function') {
    return s.isWellFormed() ? text : s.toWellFormed();
  }
  return text.replace(LONE_SURROGATE, '\uFFFD');
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Matches any of `texts`, the longest one where several start at the same place, as the
// library's DictionarySplitter does.
function alternation(texts: string[]): RegExp | null {
  if (texts.length === 0) return null;
  const sorted = [...new Set(texts)].sort((a, b) => b.length - a.length);
  return new RegExp(sorted.map(escapeRegExp).join('|'), 'g');
}

// The index in `s` after the characters from `from` whose UTF-8 form is `bytes` long.
function advanceBytes(s: string, from: number, bytes: number): number {
  let i = from;
  while (bytes > 0) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes -= 1;
    else if (c < 0x800) bytes -= 2;
    else if (c >= 0xd800 && c <= 0xdbff) { bytes -= 4; i++; } // a pair: the text is well formed
    else bytes -= 3;
    i++;
  }
  if (bytes !== 0) throw new Error('tokenizer: pre-tokens do not cover whole characters');
  return i;
}

/** Characters per slice when encoding long text a slice at a time (about 2 ms of work each). */
const SLICE_CHARS = 2048;
/** encodePartsAsync lets the event loop run after this much work. */
const SLICE_MS = 2;
// Pre-tokens at the end of a slice that may come out differently once the text goes on: a
// regex match can look one character past its end, so only the last one or two can change.
const SLICE_KEEP_BACK = 3;

interface AddedInfo { id: number; lstrip: boolean; rstrip: boolean }

// GPT-2's bytes_to_unicode, reversed: vocabulary character code -> byte (-1: not a byte char).
export const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(324).fill(-1);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    t[printable ? b : 256 + n++] = b;
  }
  return t;
})();

// The ByteLevel decoder as in tokenizers: the bytes of consecutive vocabulary tokens are
// joined and decoded lossily; an added token ends that run and contributes its own text.
class ByteLevelDecoder {
  private readonly cache = new Map<number, Uint8Array>();
  private readonly td = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
  private buf = new Uint8Array(1024);

  constructor(
    private readonly tokenOf: (id: number) => string,
    private readonly added: ReadonlyMap<number, string>,
  ) {}

  decode(ids: number[]): string {
    let out = '';
    let len = 0;
    for (const id of ids) {
      const text = this.added.get(id);
      if (text !== undefined) {
        if (len > 0) out += this.td.decode(this.buf.subarray(0, len));
        len = 0;
        out += text;
        continue;
      }
      const b = this.bytesOf(id);
      if (len + b.length > this.buf.length) {
        const bigger = new Uint8Array(Math.max(2 * this.buf.length, len + b.length));
        bigger.set(this.buf.subarray(0, len));
        this.buf = bigger;
      }
      this.buf.set(b, len);
      len += b.length;
    }
    if (len > 0) out += this.td.decode(this.buf.subarray(0, len));
    return out;
  }

  private bytesOf(id: number): Uint8Array {
    let b = this.cache.get(id);
    if (b) return b;
    const tok = this.tokenOf(id);
    b = new Uint8Array(tok.length);
    let ok = true;
    for (let i = 0; i < tok.length; i++) {
      const c = tok.charCodeAt(i);
      const v = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c]! : -1;
      if (v < 0) { ok = false; break; }
      b[i] = v;
    }
    // A token outside the byte alphabet stands for its own UTF-8 bytes (as in tokenizers).
    if (!ok) b = new TextEncoder().encode(tok);
    this.cache.set(id, b);
    return b;
  }
}

/** A Hugging Face fast tokenizer (tokenizer.json) with transformers' BOS/EOS handling. */
export class Tokenizer {
  /** The BOS token's id. */
  readonly bosId: number;
  /** The EOS token's id. */
  readonly eosId: number;
  /** The BOS token's text, e.g. `<｜begin▁of▁sentence｜>`. */
  readonly bosToken: string;
  /** The EOS token's text, e.g. `<｜end▁of▁sentence｜>`. */
  readonly eosToken: string;
  /** One more than the largest token id, added tokens included (128815 for DeepSeek-V3). */
  readonly vocabSize: number;
  /** tokenizer_config.json's chat_template, or null when it has none. */
  readonly chatTemplate: string | null;

  private readonly hf: HfTokenizer;
  private readonly special: Uint8Array; // 1 where the id is a special added token
  private readonly known: Uint8Array; // 1 where the id maps to a token
  private readonly addBos: boolean;
  private readonly addEos: boolean;
  // tokenizer_config sets add_bos_token/add_eos_token (LlamaTokenizerFast): transformers then
  // replaces tokenizer.json's post-processor, so we add BOS/EOS ourselves.
  private readonly ownSpecials: boolean;
  private readonly byteLevel: ByteLevelDecoder | null;
  /**
   * The most characters one token stands for: a text of n characters has at least
   * n / maxTokenChars tokens (Infinity when a normalizer makes that unsound).
   */
  readonly maxTokenChars: number;
  private readonly added = new Map<string, AddedInfo>();
  // Added tokens matched before normalization, then after it, as the library does.
  private readonly splitRaw: RegExp | null;
  private readonly splitNormalized: RegExp | null;
  private readonly hasNormalizer: boolean;
  // The pre-tokenizer is DeepSeek-V3's (regex splits, then bytes), so long text can be
  // pre-tokenized a slice at a time with the same result.
  private readonly sliceable: boolean;
  // What add_special_tokens puts around the text when tokenizer.json's post-processor does it.
  private readonly wrap: [number[], number[]];

  private constructor(tokenizerJson: Json, tokenizerConfig: Json, where: string) {
    checkTokenIds(tokenizerJson, where);
    try {
      this.hf = new HfTokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new DsError('BAD_CONFIG', `${where}: cannot build tokenizer: ${(e as Error).message}`);
    }
    const vocab = this.hf.get_vocab(true);
    let maxId = -1;
    for (const id of vocab.values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    this.known = new Uint8Array(this.vocabSize);
    for (const id of vocab.values()) this.known[id] = 1;
    this.special = new Uint8Array(this.vocabSize);
    for (const [id, t] of this.hf.get_added_tokens_decoder()) if (t.special) this.special[id] = 1;

    const ids: number[] = [];
    const toks: string[] = [];
    for (const key of ['bos_token', 'eos_token']) {
      const tok = tokenContent(tokenizerConfig, key);
      if (tok === null) throw new DsError('BAD_CONFIG', `${where}: tokenizer_config has no ${key}`);
      const id = this.hf.token_to_id(tok);
      if (id === undefined) {
        throw new DsError('BAD_CONFIG', `${where}: ${key} ${JSON.stringify(tok)} is not a token`);
      }
      ids.push(id);
      toks.push(tok);
    }
    [this.bosId, this.eosId] = ids as [number, number];
    [this.bosToken, this.eosToken] = toks as [string, string];
    const ab = tokenizerConfig.add_bos_token;
    const ae = tokenizerConfig.add_eos_token;
    this.ownSpecials = typeof ab === 'boolean' || typeof ae === 'boolean';
    this.addBos = ab === true;
    this.addEos = ae === true;
    this.chatTemplate = pickChatTemplate(tokenizerConfig);

    const decoder = tokenizerJson.decoder as Json | null | undefined;
    if (decoder?.type === 'ByteLevel' && tokenizerConfig.clean_up_tokenization_spaces === false) {
      const added = new Map<number, string>();
      for (const [id, t] of this.hf.get_added_tokens_decoder()) added.set(id, t.content);
      this.byteLevel = new ByteLevelDecoder((id) => this.hf.id_to_token(id) ?? '', added);
    } else {
      this.byteLevel = null;
    }

    const norm = tokenizerJson.normalizer as Json | null | undefined;
    this.hasNormalizer = !!norm && !(norm.type === 'Sequence' && Array.isArray(norm.normalizers) && norm.normalizers.length === 0);
    const raw: string[] = [];
    const normalized: string[] = [];
    for (const t of this.hf.get_added_tokens_decoder().values()) {
      this.added.set(t.content, { id: t.id, lstrip: t.lstrip, rstrip: t.rstrip });
      (t.normalized && this.hf.normalizer !== null ? normalized : raw).push(t.content);
    }
    this.splitRaw = alternation(raw);
    this.splitNormalized = alternation(normalized);
    let longest = 0;
    for (const t of vocab.keys()) if (typeof t === 'string') longest = Math.max(longest, t.length); // GGUF padding: holes
    // Byte-level tokens have one character per byte, and a character is at least one byte.
    this.maxTokenChars = this.hasNormalizer ? Infinity : longest;
    const pre = tokenizerJson.pre_tokenizer as Json | null | undefined;
    const steps = pre?.type === 'Sequence' && Array.isArray(pre.pretokenizers) ? pre.pretokenizers as Json[] : [];
    const last = steps.at(-1);
    const regexes = steps.slice(0, -1).map((p) =>
      p.type === 'Split' && p.behavior === 'Isolated' && p.invert === false ? (p.pattern as Json | undefined)?.Regex : null);
    const known = PRE_TOKENIZERS['deepseek-v3']; // the one whose slicing the tests check
    this.sliceable = !this.hasNormalizer && last?.type === 'ByteLevel' && last.add_prefix_space === false &&
      last.use_regex === false && known.length === regexes.length && known.every((r, i) => r === regexes[i]);
    if (this.ownSpecials) {
      this.wrap = [this.addBos ? [this.bosId] : [], this.addEos ? [this.eosId] : []];
    } else {
      const body: number[] = this.hf.encode('a', { add_special_tokens: false }).ids;
      const full: number[] = this.hf.encode('a', { add_special_tokens: true }).ids;
      const at = full.findIndex((_, i) => body.every((id, j) => full[i + j] === id));
      this.wrap = at < 0 ? [[], []] : [full.slice(0, at), full.slice(at + body.length)];
    }
  }

  /** Loads `tokenizer.json` and `tokenizer_config.json` from a checkpoint folder. */
  static fromDir(dir: string): Tokenizer {
    const tj = join(dir, 'tokenizer.json');
    const tc = join(dir, 'tokenizer_config.json');
    return new Tokenizer(readJson(tj), readJson(tc), dir);
  }

  /**
   * The tokenizer a GGUF file carries in its metadata (`tokenizer.ggml.*` and
   * `tokenizer.chat_template`, as convert_hf_to_gguf writes them for DeepSeek models): the
   * byte-level BPE vocabulary and merges, control tokens as special added tokens, user-defined
   * ones as plain added tokens, and the pre-tokenizer its `tokenizer.ggml.pre` names.
   */
  static fromGguf(meta: ReadonlyMap<string, unknown>, where = 'GGUF file'): Tokenizer {
    const { tokenizerJson, tokenizerConfig } = ggufTokenizerFiles(meta, where);
    return new Tokenizer(tokenizerJson, tokenizerConfig, where);
  }

  /** Builds a tokenizer from already-parsed tokenizer.json and tokenizer_config.json objects. */
  static fromFiles(tokenizerJson: object, tokenizerConfig: object): Tokenizer {
    return new Tokenizer(tokenizerJson as Json, tokenizerConfig as Json, 'tokenizer');
  }

  /** Text to token ids. Added tokens (e.g. `<｜User｜>`) are matched verbatim anywhere. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new DsError('BAD_INPUT', 'encode: text must be a string');
    const add = opts.addSpecialTokens ?? false;
    const body = text.length === 0
      ? []
      : this.hf.encode(toWellFormed(text), { add_special_tokens: add && !this.ownSpecials }).ids;
    if (!add || !this.ownSpecials) return body;
    if (this.addBos) body.unshift(this.bosId);
    if (this.addEos) body.push(this.eosId);
    return body;
  }

  /**
   * Pieces of text to token ids, as `encode` would give for their concatenation, except that
   * `plain` pieces are ordinary text: their added-token text is not matched, so it comes out as
   * the tokens of its characters. Pieces without added-token text give what `encode` gives.
   */
  encodeParts(parts: TextPart[], opts: EncodePartsOptions = {}): number[] {
    const steps = this.encodeSteps(parts, opts);
    for (;;) {
      const r = steps.next();
      if (r.done) return r.value;
    }
  }

  /**
   * encodeParts a few milliseconds of work at a time, letting the event loop run in between,
   * so a long prompt does not hold up everything else. With `limit`, it stops soon after the
   * ids pass it.
   */
  async encodePartsAsync(parts: TextPart[], opts: EncodePartsOptions = {}): Promise<number[]> {
    const steps = this.encodeSteps(parts, opts);
    for (let t0 = -Infinity; ;) {
      if (performance.now() - t0 >= SLICE_MS) { // and before the first slice
        await new Promise<void>((resolve) => setImmediate(resolve));
        t0 = performance.now();
      }
      const r = steps.next();
      if (r.done) return r.value;
    }
  }

  /** `text` with each added token in it (matched as `encode` matches them) replaced by `fn`'s answer. */
  replaceAddedTokens(text: string, fn: (token: string) => string): string {
    for (const re of [this.splitRaw, this.splitNormalized]) if (re) text = text.replace(re, fn);
    return text;
  }

  // The work of encodeParts, yielding between slices of it; returns the ids.
  private *encodeSteps(parts: TextPart[], opts: EncodePartsOptions): Generator<void, number[]> {
    for (const p of parts) {
      if (typeof p?.text !== 'string') throw new DsError('BAD_INPUT', 'encodeParts: each part needs a text string');
    }
    const add = opts.addSpecialTokens ?? false;
    const limit = opts.limit ?? Infinity;
    const slice = opts.sliceChars ?? SLICE_CHARS;
    const ids: number[] = [];
    // encode() gives [] for '' unless tokenizer_config adds BOS/EOS itself.
    const wrap = add && (this.ownSpecials || parts.some((p) => p.text.length > 0));
    if (wrap) ids.push(...this.wrap[0]);
    let run = ''; // the text since the last added token: one section, pre-tokenized as a whole
    let section = 0;
    let trimNext = false; // the last token strips the whitespace after it
    let tokens = 0;
    for (const p of parts) {
      for (const seg of p.plain ? [p.text] : this.splitAdded(p.text)) {
        if (typeof seg === 'string') {
          run += trimNext ? seg.trimStart() : seg;
          trimNext &&= seg.trim() === '';
          continue;
        }
        if (seg.lstrip) run = run.trimEnd();
        if (run) yield* this.encodeSection(run, section++, ids, limit, slice);
        run = '';
        ids.push(seg.id);
        section++;
        trimNext = seg.rstrip;
        if (ids.length > limit) return ids;
        if (++tokens % 4096 === 0) yield; // many added tokens and little text: let others run
      }
    }
    if (run) yield* this.encodeSection(run, section, ids, limit, slice);
    if (wrap && ids.length <= limit) ids.push(...this.wrap[1]);
    return ids;
  }

  // Text and added tokens, in order, as the library splits them: tokens matched in the raw
  // text first, then normalized tokens in the text between those.
  private *splitAdded(text: string): Generator<string | AddedInfo> {
    for (const seg of this.matches(text, this.splitRaw)) {
      if (typeof seg === 'string') yield* this.matches(seg, this.splitNormalized);
      else yield seg;
    }
  }

  private *matches(text: string, re: RegExp | null): Generator<string | AddedInfo> {
    if (!re) {
      if (text) yield text;
      return;
    }
    const r = new RegExp(re); // its own lastIndex: several of these may be under way
    let at = 0;
    for (let m = r.exec(text); m; m = r.exec(text)) {
      if (m.index > at) yield text.slice(at, m.index);
      yield this.added.get(m[0])!;
      at = m.index + m[0].length;
    }
    if (at < text.length) yield text.slice(at);
  }

  // One section of text (no added tokens in it) onto `ids`: normalized, pre-tokenized, BPE.
  // A long section of a sliceable pre-tokenizer goes a slice at a time: each slice is
  // pre-tokenized, its last few pre-tokens are left for the next slice, which starts where
  // they did; the pre-tokens, hence the ids, are those of the whole section.
  private *encodeSection(
    text: string, section: number, ids: number[], limit: number, slice: number,
  ): Generator<void, void> {
    text = toWellFormed(text);
    if (this.hf.normalizer) text = this.hf.normalizer(text);
    if (!text) return;
    const opts = { section_index: section };
    const pre = (t: string) => (this.hf.pre_tokenizer ? this.hf.pre_tokenizer(t, opts) : [t]);
    if (!this.sliceable || text.length <= slice) {
      this.pushIds(ids, pre(text));
      return;
    }
    let p = 0;
    while (p < text.length) {
      let end = p + slice;
      let pieces: string[];
      let next: number;
      for (;;) {
        if (end >= text.length) {
          pieces = pre(text.slice(p));
          next = text.length;
          break;
        }
        const all = pre(text.slice(p, end));
        if (all.length > SLICE_KEEP_BACK) {
          pieces = all.slice(0, all.length - SLICE_KEEP_BACK);
          next = advanceBytes(text, p, pieces.reduce((n, s) => n + s.length, 0));
          break;
        }
        end = p + 2 * (end - p); // a few long pre-tokens: take a longer slice
        yield;
      }
      this.pushIds(ids, pieces);
      p = next;
      if (ids.length > limit) return;
      if (p < text.length) yield;
    }
  }

  private pushIds(ids: number[], pieces: string[]): void {
    const unk = this.hf.model!.unk_token_id;
    for (const t of this.hf.model!(pieces)) ids.push(this.hf.token_to_id(t) ?? unk!);
  }

  /** Token ids to text; invalid or incomplete UTF-8 becomes U+FFFD. */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecialTokens ?? false;
    const kept: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!this.isValidId(id)) {
        throw new DsError('BAD_INPUT', `decode: ids[${i}] = ${id} is not a token id`);
      }
      if (skip && this.special[id] === 1) continue;
      kept.push(id);
    }
    if (kept.length === 0) return '';
    if (this.byteLevel) return this.byteLevel.decode(kept);
    return this.hf.decode(kept, { skip_special_tokens: false });
  }

  /** The vocabulary string of an id (byte-level alphabet, e.g. `Ġworld`), or undefined. */
  idToToken(id: number): string | undefined {
    return this.isValidId(id) ? this.hf.id_to_token(id) : undefined;
  }

  /** The id of a vocabulary string or added token, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  /** True for special tokens, the ones `skipSpecialTokens` removes. */
  isSpecial(id: number): boolean {
    return this.isValidId(id) && this.special[id] === 1;
  }

  private isValidId(id: number): boolean {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize && this.known[id] === 1;
  }
}

/**
 * The pre-tokenizers of the DeepSeek tokenizers by their llama.cpp name (`tokenizer.ggml.pre`):
 * each a list of regexes split off in turn ("Isolated"), then byte-level mapping. deepseek-v3
 * is the released DeepSeek-V3/R1 tokenizer.json's; deepseek-llm is DeepSeek-V2's (V2-Lite,
 * DeepSeek-LLM), as llama.cpp's llama-vocab.cpp lists it.
 */
const PRE_TOKENIZERS: Readonly<Record<string, readonly string[]>> = {
  'deepseek-v3': [
    '\\p{N}{1,3}',
    '[一-龥぀-ゟ゠-ヿ]+',
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
  ],
  // Written with \u escapes: the source's Greek letters must not be Unicode-normalised (U+1FD3
  // composes to U+0390, which turns the range U+1FD0-U+1FD3 around).
  'deepseek-llm': [
    '[\r\n]',
    '\\s?[A-Za-z\\u00b5\\u00c0-\\u00d6\\u00d8-\\u00f6\\u00f8-\\u01ba\\u01bc-\\u01bf\\u01c4-\\u0293\\u0295-\\u02af\\u0370-\\u0373\\u0376\\u0377\\u037b-\\u037d\\u037f\\u0386\\u0388-\\u038a\\u038c\\u038e-\\u03a1\\u03a3-\\u03f5\\u03f7-\\u0481\\u048a-\\u052f\\u0531-\\u0556\\u10a0-\\u10c5\\u13a0-\\u13f5\\u13f8-\\u13fd\\u1c90-\\u1cba\\u1cbd-\\u1cbf\\u1d00-\\u1d2b\\u1d6b-\\u1d77\\u1d79-\\u1d9a\\u1e00-\\u1f15\\u1f18-\\u1f1d\\u1f20-\\u1f45\\u1f48-\\u1f4d\\u1f50-\\u1f57\\u1f59\\u1f5b\\u1f5d\\u1f5f-\\u1f7d\\u1f80-\\u1fb4\\u1fb6-\\u1fbc\\u1fbe\\u1fc2-\\u1fc4\\u1fc6-\\u1fcc\\u1fd0-\\u1fd3\\u1fd6-\\u1fdb\\u1fe0-\\u1fec\\u1ff2-\\u1ff4\\u1ff6-\\u1ffc\\u2102\\u2107\\u210a-\\u2113\\u2115\\u2119-\\u211d\\u2124\\u2126\\u2128\\u212a-\\u212d\\u212f-\\u2134\\u2139\\u213c-\\u213f\\u2145-\\u2149\\u214e\\u2183\\u2184\\u2c00-\\u2c7b\\u2c7e-\\u2ce4\\u2ceb-\\u2cee\\u2cf2\\u2cf3\\ua640-\\ua66d\\ua680-\\ua69b\\ua722-\\ua76f\\ua771-\\ua787\\ua78b-\\ua78e\\uab70-\\uabbf\\ufb00-\\ufb06\\ufb13-\\ufb17\\uff21-\\uff3a\\uff41-\\uff5a\\u{10400}-\\u{1044f}\\u{104b0}-\\u{104d3}\\u{104d8}-\\u{104fb}\\u{10c80}-\\u{10cb2}\\u{10cc0}-\\u{10cf2}\\u{118a0}-\\u{118df}\\u{1e900}-\\u{1e943}]+',
    '\\s?[!-/:-~\\uff01-\\uff0f\\uff1a-\\uff5e\\u2018-\\u201f\\u3000-\\u3002]+',
    '\\s+$',
    '[\\u4e00-\\u9fa5\\u0800-\\u4e00\\uac00-\\ud7ff]+',
    '\\p{N}+',
  ],
};

/** gguf-py's token types. */
const TOKEN_CONTROL = 3;
const TOKEN_USER_DEFINED = 4;

/** tokenizer.json and tokenizer_config.json objects rebuilt from GGUF tokenizer metadata. */
export function ggufTokenizerFiles(meta: ReadonlyMap<string, unknown>, where: string): { tokenizerJson: Json; tokenizerConfig: Json } {
  const model = meta.get('tokenizer.ggml.model');
  if (model !== 'gpt2') {
    throw new DsError('BAD_CONFIG', `${where}: tokenizer.ggml.model is ${JSON.stringify(model)}; dsv3 reads byte-level BPE ("gpt2") tokenizers`);
  }
  const pre = String(meta.get('tokenizer.ggml.pre') ?? 'default');
  const regexes = PRE_TOKENIZERS[pre];
  if (!regexes) {
    throw new DsError('BAD_CONFIG', `${where}: tokenizer.ggml.pre "${pre}" is not a DeepSeek pre-tokenizer (${Object.keys(PRE_TOKENIZERS).join(', ')})`);
  }
  const tokens = meta.get('tokenizer.ggml.tokens');
  const types = meta.get('tokenizer.ggml.token_type');
  const merges = meta.get('tokenizer.ggml.merges');
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) {
    throw new DsError('BAD_CONFIG', `${where}: tokenizer.ggml.tokens is missing or not a list of strings`);
  }
  if (!Array.isArray(merges)) throw new DsError('BAD_CONFIG', `${where}: tokenizer.ggml.merges is missing`);
  if (types !== undefined && (!Array.isArray(types) || types.length !== tokens.length)) {
    throw new DsError('BAD_CONFIG', `${where}: tokenizer.ggml.token_type does not list one type per token`);
  }
  const vocab: Record<string, number> = {};
  const added: Json[] = [];
  tokens.forEach((t: string, id: number) => {
    const type = types ? Number(types[id]) : 1;
    if (type === TOKEN_CONTROL || type === TOKEN_USER_DEFINED) {
      added.push({ id, content: t, single_word: false, lstrip: false, rstrip: false, normalized: type === TOKEN_USER_DEFINED, special: type === TOKEN_CONTROL });
    }
    // Ids llama.cpp pads the vocabulary with ("[PAD…]", unused) stay out of the BPE vocab.
    if (type !== 5 && !(t in vocab)) vocab[t] = id;
  });
  const tokenizerJson: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'Sequence', normalizers: [] },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        ...regexes.map((r) => ({ type: 'Split', pattern: { Regex: r }, behavior: 'Isolated', invert: false })),
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, vocab, merges: merges.map(String),
    },
  };
  const tokenAt = (key: string): string | null => {
    const id = meta.get(`tokenizer.ggml.${key}_token_id`);
    return typeof id === 'number' && id >= 0 && id < tokens.length ? (tokens[id] as string) : null;
  };
  const bos = tokenAt('bos');
  const eos = tokenAt('eos');
  if (bos === null || eos === null) throw new DsError('BAD_CONFIG', `${where}: tokenizer.ggml.bos_token_id / eos_token_id missing or out of range`);
  const tokenizerConfig: Json = {
    bos_token: bos,
    eos_token: eos,
    add_bos_token: meta.get('tokenizer.ggml.add_bos_token') ?? true,
    add_eos_token: meta.get('tokenizer.ggml.add_eos_token') ?? false,
    clean_up_tokenization_spaces: false,
    legacy: true,
  };
  const pad = tokenAt('pad');
  if (pad !== null) tokenizerConfig.pad_token = pad;
  const template = meta.get('tokenizer.chat_template');
  if (typeof template === 'string') tokenizerConfig.chat_template = template;
  return { tokenizerJson, tokenizerConfig };
}
