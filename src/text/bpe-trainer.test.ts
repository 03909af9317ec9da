// The byte-level BPE trainer: the tokenizer.json it writes loads with the project's Tokenizer,
// with @huggingface/tokenizers and (when its native binding loads) with Hugging Face's Rust
// tokenizers; it round-trips any text, compresses English, and is a pure function of its input.
// The incremental trainer is checked merge for merge against a naive full-recount trainer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import {
  ASSISTANT_TOKEN, type BpeTrainStats, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, USER_TOKEN, preTokenize,
  preTokenizerConfig, toByteLevel, tokenizerConfig, trainBpe,
} from './bpe-trainer.ts';
import { Tokenizer } from './tokenizer.ts';
import { renderChat } from './chat-template.ts';
import { DsError } from '../errors.ts';
import { Rng } from '../tensor/random.ts';
import { readBrown } from '../train/data.ts';
import { DEEPSEEK_TOKENIZER_DIR, GOLDEN_TOKENIZER_DIR } from '../../test/helpers/golden.ts';

const GOLDEN_ENCODE = join(GOLDEN_TOKENIZER_DIR, 'encode.json');

type Json = Record<string, any>;

// Brown Corpus: the first 60 samples train (~0.7 MB), the last 6 are held out.
const brown = readBrown();
const trainTexts = brown.slice(0, 60).map((d) => d.text);
const heldOut = brown.slice(-6).map((d) => d.text).join('\n\n');
let trainedCache: { json: Json; ms: number; stats: BpeTrainStats } | undefined;
function trained(): { json: Json; ms: number; stats: BpeTrainStats } {
  if (!trainedCache) {
    const t = performance.now();
    let stats: BpeTrainStats | undefined;
    const json = trainBpe(trainTexts, { vocabSize: 3000, onStats: (s) => { stats = s; } });
    trainedCache = { json, ms: performance.now() - t, stats: stats! };
  }
  return trainedCache;
}
const cfg = tokenizerConfig({ modelMaxLength: 2048 });
let tokCache: Tokenizer | undefined;
const tok = () => (tokCache ??= Tokenizer.fromFiles(trained().json, cfg));

function randomText(rng: Rng, n: number): string {
  const pools = [
    () => String.fromCodePoint(0x20 + rng.int(95)), // ASCII
    () => String.fromCodePoint(0x4e00 + rng.int(0x51a5)), // CJK
    () => String.fromCodePoint(0x3040 + rng.int(0xc0)), // kana
    () => String.fromCodePoint(0x1f300 + rng.int(0x2ff)), // emoji
    () => String.fromCodePoint(rng.int(0x20)), // control characters
    () => [' ', '  ', '\t', '\n', '\r\n', '\n\n', '\u00a0', '\u3000', '\u0085', '\u2028'][rng.int(10)]!,
    () => String.fromCodePoint(0x30 + rng.int(10)).repeat(1 + rng.int(8)), // digit runs
    () => String.fromCodePoint(0x300 + rng.int(0x70)), // combining marks
    () => String.fromCodePoint(rng.int(0x10ffff + 1)).replace(/[\uD800-\uDFFF]/g, 'x'),
    () => ['the', ' world', "'s", ' 3.14', '.com', '€', 'é', '<｜User｜>', '<｜begin▁of▁sentence｜>'][rng.int(9)]!,
  ];
  let s = '';
  for (let i = 0; i < n; i++) s += pools[rng.int(pools.length)]!();
  return s;
}

