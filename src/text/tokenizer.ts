// The DeepSeek-V3 tokenizer: Hugging Face tokenizer.json + tokenizer_config.json, text <-> ids.
// A thin wrapper over @huggingface/tokenizers that fixes what it gets wrong against the Rust
// reference (BOS handling of LlamaTokenizerFast configs, lone surrogates, empty input) or does
// slowly (its byte-level decoder scans all 818 added tokens per token, so byte-level decoding
// is done here). It does not render chat templates (chat-template.ts) or stream
// (detokenizer.ts), and imports nothing from model/ or engine/.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { DsError } from '../errors.ts';

type Json = Record<string, unknown>;

/** Options for {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** Add BOS/EOS as transformers would with `add_special_tokens=True`. Default false. */
  addSpecialTokens?: boolean;
}

/** Options for {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, pad, placeholders, `<|EOT|>`). Default false. */
  skipSpecialTokens?: boolean;
}

function readJson(path: string): Json {
  if (!existsSync(path)) throw new DsError('MISSING_FILE', `tokenizer file not found: ${path}`);
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DsError('BAD_CONFIG', `${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new DsError('BAD_CONFIG', `${path} does not hold a JSON object`);
  }
  return v as Json;
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

  private constructor(tokenizerJson: Json, tokenizerConfig: Json, where: string) {
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
  'deepseek-llm': [
    '[\r\n]',
    '\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+',
    '\\s?[!-/:-~！-／：-～‘-‟　-。]+',
    '\\s+$',
    '[一-龥ࠀ-一가-퟿]+',
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