const FIXED_TEXTS = [
  'Hello, world! It\'s 2024-06-01 and π ≈ 3.14159; see https://example.com/a_b?c=1.',
  '東京タワーは333メートルです。中文测试，混合English文本。한국어 텍스트도 있습니다.',
  'emoji: 👍🏽 👨‍👩‍👧‍👦 🇯🇵 🏴󠁧󠁢󠁳󠁣󠁴󠁿 ❤️ and text',
  'ctrl:\u0000\u0001\u0007\b\u001b[0m\u007f\u0085 end',
  '   leading and trailing   \n\n\n\t\t  \r\n  \u00a0\u2003\u3000  ',
  '',
  ' ',
  '\n',
  'def f(x):\n    return x ** 2  # square\n',
  '1 12 123 1234 12345 1234567 ١٢٣ ４５６',
  'e\u0301 vs é; Ａ vs A; ﬁ ligature',
  `${BOS_TOKEN}text${EOS_TOKEN}${USER_TOKEN}hi${ASSISTANT_TOKEN}yo${PAD_TOKEN}<｜User|>`,
];

test('tokenizer.json layout mirrors DeepSeek-V3: specials 0-2, bytes 3-258, merges, added tail', () => {
  const j = trained().json;
  const ds = JSON.parse(readFileSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer.json'), 'utf8')) as Json;
  assert.deepEqual(Object.keys(j), Object.keys(ds));
  assert.deepEqual(j.pre_tokenizer, ds.pre_tokenizer);
  assert.deepEqual(j.pre_tokenizer, preTokenizerConfig());
  assert.deepEqual(j.decoder, ds.decoder);
  assert.deepEqual(j.post_processor, ds.post_processor);
  assert.deepEqual(j.normalizer, ds.normalizer);
  const { vocab: _v, merges: _m, ...modelRest } = j.model;
  const { vocab: _dv, merges: _dm, ...dsModelRest } = ds.model;
  assert.deepEqual(modelRest, dsModelRest);

  const vocab = j.model.vocab as Record<string, number>;
  const merges = j.model.merges as string[];
  assert.equal(vocab[BOS_TOKEN], 0);
  assert.equal(vocab[EOS_TOKEN], 1);
  assert.equal(vocab[PAD_TOKEN], 2);
  // The 256 bytes at 3..258 in DeepSeek-V3's order (so nothing is ever unknown).
  const inverse = (v: Record<string, number>) => new Map(Object.entries(v).map(([k, id]) => [id, k]));
  const ours = inverse(vocab);
  const theirs = inverse(ds.model.vocab);
  for (let id = 3; id < 259; id++) assert.equal(ours.get(id), theirs.get(id), `id ${id}`);
  assert.equal(merges.length, 3000 - 259 - 15);
  merges.forEach((m, i) => {
    const [l, r] = m.split(' ') as [string, string];
    assert.ok(vocab[l]! < 259 + i && vocab[r]! < 259 + i, `merge ${i} uses later tokens`);
    assert.equal(vocab[l + r], 259 + i, `merge ${i} result id`);
  });
  assert.equal(Object.keys(vocab).length, 259 + merges.length);
  // Added tokens: 0-2 special; the tail follows the merges contiguously, in DeepSeek's order.
  const added = j.added_tokens as Json[];
  const dsAdded = (ds.added_tokens as Json[]).filter((t) => t.id <= 2 || t.id >= 128800);
  assert.equal(added.length, dsAdded.length);
  added.forEach((t, i) => {
    const { id: _a, ...rest } = t;
    const { id: _b, ...dsRest } = dsAdded[i]!;
    assert.deepEqual(rest, dsRest);
    assert.equal(t.id, i < 3 ? i : 259 + merges.length + (i - 3));
  });
  assert.equal(tok().vocabSize, 3000);
  const s = trained().stats;
  assert.ok(s.uniqueWords > 1000 && s.words > s.uniqueWords && s.merges === merges.length);
  assert.equal(s.bytes, trainTexts.reduce((n, t) => n + Buffer.byteLength(t), 0));
});

test('loads with Tokenizer.fromDir and with @huggingface/tokenizers; same ids', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bpe-'));
  try {
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(trained().json));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
    const a = Tokenizer.fromDir(dir);
    const hf = new HfTokenizer(trained().json, cfg);
    assert.equal(a.bosId, 0);
    assert.equal(a.eosId, 1);
    for (const text of [...FIXED_TEXTS, heldOut.slice(0, 5000)]) {
      const ids = a.encode(text);
      assert.deepEqual(ids, tok().encode(text));
      if (text !== '') assert.deepEqual(hf.encode(text, { add_special_tokens: false }).ids, ids);
      if (ids.length) assert.equal(hf.decode(ids, { skip_special_tokens: false }), text);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('special and added tokens: BOS prepended, matched verbatim, skipped when special', () => {
  const t = tok();
  assert.deepEqual(t.encode('hi', { addSpecialTokens: true }).slice(0, 1), [0]);
  assert.equal(t.encode('hi', { addSpecialTokens: true }).at(-1) !== 1, true);
  const user = t.tokenToId(USER_TOKEN)!;
  const asst = t.tokenToId(ASSISTANT_TOKEN)!;
  assert.ok(user >= 259 && asst === user + 1);
  assert.deepEqual(t.encode(`${USER_TOKEN}${ASSISTANT_TOKEN}`), [user, asst]);
  assert.ok(t.isSpecial(0) && t.isSpecial(1) && t.isSpecial(2));
  assert.ok(!t.isSpecial(user) && !t.isSpecial(asst));
  const ids = t.encode(`${BOS_TOKEN}Hi${USER_TOKEN}there${EOS_TOKEN}`);
  assert.equal(ids[0], 0);
  assert.equal(ids.at(-1), 1);
  assert.equal(t.decode(ids, { skipSpecialTokens: true }), `Hi${USER_TOKEN}there`);
  // The chat template renders to single tokens for every marker it writes.
  const rendered = renderChat(t.chatTemplate!, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello' },
    { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }] },
    { role: 'tool', content: '42' },
  ], { bosToken: t.bosToken, eosToken: t.eosToken, addGenerationPrompt: true });
  const rids = t.encode(rendered);
  assert.equal(t.decode(rids), rendered);
  const markers = rendered.match(/<｜[^｜]*｜>/g)!;
  assert.ok(markers.length >= 6);
  for (const m of markers) assert.ok(rids.includes(t.tokenToId(m)!), m);
});

test('round-trips arbitrary text exactly (ASCII, CJK, emoji, controls, whitespace, random)', () => {
  const t = tok();
  const rng = new Rng(7);
  const texts = [...FIXED_TEXTS];
  for (let i = 0; i < 200; i++) texts.push(randomText(rng, 1 + rng.int(60)));
  if (existsSync(GOLDEN_ENCODE)) {
    for (const c of JSON.parse(readFileSync(GOLDEN_ENCODE, 'utf8')).cases as { text: string }[]) {
      texts.push(c.text);
    }
  }
  for (const text of texts) {
    const ids = t.encode(text);
    const want = text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
    assert.equal(t.decode(ids), want, JSON.stringify(text));
  }
  // Every single byte of a byte string survives (control bytes, the bytes of multi-byte chars).
  for (let cp = 0; cp < 0x800; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const s = String.fromCodePoint(cp);
    assert.equal(t.decode(t.encode(s)), s);
  }
});

test('our pre-tokenizer equals the library\'s DeepSeek-V3 pre-tokenizer', () => {
  const lib = new HfTokenizer(trained().json, cfg).pre_tokenizer!;
  const rng = new Rng(3);
  const texts = [...FIXED_TEXTS.map((s) => s.replace(/<｜[^｜]*｜>/g, '')), heldOut.slice(0, 20000)];
  for (let i = 0; i < 300; i++) texts.push(randomText(rng, 40).replace(/<｜[^｜]*｜>/g, ''));
  for (const text of texts) {
    if (text === '') continue;
    assert.deepEqual(preTokenize(text).map(toByteLevel), lib.pre_tokenize_text(text), JSON.stringify(text));
  }
});

test('the Rust tokenizers library gives the same ids as @huggingface/tokenizers', async (t) => {
  type Rust = { encode(s: string, p: null, o: { addSpecialTokens: boolean }): Promise<{ getIds(): number[] }> };
  let rust: Rust;
  try {
    const mod = createRequire(import.meta.url)('tokenizers') as { Tokenizer: { fromString(s: string): Rust } };
    rust = mod.Tokenizer.fromString(JSON.stringify(trained().json));
  } catch (e) {
    t.skip(`Rust tokenizers unavailable: ${(e as Error).message}`);
    return;
  }
  const rng = new Rng(11);
  const texts = [...FIXED_TEXTS, heldOut.slice(0, 8000)];
  for (let i = 0; i < 100; i++) texts.push(randomText(rng, 50));
  for (const text of texts) {
    if (text === '') continue;
    const want = (await rust.encode(text, null, { addSpecialTokens: false })).getIds();
    assert.deepEqual(tok().encode(text), want, JSON.stringify(text));
  }
});

test('compresses English: > 2.5 bytes/token on held-out Brown text; trains fast', () => {
  const { ms } = trained();
  const ids = tok().encode(heldOut);
  const bpt = Buffer.byteLength(heldOut) / ids.length;
  assert.ok(bpt > 3, `bytes/token ${bpt.toFixed(2)}`);
  console.log(`# ${trainTexts.length} Brown docs, ${(Buffer.byteLength(trainTexts.join('')) / 1e6).toFixed(2)} MB: ` +
    `${ms.toFixed(0)} ms for ${3000 - 274} merges; held-out ${bpt.toFixed(2)} bytes/token`);
  assert.ok(ms < 5000, `training took ${ms.toFixed(0)} ms`);
  // Digits come in groups of at most three whatever was learned: no token crosses 123|456|7.
  const pieces = tok().encode('1234567').map((id) => tok().decode([id]));
  const ends = new Set<number>();
  let at = 0;
  for (const p of pieces) ends.add((at += p.length));
  assert.ok(ends.has(3) && ends.has(6) && ends.has(7), pieces.join('|'));
});

test('deterministic: same input gives identical JSON; order of ties does not depend on input order', () => {
  const a = JSON.stringify(trainBpe(trainTexts.slice(0, 10), { vocabSize: 1000 }));
  const b = JSON.stringify(trainBpe(trainTexts.slice(0, 10), { vocabSize: 1000 }));
  assert.equal(a, b);
  // Word counts do not depend on text order, and neither do merges.
  const c = JSON.stringify(trainBpe(trainTexts.slice(0, 10).reverse(), { vocabSize: 1000 }));
  assert.equal(a, c);
});

// A naive BPE trainer: full recount of all pairs per merge, same tie-breaking.
function naiveMerges(texts: string[], numMerges: number, minFrequency: number): string[] {
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of preTokenize(t)) counts.set(toByteLevel(w), (counts.get(toByteLevel(w)) ?? 0) + 1);
  // The byte-level alphabet, sorted, gives the base ids.
  const chars = new Set<string>();
  for (let b = 0; b < 256; b++) chars.add(byteChar(b));
  const order = [...chars].sort();
  const idOf = new Map<string, number>(order.map((c, i) => [c, i]));
  const strs = order.slice();
  let words = [...counts].map(([w, c]) => ({ seq: [...w].map((ch) => idOf.get(ch)!), c }));
  const merges: string[] = [];
  while (merges.length < numMerges) {
    const pc = new Map<string, number>();
    for (const { seq, c } of words) {
      for (let i = 0; i + 1 < seq.length; i++) {
        const k = `${seq[i]},${seq[i + 1]}`;
        pc.set(k, (pc.get(k) ?? 0) + c);
      }
    }
    let best: [number, number] | null = null;
    let bestC = 0;
    for (const [k, c] of pc) {
      const [a, b] = k.split(',').map(Number) as [number, number];
      if (c > bestC || (c === bestC && best && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestC = c;
      }
    }
    if (!best || bestC < minFrequency) break;
    const [a, b] = best;
    const id = strs.length;
    strs.push(strs[a]! + strs[b]!);
    merges.push(`${strs[a]} ${strs[b]}`);
    words = words.map(({ seq, c }) => {
      const out: number[] = [];
      for (let i = 0; i < seq.length; i++) {
        if (i + 1 < seq.length && seq[i] === a && seq[i + 1] === b) { out.push(id); i++; } else out.push(seq[i]!);
      }
      return { seq: out, c };
    });
  }
  return merges;
}
function byteChar(b: number): string {
  const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let x = 0; x < b; x++) {
    if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff))) n++;
  }
  return String.fromCharCode(printable ? b : 256 + n);
}

test('incremental training equals a naive full-recount trainer, merge for merge', () => {
  const rng = new Rng(5);
  const texts = [
    ...trainTexts.slice(0, 2).map((s) => s.slice(0, 2000)),
    'aaaa aaaaa aaa abababab ababa 1111111 11 😀😀😀 ',
    ...Array.from({ length: 20 }, () => randomText(rng, 30).replace(/<｜[^｜]*｜>/g, '')),
  ];
  for (const minFrequency of [1, 2, 5]) {
    const j = trainBpe(texts, { vocabSize: 259 + 15 + 200, minFrequency }) as Json;
    assert.deepEqual(j.model.merges, naiveMerges(texts, 200, minFrequency), `minFrequency ${minFrequency}`);
  }
});

test('stops early when pairs run out: ids stay contiguous', () => {
  const j = trainBpe(['abc abc abc'], { vocabSize: 5000 }) as Json;
  const merges = j.model.merges as string[];
  assert.ok(merges.length > 0 && merges.length < 10);
  const t = Tokenizer.fromFiles(j, cfg);
  assert.equal(t.vocabSize, 259 + merges.length + 15);
  assert.equal(t.decode(t.encode('abc abd')), 'abc abd');
  // Extra special tokens go last and are special.
  const k = trainBpe(['abc abc'], { vocabSize: 400, specialTokens: ['<｜extra｜>'] }) as Json;
  const tk = Tokenizer.fromFiles(k, cfg);
  const id = tk.tokenToId('<｜extra｜>')!;
  assert.equal(id, tk.vocabSize - 1);
  assert.ok(tk.isSpecial(id));
  // Added tokens in training text are not learned from.
  const m = trainBpe([`${USER_TOKEN}${USER_TOKEN}${USER_TOKEN}`], { vocabSize: 400 }) as Json;
  assert.deepEqual(m.model.merges, []);
});

test('bad options are DsErrors', () => {
  const bad = (f: () => unknown, re: RegExp) =>
    assert.throws(f, (e: unknown) => e instanceof DsError && e.code === 'BAD_INPUT' && re.test(e.message));
  bad(() => trainBpe(['x'], { vocabSize: 100 }), /vocabSize/);
  bad(() => trainBpe(['x'], { vocabSize: 1000.5 }), /vocabSize/);
  bad(() => trainBpe(['x'], { vocabSize: 1000, specialTokens: [USER_TOKEN] }), /twice/);
  bad(() => trainBpe(['x'], { vocabSize: 1000, specialTokens: [''] }), /non-empty/);
  bad(() => trainBpe(['x'], { vocabSize: 1000, minFrequency: 0 }), /minFrequency/);
  bad(() => tokenizerConfig({ modelMaxLength: 0 }), /modelMaxLength/);
});

test('tokenizerConfig: DeepSeek-V3 fields and chat template', () => {
  const ds = JSON.parse(readFileSync(join(DEEPSEEK_TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8')) as Json;
  const c = tokenizerConfig() as Json;
  for (const k of ['add_bos_token', 'add_eos_token', 'bos_token', 'eos_token', 'pad_token',
    'tokenizer_class', 'clean_up_tokenization_spaces', 'legacy', 'model_max_length', 'chat_template']) {
    assert.deepEqual(c[k], ds[k], k);
  }
  assert.equal((tokenizerConfig({ modelMaxLength: 512, chatTemplate: 'x' }) as Json).chat_template, 'x');
  assert.equal((tokenizerConfig({ modelMaxLength: 512 }) as Json).model_max_length, 512);
});
